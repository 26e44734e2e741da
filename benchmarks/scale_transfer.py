"""From proxies to the target run: fit on the 70M-410M runs of Ye et al.'s 5Mix set, predict
the final losses of its 1B runs, and check the intervals.

    .venv/bin/python benchmarks/scale_transfer.py [--method nested|joint] [--max-step 30000]
        [--draws N] [--quick] [--only-scale]

Data: ``../shared/data/mixinglaws/5Mix`` (26 mixtures of 5 coarse Pile domains, 22 validation
domains, checkpoints from 3k steps; one step = 1,048,576 tokens). Two ways from proxies to the
target, both fitted to every proxy checkpoint at or below ``--max-step`` (default 30k, the
paper's proxy budget):

- ``nested`` (default; ``bayesmix.scaling.pipeline``): the paper's pipeline done with draws: a step
  law per run extrapolated to the target step, a size law to 1B, then M4 on the imputed target-scale
  losses (``--imputations`` draws of them, posteriors pooled).
- ``joint`` (``models/scaling.toml``): one posterior of ``L_i(N, D, r)`` (M4 on Chinchilla's
  reducible loss) with run effects; also reports whether the recommended mixture moves between
  the proxies' scale and 1B x 100k steps.

Each 1B run's last checkpoint (four at 20k steps, two at 90k/100k) is predicted per validation
domain and aggregated with the Pile token shares (``pipeline/valid_weight.json``). Printed:
per-run predicted vs observed overall loss with 90% intervals, then (unless ``--only-scale``) the
implicit vs explicit aggregation split (benchmarks/implicit_aggregation.py) and the continual
pre-training critical share (benchmarks/continual.py), and last (one line)

    scale_transfer method=.. n_target_runs=.. mae_overall=.. coverage90=.. spearman_overall=..
      implicit_mae=.. explicit_mae=.. critical_share=..[lo,hi] transfer_s=.. wall_s=..

``transfer_s`` is the proxies-to-1B part alone; ``wall_s`` the whole benchmark. Goals (issue 9):
coverage90 in [0.80, 0.97] over all (run, domain) pairs of the 1B target; mae_overall <= 0.03
nats; implicit_mae < explicit_mae; wall_s <= 600 on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "mixinglaws"
sys.path.insert(0, str(ROOT / "benchmarks"))

PROXY_SIZES = ("70M", "160M", "305M", "410M")
TARGET = "1B"


def load_data(max_step: float | None):
    from bayesmix.data.loaders import load

    proxies = load([DATA / "5Mix" / f"{s}.txt" for s in PROXY_SIZES])
    target = load(DATA / "5Mix" / f"{TARGET}.txt").final()
    weights = json.loads((DATA / "pipeline" / "valid_weight.json").read_text())
    return proxies, target, weights


def transfer(
    *, max_step=30000.0, seed=1, progress=False, model="scaling", mcmc: dict | None = None
) -> dict:
    """Fit the proxies, predict the 1B runs; returns the figures and the per-run table.
    ``mcmc``: draws, tune, chains for ``fit`` (default: fit's own)."""
    from bayesmix.data.mixtures import domain_weights
    from bayesmix.errors import ExtrapolationWarning
    from bayesmix.inference.fitting import fit

    t0 = time.perf_counter()
    proxies, target, weights = load_data(max_step)
    post = fit(
        proxies,
        model,
        max_step=max_step,
        random_seed=seed,
        progressbar=progress,
        warn=False,
        **(mcmc or {}),
    )
    fit_s = time.perf_counter() - t0
    w = domain_weights(weights, post.eval_domains)
    mix = target.mixtures
    tokens = target.column("tokens").to_numpy(dtype=float)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ExtrapolationWarning)
        pred = post.predict(mix, n_params=1e9, tokens=tokens, random_seed=seed)
    notes = sorted({str(c.message) for c in caught})
    observed = target.losses.to_numpy(dtype=float)  # (run, K)
    stack = (
        pred.predictive.stack(sample=("chain", "draw"))
        .transpose("sample", "mixture", "eval_domain")
        .values
    )  # (S, n, K)
    lo, hi = np.quantile(stack, [0.05, 0.95], axis=0)
    ok = np.isfinite(observed)
    covered = (lo <= observed) & (observed <= hi)
    overall = stack @ w  # (S, n)
    obs_overall = observed @ w
    mean_overall = overall.mean(axis=0)
    o_lo, o_hi = np.quantile(overall, [0.05, 0.95], axis=0)
    rows = [
        {
            "run": run,
            "step": float(s),
            "observed": float(obs_overall[i]),
            "predicted": float(mean_overall[i]),
            "lo90": float(o_lo[i]),
            "hi90": float(o_hi[i]),
        }
        for i, (run, s) in enumerate(zip(mix.index, target.column("step"), strict=True))
    ]
    per_domain_mae = float(np.abs(pred.mean.mean(("chain", "draw")).values - observed)[ok].mean())
    return {
        "posterior": post,
        "rows": rows,
        "notes": notes,
        "weights": w,
        "n_target_runs": len(mix),
        "mae_overall": float(np.abs(mean_overall - obs_overall).mean()),
        "coverage90": float(covered[ok].mean()),
        "coverage90_overall": float(((o_lo <= obs_overall) & (obs_overall <= o_hi)).mean()),
        "spearman_overall": float(stats.spearmanr(mean_overall, obs_overall)[0]),
        "mae_domain": per_domain_mae,
        "fit_s": fit_s,
        "wall_s": time.perf_counter() - t0,
        "diagnostics": post.diagnostics_warning,
    }


