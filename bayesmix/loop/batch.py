"""A proposed batch and the bookkeeping every acquisition shares while choosing it.

:class:`Batch` holds the chosen mixtures (q, M) with their scores, costs and the candidates
they came from. :class:`RunsSoFar` holds the runs a batch must keep away from: pending runs
(proposed or running, no results yet) and existing runs (with results), both (k, M) in
training-domain order. :class:`DiversityGuard` tracks which candidates are still allowed: none
within ``min_distance`` (Euclidean, in shares) of a pending, existing or already chosen run,
and, in a finite pool, no row that was already run. :func:`finish_batch` turns the chosen
candidate indices into a Batch, or a DesignError when fewer than ``q`` were found.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from bayesmix import errors
from bayesmix.data.table import MIX_PREFIX

if TYPE_CHECKING:
    from bayesmix.loop.candidates import Candidates

#: Diversity guard: smallest Euclidean distance (in shares) between a proposal and any pending,
#: completed or chosen run. Larger than the initial designs' 0.01 on purpose: under the Gaussian
#: approximation a replicate of the most uncertain run keeps half its information (its noise
#: averages out), so the information strategies would otherwise stack a batch on one spot.
DEFAULT_MIN_DISTANCE = 0.05
#: Name of the score column of :meth:`Batch.frame` per strategy.
SCORE_NAMES = {
    "thompson": "draw_objective",
    "optimum-info": "information",
    "bald": "information",
    "target-info": "information",
}


@dataclass
class Batch:
    """A proposed batch: ``mixtures`` (q, M), ``index`` into the candidates (q,), ``score``
    the strategy's score when each was chosen (information in nats for the score strategies,
    the draw's objective in nats for thompson, NaN for random), ``cost`` relative costs or
    None, and the candidates chosen from."""

    strategy: str
    mixtures: np.ndarray
    index: np.ndarray
    score: np.ndarray
    candidates: Candidates
    cost: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.mixtures)

    @property
    def ids(self) -> list[str] | None:
        """Pool ids of the chosen rows (pool mode), else None."""
        if self.candidates.ids is None:
            return None
        return [self.candidates.ids[i] for i in self.index]

    def planned(self, name: str) -> np.ndarray | None:
        """n_params / steps / tokens of the chosen candidates, or None."""
        values = getattr(self.candidates, name)
        return None if values is None else np.asarray(values)[self.index]

    def frame(self) -> pd.DataFrame:
        """Tidy table: [candidate], [score], [cost, n_params, steps, tokens], mix.<domain>...

        The score column is named for what it holds: ``information`` (nats; bald,
        optimum-info), ``draw_objective`` (the sampled draw's objective, nats; thompson);
        none for random or initial designs."""
        out = pd.DataFrame(index=range(len(self)))
        name = SCORE_NAMES.get(self.strategy)
        if name is not None:
            out[name] = self.score
        if self.ids is not None:
            out.insert(0, "candidate", self.ids)
        if self.cost is not None:
            out["cost"] = self.cost
        for name in ("n_params", "steps", "tokens"):
            values = self.planned(name)
            if values is not None:
                out[name] = values
        for j, d in enumerate(self.candidates.train_domains):
            out[MIX_PREFIX + d] = self.mixtures[:, j]
        return out


def as_matrix(mixtures, m: int) -> np.ndarray:
    """Mixtures (k, M) as a float array: None, an empty array or a DataFrame accepted; a
    width other than ``m`` is a FormatError."""
    if mixtures is None:
        return np.empty((0, m))
    if isinstance(mixtures, pd.DataFrame):
        mixtures = mixtures.to_numpy(float)
    arr = np.asarray(mixtures, float)
    if arr.size == 0:
        return np.empty((0, m))
    arr = np.atleast_2d(arr)
    if arr.shape[1] != m:
        raise errors.FormatError(f"runs have {arr.shape[1]} shares, expected {m}")
    return arr


@dataclass(frozen=True)
class RunsSoFar:
    """The runs a batch is chosen around: ``pending`` (k, M) in flight, ``existing`` (j, M)
    with results."""

    pending: np.ndarray
    existing: np.ndarray

    @classmethod
    def of(cls, pending, existing, m: int) -> RunsSoFar:
        """From mixtures in any form :func:`as_matrix` reads (None for none)."""
        return cls(as_matrix(pending, m), as_matrix(existing, m))

    @property
    def all(self) -> np.ndarray:
        """Pending then existing runs (k + j, M)."""
        return np.vstack([self.pending, self.existing])


def nearest_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance from each row of ``a`` (N, M) to its nearest row of ``b`` (k, M); inf if k=0."""
    if len(b) == 0:
        return np.full(len(a), np.inf)
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.clip(sq, 0.0, None)).min(axis=1)


class DiversityGuard:
    """Which candidates are still allowed: far enough from every pending, completed and chosen
    run (``allowed``, a boolean mask over the candidates)."""

    def __init__(self, candidates: Candidates, taken: np.ndarray, min_distance: float):
        self.x = candidates.mixtures
        self.dist = float(min_distance)
        self.allowed = (
            nearest_distance(self.x, taken) >= self.dist
            if self.dist > 0
            else np.ones(len(self.x), bool)
        )
        if candidates.is_pool and len(taken):
            # a pool row that was already run is never proposed again, whatever the distance
            self.allowed &= nearest_distance(self.x, taken) > 1e-12

    def take(self, j: int) -> None:
        """Candidate ``j`` is chosen: it and every candidate within the distance drop out."""
        self.allowed[j] = False
        if self.dist > 0:
            self.allowed &= np.sqrt(((self.x - self.x[j]) ** 2).sum(1)) >= self.dist


def check_batch_size(q) -> int:
    """``q`` as an int; OptionError unless it is a positive integer."""
    if isinstance(q, bool) or not isinstance(q, (int, np.integer)) or q < 1:
        raise errors.OptionError(f"the batch size must be a positive integer, got {q!r}")
    return int(q)


def finish_batch(
    strategy: str,
    candidates: Candidates,
    chosen: list[int],
    scores,
    q: int,
    min_distance: float,
) -> Batch:
    """The Batch of candidates ``chosen`` (indices, with their ``scores``); a DesignError
    when the guard left fewer than ``q``."""
    if len(chosen) < q:
        raise errors.DesignError(
            f"{strategy}: found only {len(chosen)} of {q} candidates at least {min_distance:g} "
            "apart and from the pending and completed runs",
            hint="ask for fewer runs, lower the minimum distance, or give a larger pool",
        )
    idx = np.asarray(chosen)
    cost = candidates.cost
    return Batch(
        strategy,
        candidates.mixtures[idx],
        idx,
        np.asarray(scores, float),
        candidates,
        None if cost is None else cost[idx],
    )
