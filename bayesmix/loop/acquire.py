"""Active learning: which proxy runs to train next, chosen from posterior draws.

Pipeline: a :class:`~bayesmix.loop.belief.Belief` (posterior draws of the mixing law, its noise
scales and the objective's validation-domain weights) -> :class:`~bayesmix.loop.candidates.
Candidates` (a cloud of mixtures inside the feasible set, or a finite pool of runs one could
train) -> a strategy's ``propose`` -> a :class:`~bayesmix.loop.batch.Batch` of ``q`` mixtures.
No Gaussian process: every quantity is computed from the draws. This module is the front door:
:func:`propose` (a batch from a belief), :func:`initial_batch` (a batch before any result) and
:func:`get_strategy` (a strategy by name); the parts live in their own modules:

* :mod:`bayesmix.loop.belief` - the draws an acquisition works on;
* :mod:`bayesmix.loop.candidates` - pools, continuous clouds and their costs;
* :mod:`bayesmix.loop.batch` - the batch, the runs it keeps away from and the diversity guard
  (no proposal within ``min_distance`` of a pending, completed or already chosen run);
* :mod:`bayesmix.loop.strategies` - the strategy interface, ``random`` and ``thompson``;
* :mod:`bayesmix.loop.information` - ``optimum-info`` and ``bald``, which condition on pending
  runs and the batch so far;
* :mod:`bayesmix.loop.fidelity` - ``target-info`` and the proxy menu: (mixture, size, steps)
  candidates with costs, chosen for what they tell about the target-scale optimum per cost.

Every proposal is checked with :meth:`bayesmix.data.constraints.Constraints.contains`.
"""

from __future__ import annotations

import numpy as np

from bayesmix import errors
from bayesmix._compat import SEED, renamed_kwargs
from bayesmix.data.constraints import Constraints
from bayesmix.decisions.feasible import check_constraints
from bayesmix.loop import design
from bayesmix.loop.batch import DEFAULT_MIN_DISTANCE, Batch, RunsSoFar, check_batch_size
from bayesmix.loop.belief import DEFAULT_MAX_DRAWS, Belief
from bayesmix.loop.candidates import DEFAULT_CANDIDATES, Candidates
from bayesmix.loop.fidelity import Menu, TargetInfo, menu_candidates
from bayesmix.loop.information import BALD, DEFAULT_GROUPS, OptimumInfo
from bayesmix.loop.strategies import RandomSelection, Strategy, ThompsonSampling

__all__ = [
    "DEFAULT_CANDIDATES",
    "DEFAULT_GROUPS",
    "DEFAULT_MAX_DRAWS",
    "DEFAULT_MIN_DISTANCE",
    "MULTIFIDELITY_STRATEGIES",
    "STRATEGIES",
    "BALD",
    "Batch",
    "Belief",
    "Candidates",
    "Menu",
    "OptimumInfo",
    "RandomSelection",
    "Strategy",
    "TargetInfo",
    "ThompsonSampling",
    "get_strategy",
    "initial_batch",
    "menu_candidates",
    "propose",
]

#: Strategy names accepted by :func:`get_strategy`, each with the class that implements it.
STRATEGY_CLASSES: dict[str, type[Strategy]] = {
    "thompson": ThompsonSampling,
    "optimum-info": OptimumInfo,
    "bald": BALD,
    "random": RandomSelection,
    "target-info": TargetInfo,
}
#: The single-scale strategies (any law, any candidates).
STRATEGIES = tuple(k for k in STRATEGY_CLASSES if k != "target-info")
#: Strategies that need (mixture, size, steps) candidates and a law over scale
#: (:mod:`bayesmix.loop.fidelity`).
MULTIFIDELITY_STRATEGIES = ("target-info",)


