"""Reuse runs of an earlier domain set after a domain was added: remap, join, fit with absence.

Ye et al.'s 3-domain runs (GitHub, Books3, Pile-CC at 410M): the runs without GitHub play an
earlier swarm over (Books3, Pile-CC) only, the others a later swarm after GitHub was added. A
domain map (``add = ["Github"]``) rewrites the earlier runs in the new set, where GitHub is
exactly absent; they are joined with half of the later runs and fitted with the M4 law plus the
exact-absence term (``models/absent.toml``), then scored on the other later runs. The data is
read from ../shared/data/mixinglaws next to the repository (or --data); without it the script
says so and exits cleanly.

Run: ``.venv/bin/python examples/domain_change.py --out out/examples``
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np

import bayesmix as bm
from bayesmix.data.domain_maps import concat_versions

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parents[1] / "shared" / "data" / "mixinglaws"

# %% options
ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the mixinglaws folder")
ap.add_argument("--out", type=Path, default=HERE.parent / "out" / "examples")
# MCMC settings: bm.fit's defaults unless given (tests pass small ones to run quickly)
ap.add_argument("--draws", type=int, help="draws per chain (default: bm.fit's)")
ap.add_argument("--tune", type=int, help="tuning steps per chain (default: bm.fit's)")
ap.add_argument("--chains", type=int, help="chains (default: bm.fit's)")
args = ap.parse_args()
mcmc = {k: v for k in ("draws", "tune", "chains") if (v := getattr(args, k)) is not None}

source = args.data / "3Mix" / "410M.txt"
if not source.is_file():
    print(f"Ye et al.'s data not found in {args.data}: skipping (pass --data FOLDER)")
    raise SystemExit(0)
args.out.mkdir(parents=True, exist_ok=True)

# %% the two swarms: the earlier one never had GitHub
runs = bm.load(source).final()
no_code = runs.mixtures["Github"] == 0
tidy = runs.to_tidy()
earlier = bm.RunTable.from_frame(
    tidy[tidy["run"].isin(runs.mixtures.index[no_code])].drop(columns="mix.Github"),
    source="earlier swarm",
)
later = runs.select(runs.mixtures.index[~no_code])
print(f"earlier swarm: {earlier.n_runs} runs over {', '.join(earlier.train_domains)}")
print(f"later swarm: {later.n_runs} runs over {', '.join(later.train_domains)}")

# %% the domain map, as a user writes it, and the joined table
map_file = args.out / "add_github.toml"
map_file.write_text('from = "v1"\nto = "v2"\nadd = ["Github"]\n')
rng = np.random.default_rng(0)
order = rng.permutation(later.n_runs)
fit_later = later.select([later.runs[i] for i in order[: later.n_runs // 2]])
held_out = later.select([later.runs[i] for i in order[later.n_runs // 2 :]])
both = concat_versions([earlier.remap(map_file), fit_later])
print(f"fitted: {both.n_runs} runs ({earlier.n_runs} remapped); held out: {held_out.n_runs}")

# %% fit with exact absence and score the held-out later runs
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    post = bm.fit(both, "absent", random_seed=1, **mcmc)
gate = "passed" if post.diagnostics.ok else f"FAILED ({post.diagnostics_warning})"
print(f"posterior: {post.n_samples} draws, diagnostics gate {gate}")
a = post.tree.posterior["a"].sel(train_domain="Github").mean(("chain", "draw"))
print(
    "absence of GitHub adds (nats/token): "
    + ", ".join(f"{d} {v:+.2f}" for d, v in zip(a["eval_domain"].values, a.values))
)
pred = post.predict(held_out.mixtures, random_seed=0).mean.mean(("chain", "draw"))
truth = held_out.losses.loc[list(held_out.mixtures.index), list(post.eval_domains)]
mae = np.abs(pred.transpose("mixture", "eval_domain").values - truth.to_numpy()).mean(axis=0)
print("held-out MAE: " + ", ".join(f"{d} {v:.4f}" for d, v in zip(post.eval_domains, mae)))