def transfer_nested(
    *, max_step=30000.0, seed=1, imputations=4, backtest=True, mcmc: dict | None = None
) -> dict:
    """The nested pipeline with its backtests (benchmarks/nested_pipeline.py) in this
    benchmark's terms."""
    import nested_pipeline

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = nested_pipeline.run(max_step, imputations, seed, DATA, backtest=backtest, mcmc=mcmc)
    nested_pipeline.print_run(out)
    table = out["table"]
    rows = [
        {
            "run": r.run,
            "step": float(r.step),
            "observed": float(r.observed),
            "predicted": float(r.mean),
            "lo90": float(r.lo90),
            "hi90": float(r.hi90),
        }
        for r in table.itertuples()
    ]
    inside = (table["lo90"] <= table["observed"]) & (table["observed"] <= table["hi90"])
    bt = out["backtest"]
    bt_summary = bt.summary().set_index("split") if bt is not None and len(bt.records) else None
    pairs = out["pairs"]
    return {
        "rows": rows,
        "notes": [],
        "n_target_runs": out["n_target_runs"],
        "mae_overall": out["mae_overall"],
        "coverage90": out["coverage90"],
        "coverage90_overall": float(inside.mean()),
        "spearman_overall": out["spearman_overall"],
        "mae_domain": float("nan"),
        "wall_s": out["wall_s"],
        "diagnostics": "; ".join(out["gate_warnings"]),
        "long_runs_inside": out["long_runs_inside"],
        "n_long_runs": out["n_long_runs"],
        "backtest_coverage90": (
            float(bt_summary.loc["all", "calibrated_coverage"])
            if bt_summary is not None
            else float("nan")
        ),
        "backtest_raw_coverage90": (
            float(bt_summary.loc["all", "coverage"]) if bt_summary is not None else float("nan")
        ),
        "pairs_inside": f"{int(pairs['inside'].sum())}/{len(pairs)}" if len(pairs) else "0/0",
        "stage_gates": "passed" if out["stage_gates_ok"] else "failed",
        "fit_line": (
            f"fit: nested pipeline, stage 1 {out['stage1_s']} s, then stages 2-3 "
            f"per target step ({imputations} imputations; MCMC "
            f"{', '.join(f'{k} {v}' for k, v in (mcmc or {}).items()) or 'defaults'})"
        ),
    }


