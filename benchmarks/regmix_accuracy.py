"""Prediction accuracy on RegMix's real proxy runs (1M-parameter models, 17 Pile domains).

Fits a model (``logshare`` by default: M4 plus a log-share term; ``--model default`` for plain
M4) to the first N of the 512 training runs and predicts the 256 held-out
test runs (data from ../shared/data/regmix, or --data). Figures:

* ``spearman_pile_cc``: rank correlation of the predicted mean and the true Pile-CC loss;
* ``mae``: mean absolute error of the predicted mean over all validation domains and test runs;
* ``coverage90``: share of true test losses inside the 90% posterior predictive intervals.

Run: ``.venv/bin/python benchmarks/regmix_accuracy.py --train 64`` (also 128, 512). The last
line is ``regmix_accuracy n_train=.. spearman_pile_cc=.. mae=.. coverage90=.. wall_s=..``.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from bayesmix.data.loaders import load
from bayesmix.inference.fitting import fit

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "regmix"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=512, help="number of training runs (<= 512)")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of the RegMix CSVs")
    ap.add_argument(
        "--model",
        default="logshare",
        help="model name or TOML file (default: logshare; RegMix's Dirichlet "
        "mixtures leave many domains at zero share, which plain M4 underfits)",
    )
    ap.add_argument("--draws", type=int, help="draws per chain (default: fit's)")
    ap.add_argument("--tune", type=int, help="tuning steps per chain (default: fit's)")
    ap.add_argument("--chains", type=int, help="chains (default: fit's)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    mcmc = {k: v for k in ("draws", "tune", "chains") if (v := getattr(args, k)) is not None}
    if not (args.data / "train_mixture_1m.csv").is_file():
        raise SystemExit(f"RegMix data not found in {args.data} (pass --data)")

    start = time.perf_counter()
    train = load([args.data / "train_mixture_1m.csv", args.data / "train_pile_loss_1m.csv"])
    test = load([args.data / "test_mixture_1m.csv", args.data / "test_pile_loss_1m.csv"])
    train = train.select(train.runs[: args.train])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        post = fit(train, args.model, random_seed=args.seed, **mcmc)
    d = post.diagnostics
    print(
        f"model {post.spec.name!r} (law {post.spec.law}) fitted on {train.n_runs} runs: "
        f"compile {post.settings['compile_s']:.1f} s, sampling "
        f"{post.settings['sample_s']:.1f} s; divergences {d.divergences}, min bulk ESS "
        f"{d.min_ess_bulk:.0f}, max R-hat {d.max_rhat:.3f}",
        flush=True,
    )
    if post.diagnostics_warning:
        print(f"WARNING: {post.diagnostics_warning}", flush=True)

    pred = post.predict(test.mixtures, random_seed=args.seed)
    truth = test.losses.loc[list(test.mixtures.index), list(post.eval_domains)].to_numpy()
    mean = pred.mean.mean(("chain", "draw")).transpose("mixture", "eval_domain").values
    draws = (
        pred.predictive.stack(sample=("chain", "draw"))
        .transpose("mixture", "eval_domain", "sample")
        .values
    )
    lo, hi = np.quantile(draws, [0.05, 0.95], axis=-1)
    ok = ~np.isnan(truth)
    coverage = float(((truth >= lo) & (truth <= hi))[ok].mean())
    mae = float(np.abs(mean - truth)[ok].mean())
    j = post.eval_domains.index("pile_cc")
    rho = float(spearmanr(mean[:, j], truth[:, j]).statistic)
    per_domain = np.nanmean(np.abs(mean - truth), axis=0)
    worst = int(np.argmax(per_domain))
    print(
        f"per-domain MAE: min {per_domain.min():.4f}, max {per_domain.max():.4f} "
        f"({post.eval_domains[worst]})"
    )
    wall = time.perf_counter() - start
    print(
        f"regmix_accuracy n_train={train.n_runs} spearman_pile_cc={rho:.4f} mae={mae:.4f} "
        f"coverage90={coverage:.3f} wall_s={wall:.1f}"
    )


if __name__ == "__main__":
    main()
