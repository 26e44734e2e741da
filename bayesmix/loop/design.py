"""Initial designs: mixtures to train before any run has been fitted.

:func:`initial_design` spreads ``n`` mixtures over the feasible set of a
:class:`~bayesmix.data.constraints.Constraints` box (simplex, minimum/maximum/fixed shares, token
caps) and drops near-duplicates, so that the first proxy runs cover the space without wasting
compute.
:func:`select_random` is the random baseline on a finite pool of candidate runs (RegMix's design
when the pool was drawn from a Dirichlet).

How points are placed. The minimum shares ``lower`` are set aside; the free mass
``1 - sum(lower)`` is spread over the domains whose box has room (``upper > lower``):

* ``method="sobol"``: scrambled Sobol points in ``[0, 1)^(K-1)`` mapped to the simplex by
  stick-breaking with Beta inverse CDFs (exactly Dirichlet(alpha) in distribution; with
  ``alpha=1`` uniform on the simplex, quasi-random so evenly spread);
* ``method="dirichlet"``: independent Dirichlet(alpha) draws, as RegMix does.

Points above a maximum share are rejected, so the design follows the chosen distribution
restricted to the box. When the box is so tight that fewer than ``MIN_ACCEPTANCE`` of the points
land inside it, the remaining points are placed by a bounded stick-breaking instead: domains in a
random order, each share drawn from the Beta inverse CDF truncated to the interval that keeps the
rest feasible. That always lands in the box and reaches all of it (not uniformly). Points closer
than ``min_distance`` (Euclidean, in shares) to a kept or an ``existing`` mixture are skipped.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from bayesmix._compat import SEED, renamed_kwargs
from bayesmix.data.constraints import FEASIBILITY_ATOL, Constraints
from bayesmix.errors import DesignError

METHODS = ("sobol", "dirichlet")
#: Default smallest Euclidean distance between two design mixtures (in shares): runs closer than
#: one percentage point of mixture are near-duplicates that teach little.
DEFAULT_MIN_DISTANCE = 0.01
#: Candidates drawn per batch (a power of two keeps Sobol's balance properties).
BATCH = 4096
#: Give up after this many batches in a row add no mixture (the feasible set is saturated).
STALL_BATCHES = 8
#: Below this fraction of candidates inside the box, switch from rejection to bounded
#: stick-breaking.
MIN_ACCEPTANCE = 0.01


@renamed_kwargs(**SEED)
def initial_design(
    constraints: Constraints,
    n: int,
    *,
    random_seed: int | None,
    method: str = "sobol",
    alpha: float | Iterable[float] = 1.0,
    min_distance: float | None = None,
    existing: np.ndarray | None = None,
    max_candidates: int | None = None,
) -> np.ndarray:
    """``n`` distinct mixtures (array (n, M), columns in ``constraints.domains`` order).

    Every row sums to 1 and lies in the box; no two rows, and no row and a row of ``existing``
    (k, M), are closer than ``min_distance`` (default :data:`DEFAULT_MIN_DISTANCE`). The same
    ``random_seed`` gives the same design. ``alpha`` is the Dirichlet concentration, a number or
    one per domain. Raises DesignError when the feasible set cannot hold ``n`` such mixtures
    within ``max_candidates`` draws (default ``max(100_000, 200 n)``) or when
    :data:`STALL_BATCHES` batches in a row add nothing.
    """
    m = len(constraints.domains)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise DesignError(f"the number of design mixtures must be a positive integer, got {n!r}")
    if method not in METHODS:
        raise DesignError(f"unknown design method {method!r}", hint=f"use one of {METHODS}")
    conc = _concentration(alpha, m)
    dist = DEFAULT_MIN_DISTANCE if min_distance is None else float(min_distance)
    if not np.isfinite(dist) or dist < 0:
        raise DesignError(f"min_distance={min_distance!r} must be >= 0", param="min_distance")
    taken = _existing(existing, m)
    budget = max(100_000, 200 * n) if max_candidates is None else int(max_candidates)
    rng = np.random.default_rng(random_seed)
    lower, upper = np.asarray(constraints.lower, float), np.asarray(constraints.upper, float)
    free = np.flatnonzero(upper - lower > FEASIBILITY_ATOL)
    mass = 1.0 - lower.sum()
    if free.size <= 1 or mass <= FEASIBILITY_ATOL:
        return _single_mixture(constraints, free, mass, taken, dist, n)
    box = _Box(lower, free, np.minimum(upper[free] - lower[free], mass), mass, conc[free])
    kept, drawn = _sample(box, method, rng, taken, dist, n, budget)
    if len(kept) < n:
        raise DesignError(
            f"found only {len(kept)} of {n} mixtures at least {dist:g} apart"
            + (f" and from {len(taken)} existing runs" if len(taken) else "")
            + f" in the feasible set after {drawn} candidates",
            hint=f"ask for fewer mixtures, lower min_distance={dist:g}, or relax the constraints",
            param="min_distance",
        )
    return kept


@dataclass(frozen=True)
class _Box:
    """The part of the feasible set a design samples: ``lower`` (M,) minimum shares, ``free``
    the indices of domains with room, ``head`` their room above the minimum (capped at
    ``mass``), ``mass`` the share left after the minimums, ``alpha`` their concentrations."""

    lower: np.ndarray
    free: np.ndarray
    head: np.ndarray
    mass: float
    alpha: np.ndarray


def _sample(box: _Box, method, rng, taken, dist, n, budget) -> tuple[np.ndarray, int]:
    """Up to ``n`` spread mixtures (k, M) in ``box`` and the number of candidates drawn:
    batches of :data:`BATCH` by rejection, or by bounded stick-breaking once fewer than
    :data:`MIN_ACCEPTANCE` land inside; stops after ``budget`` candidates or
    :data:`STALL_BATCHES` batches in a row that add nothing."""
    from scipy.stats import qmc  # imported here: scipy.stats costs most of the CLI start-up time

    k = box.free.size
    sampler = qmc.Sobol(d=k - 1, scramble=True, rng=rng) if method == "sobol" else None
    kept = np.empty((0, len(box.lower)))
    drawn = inside = stalled = 0
    bounded = False
    while len(kept) < n and drawn < budget and stalled < STALL_BATCHES:
        size = min(BATCH, budget - drawn)
        u = sampler.random(BATCH)[:size] if sampler is not None else rng.random((size, k - 1))
        if bounded:
            x = _bounded_stick_breaking(u, box.head, box.mass, box.alpha, rng)
        else:
            unit = _stick_breaking(u, box.alpha) if sampler is not None else None
            x = (unit if unit is not None else rng.dirichlet(box.alpha, size)) * box.mass
            ok = np.all(x <= box.head, axis=1)
            x = x[ok]
            inside += int(ok.sum())
        drawn += size
        r = np.tile(box.lower, (len(x), 1))
        r[:, box.free] += x
        new = _spread(r, np.vstack([taken, kept]), dist, n - len(kept))
        stalled = 0 if len(new) else stalled + 1
        kept = np.vstack([kept, new])
        if not bounded and inside < MIN_ACCEPTANCE * drawn:
            bounded = True
    return kept, drawn


def _single_mixture(constraints, free, mass, taken, dist, n) -> np.ndarray:
    """The design when the box pins every share (all fixed, or one free domain takes the
    rest): the one feasible mixture, if ``n`` is 1 and it is not too close to ``taken``."""
    point = np.asarray(constraints.lower, float).copy()
    if free.size == 1:
        point[free] += mass
    point /= point.sum()
    kept = _spread(point[None], taken, dist, n)
    if len(kept) < n:
        raise DesignError(
            f"the constraints leave a single feasible mixture ({_fmt(point, constraints)}); "
            f"cannot place {n} distinct ones"
            + (" (and it is within min_distance of an existing run)" if not len(kept) else ""),
            hint="relax the minimum/fixed shares or caps",
        )
    return kept


def _concentration(alpha, m: int) -> np.ndarray:
    """The Dirichlet concentration (M,) from a number or one per domain; DesignError unless
    positive and finite."""
    given: Any = alpha  # a number, or any iterable of one per domain
    conc: np.ndarray = (
        np.broadcast_to(np.asarray(given, float), (m,))
        if np.ndim(given) == 0
        else np.asarray(list(given), float)
    )
    if conc.shape != (m,) or not np.all(np.isfinite(conc) & (conc > 0)):
        raise DesignError(
            f"alpha must be a positive number or {m} positive numbers (one per "
            f"training domain), got {conc.tolist()}"
        )
    return conc


def _existing(existing, m: int) -> np.ndarray:
    """Existing mixtures as a finite array (k, M) (k = 0 when None or empty)."""
    taken = np.empty((0, m)) if existing is None else np.asarray(existing, float)
    if taken.size == 0:
        taken = np.empty((0, m))
    if taken.ndim != 2 or taken.shape[1] != m or not np.all(np.isfinite(taken)):
        raise DesignError(
            f"existing mixtures must be a finite array (k, {m}), one column per "
            f"training domain, got shape {taken.shape}"
        )
    return taken


@renamed_kwargs(**SEED)
def select_random(
    pool: np.ndarray, q: int, *, random_seed: int | None, exclude: Iterable[int] | None = None
) -> np.ndarray:
    """Indices of ``q`` rows of ``pool`` (N, M) chosen uniformly without replacement.

    The random baseline of pool-based evaluation: rows listed in ``exclude`` (already run) are
    never chosen. Returns an int array (q,) in the order drawn; the same ``random_seed`` gives
    the same choice. Raises DesignError if fewer than ``q`` rows are left.
    """
    n_pool = len(pool)
    if isinstance(q, bool) or not isinstance(q, (int, np.integer)) or q < 0:
        raise DesignError(f"the number of runs to select must be an integer >= 0, got {q!r}")
    excluded = np.unique(np.asarray(list(exclude) if exclude is not None else [], dtype=int))
    if excluded.size and (excluded.min() < 0 or excluded.max() >= n_pool):
        raise DesignError(f"exclude holds an index outside the pool of {n_pool} rows")
    left = np.setdiff1d(np.arange(n_pool), excluded)
    if q > left.size:
        raise DesignError(
            f"cannot select {q} runs: only {left.size} of {n_pool} pool rows are not excluded",
            hint="select fewer runs or use a larger pool",
        )
    return np.random.default_rng(random_seed).choice(left, size=q, replace=False)


# ---------------------------------------------------------------------------------- helpers
def _stick_breaking(u: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Map uniforms (N, K-1) to Dirichlet(alpha) points (N, K) on the unit simplex.

    Break j takes ``v_j ~ Beta(alpha_j, sum(alpha_{j+1:}))`` of what is left (inverse CDF of the
    j-th uniform), which is Dirichlet(alpha) exactly; monotone in each uniform, so it keeps a
    quasi-random sequence evenly spread.
    """
    from scipy import stats

    n, k = len(u), len(alpha)
    rest = np.cumsum(alpha[::-1])[::-1]  # sum of alpha[j:]
    x = np.empty((n, k))
    left = np.ones(n)
    for j in range(k - 1):
        v = stats.beta.ppf(np.clip(u[:, j], 1e-12, 1 - 1e-12), alpha[j], rest[j + 1])
        x[:, j] = left * v
        left = left - x[:, j]
    x[:, -1] = np.maximum(left, 0.0)
    return x


