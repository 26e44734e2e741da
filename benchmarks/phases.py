"""Multi-phase schedules on simulated two-phase runs: regret of the schedule chosen from a fit of
``m4+phases`` against the true optimal schedule, and the regret of the best single static
mixture (the true law's own best, an oracle).

Truth (:func:`truth`): four training and validation domains web, code, books, hq; M4
(``L_i = m_i (1 - rho_i + rho_i exp(t_i . r))``, rho = 0.15, ``t = -3`` on the diagonal and
``-1.5`` more in hq's column: hq helps every validation domain; rows centred) at the effective
mixture of :mod:`bayesmix.laws.phases` with late emphasis ``gamma`` (``--gamma``, default 1.5:
a token at the end of training counts e^1.5 = 4.5 times one at the start).

Decision: two phases of 80% and 20% of the steps (``FRACTIONS``); hq is scarce: at most 6% of
the run's tokens (whole-run bound, ``HQ_TOKENS``) and at most 30% of the annealing phase; equal
weights over validation domains. A static mixture can give hq at most 6% in every phase; a
schedule can put it all in the last phase, where it counts more: the truth rewards a schedule.

Runs (:func:`bayesmix.model.simulation_phases.simulate_phases`): ``--runs`` (default 40) runs
with the same phase shares, each phase's mixture Dirichlet(1), a quarter of them static, Gaussian
noise sd ``--noise`` (0.01 nats); ``--reps`` replications (seeds ``--seed`` + 0, 1, ...), each
fitted with the ``phases`` specification (``--draws``, ``--tune``, ``--chains``).

Regret = true loss (equal-weight mean over validation domains, nats per token) minus that of the
true optimal schedule (the package's schedule optimiser on the true law). ``regret_schedule``:
of the schedule chosen from the fit (mean over replications); ``regret_static``: of the true
law's best static mixture under the same bounds. Goal: ``regret_schedule < regret_static / 2``.
Last line::

    phases regret_schedule=.. regret_static=..

Run: ``PYTHONPATH=. .venv/bin/python benchmarks/phases.py [--runs N --reps N --seed S --gamma G
--noise SD --draws N --tune N --chains N]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import pandas as pd

import bayesmix as bm
from bayesmix.data.constraints import Constraints
from bayesmix.decisions.schedule import decide_schedule, schedule_loss
from bayesmix.model.simulation_phases import simulate_phases

DOMAINS = ("web", "code", "books", "hq")
LEVEL = np.array([3.2, 2.0, 3.0, 2.6])  # m: loss at the uniform mixture, nats per token
FRACTIONS = (0.8, 0.2)
HQ_TOKENS = 0.06  # hq's largest share of the whole run's tokens
HQ_ANNEAL = 0.3  # hq's largest share of the annealing phase
LAW = "m4+phases"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def truth(gamma: float) -> dict[str, np.ndarray]:
    """The true law's parameters, one draw without a draw axis."""
    t = np.eye(4) * -3.0
    t[:, DOMAINS.index("hq")] += -1.5
    t = t - t.mean(axis=1, keepdims=True)
    return {"m": LEVEL, "rho": np.full(4, 0.15), "t": t, "late_emphasis": np.array(gamma)}


def constraints() -> tuple[list[Constraints], Constraints]:
    """Per-phase bounds (hq <= 30% of the annealing phase) and the whole-run bound (hq <= 6%)."""
    phases = [Constraints.build(DOMAINS), Constraints.build(DOMAINS, max_share={"hq": HQ_ANNEAL})]
    return phases, Constraints.build(DOMAINS, max_share={"hq": HQ_TOKENS})


