"""Multi-fidelity active learning: compute spent until the target run's mixture is right.

Setting (issue 33). Per seed, the truth is a ``scaling`` law (:mod:`bayesmix.laws.scaling`) over
``--domains`` training domains (the same validation domains, equal-weight objective):
``L_i = E_i + exp(t_i . r) (A_i (N / n_ref)^-alpha_i + B_i (D / d_ref)^-beta_i)`` with
per-domain size exponents spread over 0.15-0.55, so each domain's reducible loss shrinks at its
own rate and the best mixture moves with scale. Three proxy sizes (``--sizes``, default 2e7,
6e7, 2e8 parameters), each trained for 10 or 20 tokens per parameter (6 menu entries); the
target is 10x the largest proxy (2e9 parameters, 20 tokens per parameter). Cost of a run =
N x D, reported in units of one full run of the largest proxy. A run measures its final loss
per domain with Gaussian noise ``--noise`` (0.01 nats).

Arms, all with the same strategy (``target-info``, :class:`bayesmix.loop.fidelity.TargetInfo`:
information about the target-scale optimum per unit of cost, batches of ``--batch`` runs):

* ``mf``: the whole menu (any size, any step count);
* ``largest``: the largest proxy only (both step counts);
* ``smallest``: the smallest proxy only (both step counts).

Each arm starts from the same ``--start`` Sobol mixtures, trained at full steps, spread over its
sizes in turn. Every round fits the ``scaling`` law to all results (2 chains x 300 draws after
300 tuning, the loop benchmarks' budget, with the gate's retries; one record per run, so no run
effect), recommends the posterior-mean optimum at the target scale
(:func:`bayesmix.decisions.optimize.minimize_objective` on the belief at the target's N and D)
and proposes the next batch over a continuous cloud of mixtures crossed with the arm's menu.
``regret`` = true target loss of the recommendation / true target optimum - 1; ``cost_to`` =
compute spent when the recommendation is within 0.1 % and stays there to the end of the run
(``inf``: never within ``--budget`` compute units or ``--rounds`` rounds).

Last line: ``multifidelity cost_mf=.. cost_largest=.. cost_smallest=.. regret_mf_at_budget=..``
(medians over seeds; regret at the end of the mf arm). Run:
``PYTHONPATH=. .venv/bin/python benchmarks/multifidelity.py`` (defaults: 1 seed, 1 round after
the start; ``--seeds 3 --rounds 5`` for more).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
import warnings

import numpy as np
import pandas as pd

from bayesmix.data.constraints import Constraints
from bayesmix.data.table import LOSS_PREFIX, MIX_PREFIX, RunTable
from bayesmix.data.ye_logs import TOKENS_PER_STEP
from bayesmix.decisions.optimize import minimize_objective
from bayesmix.inference.fitting import fit
from bayesmix.laws import scaling
from bayesmix.loop import design
from bayesmix.loop.belief import Belief
from bayesmix.loop.candidates import Candidates
from bayesmix.loop.fidelity import Menu, TargetInfo, full_runs, menu_candidates
from bayesmix.model.spec import load_spec

TOL = 1e-3
ARMS = ("mf", "largest", "smallest")


class Truth:
    """One seed's scaling law, the target scale and the exact target optimum."""

    def __init__(self, seed: int, m: int, sizes, target: float, noise: float):
        rng = np.random.default_rng(50_000 + seed)
        self.domains = tuple(f"d{j + 1}" for j in range(m))
        e = rng.uniform(1.6, 2.2, m)
        t = rng.normal(0.0, 0.7, (m, m))
        t[np.diag_indices(m)] += rng.normal(-1.5, 0.3, m)
        t -= t.mean(axis=1, keepdims=True)
        self.params = {
            "E": e,
            "A": rng.uniform(0.8, 1.4, m),
            "alpha": rng.permutation(np.linspace(0.15, 0.55, m)),
            "B": rng.uniform(0.6, 1.0, m),
            "beta": rng.uniform(0.3, 0.4, m),
            "t": t,
            "n_ref": np.asarray(float(np.sqrt(min(sizes) * max(sizes)))),
            "d_ref": np.asarray(20.0 * float(np.sqrt(min(sizes) * max(sizes)))),
        }
        self.weights = np.full(m, 1.0 / m)
        self.simplex = Constraints.build(self.domains)
        self.noise = noise
        self.target = {"n_params": float(target), "tokens": 20.0 * float(target)}
        self.rng = np.random.default_rng(60_000 + seed)
        opt = scaling.Scaling().draw_optima(
            {k: np.asarray(v)[None] for k, v in self.params.items()},
            self.weights,
            self.simplex.lower,
            self.simplex.upper,
            **self.target,
        )
        self.optimum = np.asarray(opt[0])[0]
        self.f_star = float(self.f(self.optimum[None])[0])
        probe = np.random.default_rng(1).dirichlet(np.ones(m), 4096)
        if np.any(self.f(probe) < self.f_star - 1e-9):
            raise SystemExit(f"seed {seed}: the exact optimum is not optimal (a bug)")

    def loss(self, r, n_params, tokens) -> np.ndarray:
        r = np.atleast_2d(r)
        shape = r.shape[:-1]
        inputs = {
            "r": r,
            "n_params": np.broadcast_to(np.asarray(n_params, float), shape),
            "tokens": np.broadcast_to(np.asarray(tokens, float), shape),
        }
        return scaling.mean_loss(inputs, {k: np.asarray(v) for k, v in self.params.items()})

    def f(self, r) -> np.ndarray:
        """True objective at the target scale (n,)."""
        return self.loss(r, self.target["n_params"], self.target["tokens"]) @ self.weights

    def regret(self, r) -> float:
        return float(self.f(np.asarray(r)[None])[0] / self.f_star - 1.0)


