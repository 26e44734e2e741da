"""Active learning replayed on a pool of real runs: RegMix's 768 proxy runs (train + test).

Each strategy starts from the same random runs (``--start``, per seed), picks batches of
``--batch`` runs from the rest of the pool, sees their true losses and refits, up to
``--budget`` runs. The objective is the Pile-CC validation loss; the model is fitted to that one
validation domain (a RunTable with only ``loss.pile_cc``), so every refit reuses one compiled
model. After every fit the benchmark records

* the regret of the recommendation: the pool run with the lowest posterior expected Pile-CC
  loss (all draws), its true loss relative to the pool's best (0.01 = 1 % worse);
* (extra) the regret of the best run seen so far (the true loss of the best run trained);
* the prediction error: mean absolute error of the posterior mean Pile-CC loss on the pool runs
  not yet used.

``runs_to_1pct_best`` is the number of runs after which the recommendation's true loss stays
within 1 % of the pool's best until the budget (999 if it is not within 1 % at the end); the
last line reports its median over seeds per strategy, and the median final regret::

    pool_replay runs_to_1pct_best=NAME:MEDIAN,... final_regret=NAME:..,... wall_s=..

Run: ``.venv/bin/python benchmarks/pool_replay.py`` (10 seeds, all strategies: 920 s measured
on 2 cores, 600 refits of about 1.5 s each after one compile), quick: ``--seeds 2 --strategies
thompson,random --budget 48``.
``--csv FILE`` writes every round of every run (seed, strategy, n_runs, regret,
best_seen_regret, mae, fit_s, divergences).
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from bayesmix import acquire
from bayesmix.data import RunTable
from bayesmix.design import select_random
from bayesmix.fit import fit
from bayesmix.loaders import load

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "regmix"
DOMAIN = "pile_cc"
NEVER = 999


def load_pool(folder: Path) -> RunTable:
    """The 768 RegMix runs with only the Pile-CC validation loss."""
    train = load([folder / "train_mixture_1m.csv", folder / "train_pile_loss_1m.csv"])
    test = load([folder / "test_mixture_1m.csv", folder / "test_pile_loss_1m.csv"])
    tidy = train.concat(test).to_tidy()
    cols = ["run", *[c for c in tidy.columns if c.startswith("mix.")], f"loss.{DOMAIN}"]
    return RunTable.from_frame(tidy[cols], source="regmix pool")


def runs_to_within(n_runs: np.ndarray, regret: np.ndarray, tol: float) -> int:
    """Runs after which ``regret`` stays <= ``tol`` until the end (NEVER if it ends above)."""
    ok = regret <= tol
    if not ok[-1]:
        return NEVER
    bad = np.flatnonzero(~ok)
    return int(n_runs[0] if bad.size == 0 else n_runs[bad[-1] + 1])


def replay(pool: RunTable, strategy: str, start: np.ndarray, args, seed: int, say) -> list[dict]:
    """One strategy, one seed: the rounds' figures."""
    x = pool.mixtures.to_numpy(float)
    y = pool.losses[DOMAIN].to_numpy(float)
    best = y.min()
    runs = np.asarray(pool.runs)
    used = list(start)
    strat = acquire.get_strategy(strategy)
    rows = []
    rnd = 0
    while True:
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            post = fit(pool.select(runs[used]), args.model, draws=args.draws, tune=args.tune,
                       chains=args.chains, seed=seed * 1000 + rnd, warn=False)
        fit_s = time.perf_counter() - t0
        mean = post.law.predict(x, post.law_params())[..., 0].mean(axis=0)   # (N,)
        rec = int(np.argmin(mean))
        regret = float(y[rec] / best - 1.0)
        rest = np.setdiff1d(np.arange(len(y)), used)
        mae = float(np.mean(np.abs(mean[rest] - y[rest])))
        seen = float(y[used].min() / best - 1.0)
        rows.append({"seed": seed, "strategy": strategy, "round": rnd, "n_runs": len(used),
                     "regret": regret, "best_seen_regret": seen, "mae": mae, "fit_s": fit_s,
                     "divergences": post.diagnostics.divergences})
        say(f"seed {seed} {strategy:>12} n={len(used):3d} regret={regret:6.2%} "
            f"best_seen={seen:6.2%} mae={mae:9.4f} fit={fit_s:4.1f}s")
        if len(used) >= args.budget:
            return rows
        q = min(args.batch, args.budget - len(used))
        cands = acquire.Candidates(x[rest], pool.train_domains, ids=tuple(str(i) for i in rest))
        belief = acquire.Belief.from_posterior(post, target=DOMAIN)
        batch = strat.propose(belief, cands, q, existing=x[used],
                              min_distance=args.min_distance, seed=seed * 1000 + rnd)
        used += [int(i) for i in batch.ids]
        rnd += 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of the RegMix CSVs")
    ap.add_argument("--seeds", type=int, default=10, help="number of seeds (default 10)")
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--strategies", default=",".join(acquire.STRATEGIES),
                    help="comma-separated strategies (default: all)")
    ap.add_argument("--start", type=int, default=16, help="random runs to start from")
    ap.add_argument("--batch", type=int, default=8, help="runs per round")
    ap.add_argument("--budget", type=int, default=128, help="runs in all")
    ap.add_argument("--model", default="default")
    ap.add_argument("--draws", type=int, default=300)
    ap.add_argument("--tune", type=int, default=300)
    ap.add_argument("--chains", type=int, default=2)
    ap.add_argument("--min-distance", type=float, default=acquire.DEFAULT_MIN_DISTANCE)
    ap.add_argument("--csv", type=Path, help="write every round's figures here")
    ap.add_argument("--summarize", type=Path, metavar="CSV",
                    help="only summarise a CSV written by --csv (no fitting)")
    ap.add_argument("--quiet", action="store_true", help="no per-round progress")
    args = ap.parse_args()
    if not (args.data / "train_mixture_1m.csv").is_file():
        raise SystemExit(f"RegMix data not found in {args.data} (pass --data)")
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    for s in strategies:
        acquire.get_strategy(s)

    def say(msg):
        if not args.quiet:
            print(msg, flush=True)

    wall = time.perf_counter()
    if args.summarize:
        frame = pd.read_csv(args.summarize)
        strategies = [s for s in strategies if s in set(frame["strategy"])]
        print(f"summary of {args.summarize} (wall_s below is the summary's, not the run's)")
    else:
        pool = load_pool(args.data)
        x = pool.mixtures.to_numpy(float)
        print(f"pool: {pool.n_runs} runs, {len(pool.train_domains)} training domains; best "
              f"{DOMAIN} loss {pool.losses[DOMAIN].min():.4f}; strategies "
              f"{', '.join(strategies)}; {args.seeds} seeds; start {args.start}, batches of "
              f"{args.batch}, budget {args.budget}; MCMC {args.chains} x {args.draws} after "
              f"{args.tune}", flush=True)
        rows = []
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            start = select_random(x, args.start, seed=seed)
            for strategy in strategies:
                rows += replay(pool, strategy, start, args, seed, say)
        frame = pd.DataFrame(rows)
        if args.csv:
            frame.to_csv(args.csv, index=False)
    summarize(frame, strategies, time.perf_counter() - wall)


