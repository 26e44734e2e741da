"""Decide at a target token budget without repeating a small domain hundreds of times.

Proxy runs of 1e9 tokens over web, code and wiki are simulated from a known M4 law in which
wiki (1e9 unique tokens: small) helps every validation domain. No proxy repeats anything, so a
law fitted on them cannot know that at the target's 2e11 tokens a 50% wiki share means 100
epochs of it. The run table says so: ``tokens`` per run and ``unique.<domain>`` per training
domain. Fitted with the repetition component (``models/repeat.toml``: ``law = "m4+repeat"``),
the decision at the budget pays for repeated data and reports each domain's epochs; plain M4
(``default``) is shown next to it. Nothing is read from disk; the report is written to --out.

Run: ``.venv/bin/python examples/repetition.py --out out/examples``
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

import bayesmix as bm
from bayesmix.laws import get_law

HERE = Path(__file__).resolve().parent
DOMAINS = ["web", "code", "wiki"]
UNIQUE = {"web": 1e13, "code": 1e12, "wiki": 1e9}  # unique tokens available per domain
PROXY_TOKENS, TARGET_TOKENS = 1e9, 2e11

# %% options
ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--out", type=Path, default=HERE.parent / "out" / "examples")
# MCMC settings: bm.fit's defaults unless given (tests pass small ones to run quickly)
ap.add_argument("--draws", type=int, help="draws per chain (default: bm.fit's)")
ap.add_argument("--tune", type=int, help="tuning steps per chain (default: bm.fit's)")
ap.add_argument("--chains", type=int, help="chains (default: bm.fit's)")
args = ap.parse_args()
mcmc = {k: v for k in ("draws", "tune", "chains") if (v := getattr(args, k)) is not None}

# %% a known law and 24 proxy runs (the repetition component is the identity on them)
t = np.eye(3) * -3.0 - np.array([0.0, 0.0, 1.0])  # own domain helps; wiki helps all
truth = {
    "m": np.array([[3.2, 2.0, 2.8]]),
    "rho": np.full((1, 3), 0.05),
    "t": (t - t.mean(1, keepdims=True))[None],
}
rng = np.random.default_rng(0)
mixes = rng.dirichlet(np.ones(3), 24)
losses = get_law("m4").predict(mixes, truth)[0] + rng.normal(0, 0.01, (24, 3))
table = pd.DataFrame({"run": [f"p{i:02d}" for i in range(24)], "tokens": PROXY_TOKENS})
for j, d in enumerate(DOMAINS):
    table[f"mix.{d}"] = mixes[:, j]
for d in DOMAINS:
    table[f"unique.{d}"] = UNIQUE[d]
for j, d in enumerate(DOMAINS):
    table[f"loss.{d}"] = losses[:, j]
runs = bm.RunTable.from_frame(table, source="simulated proxies")
print(f"{runs.n_runs} proxy runs of {PROXY_TOKENS:.0e} tokens; unique tokens {UNIQUE}")

# %% fit with and without the repetition component
aware = bm.fit(runs, "repeat", random_seed=1, warn=False, **mcmc)
naive = bm.fit(runs, "default", random_seed=1, warn=False, **mcmc)

# %% decide at the target budget
report = bm.decide(aware, inputs={"tokens": TARGET_TOKENS}, per_draw=False, random_seed=0)
plain = bm.decide(naive, per_draw=False, random_seed=0)
rec = report.recommendation.set_index("train_domain")
epochs_plain = plain.mixture * TARGET_TOKENS / pd.Series(UNIQUE)
print(f"at {TARGET_TOKENS:.0e} tokens, share (epochs):")
for d in DOMAINS:
    print(
        f"  {d:5s} m4+repeat {rec.at[d, 'share']:.3f} ({rec.at[d, 'epochs']:.1f})   "
        f"m4 alone {plain.mixture[d]:.3f} ({epochs_plain[d]:.1f})"
    )
print(f"largest epochs: m4+repeat {rec['epochs'].max():.0f}, m4 alone {epochs_plain.max():.0f}")
args.out.mkdir(parents=True, exist_ok=True)
path = report.save(args.out / "repetition_decision.json")
print(f"wrote {path}")