def _bounded_stick_breaking(
    u: np.ndarray, head: np.ndarray, mass: float, alpha: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Map uniforms (N, K-1) to points (N, K) with ``0 <= x <= head`` summing to ``mass``.

    Domains are visited in a random order per point; each share is drawn from the Beta inverse
    CDF truncated to the interval that still lets the remaining domains absorb the rest.
    """
    from scipy import stats

    n, k = len(u), len(head)
    order = np.argsort(rng.random((n, k)), axis=1)  # a random permutation per point
    h = head[order]
    a = alpha[order]
    room_after = np.cumsum(h[:, ::-1], axis=1)[:, ::-1] - h  # sum of head over later domains
    alpha_after = np.cumsum(a[:, ::-1], axis=1)[:, ::-1] - a
    x = np.empty((n, k))
    left = np.full(n, mass)
    for j in range(k - 1):
        lo = np.clip(left - room_after[:, j], 0.0, None)
        hi = np.minimum(h[:, j], left)
        safe = np.where(left > 0, left, 1.0)
        dist = stats.beta(a[:, j], alpha_after[:, j])
        c_lo, c_hi = dist.cdf(lo / safe), dist.cdf(hi / safe)
        v = dist.ppf(c_lo + np.clip(u[:, j], 0.0, 1.0) * (c_hi - c_lo)) * safe
        x[:, j] = np.clip(np.nan_to_num(v, nan=lo), lo, np.maximum(lo, hi))
        left = left - x[:, j]
    x[:, -1] = np.clip(left, 0.0, h[:, -1])
    out = np.empty_like(x)
    np.put_along_axis(out, order, x, axis=1)
    return out


def _spread(candidates: np.ndarray, taken: np.ndarray, dist: float, want: int) -> np.ndarray:
    """Greedily keep up to ``want`` candidates (in order) at least ``dist`` from ``taken`` and
    from each other."""
    if len(taken) and len(candidates) and dist > 0:
        candidates = candidates[_min_distance(candidates, taken) >= dist]
    kept = np.empty((min(want, len(candidates)), candidates.shape[1]))
    count = 0
    for c in candidates:
        if count >= want:
            break
        if dist > 0 and count and _min_distance(c[None], kept[:count])[0] < dist:
            continue
        kept[count] = c
        count += 1
    return kept[:count]


def _min_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distance from each row of ``a`` (N, M) to its nearest row of ``b`` (K, M)."""
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.clip(sq, 0.0, None)).min(axis=1)


def _fmt(point: np.ndarray, constraints: Constraints) -> str:
    return ", ".join(f"{d}={v:.4g}" for d, v in zip(constraints.domains, point))
