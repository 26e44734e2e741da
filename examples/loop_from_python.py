"""The active-learning loop from Python with ``bayesmix.Experiment``, on simulated training runs.

A known M4 law plays the training cluster: every proposed mixture is "trained" by evaluating the
true law plus noise. The loop: create a ledger -> propose an initial design -> ingest its
results -> propose the next runs (this fits the posterior) -> ingest -> recommend the mixture
for the big run. MCMC at ``bm.fit``'s defaults (``--draws``, ``--tune``, ``--chains`` change them).

Run: ``.venv/bin/python examples/loop_from_python.py --out out/examples``
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

import bayesmix as bm

HERE = Path(__file__).resolve().parent
DOMAINS = ["web", "code", "books", "wiki"]

# %% options
ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument(
    "--out",
    type=Path,
    default=HERE.parent / "out" / "examples",
    help="folder for the ledger, hand-off files and posteriors",
)
# MCMC settings: bm.fit's defaults unless given (tests pass small ones to run quickly)
ap.add_argument("--draws", type=int, help="draws per chain (default: bm.fit's)")
ap.add_argument("--tune", type=int, help="tuning steps per chain (default: bm.fit's)")
ap.add_argument("--chains", type=int, help="chains (default: bm.fit's)")
args = ap.parse_args()
mcmc = {k: v for k in ("draws", "tune", "chains") if (v := getattr(args, k)) is not None}
folder = args.out / "loop"
folder.mkdir(parents=True, exist_ok=True)
ledger = folder / "loop.db"
if ledger.exists():  # a fresh ledger per run of the example (Experiment.create never overwrites)
    for old in folder.iterdir():
        if old.is_file():
            old.unlink()

# %% the "cluster": a known law; training a mixture = its true loss plus noise (sd 0.02)
_, truth = bm.simulate(DOMAINS, n_runs=2, random_seed=7)
rng = np.random.default_rng(0)


def train(proposals: pd.DataFrame) -> pd.DataFrame:
    """Results as the training jobs report them: run, mix.*, loss.* (nats per token)."""
    mix = [f"mix.{d}" for d in DOMAINS]
    out = proposals[["run", *mix]].reset_index(drop=True)
    loss = truth.true_loss(out[mix].to_numpy())
    loss = loss + rng.normal(0.0, 0.02, loss.shape)
    for i, d in enumerate(truth["eval_domains"]):
        out[f"loss.{d}"] = loss[:, i]
    return out


# %% create: domains, constraints (at most 40 % web, at least 10 % books) and the objective
# (validation losses weighted 0.4 web, 0.3 code, 0.2 books, 0.1 wiki)
cons = bm.Constraints.build(DOMAINS, max_share={"web": 0.4}, min_share={"books": 0.1})
target = {"web": 0.4, "code": 0.3, "books": 0.2, "wiki": 0.1}
exp = bm.Experiment.create(
    ledger,
    DOMAINS,
    constraints=cons,
    target=target,
    random_seed=1,
    **mcmc,
)
print(f"created {ledger.name}")

# %% round 0: a space-filling initial design (no posterior yet), trained and ingested
first = exp.propose(12, out=True, random_seed=1)
print(f"round {first.attrs['round']}: proposed {len(first)} runs ({first.attrs['strategy']})")
summary = exp.ingest(train(first))
print(f"ingested {len(summary.completed)} results")

# %% round 1: fits the posterior and proposes by Thompson sampling
with warnings.catch_warnings():
    # 12-16 runs: a failed gate is possible after fit's retries, and not the point here
    warnings.simplefilter("ignore")
    second = exp.propose(4, out=True, random_seed=2)
    print(
        f"round {second.attrs['round']}: proposed {len(second)} runs ({second.attrs['strategy']})"
    )
    exp.ingest(train(second))
    print("status:", exp.status()["by_status"])

    # %% recommend: the mixture for the big run, from the posterior refitted on all 16 runs
    rec = exp.recommend(per_draw=False)
print(rec.to_text())
print("recommended mixture: " + ", ".join(f"{d} {share:.3f}" for d, share in rec.mixture.items()))