def scale_decision(post, weights, *, n_params=1e9, tokens=100_000 * 2**20, seed=0):
    """The mean-loss decision at 1B x 100k steps, and whether it moves from the proxies'."""
    from bayesmix.decisions.decision import decide

    return decide(
        post,
        weights=dict(zip(post.eval_domains, weights, strict=True)),
        inputs={"n_params": n_params, "tokens": tokens},
        random_seed=seed,
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--max-step",
        type=float,
        default=30000.0,
        help="proxy checkpoints at or below this step (default 30000; 0 = all)",
    )
    ap.add_argument("--draws", type=int, help="draws per chain (default: each fit's)")
    ap.add_argument("--tune", type=int, help="tuning steps per chain (default: each fit's)")
    ap.add_argument("--chains", type=int, help="chains per fit (default: each fit's)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--method",
        choices=("nested", "joint"),
        default="nested",
        help="nested pipeline (default) or the joint scaling law",
    )
    ap.add_argument(
        "--imputations",
        type=int,
        default=4,
        help="nested: draws of the imputed target losses (default 4)",
    )
    ap.add_argument("--model", default="scaling", help="joint: the model specification")
    ap.add_argument("--quick", action="store_true", help="small MCMC everywhere (smoke run)")
    ap.add_argument(
        "--only-scale",
        action="store_true",
        help="skip the aggregation and continual pre-training parts",
    )
    ap.add_argument("--save", metavar="FILE.nc", help="also save the proxies' posterior")
    ap.add_argument("--no-backtest", action="store_true", help="nested: skip the backtests")
    args = ap.parse_args(argv)
    if not (DATA / "5Mix").is_dir():
        print(f"scale_transfer: data absent ({DATA.relative_to(ROOT.parent)}); nothing to do")
        return 0
    mcmc = {k: v for k in ("draws", "tune", "chains") if (v := getattr(args, k)) is not None}
    if args.quick:  # a smoke run of the script, not figures
        mcmc = {"draws": 150, "tune": 200, **mcmc}
    start = time.perf_counter()
    if args.method == "nested":
        res = transfer_nested(
            max_step=args.max_step or None,
            seed=args.seed,
            imputations=args.imputations,
            backtest=not args.no_backtest,
            mcmc=mcmc,
        )
        print(res["fit_line"])
    else:
        res = transfer(
            max_step=args.max_step or None,
            seed=args.seed,
            progress=not args.quick,
            model=args.model,
            mcmc=mcmc,
        )
        post = res["posterior"]
        if args.save:
            post.save(args.save)
        print(
            f"fit: {post.spec.name}, {len(post.fit_data())} checkpoints of "
            f"{post.fit_data().n_runs} proxy runs ({', '.join(PROXY_SIZES)}), steps <= "
            f"{args.max_step:g}, {post.n_samples} draws, {res['fit_s']:.0f} s"
        )
    if res["diagnostics"]:
        print(f"WARNING: {res['diagnostics']}")
    for note in res["notes"]:
        print(f"note: {note}")
    print(f"\n{'run':<8} {'step':>7} {'observed':>9} {'predicted':>9} {'90% interval':>18}")
    for r in res["rows"]:
        inside = "" if r["lo90"] <= r["observed"] <= r["hi90"] else "  (outside)"
        print(
            f"{r['run']:<8} {r['step']:>7.0f} {r['observed']:>9.4f} {r['predicted']:>9.4f} "
            f"[{r['lo90']:.4f}, {r['hi90']:.4f}]{inside}"
        )
    print(
        f"per-domain MAE {res['mae_domain']:.4f}; overall coverage {res['coverage90_overall']:.2f}"
    )
    if args.method == "joint":
        report = scale_decision(res["posterior"], res["weights"], seed=args.seed)
        print("\n" + report.scale_shift.to_text())

    extra = {"implicit_mae": float("nan"), "explicit_mae": float("nan"), "critical": "nan[nan,nan]"}
    if not args.only_scale:
        kw = {"seed": args.seed, "mcmc": mcmc}
        try:
            import implicit_aggregation

            agg = implicit_aggregation.run(**kw)
            extra["implicit_mae"], extra["explicit_mae"] = agg["implicit_mae"], agg["explicit_mae"]
            print(
                f"\nimplicit aggregation (5Mix 70M, 30k steps, 20 fit / 6 held out): "
                f"implicit K={agg['implicit_k']} MAE {agg['implicit_mae']:.4f}, explicit "
                f"MAE {agg['explicit_mae']:.4f}"
            )
        except ImportError as err:
            print(f"implicit aggregation skipped: {err}")
        try:
            import continual

            ct = continual.run(**kw)
            extra["critical"] = f"{ct['critical_share']:.3f}[{ct['lo']:.3f},{ct['hi']:.3f}]"
            print(
                f"continual pre-training: critical Python share {extra['critical']}, "
                f"general share {ct['critical_general_share']:.3f}"
            )
        except ImportError as err:
            print(f"continual pre-training skipped: {err}")
    wall = time.perf_counter() - start
    print(
        f"\nscale_transfer method={args.method} n_target_runs={res['n_target_runs']} "
        f"mae_overall={res['mae_overall']:.4f} coverage90={res['coverage90']:.3f} "
        f"spearman_overall={res['spearman_overall']:.3f} "
        f"implicit_mae={extra['implicit_mae']:.4f} explicit_mae={extra['explicit_mae']:.4f} "
        f"critical_share={extra['critical']} pairs_inside={res.get('pairs_inside', 'nan')} "
        f"backtest_raw_coverage90={res.get('backtest_raw_coverage90', float('nan')):.3f} "
        f"transfer_s={res['wall_s']:.0f}"
    )
    print(
        f"scale_transfer n_target_runs={res['n_target_runs']} "
        f"mae_overall={res['mae_overall']:.4f} coverage90={res['coverage90']:.3f} "
        f"long_runs_inside={res.get('long_runs_inside', 0)}/{res.get('n_long_runs', 0)} "
        f"backtest_coverage90={res.get('backtest_coverage90', float('nan')):.3f} "
        f"stage_gates={res.get('stage_gates', 'failed')} wall_s={wall:.0f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
