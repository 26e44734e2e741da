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

from bayesmix.data.loaders import load
from bayesmix.data.mixtures import domain_weights
from bayesmix.scaling.backtesting import attach, target_axes
from bayesmix.scaling.backtesting import backtest as run_backtest
from bayesmix.scaling.pipeline import fit_step_law, gate_warnings, nested_fit, pipeline_record

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mixinglaws"
PROXY_SIZES = ("70M", "160M", "305M", "410M")


def run(
    max_step: float = 30000,
    imputations: int = 4,
    seed: int = 1,
    data: Path = DEFAULT_DATA,
    backtest: bool = True,
    mcmc: dict | None = None,
) -> dict:
    """Fit the proxies, predict the 1B runs; returns the figures, a per-run table (run, step,
    observed, mean, lo90, hi90 of the overall loss, coverage of its 22 domains), the gate
    warnings and per-target timings. With ``backtest``, the backtests within the proxies
    (bayesmix.scaling.backtesting, same settings) run first and every target's posterior carries the
    extrapolation error they learned (at that target's distance); ``pairs`` then compares
    the predicted difference of every two 1B runs at one step with the observed one. ``mcmc``:
    draws, tune, chains of every stage fit (default: the pipeline's own)."""
    mcmc = mcmc or {}
    start = time.perf_counter()
    weights_path = data / "pipeline" / "valid_weight.json"
    proxies = load([data / "5Mix" / f"{s}.txt" for s in PROXY_SIZES])
    targets = load([data / "5Mix" / "1B.txt"]).final()
    tidy = targets.to_tidy().set_index("run")
    domains = list(proxies.eval_domains)
    w = domain_weights(str(weights_path), domains)
    bt = None
    if backtest:
        bt = run_backtest(
            proxies,
            max_step=max_step,
            imputations=imputations,
            **mcmc,
            random_seed=seed,
            weights=str(weights_path),
        )

    step_fit = fit_step_law(
        proxies,
        max_step=max_step,
        **mcmc,
        random_seed=seed,
        warn=False,
    )
    rows, covered, notes, timings, gates, pairs = [], [], [], [], [step_fit.diagnostics.ok], []
    posts: dict = {}
    if not step_fit.diagnostics.ok:
        notes.append("stage 1: " + "; ".join(step_fit.diagnostics.failed))
    for (n_params, step), group in tidy.groupby(["n_params", "step"], sort=True):
        post = nested_fit(
            proxies,
            target_n_params=n_params,
            target_steps=step,
            imputations=imputations,
            **mcmc,
            random_seed=seed,
            max_step=max_step,
            step_fit=step_fit,
            warn=False,
        )
        notes += [f"target step {step:g}: {line}" for line in gate_warnings(post)]
        gates.append(not gate_warnings(post))
        timings.append({"step": step, **pipeline_record(post)["timings"]})
        if bt is not None:
            attach(
                post,
                bt,
                target_axes=target_axes(proxies, n_params=n_params, steps=step, max_step=max_step),
            )
        posts[step] = post
        runs = list(group.index)
        iv = post.intervals(targets.mixtures.loc[runs], 0.9, weights=str(weights_path))
        pairs += _pairs(post, targets.mixtures.loc[runs], group, domains, w, seed)
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
    pairs += _long_pair(posts, data, domains, w, seed)
    table = pd.DataFrame(rows)
    err = (table["mean"] - table["observed"]).abs()
    rho = float(spearmanr(table["mean"], table["observed"]).statistic)
    long = table[table["step"] > max_step] if max_step else table.iloc[:0]
    inside = (table["lo90"] <= table["observed"]) & (table["observed"] <= table["hi90"])
    return {
        "backtest": bt,
        "pairs": pd.DataFrame(pairs),
        "stage_gates_ok": all(gates) and (bt is None or bt.gates_ok),
        "long_runs_inside": int(inside[long.index].sum()),
        "n_long_runs": len(long),
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


def _pairs(post, mixtures, group, domains, w, seed) -> list[dict]:
    """Every two 1B runs at one target: the predicted difference of their overall losses
    (predictive: each run's own noise; a discrepancy shared by both cancels) against the
    observed one."""
    pred = post.predict(mixtures, random_seed=seed, warn=False)
    overall = pred.aggregate(w).stack(sample=("chain", "draw")).transpose("sample", "mixture")
    obs = group[[f"loss.{d}" for d in domains]].to_numpy(dtype=float) @ w
    names = list(mixtures.index)
    out = []
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            diff = overall.values[:, i] - overall.values[:, j]
            lo, hi = np.quantile(diff, [0.05, 0.95])
            seen = float(obs[i] - obs[j])
            out.append(
                {
                    "pair": f"{names[i]} - {names[j]}",
                    "observed": seen,
                    "mean": float(diff.mean()),
                    "lo90": float(lo),
                    "hi90": float(hi),
                    "p_lower": float((diff < 0).mean()),
                    "inside": bool(lo <= seen <= hi),
                }
            )
    return out


def _long_pair(posts: dict, data: Path, domains, w, seed) -> list[dict]:
    """The two long 1B runs compared where both have a checkpoint (90k steps): predicted
    difference from the 90k target's posterior against the observed one."""
    step = 90000.0
    if step not in posts:
        return []
    at = load([data / "5Mix" / "1B.txt"]).to_tidy()
    at = at[at["step"] == step].set_index("run")
    long = [r for r in ("1B_998", "1B_999") if r in at.index]
    if len(long) < 2:
        return []
    mix = at.loc[long, [c for c in at.columns if c.startswith("mix.")]]
    mix.columns = [c[4:] for c in mix.columns]
    out = _pairs(posts[step], mix, at.loc[long], domains, w, seed)
    for row in out:
        row["pair"] += " at 90k"
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-step", type=float, default=30000)
    ap.add_argument("--imputations", type=int, default=4)
    ap.add_argument("--draws", type=int, help="draws per chain (default: the pipeline's)")
    ap.add_argument("--tune", type=int, help="tuning steps per chain (default: the pipeline's)")
    ap.add_argument("--chains", type=int, help="chains per fit (default: the pipeline's)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="the mixinglaws folder (5Mix/, pipeline/)"
    )
    ap.add_argument("--no-backtest", action="store_true", help="skip the backtests")
    args = ap.parse_args()
    if not (args.data / "5Mix" / "1B.txt").is_file():
        raise SystemExit(f"Ye et al. data not found in {args.data} (pass --data)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mcmc = {k: v for k in ("draws", "tune", "chains") if (v := getattr(args, k)) is not None}
        out = run(
            args.max_step,
            args.imputations,
            args.seed,
            args.data,
            backtest=not args.no_backtest,
            mcmc=mcmc,
        )
    print_run(out)
    print(
        f"nested_pipeline n_target_runs={out['n_target_runs']} "
        f"mae_overall={out['mae_overall']:.4f} coverage90={out['coverage90']:.3f} "
        f"spearman_overall={out['spearman_overall']:.3f} wall_s={out['wall_s']:.1f}"
    )


def print_run(out: dict) -> None:
    """The per-run table, the backtests, the pairwise differences, timings and gates."""
    with pd.option_context("display.width", 120, "display.float_format", "{:.4f}".format):
        print(out["table"].to_string(index=False))
        if out["backtest"] is not None:
            print("\n" + out["backtest"].to_text() + "\n")
        if len(out["pairs"]):
            print("differences of two 1B runs at one step (overall loss, 90% interval):")
            print(out["pairs"].to_string(index=False))
    print(f"stage 1: {out['stage1_s']} s (shared by every target)")
    for t in out["targets"]:
        print(
            f"target step {t['step']:g}: stage 2 {t['stage2_s']:.1f} s, stage 3 "
            f"{t['stage3_s']:.1f} s"
        )
    for line in out["gate_warnings"]:
        print(f"WARNING: {line}")


if __name__ == "__main__":
    main()
