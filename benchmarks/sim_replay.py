"""Active learning replayed on a simulated law with known truth and heteroscedastic noise.

Setting (issue 11, item 5). Per seed, a random M4 law (:func:`bayesmix.model.simulation.simulate`:
``--domains`` training domains, the same validation domains) is the truth; the objective is the
equal-weight mean of the validation losses. Its exact optimum over the simplex comes from
:func:`bayesmix.decisions.optimize.minimize_objective` on the true parameters (one draw; M4's exact
solver). A run at mixture r measures every validation loss with Gaussian noise whose sd grows
for extreme mixtures::

    sd(r) = sigma0 * 25 ** (1 - H(r) / log M)        H(r) = -sum_j r_j log r_j

so a one-domain mixture is 25 times noisier (in sd) than the balanced one, as seed-to-seed
reruns of published mixtures show (issue 11); ``--sigma0`` (default 0.02 nats, so 0.5 nats
at a one-domain mixture) sets the level.
The fitted model's noise is homoscedastic, so it is misspecified in the noise as real users'
models are.

The space is continuous. Every strategy starts from the same ``--start`` (16) Dirichlet(1)
mixtures per seed, then picks batches of ``--batch`` (8) up to ``--budget`` (128) runs:

* bayesmix strategies (thompson, optimum-info, bald, random) through
  :func:`bayesmix.loop.acquire.propose` on the simplex (the library's own continuous candidates: a
  fresh Sobol + sparse-Dirichlet cloud each round plus the per-draw optima), on the posterior
  of ``--model`` (default ``default``, the M4 law the truth is drawn from; 2 chains x 300
  draws after 300 tuning, modest on purpose); the recommendation is the posterior-mean optimum
  (:func:`bayesmix.decisions.optimize.minimize_objective`);
* ``gp-ei``: the scikit-learn GP with expected improvement of ``pool_replay.py`` (kriging
  believer batches), over a fresh candidate cloud each round (2048 points from
  :meth:`bayesmix.loop.acquire.Candidates.continuous` without a belief: the same Sobol + sparse
  Dirichlet + corners cloud); it is fitted to the measured objective; its recommendation is the
  lowest GP mean among a fresh 4096-point cloud and the runs trained.

Regrets are RELATIVE and exact: ``rec_regret`` = f(recommendation) / f* - 1 with f the true
(noise-free) objective and f* its optimum; ``best_regret`` = the same for the best run trained
(by its true objective, which the user never sees); ``mae``: mean absolute error of the
predicted objective (posterior median) on 512 fixed Dirichlet(1) mixtures. ``runs_to_0p1pct``
as in pool_replay.py (within 0.1 % and staying there; budget + 1 if never).

Last line: ``sim_replay rec_regret_at_32=NAME:MED,... best_regret_at_32=... runs_to_0p1pct=...
wall_s=..``. Run: ``.venv/bin/python benchmarks/sim_replay.py --csv sim_replay.csv``
(resumable like pool_replay.py); quick: ``--seeds 2 --budget 48``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pool_replay import (  # noqa: E402
    GP,
    GPEI,
    append_rows,
    common_args,
    fit_round,
    latest,
    model_spec,
    parse_strategies,
    resume,
    settings_of,
    summarize,
    summarize_file,
)

from bayesmix.data.constraints import Constraints  # noqa: E402
from bayesmix.data.table import LOSS_PREFIX, MIX_PREFIX, RunTable  # noqa: E402
from bayesmix.decisions.optimize import minimize_objective  # noqa: E402
from bayesmix.loop import acquire  # noqa: E402
from bayesmix.model.simulation import simulate  # noqa: E402

SETTINGS_SIM = ("domains", "sigma0")


class Problem:
    """One seed's truth: the law, the objective's weights, the exact optimum, the noise."""

    def __init__(self, seed: int, n_domains: int, sigma0: float):
        _, self.truth = simulate(n_domains, n_runs=1, random_seed=10_000 + seed)
        self.domains = tuple(self.truth["train_domains"])
        self.evals = tuple(self.truth["eval_domains"])
        self.weights = np.full(len(self.evals), 1.0 / len(self.evals))
        self.simplex = Constraints.build(self.domains)
        params = {k: np.asarray(self.truth[k], float)[None] for k in ("m", "rho", "t")}
        opt = minimize_objective(params, self.simplex, self.weights, "mean", law="m4")
        self.optimum = opt.mixture
        self.f_star = float(self.f(opt.mixture[None])[0])
        self.sigma0 = sigma0
        self.rng = np.random.default_rng(20_000 + seed)
        self.test = np.random.default_rng(30_000 + seed).dirichlet(np.ones(n_domains), 512)
        if not np.all(self.f(self.test) >= self.f_star - 1e-9):
            raise SystemExit(f"seed {seed}: the optimiser missed the optimum (a bug)")

    def f(self, r: np.ndarray) -> np.ndarray:
        """True objective (n,) of mixtures (n, M)."""
        return self.truth.true_loss(r) @ self.weights

    def noise_sd(self, r: np.ndarray) -> np.ndarray:
        """sd (n,) of a run's measured losses: sigma0 x 25^(1 - normalised entropy)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            h = -np.where(r > 0, r * np.log(r), 0.0).sum(axis=1)
        return self.sigma0 * 25.0 ** (1.0 - h / np.log(r.shape[1]))

    def run(self, r: np.ndarray, rng) -> np.ndarray:
        """Measured validation losses (n, K) of new runs."""
        mean = self.truth.true_loss(r)
        return mean + rng.normal(size=mean.shape) * self.noise_sd(r)[:, None]

    def table(self, r: np.ndarray, loss: np.ndarray) -> RunTable:
        frame = {"run": [f"r{i:03d}" for i in range(len(r))]}
        frame.update({MIX_PREFIX + d: r[:, j] for j, d in enumerate(self.domains)})
        frame.update({LOSS_PREFIX + d: loss[:, i] for i, d in enumerate(self.evals)})
        return RunTable.from_frame(pd.DataFrame(frame), source="sim_replay")


