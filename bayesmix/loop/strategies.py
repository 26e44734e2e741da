"""Acquisition strategies: one object per way of choosing a batch, behind one interface.

:class:`Strategy` is the interface: ``propose(belief, candidates, q, pending=, existing=,
min_distance=, random_seed=)`` returns a :class:`bayesmix.loop.batch.Batch` of ``q``
candidates, none within ``min_distance`` of a pending, completed or already chosen run (the
diversity guard). A strategy implements :meth:`Strategy.choose`. This module holds the two
that need no information score; the score strategies (``bald``, ``optimum-info``) are in
:mod:`bayesmix.loop.information`.

* ``random`` (:class:`RandomSelection`) - RegMix's design: Dirichlet(1) draws inside the
  feasible set (continuous) or random choice among the unused pool rows, drawn with
  probability proportional to ``cost ** -p``, without replacement (Efraimidis & Spirakis
  keys): with p = 1 each candidate receives the same expected compute instead of the same
  expected number of runs, so a baseline with mixed sizes does not spend its budget on the few
  large runs.
* ``thompson`` (:class:`ThompsonSampling`) - posterior (Thompson) sampling: for a random
  posterior draw s, propose the candidate minimising that draw's objective
  ``f_s(r) = sum_i w_i L_si(r)``. In continuous mode the candidates include every draw's
  optimum over the feasible set (:func:`bayesmix.decisions.optimize.draw_optima`), so the
  proposal is the per-draw optimum itself unless the diversity guard rules it out. Batches use
  a fresh draw per run (parallel Thompson sampling). When candidates differ in cost it picks
  the largest improvement per unit of compute, ``(f_s(best) - f_s(x)) / cost ** p``, where
  ``f_s(best)`` is the draw's objective at the best run already completed, pending or chosen
  (the worst candidate when there is none) - the expected-improvement-per-cost rule of Snoek
  et al. (2012) evaluated on one posterior sample. When the draw sees no improvement anywhere
  it takes the smallest deficit x cost (``(f_s(x) - f_s(best)) * cost ** p``); exact ties go to
  the cheaper run. With equal costs this is plain Thompson sampling (the draw's optimum).

``p`` is ``cost_power`` (default 1; 0 ignores costs and gives the cost-blind strategies).
"""

from __future__ import annotations

import numpy as np

from bayesmix import errors
from bayesmix._compat import SEED, renamed_kwargs
from bayesmix.loop import design
from bayesmix.loop.batch import (
    DEFAULT_MIN_DISTANCE,
    Batch,
    DiversityGuard,
    RunsSoFar,
    check_batch_size,
    finish_batch,
)
from bayesmix.loop.belief import Belief
from bayesmix.loop.candidates import Candidates


def check_cost_power(cost_power) -> float:
    """``cost_power`` as a float; OptionError unless it is >= 0."""
    if not cost_power >= 0:
        raise errors.OptionError(f"cost_power={cost_power!r} must be >= 0", param="cost_power")
    return float(cost_power)