class Arm:
    """The runs one arm trained: mixtures, sizes, tokens, measured losses, compute spent."""

    def __init__(self, truth: Truth, menu: Menu, unit: float):
        self.truth, self.menu, self.unit = truth, menu, unit
        self.r = np.empty((0, len(truth.domains)))
        self.n = np.empty(0)
        self.d = np.empty(0)
        self.loss = np.empty((0, len(truth.domains)))
        self.cost = 0.0

    def train(self, r, n_params, tokens, cost) -> None:
        mean = self.truth.loss(r, n_params, tokens)
        measured = mean + self.truth.rng.normal(0.0, self.truth.noise, mean.shape)
        self.r = np.vstack([self.r, r])
        self.n, self.d = np.r_[self.n, n_params], np.r_[self.d, tokens]
        self.loss = np.vstack([self.loss, measured])
        self.cost += float(np.sum(cost)) / self.unit

    def table(self) -> RunTable:
        frame = {
            "run": [f"r{i:03d}" for i in range(len(self.r))],
            "n_params": self.n,
            "tokens": self.d,
        }
        frame.update({MIX_PREFIX + d: self.r[:, j] for j, d in enumerate(self.truth.domains)})
        frame.update({LOSS_PREFIX + d: self.loss[:, j] for j, d in enumerate(self.truth.domains)})
        return RunTable.from_frame(pd.DataFrame(frame), source="multifidelity")


def arm_menu(menu: Menu, arm: str) -> Menu:
    keep = {
        "mf": np.ones(len(menu), bool),
        "largest": menu.n_params == menu.n_params.max(),
        "smallest": menu.n_params == menu.n_params.min(),
    }[arm]
    return Menu(menu.n_params[keep], menu.steps[keep], menu.tokens[keep], menu.cost[keep])


def run_arm(truth: Truth, menu: Menu, arm: str, start: np.ndarray, spec, args, seed, say, rows):
    """One arm, one seed: its rounds' figures appended to ``rows`` (and to ``--csv``)."""
    sub = arm_menu(menu, arm)
    # the start: each size's full-step entry (its largest step count), in turn
    full = full_runs(sub)
    arm_runs = Arm(truth, menu, unit=float(menu.cost.max()))
    pick = np.resize(full, len(start))
    arm_runs.train(start, sub.n_params[pick], sub.tokens[pick], sub.cost[pick])
    for rnd in range(args.rounds + 1):
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            post = fit(
                arm_runs.table(),
                spec,
                draws=args.draws,
                tune=args.tune,
                chains=args.chains,
                random_seed=seed * 1000 + rnd,
                warn=False,
                progressbar=args.progress,
            )
        belief = Belief.from_posterior(post, weights=truth.weights, inputs=truth.target)
        rec = minimize_objective(
            belief.draws, truth.simplex, belief.weights, "mean", n_starts=2, random_seed=rnd
        ).mixture
        regret = truth.regret(rec)
        rows.append(
            {
                "seed": seed,
                "arm": arm,
                "round": rnd,
                "runs": len(arm_runs.r),
                "cost": arm_runs.cost,
                "regret": regret,
                "divergences": post.diagnostics.divergences,
                "max_rhat": post.diagnostics.max_rhat,
                "seconds": time.perf_counter() - t0,
            }
        )
        if args.csv:
            pd.DataFrame(rows).to_csv(args.csv, index=False)
        say(
            f"seed {seed} {arm:>8} round {rnd}: {len(arm_runs.r)} runs, cost "
            f"{arm_runs.cost:.3f}, regret {regret:.5f}, div {post.diagnostics.divergences}, "
            f"{rows[-1]['seconds']:.0f} s"
        )
        if rnd == args.rounds or arm_runs.cost >= args.budget:
            break
        cloud = Candidates.continuous(
            truth.simplex, args.candidates, belief=belief, random_seed=seed * 1000 + rnd
        )
        cands = menu_candidates(cloud, sub)
        strat = TargetInfo()
        batch = strat.propose(
            belief,
            cands,
            args.batch,
            existing=arm_runs.r,
            min_distance=args.min_distance,
            random_seed=seed * 1000 + rnd,
        )
        idx = batch.index
        arm_runs.train(batch.mixtures, cands.n_params[idx], cands.tokens[idx], cands.costs[idx])