def replay(
    prob: Problem,
    strategy: str,
    start: np.ndarray,
    start_loss: np.ndarray,
    args,
    seed: int,
    say,
    spec,
    first_fit: dict,
) -> list[dict]:
    """One strategy, one seed: the rounds' figures (regrets relative to the exact optimum)."""
    rng = np.random.default_rng(40_000 + seed * 100 + len(strategy))
    x, loss = start.copy(), start_loss.copy()
    rows, rnd = [], 0
    while True:
        t0 = time.perf_counter()
        obj = loss @ prob.weights
        if strategy == GP:
            gp = GPEI(seed * 1000 + rnd).fit(x, obj)
            cloud = acquire.Candidates.continuous(
                prob.simplex, 4096, random_seed=seed * 1000 + rnd + 500
            ).mixtures
            cloud = np.vstack([cloud, x])
            rec = cloud[int(np.argmin(gp.mean(cloud)))]
            pred_test = gp.mean(prob.test)
            diag = {}
        else:
            post = fit_round(prob.table(x, loss), spec, args, seed, rnd, first_fit)
            belief = acquire.Belief.from_posterior(post, weights=prob.weights)
            rec = minimize_objective(
                belief.draws, prob.simplex, prob.weights, "mean", random_seed=seed
            ).mixture
            with np.errstate(over="ignore", invalid="ignore"):
                pred_test = np.median(belief.loss(prob.test), axis=0)
            diag = {
                "divergences": post.diagnostics.divergences,
                "max_rhat": post.diagnostics.max_rhat,
            }
        model_s = time.perf_counter() - t0
        row = {
            "seed": seed,
            "strategy": strategy,
            "round": rnd,
            "n_runs": len(x),
            "rec_regret": float(prob.f(rec[None])[0] / prob.f_star - 1.0),
            "best_regret": float(prob.f(x).min() / prob.f_star - 1.0),
            "mae": float(np.mean(np.abs(pred_test - prob.f(prob.test)))),
            "model_s": model_s,
            "select_s": np.nan,
            "bad_scores": 0,
            "divergences": diag.get("divergences", np.nan),
            "max_rhat": diag.get("max_rhat", np.nan),
        }
        rows.append(row)
        if len(x) >= args.budget:
            say(_progress(row))
            return rows
        q = min(args.batch, args.budget - len(x))
        t1 = time.perf_counter()
        if strategy == GP:
            cands = acquire.Candidates.continuous(
                prob.simplex, 2048, random_seed=seed * 1000 + rnd
            ).mixtures
            new = cands[gp.propose(x, obj, cands, q)]
        else:
            batch = acquire.propose(
                belief,
                q,
                strategy=strategy,
                constraints=prob.simplex,
                existing=x,
                min_distance=args.min_distance,
                random_seed=seed * 1000 + rnd,
            )
            new = batch.mixtures
            if strategy in ("bald", "optimum-info"):
                row["bad_scores"] = int((~np.isfinite(batch.score)).sum())
        row["select_s"] = time.perf_counter() - t1
        say(_progress(row))
        x = np.vstack([x, new])
        loss = np.vstack([loss, prob.run(new, rng)])
        rnd += 1