def true_loss(params, mixtures) -> float:
    one = {k: np.asarray(v, float)[None] for k, v in params.items()}
    return float(schedule_loss(LAW, one, FRACTIONS, mixtures, np.full(4, 0.25))[0])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--noise", type=float, default=0.01)
    ap.add_argument("--gamma", type=float, default=1.5)
    ap.add_argument("--seed", type=int, default=0)
    # the sampler: fit's defaults unless given
    ap.add_argument("--draws", type=int, help="draws per chain (default: fit's)")
    ap.add_argument("--tune", type=int, help="tuning steps per chain (default: fit's)")
    ap.add_argument("--chains", type=int, help="chains (default: fit's)")
    args = ap.parse_args(argv)
    mcmc = {k: v for k in ("draws", "tune", "chains") if (v := getattr(args, k)) is not None}
    t0 = time.perf_counter()
    params = truth(args.gamma)
    per_phase, whole = constraints()
    one = {k: np.asarray(v, float)[None] for k, v in params.items()}
    best = decide_schedule(LAW, FRACTIONS, constraints=per_phase, whole=whole, params=one)
    f_opt = true_loss(params, best.mixtures.to_numpy())
    static = np.broadcast_to(best.static.to_numpy(), (len(FRACTIONS), len(DOMAINS)))
    regret_static = true_loss(params, static) - f_opt
    print(
        f"truth: m4+phases, late emphasis gamma {args.gamma:g}; phases {FRACTIONS}; hq <= "
        f"{HQ_TOKENS:g} of the run, <= {HQ_ANNEAL:g} of the annealing phase"
    )
    print("true optimal schedule (rows: phases) and the best static mixture:")
    table = best.mixtures.copy()
    table.loc["static"] = best.static
    print(table.to_string(float_format=lambda v: f"{v:.3f}"))
    print(f"true loss: schedule {f_opt:.4f}, static {f_opt + regret_static:.4f} nats/token")
    regrets, regrets_fit_static, gammas, gates = [], [], [], []
    for rep in range(args.reps):
        seed = args.seed + rep
        runs = simulate_phases(
            LAW, params, DOMAINS, DOMAINS, fractions=FRACTIONS, n_runs=args.runs,
            noise_sd=args.noise, random_seed=seed,
        )  # fmt: skip
        log(f"rep {rep}: fitting phases to {runs.n_runs} runs")
        post = bm.fit(runs, "phases", random_seed=seed, warn=False, **mcmc)
        chosen = decide_schedule(post, FRACTIONS, constraints=per_phase, whole=whole)
        regrets.append(true_loss(params, chosen.mixtures.to_numpy()) - f_opt)
        fit_static = np.broadcast_to(chosen.static.to_numpy(), static.shape)
        regrets_fit_static.append(true_loss(params, fit_static) - f_opt)
        g = post.law_params()["late_emphasis"]
        gammas.append((float(np.median(g)), float(np.std(g))))
        gates.append(post.diagnostics.ok)
        print(
            f"seed {seed}: schedule regret {regrets[-1]:.5f}, fitted static regret "
            f"{regrets_fit_static[-1]:.5f}, gamma {gammas[-1][0]:.2f} +- {gammas[-1][1]:.2f}, "
            f"gate {'passed' if gates[-1] else 'FAILED'}"
        )
        print("  chosen schedule: " + "; ".join(
            f"phase {k}: " + ", ".join(f"{d} {v:.3f}" for d, v in row.items())
            for k, row in chosen.mixtures.iterrows()
        ))  # fmt: skip
    regret_schedule = float(np.mean(regrets))
    print(
        f"mean over {args.reps} replications: schedule {regret_schedule:.5f}, fitted static "
        f"{np.mean(regrets_fit_static):.5f}, oracle static {regret_static:.5f} nats/token"
    )
    met = regret_schedule < regret_static / 2
    print(f"goal regret_schedule < regret_static / 2: {'met' if met else 'NOT met'}")
    load = os.getloadavg()[0]
    print(f"wall {time.perf_counter() - t0:.0f} s, 1-minute load {load:.2f}")
    print(f"phases regret_schedule={regret_schedule:.5f} regret_static={regret_static:.5f}")


if __name__ == "__main__":
    pd.set_option("display.width", 120)
    main()