def cost_to(frame: pd.DataFrame) -> float:
    """Compute spent when the regret is within TOL and stays there; inf if never."""
    ok = frame["regret"].to_numpy() <= TOL
    if not ok[-1]:
        return float("inf")
    last_bad = np.flatnonzero(~ok)
    first = 0 if len(last_bad) == 0 else int(last_bad[-1]) + 1
    return float(frame["cost"].to_numpy()[first])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--domains", type=int, default=3)
    ap.add_argument("--sizes", default="2e7,6e7,2e8", help="proxy sizes (parameters)")
    ap.add_argument("--target-factor", type=float, default=10.0, help="target / largest proxy")
    ap.add_argument("--noise", type=float, default=0.01)
    ap.add_argument("--start", type=int, default=9)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--budget", type=float, default=16.0, help="compute, largest-proxy runs")
    ap.add_argument("--candidates", type=int, default=512)
    ap.add_argument("--min-distance", type=float, default=0.05)
    ap.add_argument("--arms", default=",".join(ARMS))
    # the loop benchmarks' MCMC budget (pool_replay.py); the gate's retries apply
    # Smaller than fit's defaults (4 x 1000 after 1000), as in pool_replay.py: a replay refits
    # the law every round for every arm, and at the defaults one seed takes hours on 2 cores;
    # each fit still retries towards its gate and the rows report the gate it reached.
    ap.add_argument("--draws", type=int, default=300)
    ap.add_argument("--tune", type=int, default=300)
    ap.add_argument("--chains", type=int, default=2)
    ap.add_argument("--csv", help="write every round's figures here")
    ap.add_argument("--progress", action="store_true", help="the sampler's progress lines")
    ap.add_argument("--summarize", help="print the figures of a --csv file and stop")
    args = ap.parse_args()
    if args.summarize:
        summarize(pd.read_csv(args.summarize), float("nan"))
        return
    t_start = time.perf_counter()
    sizes = [float(v) for v in args.sizes.split(",")]
    tokens_per_param = np.array([10.0, 20.0])
    n = np.repeat(sizes, 2)
    steps = np.tile(tokens_per_param, len(sizes)) * n / TOKENS_PER_STEP
    menu = Menu.build(n, steps, grid=False)
    base = load_spec("scaling")
    # one record per run: the run effect (checkpoints of one run share an offset) has nothing
    # to pool, so the law is fitted without it
    spec = dataclasses.replace(
        base, name="scaling-final", hierarchy={**base.hierarchy, "run_effect": "off"}
    )
    rows = []
    for seed in range(args.seeds):
        truth = Truth(seed, args.domains, sizes, args.target_factor * max(sizes), args.noise)
        shift = truth.regret(optimum_at(truth, max(sizes)))
        print(
            f"seed {seed}: target optimum {np.round(truth.optimum, 3)}; the largest proxy's "
            f"own optimum has target regret {shift:.4f}",
            flush=True,
        )
        start = design.initial_design(truth.simplex, args.start, random_seed=seed, method="sobol")
        for arm in args.arms.split(","):
            run_arm(truth, menu, arm, start, spec, args, seed, lambda s: print(s, flush=True), rows)
    summarize(pd.DataFrame(rows), time.perf_counter() - t_start)


def summarize(frame: pd.DataFrame, wall: float) -> None:
    """Per-seed costs to 0.1 %, the sampler's worst diagnostics and the last line."""
    costs: dict[str, list[float]] = {a: [] for a in ARMS}
    final = []
    for (_, arm), g in frame.groupby(["seed", "arm"]):
        g = g.sort_values("round")
        costs[arm].append(cost_to(g))
        if arm == "mf":
            final.append(float(g["regret"].iloc[-1]))
    for arm in ARMS:
        if costs[arm]:
            print(
                f"{arm:>8}: cost to 0.1% per seed {costs[arm]} (median {np.median(costs[arm]):g})"
            )
    print(
        f"wall {wall:.0f} s; divergences max {frame['divergences'].max()}, "
        f"R-hat max {frame['max_rhat'].max():.3f}"
    )
    med = {a: float(np.median(costs[a])) if costs[a] else float("nan") for a in ARMS}
    print(
        f"multifidelity cost_mf={med['mf']:.3g} cost_largest={med['largest']:.3g} "
        f"cost_smallest={med['smallest']:.3g} regret_mf_at_budget={np.median(final):.5f}"
    )


def optimum_at(truth: Truth, n_params: float) -> np.ndarray:
    """The truth's optimum at a proxy's full run (N, 20 N tokens)."""
    return np.asarray(
        scaling.Scaling().draw_optima(
            {k: np.asarray(v)[None] for k, v in truth.params.items()},
            truth.weights,
            truth.simplex.lower,
            truth.simplex.upper,
            n_params=n_params,
            tokens=20.0 * n_params,
        )[0]
    )[0]


if __name__ == "__main__":
    main()
