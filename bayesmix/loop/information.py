"""The information strategies: runs chosen for what their result would tell.

* ``optimum-info`` (:class:`OptimumInfo`) - information about where the optimum is. The
  per-draw optima are grouped by k-means into G groups (:data:`DEFAULT_GROUPS`); g(s) is draw
  s's group, p_g the share of draws in it. For a candidate x the observation is
  ``y = f(x) + noise``; its mutual information with the group label is estimated with Gaussian
  moment approximations of y overall and within each group (:func:`group_information`)::

      I(y; g) ~= 1/2 log(V(x) + n) - sum_g p_g 1/2 log(V_g(x) + n)

  V = variance of f_s(x) over all draws, V_g = over the draws of group g, n = the aggregate
  noise variance. By the law of total variance and Jensen's inequality it is >= 0; it is
  capped at the entropy of the grouping H(g), the most any observation can tell. It is large
  where the groups predict different losses, i.e. where a run would tell the candidate optima
  apart.
* ``bald`` (:class:`BALD`) - information about the law's parameters (BALD): per validation
  domain, ``1/2 log(1 + var_s(L_si(x)) / n_i)`` (the information a Gaussian observation with
  noise variance n_i carries about a Gaussian mean), summed over domains as if they were
  independent.

Robust scores (``robust=True``, the default). Both read the draws' predictions Winsorised per
candidate at their :data:`ROBUST_TAIL` and ``1 - ROBUST_TAIL`` quantiles
(:func:`robust_values`): with few runs a posterior can hold a few draws predicting absurd losses
at extreme mixtures (1e125 nats where the data are silent), and a raw variance is led by them.

Pending runs and the batch. Both condition on the runs in flight and on the runs already chosen
for the batch, greedily, one run at a time: the draws' predictions over all candidates form an
:class:`Ensemble`, and observing a run at column j is applied as a linear-Gaussian
(kriging-believer) update of that ensemble - the ensemble square-root filter of Whitaker &
Hamill (2002): anomalies ``A <- A - alpha K a_j`` with gain ``K = cov(., j) / (var_j + n)`` and
``alpha = 1 / (1 + sqrt(n / (var_j + n)))``. Means stay (the believer's fantasy value is the
posterior mean) and the spread shrinks exactly as the Gaussian posterior covariance
``C - c c' / (var_j + n)``, so candidates correlated with a pending run lose information and
the next pick goes elsewhere. Each pick maximises ``information / cost ** cost_power``
(information per unit of compute). Continuous candidates are first refined locally around the
best :data:`REFINE_TOP` of them.
"""

from __future__ import annotations

import warnings

import numpy as np

from bayesmix import errors
from bayesmix._compat import SEED, renamed_kwargs
from bayesmix.loop.batch import Batch, DiversityGuard, RunsSoFar, finish_batch
from bayesmix.loop.belief import Belief
from bayesmix.loop.candidates import REFINE_RADII, Candidates, perturb
from bayesmix.loop.strategies import Strategy

#: Groups of per-draw optima for optimum-info.
DEFAULT_GROUPS = 8
#: Local refinement of the score strategies: best candidates refined and points around each
#: (drawn at :data:`bayesmix.loop.candidates.REFINE_RADII`).
REFINE_TOP = 16
REFINE_POINTS = 16
#: Winsorising of the score strategies (``robust=True``): each candidate's draws are clipped to
#: their 5 % and 95 % quantiles before the information is computed.
ROBUST_TAIL = 0.05


class Ensemble:
    """Posterior draws of predicted losses over columns (candidates and pending runs), kept as
    mean (N, D) + anomalies (S, N, D), with the square-root Gaussian update of the module
    docstring for an observation at one column. ``noise`` (D,): observation noise variances."""

    def __init__(self, values: np.ndarray, noise: np.ndarray, robust: bool = False):
        values = np.asarray(values, float)
        if values.ndim == 2:
            values = values[..., None]
        if robust:
            values = robust_values(values)
        self.mean = values.mean(axis=0)
        self.anom = values - self.mean
        self.noise = np.broadcast_to(np.asarray(noise, float), (values.shape[2],)).copy()
        self.noise = np.maximum(self.noise, 1e-12)

    @property
    def variance(self) -> np.ndarray:
        """(N, D) posterior variance of each column's mean loss."""
        return np.mean(self.anom**2, axis=0)

    def condition(self, j: int) -> None:
        """Observe column ``j`` (every channel, independent noise): shrink the anomalies."""
        a_j = self.anom[:, j, :]  # (S, D)
        v_j = np.mean(a_j**2, axis=0)  # (D,)
        cov = np.einsum("sd,snd->nd", a_j, self.anom) / len(a_j)  # (N, D)
        total = v_j + self.noise
        gain = cov / total
        alpha = 1.0 / (1.0 + np.sqrt(self.noise / total))
        self.anom -= alpha * gain[None] * a_j[:, None, :]