class Strategy:
    """A way to choose a batch. :meth:`propose` returns a Batch of ``q`` candidates respecting
    the diversity guard; ``pending`` (k, M) are runs in flight, ``existing`` (k, M) runs with
    results (both may be None). Subclasses implement :meth:`choose`."""

    name = "strategy"

    def __init__(self, cost_power: float = 1.0):
        self.cost_power = check_cost_power(cost_power)

    @renamed_kwargs(**SEED)
    def propose(
        self,
        belief: Belief | None,
        candidates: Candidates,
        q: int,
        *,
        pending=None,
        existing=None,
        min_distance: float = DEFAULT_MIN_DISTANCE,
        random_seed: int | None = 0,
    ) -> Batch:
        """``q`` candidates chosen from ``candidates`` under ``belief``; the same
        ``random_seed`` gives the same batch."""
        q = check_batch_size(q)
        runs = RunsSoFar.of(pending, existing, len(candidates.train_domains))
        return self.choose(belief, candidates, q, runs, float(min_distance), random_seed)

    def choose(
        self,
        belief: Belief | None,
        candidates: Candidates,
        q: int,
        runs: RunsSoFar,
        min_distance: float,
        random_seed: int | None,
    ) -> Batch:
        """The batch of ``q`` (a checked positive int) around ``runs``."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class RandomSelection(Strategy):
    """RegMix's design: Dirichlet(``alpha``) mixtures in the feasible set (continuous) or random
    pool rows, drawn with probability proportional to ``cost ** -cost_power`` when the pool's
    costs differ (uniform otherwise); the diversity guard applies."""

    name = "random"

    def __init__(self, alpha: float = 1.0, cost_power: float = 1.0):
        super().__init__(cost_power)
        self.alpha = float(alpha)

    def choose(self, belief, candidates, q, runs, min_distance, random_seed) -> Batch:
        if not candidates.is_pool:
            mix = design.initial_design(
                candidates.constraints,
                q,
                random_seed=random_seed,
                method="dirichlet",
                alpha=self.alpha,
                min_distance=min_distance,
                existing=runs.all,
            )
            cands = Candidates(mix, candidates.train_domains, constraints=candidates.constraints)
            return Batch(self.name, mix, np.arange(q), np.full(q, np.nan), cands)
        guard = DiversityGuard(candidates, runs.all, min_distance)
        rng = np.random.default_rng(random_seed)
        cost = candidates.cost
        if cost is None or self.cost_power == 0 or np.all(cost == cost[0]):
            order = rng.permutation(len(candidates))
        else:
            # weighted sampling without replacement: sort by u^(1/w), w = cost^-p
            keys = np.log(rng.uniform(size=len(candidates))) * cost**self.cost_power
            order = np.argsort(-keys, kind="stable")
        chosen: list[int] = []
        for j in order:
            if len(chosen) == q:
                break
            if guard.allowed[j]:
                chosen.append(int(j))
                guard.take(j)
        return finish_batch(self.name, candidates, chosen, np.full(q, np.nan), q, min_distance)


class ThompsonSampling(Strategy):
    """Posterior sampling: each run of the batch is the allowed candidate minimising the
    objective of one random posterior draw (a new draw per run). When candidates differ in cost
    it is the largest improvement of that draw's objective over the best run so far per unit of
    cost (``cost ** cost_power``; module docstring); with equal costs, the draw's optimum."""

    name = "thompson"

    def choose(self, belief, candidates, q, runs, min_distance, random_seed) -> Batch:
        taken = runs.all
        values = belief.loss(candidates.mixtures)  # (S, N)
        cost = candidates.cost
        aware = cost is not None and self.cost_power > 0 and not np.all(cost == cost[0])
        factor = cost**self.cost_power if aware else None
        # the best objective per draw among runs done or in flight (updated as runs are chosen)
        best = (
            belief.loss(taken).min(axis=1)
            if aware and len(taken)
            else np.full(belief.n_samples, np.inf)
        )
        guard = DiversityGuard(candidates, taken, min_distance)
        rng = np.random.default_rng(random_seed)
        order = np.concatenate(
            [rng.permutation(belief.n_samples) for _ in range(-(-q // belief.n_samples))]
        )
        chosen, scores = [], []
        for s in order[:q]:
            if not guard.allowed.any():
                break
            if not aware:
                j = int(np.argmin(np.where(guard.allowed, values[s], np.inf)))
            else:
                assert factor is not None  # set when aware
                j = cost_aware_pick(values[s], best[s], factor, guard.allowed)
            chosen.append(j)
            scores.append(float(values[s, j]))
            guard.take(j)
            if aware:
                best = np.minimum(best, values[:, j])
        return finish_batch(self.name, candidates, chosen, scores, q, min_distance)


def cost_aware_pick(
    values: np.ndarray, best: float, factor: np.ndarray, allowed: np.ndarray
) -> int:
    """Thompson's choice with costs for one draw: the largest improvement over ``best`` per
    unit of cost (``factor`` = cost^p); when no allowed candidate improves, the smallest
    deficit x cost; exact ties to the cheapest, then the first listed."""
    ref = best if np.isfinite(best) else float(np.max(values[allowed]))
    gain = ref - values
    score = np.where(gain > 0, gain / factor, gain * factor)
    score = np.where(allowed, score, -np.inf)
    top = np.flatnonzero(score == score.max())
    return int(top[np.argmin(factor[top])])
