"""Plan a mixture from RegMix's proxy runs: load -> fit -> decide under constraints.

RegMix (Liu et al. 2024) trained 1M-parameter proxies on Dirichlet mixtures of 17 Pile domains.
This script fits a mixing law to some of those runs (MCMC at ``bm.fit``'s defaults) and
chooses the mixture that minimises the expected Pile-CC loss with at
most 30 % of any one domain. The data is read from ../shared/data/regmix next to the repository
(or --data); without it the script says so and exits cleanly.

Run: ``.venv/bin/python examples/plan_regmix.py --out out/examples``
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import bayesmix as bm

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parents[1] / "shared" / "data" / "regmix"

# %% options
ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of the RegMix CSVs")
ap.add_argument(
    "--out",
    type=Path,
    default=HERE.parent / "out" / "examples",
    help="folder for the posterior and the decision",
)
ap.add_argument("--runs", type=int, default=32, help="proxy runs to fit (<= 512)")
# MCMC settings: bm.fit's defaults unless given (tests pass small ones to run quickly)
ap.add_argument("--draws", type=int, help="draws per chain (default: bm.fit's)")
ap.add_argument("--tune", type=int, help="tuning steps per chain (default: bm.fit's)")
ap.add_argument("--chains", type=int, help="chains (default: bm.fit's)")
args = ap.parse_args()
mcmc = {k: v for k in ("draws", "tune", "chains") if (v := getattr(args, k)) is not None}

files = [args.data / "train_mixture_1m.csv", args.data / "train_pile_loss_1m.csv"]
if not all(f.is_file() for f in files):
    print(f"RegMix data not found in {args.data}: skipping (pass --data FOLDER)")
    raise SystemExit(0)
args.out.mkdir(parents=True, exist_ok=True)

# %% load: one RunTable of mixtures (mix.*) and validation losses (loss.*)
runs = bm.load(files)
runs = runs.select(runs.runs[: args.runs])
print(
    f"loaded {runs.n_runs} runs: {len(runs.train_domains)} training x "
    f"{len(runs.eval_domains)} validation domains"
)

# %% fit (random_seed: the same output every time; a failed gate is printed, not raised)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    post = bm.fit(runs, "default", random_seed=1, **mcmc)
path = post.save(args.out / "regmix_posterior.nc")
gate = "passed" if post.diagnostics.ok else f"FAILED ({post.diagnostics_warning})"
print(f"posterior: {post.n_samples} draws, diagnostics gate {gate}, saved to {path}")

# %% decide: expected Pile-CC loss (validation domain pile_cc), no domain above 30 %
cons = bm.Constraints.build(runs.train_domains, max_share={d: 0.3 for d in runs.train_domains})
rec = bm.decide(post, target="pile_cc", constraints=cons, per_draw=False)
print(rec.to_text())
top = rec.mixture.sort_values(ascending=False).head(5)
print(
    "recommended mixture (top 5 shares): "
    + ", ".join(f"{d} {share:.3f}" for d, share in top.items())
)