class ScoreStrategy(Strategy):
    """Greedy batch by an information score over an :class:`Ensemble`: condition on the
    pending runs, then repeatedly take the allowed candidate with the largest
    ``score / cost ** cost_power`` and condition on it. Continuous candidates are refined
    locally around the best :data:`REFINE_TOP` before the batch is chosen."""

    def __init__(self, cost_power: float = 1.0, refine: bool = True, robust: bool = True):
        super().__init__(cost_power)
        self.refine = refine
        self.robust = bool(robust)

    # subclasses: build the state for columns X (candidates then pending) and score it
    def _prepare(self, belief: Belief, candidates: Candidates, existing: np.ndarray, random_seed):
        """Hook: anything computed once per proposal (e.g. the optimum groups)."""

    def _ensemble(self, belief: Belief, x: np.ndarray) -> Ensemble:
        raise NotImplementedError

    def _score(self, ens: Ensemble) -> np.ndarray:
        raise NotImplementedError

    @renamed_kwargs(**SEED)
    def scores(
        self,
        belief: Belief,
        candidates: Candidates,
        *,
        pending=None,
        existing=None,
        random_seed: int | None = 0,
    ) -> np.ndarray:
        """Information of each candidate (N,) given the pending runs (nats)."""
        runs = RunsSoFar.of(pending, existing, len(candidates.train_domains))
        self._prepare(belief, candidates, runs.existing, random_seed)
        return self._scores(belief, candidates, runs.pending)[1]

    def _scores(self, belief, candidates, pend):
        x = np.vstack([candidates.mixtures, pend])
        ens = self._ensemble(belief, x)
        for j in range(len(candidates), len(x)):
            ens.condition(j)
        return ens, self._score(ens)[: len(candidates)]

    def choose(self, belief, candidates, q, runs, min_distance, random_seed) -> Batch:
        self._prepare(belief, candidates, runs.existing, random_seed)
        ens, score = self._scores(belief, candidates, runs.pending)
        if self.refine and not candidates.is_pool:
            candidates = self._refined(candidates, score, runs, min_distance, random_seed)
            ens, score = self._scores(belief, candidates, runs.pending)
        n = len(candidates)
        cost = candidates.cost
        divisor = np.ones(n) if cost is None else cost**self.cost_power
        guard = DiversityGuard(candidates, runs.all, min_distance)
        chosen, scores = [], []
        for _ in range(q):
            if not guard.allowed.any():
                break
            eff = np.where(guard.allowed & np.isfinite(score), score / divisor, -np.inf)
            if not np.isfinite(eff).any():
                break  # every allowed candidate's score is NaN or infinite
            j = int(np.argmax(eff))
            chosen.append(j)
            scores.append(float(score[j]))
            guard.take(j)
            ens.condition(j)
            score = self._score(ens)[:n]
        return finish_batch(self.name, candidates, chosen, scores, q, min_distance)

    @staticmethod
    def _refined(candidates, score, runs, min_distance, random_seed) -> Candidates:
        """The cloud plus :data:`REFINE_POINTS` points around each of its best
        :data:`REFINE_TOP` allowed candidates."""
        guard = DiversityGuard(candidates, runs.all, min_distance)
        top = np.argsort(np.where(guard.allowed, -score, np.inf))[:REFINE_TOP]
        rng = np.random.default_rng(random_seed)
        local = perturb(
            np.repeat(candidates.mixtures[top], REFINE_POINTS, axis=0),
            candidates.constraints,
            rng,
            REFINE_RADII,
        )
        return candidates.extended(local)


class BALD(ScoreStrategy):
    """Information about the law's parameters: ``sum_i 1/2 log(1 + var_s L_si(x) / n_i)``."""

    name = "bald"

    def _ensemble(self, belief, x):
        with np.errstate(over="ignore", invalid="ignore"):
            values = belief.domain_loss(x)
        return Ensemble(values, belief.noise_var(), robust=self.robust)

    def _score(self, ens):
        return 0.5 * np.log1p(ens.variance / ens.noise).sum(axis=1)