def get_strategy(name: str | Strategy, **options) -> Strategy:
    """A strategy by name (:data:`STRATEGIES`, :data:`MULTIFIDELITY_STRATEGIES`); ``options``
    go to its constructor (e.g. ``cost_power``, ``n_groups``)."""
    if isinstance(name, Strategy):
        return name
    key = str(name).strip().lower().replace("_", "-")
    if key not in STRATEGY_CLASSES:
        raise errors.OptionError(
            f"unknown strategy {name!r}", hint=f"use one of {', '.join(STRATEGY_CLASSES)}"
        )
    return STRATEGY_CLASSES[key](**options)


@renamed_kwargs(**SEED)
def propose(
    belief: Belief,
    q: int,
    *,
    strategy: str | Strategy = "thompson",
    constraints: Constraints | None = None,
    pool: Candidates | None = None,
    pending=None,
    existing=None,
    min_distance: float | None = None,
    n_candidates: int = DEFAULT_CANDIDATES,
    random_seed: int | None = 0,
    **options,
) -> Batch:
    """Propose ``q`` runs from ``belief``: over ``pool`` when given, else over the feasible set
    of ``constraints`` (the plain simplex when None). ``pending``/``existing``: mixtures (k, M)
    of runs in flight / with results. Every proposal satisfies the constraints. Same
    ``random_seed``, same batch."""
    strat = get_strategy(strategy, **options)
    dist = DEFAULT_MIN_DISTANCE if min_distance is None else float(min_distance)
    if not np.isfinite(dist) or dist < 0:
        raise errors.OptionError(
            f"min_distance={min_distance!r} must be >= 0", param="min_distance"
        )
    constraints = check_constraints(constraints, belief.train_domains)
    if pool is None:
        needs_belief = not isinstance(strat, RandomSelection)
        pool = Candidates.continuous(
            constraints,
            n_candidates,
            belief=belief if needs_belief else None,
            random_seed=random_seed,
        )
    elif tuple(pool.train_domains) != tuple(belief.train_domains):
        raise errors.DomainNameError("the pool's training domains differ from the posterior's")
    batch = strat.propose(
        belief,
        pool,
        q,
        pending=pending,
        existing=existing,
        min_distance=dist,
        random_seed=random_seed,
    )
    batch.notes.extend(pool.notes)
    _verify(batch.mixtures, constraints)
    return batch


@renamed_kwargs(**SEED)
def initial_batch(
    constraints: Constraints,
    q: int,
    *,
    pool: Candidates | None = None,
    pending=None,
    existing=None,
    min_distance: float | None = None,
    random_seed: int | None = 0,
    cost_power: float = 1.0,
) -> Batch:
    """A batch before any result: space-filling Sobol points in the feasible set
    (design.initial_design), or random rows of ``pool`` (weighted by ``cost ** -cost_power``
    when their costs differ, see :class:`RandomSelection`), away from pending/existing runs
    (by ``min_distance``, default the initial designs' ``design.DEFAULT_MIN_DISTANCE``).
    Same ``random_seed``, same batch."""
    q = check_batch_size(q)
    dist = design.DEFAULT_MIN_DISTANCE if min_distance is None else float(min_distance)
    if pool is None:
        runs = RunsSoFar.of(pending, existing, len(constraints.domains))
        mix = design.initial_design(
            constraints,
            q,
            random_seed=random_seed,
            method="sobol",
            min_distance=dist,
            existing=runs.all,
        )
        batch = Batch(
            "initial-sobol",
            mix,
            np.arange(q),
            np.full(q, np.nan),
            Candidates(mix, tuple(constraints.domains), constraints=constraints),
        )
    else:
        batch = RandomSelection(cost_power=cost_power).propose(
            None,
            pool,
            q,
            pending=pending,
            existing=existing,
            min_distance=dist,
            random_seed=random_seed,
        )
        batch.strategy = "initial-random"
        batch.notes.extend(pool.notes)
    _verify(batch.mixtures, constraints)
    return batch


def _verify(mixtures: np.ndarray, constraints: Constraints) -> None:
    inside = constraints.contains(mixtures)
    if not np.all(inside):
        raise errors.InfeasibleError(
            f"proposal {int(np.flatnonzero(~inside)[0]) + 1} violates the constraints "
            "(numerical failure)",
            hint="report this with the constraints used",
        )