def _progress(row: dict) -> str:
    return (
        f"seed {row['seed']} {row['strategy']:>12} n={row['n_runs']:3d} "
        f"rec_regret={row['rec_regret']:7.3%} best_regret={row['best_regret']:7.3%} "
        f"mae={row['mae']:7.4f} model={row['model_s']:5.1f}s "
        f"select={row['select_s']:4.1f}s bad_scores={row['bad_scores']}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--domains", type=int, default=8, help="training (= validation) domains")
    ap.add_argument(
        "--sigma0",
        type=float,
        default=0.02,
        help="noise sd (nats) at the balanced mixture; 25x at a one-domain one",
    )
    common_args(ap, "default", "centered")
    args = ap.parse_args()
    strategies = parse_strategies(args.strategies)
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    settings = {**settings_of(args), **{k: getattr(args, k) for k in SETTINGS_SIM}}
    say = (lambda msg: None) if args.quiet else (lambda msg: print(msg, flush=True))
    note = (
        "regrets relative and exact: true objective / true optimum - 1; best-trained = "
        "the trained run with the lowest true objective"
    )
    wall = time.perf_counter()
    if args.summarize:
        summarize_file(args, settings, seeds, strategies, "sim_replay", note)
        return
    spec = model_spec(args.model, args.parameterization)
    print(
        f"simulated M4 laws: {args.domains} training = validation domains, equal-weight "
        f"objective, noise sd {args.sigma0:g} nats at the balanced mixture -> "
        f"{25 * args.sigma0:g} at a one-domain one; strategies {', '.join(strategies)}; "
        f"seeds {seeds[0]}..{seeds[-1]}; start {args.start}, batches of {args.batch}, budget "
        f"{args.budget}; model {spec.name} (law {spec.law}), MCMC {args.chains} x "
        f"{args.draws} after {args.tune}",
        flush=True,
    )
    rows, finished = resume(args, settings)
    first_fit: dict = {}
    for seed in seeds:
        prob = Problem(seed, args.domains, args.sigma0)
        start = np.random.default_rng(50_000 + seed).dirichlet(np.ones(args.domains), args.start)
        start_loss = prob.run(start, np.random.default_rng(60_000 + seed))
        say(
            f"seed {seed}: optimum {np.round(prob.optimum, 3).tolist()} f* {prob.f_star:.4f}; "
            f"best of the start {prob.f(start).min() / prob.f_star - 1:.3%} above it"
        )
        for strategy in strategies:
            if (seed, strategy) in finished:
                continue
            new = replay(prob, strategy, start, start_loss, args, seed, say, spec, first_fit)
            if args.csv:
                append_rows(args.csv, new, settings, args.budget)
            rows += [dict(r, **settings, budget=args.budget) for r in new]
        first_fit.clear()
    frame = latest(pd.DataFrame(rows), seeds, strategies, args.budget)
    summarize(frame, strategies, args.budget, time.perf_counter() - wall, "sim_replay", note)


if __name__ == "__main__":
    main()
