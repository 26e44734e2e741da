"""The nested pipeline (steps -> size -> mixing law) against Ye et al.'s own 1B runs.

Fits the 70M-410M runs of ``../shared/data/mixinglaws/5Mix`` (every checkpoint up to
``--max-step``) and predicts the final checkpoint of each of the six 1B runs in ``1B.txt``:
four at 20k steps (mixtures among the 26 proxy mixtures) and ``1B_998`` / ``1B_999`` at 90k /
100k steps (mixtures the proxies never ran: the mixing law of stage 3 predicts them). Stage 1
(the step law) does not depend on the target, so it is fitted once and shared; stages 2-3 run
once per distinct target (size, step): (1e9, 20k), (1e9, 90k), (1e9, 100k).

Figures: ``mae_overall`` (|predicted mean - observed| of the overall loss, validation domains
weighted by ``pipeline/valid_weight.json``, mean over the six runs), ``coverage90`` (share of
the 6 x 22 observed (run, domain) losses inside the 90% posterior predictive intervals),
``spearman_overall`` (rank correlation of predicted and observed overall loss over the six
runs), ``wall_s``. Ye et al.'s point pipeline missed its own 1B runs by 0.06-0.11.

Run: ``.venv/bin/python benchmarks/nested_pipeline.py`` (options: --max-step, --imputations,
--draws, --tune, --chains, --seed). The last line is ``nested_pipeline n_target_runs=..
mae_overall=.. coverage90=.. spearman_overall=.. wall_s=..``.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from bayesmix.loaders import load
from bayesmix.mixtures import domain_weights
from bayesmix.pipeline import fit_step_law, gate_warnings, nested_fit, pipeline_record

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mixinglaws"
PROXY_SIZES = ("70M", "160M", "305M", "410M")


def run(
    max_step: float = 30000,
    imputations: int = 4,
    draws: int = 300,
    tune: int = 300,
    chains: int = 2,
    seed: int = 1,
    data: Path = DEFAULT_DATA,
) -> dict:
    """Fit the proxies, predict the 1B runs; returns the figures, a per-run table (run, step,
    observed, mean, lo90, hi90 of the overall loss, coverage of its 22 domains), the gate
    warnings and per-target timings."""
    start = time.perf_counter()
    weights_path = data / "pipeline" / "valid_weight.json"
    proxies = load([data / "5Mix" / f"{s}.txt" for s in PROXY_SIZES])
    targets = load([data / "5Mix" / "1B.txt"]).final()
    tidy = targets.to_tidy().set_index("run")
    domains = list(proxies.eval_domains)
    w = domain_weights(str(weights_path), domains)

    step_fit = fit_step_law(
        proxies,
        max_step=max_step,
        draws=draws,
        tune=tune,
        chains=chains,
        random_seed=seed,
        warn=False,
    )
    rows, covered, notes, timings = [], [], [], []
    for (n_params, step), group in tidy.groupby(["n_params", "step"], sort=True):
        post = nested_fit(
            proxies,
            target_n_params=n_params,
            target_steps=step,
            imputations=imputations,
            draws=draws,
            tune=tune,
            chains=chains,
            random_seed=seed,
            max_step=max_step,
            step_fit=step_fit,
            warn=False,
        )
        notes += [f"target step {step:g}: {line}" for line in gate_warnings(post)]
        timings.append({"step": step, **pipeline_record(post)["timings"]})
        runs = list(group.index)
        iv = post.intervals(targets.mixtures.loc[runs], 0.9, weights=str(weights_path))
        for run in runs:
            sub = iv[iv["mixture"] == run].set_index("eval_domain")
            obs = group.loc[run, [f"loss.{d}" for d in domains]].to_numpy(dtype=float)
            dom = sub.loc[domains]
            inside = (obs >= dom["lower"].to_numpy()) & (obs <= dom["upper"].to_numpy())
            covered.extend(inside[~np.isnan(obs)].tolist())
            ok = ~np.isnan(obs)
            overall = float(obs[ok] @ (w[ok] / w[ok].sum()))
            o = sub.loc["overall"]
            rows.append(
                {
                    "run": run,
                    "step": step,
                    "observed": overall,
                    "mean": o["mean"],
                    "lo90": o["lower"],
                    "hi90": o["upper"],
                    "coverage_domains": float(inside[ok].mean()),
                }
            )
    table = pd.DataFrame(rows)
    err = (table["mean"] - table["observed"]).abs()
    rho = float(spearmanr(table["mean"], table["observed"]).statistic)
    return {
        "n_target_runs": len(table),
        "mae_overall": float(err.mean()),
        "coverage90": float(np.mean(covered)),
        "spearman_overall": rho,
        "wall_s": time.perf_counter() - start,
        "table": table,
        "gate_warnings": notes,
        "stage1_s": round(step_fit.compile_s + step_fit.sample_s, 1),
        "targets": timings,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-step", type=float, default=30000)
    ap.add_argument("--imputations", type=int, default=4)
    ap.add_argument("--draws", type=int, default=300)
    ap.add_argument("--tune", type=int, default=300)
    ap.add_argument("--chains", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="the mixinglaws folder (5Mix/, pipeline/)"
    )
    args = ap.parse_args()
    if not (args.data / "5Mix" / "1B.txt").is_file():
        raise SystemExit(f"Ye et al. data not found in {args.data} (pass --data)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = run(
            args.max_step,
            args.imputations,
            args.draws,
            args.tune,
            args.chains,
            args.seed,
            args.data,
        )
    with pd.option_context("display.width", 120, "display.float_format", "{:.4f}".format):
        print(out["table"].to_string(index=False))
    print(f"stage 1: {out['stage1_s']} s (shared by every target)")
    for t in out["targets"]:
        print(
            f"target step {t['step']:g}: stage 2 {t['stage2_s']:.1f} s, stage 3 "
            f"{t['stage3_s']:.1f} s"
        )
    for line in out["gate_warnings"]:
        print(f"WARNING: {line}")
    print(
        f"nested_pipeline n_target_runs={out['n_target_runs']} "
        f"mae_overall={out['mae_overall']:.4f} coverage90={out['coverage90']:.3f} "
        f"spearman_overall={out['spearman_overall']:.3f} wall_s={out['wall_s']:.1f}"
    )


if __name__ == "__main__":
    main()