class OptimumInfo(ScoreStrategy):
    """Information about the optimum's location: mutual information between a candidate's
    measured objective and the group of the per-draw optimum (module docstring)."""

    name = "optimum-info"

    def __init__(
        self,
        n_groups: int = DEFAULT_GROUPS,
        cost_power: float = 1.0,
        refine: bool = True,
        robust: bool = True,
    ):
        super().__init__(cost_power, refine, robust)
        if isinstance(n_groups, bool) or int(n_groups) < 2:
            raise errors.OptionError(f"n_groups={n_groups!r} must be >= 2", param="n_groups")
        self.n_groups = int(n_groups)
        self.groups: np.ndarray | None = None

    def _prepare(self, belief, candidates, existing, random_seed):
        if candidates.is_pool:
            # the optimum over the finite set of pool rows (unused and already run)
            points = np.vstack([candidates.mixtures, existing])
            optima = points[np.argmin(belief.loss(points), axis=1)]
        else:
            optima = belief.optima(candidates.constraints)
        self.groups = kmeans(optima, self.n_groups, random_seed=random_seed)

    def _ensemble(self, belief, x):
        with np.errstate(over="ignore", invalid="ignore"):
            values = belief.loss(x)
        return Ensemble(values, belief.objective_noise_var(), robust=self.robust)

    def _score(self, ens):
        return group_information(ens.anom[..., 0], self.groups, float(ens.noise[0]))


def robust_values(values: np.ndarray, tail: float = ROBUST_TAIL) -> np.ndarray:
    """``values`` (S, N[, D]) Winsorised per column: every draw clipped to the column's
    ``tail`` and ``1 - tail`` quantiles over the draws (non-finite draws count as beyond the
    upper one). A few draws predicting absurd losses (1e100 nats where the data are silent)
    then weigh as much as the plausible extreme draws, no more: the variance and the group
    contrasts the scores read come from the central ``1 - 2 tail`` of the predictive
    distribution."""
    values = np.asarray(values, float)
    finite = np.where(np.isfinite(values), values, np.nan)
    lo, hi = np.nanquantile(finite, [tail, 1.0 - tail], axis=0)
    hi = np.where(np.isfinite(hi), hi, np.nanmax(np.where(np.isfinite(finite), finite, -np.inf)))
    lo = np.where(np.isfinite(lo), lo, hi)
    return np.clip(np.where(np.isnan(finite), hi, finite), lo, hi)


def group_information(values: np.ndarray, groups: np.ndarray, noise: float) -> np.ndarray:
    """Mutual information (nats) between ``y = f(x) + noise`` and the group label, per column.

    ``values`` (S, N): draws of f at N candidates (or their anomalies); ``groups`` (S,) integer
    labels; ``noise``: noise variance. Gaussian moment approximation (module docstring):
    ``1/2 log(V + n) - sum_g p_g 1/2 log(V_g + n)``, clipped to ``[0, H(g)]`` because no
    observation can tell more than the entropy of the labels (the Gaussian approximation
    overshoots when groups are far apart). A ``1e-9 log(1 + V / n)`` term breaks ties when every
    draw is in one group (then the information is 0 everywhere); it grows only logarithmically,
    so draws with absurd predictions (variances of 1e200 from a wild posterior) cannot outweigh
    the information itself (a term linear in V would).
    """
    values = np.asarray(values, float)
    groups = np.asarray(groups)
    total = 0.5 * np.log(values.var(axis=0) + noise)
    within = np.zeros(values.shape[1])
    entropy = 0.0
    for g in np.unique(groups):
        part = values[groups == g]
        p = len(part) / len(values)
        within += p * 0.5 * np.log(part.var(axis=0) + noise)
        entropy -= p * np.log(p)
    spread = values.var(axis=0) / noise if noise > 0 else values.var(axis=0)
    return np.clip(total - within, 0.0, entropy) + 1e-9 * np.log1p(spread)


@renamed_kwargs(**SEED)
def kmeans(points: np.ndarray, k: int, *, random_seed=0, iters: int = 25) -> np.ndarray:
    """Group labels (n,) of ``points`` (n, M) by k-means with k-means++ seeding (SciPy's
    ``kmeans2``; at most as many groups as distinct points), numbered 0.. with no gaps.
    Deterministic for a given ``random_seed``."""
    from scipy.cluster.vq import kmeans2

    x = np.asarray(points, float)
    distinct = np.unique(x.round(12), axis=0)
    k = int(min(k, len(distinct)))
    if k <= 1:
        return np.zeros(len(x), int)
    with warnings.catch_warnings():  # "One of the clusters is empty": the labels still hold
        warnings.simplefilter("ignore", UserWarning)
        _, labels = kmeans2(x, k, iter=iters, minit="++", seed=np.random.default_rng(random_seed))
    return np.unique(labels, return_inverse=True)[1]
