"""The loop with real training: propose -> train (examples/tiny_trainer.py) -> ingest -> recommend.

Every run is a real, if tiny, language model (examples/tiny_trainer.py: a character n-gram
trained on a mixture of four text domains shipped with Python) launched by ``bayesmix run``
through the local executor, two at a time. Round 1 is a random design (RegMix's Dirichlet
mixtures), the next rounds Thompson sampling on the fitted M4 law; the objective is the mean
held-out loss over the four domains. At the end the recommended mixture is trained too, and
its measured loss is compared with the best of the random initial runs.

Run: ``.venv/bin/python examples/real_loop.py`` (several minutes on 2 cores; ``--rounds``,
``-n``, ``--draws`` change the size). Writes into ``out/real_loop/`` (a fresh ledger each time).
"""

from __future__ import annotations

import argparse
import importlib.util
import shlex
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

import bayesmix as bm
from bayesmix.loop.ledger import Ledger

HERE = Path(__file__).resolve().parent


def load_trainer():
    """examples/tiny_trainer.py as a module (examples/ is not a package)."""
    spec = importlib.util.spec_from_file_location("tiny_trainer", HERE / "tiny_trainer.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--out", type=Path, default=HERE.parent / "out" / "real_loop")
ap.add_argument("--rounds", type=int, default=3, help="rounds of bayesmix run (3)")
ap.add_argument("-n", type=int, default=8, help="runs per round (8)")
ap.add_argument("--parallel", type=int, default=2)
ap.add_argument("--seed", type=int, default=0)
# MCMC settings: bm.fit's defaults unless given (tests pass small ones to run quickly)
ap.add_argument("--draws", type=int, help="draws per chain (default: bm.fit's)")
ap.add_argument("--tune", type=int, help="tuning steps per chain (default: bm.fit's)")
ap.add_argument("--chains", type=int, help="chains (default: bm.fit's)")
args = ap.parse_args()
mcmc = {k: v for k in ("draws", "tune", "chains") if (v := getattr(args, k)) is not None}

trainer = load_trainer()
domains = trainer.domains()
if args.out.exists():  # a fresh experiment each time (nothing else lives in this folder)
    shutil.rmtree(args.out)
args.out.mkdir(parents=True)
ledger = args.out / "exp.db"
t0 = time.perf_counter()

# %% the experiment: four training domains, the same four validation domains, equal weights;
# round 1 is RegMix's random design (Dirichlet mixtures)
exp = bm.Experiment.create(
    ledger,
    domains,
    target={d: 1.0 for d in domains},
    initial_design=args.n,
    design_method="dirichlet",
)
print(f"domains: {', '.join(domains)}; {args.n} random mixtures proposed as the first round")

# %% bayesmix run: trains each proposed mixture, ingests its losses, refits and proposes the
# next batch (Thompson sampling), for --rounds rounds
command = (
    f"{shlex.quote(sys.executable)} {shlex.quote(str(HERE / 'tiny_trainer.py'))} "
    "--run {run} --mixture-file {mixture_file} --out {out} --seed 0"
)
cli = [
    sys.executable, "-m", "bayesmix", "run", "--ledger", str(ledger), "--command", command,
    "--rounds", str(args.rounds), "-n", str(args.n), "--parallel", str(args.parallel),
    *(f for k, v in mcmc.items() for f in (f"--{k}", str(v))),
    "--seed", str(args.seed), "--no-recommend", "--quiet",
]  # fmt: skip
print("$ bayesmix run --ledger exp.db --rounds", args.rounds, "--parallel", args.parallel)
done = subprocess.run(cli)
if done.returncode not in (0, 1):
    sys.exit(f"bayesmix run failed with status {done.returncode}")

# %% the recommendation for the big run, from the posterior of every completed run
exp = bm.Experiment(ledger, **mcmc)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    report = exp.recommend()
for w in caught:
    if "diagnostics" in str(w.message) or "converge" in str(w.message).lower():
        print(f"note: {str(w.message).splitlines()[0]}")
rec = report.recommendation.set_index("train_domain")["share"]
mixture = {d: float(rec[d]) for d in domains}

# %% train the recommended mixture and compare with the runs of each round
measured = trainer.train(mixture, tokens=trainer.DEFAULT_TOKENS, seed=0)
rec_loss = float(np.mean([measured[d] for d in domains]))
with Ledger.open(ledger) as led:
    table = led.run_table()
    runs = led.runs("completed")
objective = table.losses[domains].mean(axis=1)
round_of = dict(zip(runs["run"], runs["round"]))
first_round = min(round_of.values())
print("\nround  runs  best mean loss (nats/char)")
for rnd in sorted(set(round_of.values())):
    ids = [r for r, k in round_of.items() if k == rnd]
    print(f"{rnd:>5}  {len(ids):>4}  {objective.loc[ids].min():.4f}")
random_runs = objective.loc[[r for r, k in round_of.items() if k == first_round]]
best_random, mean_random = float(random_runs.min()), float(random_runs.mean())
best_any = float(objective.min())
print(f"\nrecommended mixture: {', '.join(f'{d} {v:.2f}' for d, v in mixture.items())}")
print(f"its measured mean loss:        {rec_loss:.4f} nats/char")
print(f"best random initial run:       {best_random:.4f} nats/char (mean {mean_random:.4f})")
print(f"best run of any round:         {best_any:.4f} nats/char")
gain = (best_random - rec_loss) / best_random
print(
    f"real_loop rounds={args.rounds} runs={len(objective)} rec_loss={rec_loss:.4f} "
    f"best_random={best_random:.4f} mean_random={mean_random:.4f} gain_vs_random={gain:+.2%} "
    f"wall_s={time.perf_counter() - t0:.0f}"
)