def summarize(frame: pd.DataFrame, strategies: list[str], wall: float) -> None:
    """Per-strategy figures, median curves, and the last line."""
    summary = {}
    for strategy in strategies:
        per_seed = []
        for _, g in frame[frame["strategy"] == strategy].groupby("seed"):
            g = g.sort_values("n_runs")
            n, r = g["n_runs"].to_numpy(), g["regret"].to_numpy()
            seen = g["best_seen_regret"].to_numpy()
            per_seed.append({"to1": runs_to_within(n, r, 0.01),
                             "to05": runs_to_within(n, r, 0.005),
                             "seen05": runs_to_within(n, seen, 0.005),
                             "final": r[-1], "seen": g["best_seen_regret"].iloc[-1],
                             "mae": g["mae"].iloc[-1],
                             "mae_start": g["mae"].iloc[0], "fit_s": g["fit_s"].sum()})
        s = pd.DataFrame(per_seed)
        summary[strategy] = s
        print(f"{strategy:>12}: runs_to_1pct median {s['to1'].median():.0f} "
              f"(per seed {s['to1'].tolist()}); runs_to_0.5pct median "
              f"{s['to05'].median():.0f}; final regret median {s['final'].median():.4f} "
              f"mean {s['final'].mean():.4f} max {s['final'].max():.4f}; best run seen: "
              f"final regret median {s['seen'].median():.4f}, runs to within 0.5% median "
              f"{s['seen05'].median():.0f}; MAE start median "
              f"{s['mae_start'].median():.4f} -> final median {s['mae'].median():.4f}; "
              f"fits {s['fit_s'].sum():.0f} s")
    by_n = frame.groupby(["strategy", "n_runs"])["regret"].median().unstack("n_runs")
    print("median regret by runs used:")
    print(by_n.loc[strategies].to_string(float_format=lambda v: f"{v:.4f}"))
    seen_n = frame.groupby(["strategy", "n_runs"])["best_seen_regret"].median()
    print("median regret of the best run seen by runs used:")
    print(seen_n.unstack("n_runs").loc[strategies].to_string(float_format=lambda v: f"{v:.4f}"))
    mae_n = frame.groupby(["strategy", "n_runs"])["mae"].median().unstack("n_runs")
    print("median MAE (unused pool runs) by runs used:")
    print(mae_n.loc[strategies].to_string(float_format=lambda v: f"{v:.4f}"))
    to1 = ",".join(f"{k}:{v['to1'].median():.0f}" for k, v in summary.items())
    fin = ",".join(f"{k}:{v['final'].median():.4f}" for k, v in summary.items())
    print(f"pool_replay runs_to_1pct_best={to1} final_regret={fin} wall_s={wall:.0f}")


if __name__ == "__main__":
    main()
