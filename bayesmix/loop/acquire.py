"""Active learning: which proxy runs to train next, chosen from posterior draws.

Pipeline: a :class:`Belief` (posterior draws of the mixing law - any :class:`bayesmix.laws.Law`:
losses come from its mean, optima from :mod:`bayesmix.decisions.optimize` - its noise scales and the
objective's validation-domain weights) -> :class:`Candidates` (a cloud of mixtures inside the
feasible set, or a finite pool of runs one could train) -> a strategy's ``propose`` -> a
:class:`Batch` of ``q`` mixtures. No Gaussian process: every quantity is computed from the draws.

Strategies (:func:`get_strategy`, names in :data:`STRATEGIES`):

* ``thompson`` - posterior (Thompson) sampling: for a random posterior draw s, propose the
  candidate minimising that draw's objective ``f_s(r) = sum_i w_i L_si(r)``. In continuous mode
  the candidates include every draw's optimum over the feasible set
  (:func:`bayesmix.decisions.optimize.draw_optima`: exact for M4, batched projected gradients with
  several starts per draw for other laws), so the proposal is the per-draw optimum itself
  unless the diversity guard rules it out. Batches use a fresh draw per run (parallel Thompson
  sampling).
* ``optimum-info`` - information about where the optimum is. The per-draw optima are grouped by
  k-means into G groups (:data:`DEFAULT_GROUPS`); g(s) is draw s's group, p_g the share of draws
  in it. For a candidate x the observation is ``y = f(x) + noise``; its mutual information with
  the group label is estimated with Gaussian moment approximations of y overall and within each
  group::

      I(y; g) ~= 1/2 log(V(x) + n) - sum_g p_g 1/2 log(V_g(x) + n)

  V = variance of f_s(x) over all draws, V_g = over the draws of group g, n = the aggregate
  noise variance. By the law of total variance and Jensen's inequality it is >= 0; it is capped
  at the entropy of the grouping H(g), the most any observation can tell. It is large where the
  groups predict different losses, i.e. where a run would tell the candidate optima apart.
* ``bald`` - information about the law's parameters (BALD): per validation domain,
  ``1/2 log(1 + var_s(L_si(x)) / n_i)`` (the information a Gaussian observation with noise
  variance n_i carries about a Gaussian mean), summed over domains as if they were independent.
* ``random`` - RegMix's design: Dirichlet(1) draws inside the feasible set (continuous) or
  random choice among the unused pool rows (weighted by inverse cost when costs differ, below).

Batches and pending runs. Runs proposed or running but without results ("pending") and the runs
already chosen for the batch are handled in two ways. (1) A diversity guard: no proposal lies
within ``min_distance`` (Euclidean, in shares) of a pending, completed or already chosen run.
(2) The score-based strategies (optimum-info, bald) condition on them, greedily, one run at a
time: the draws' predictions over all candidates form an ensemble, and observing a run at
column j is applied as a linear-Gaussian (kriging-believer) update of that ensemble - the
ensemble square-root filter of Whitaker & Hamill (2002): anomalies ``A <- A - alpha K a_j`` with
gain ``K = cov(., j) / (var_j + n)`` and ``alpha = 1 / (1 + sqrt(n / (var_j + n)))``. Means stay
(the believer's fantasy value is the posterior mean) and the spread shrinks exactly as the
Gaussian posterior covariance ``C - c c' / (var_j + n)``, so candidates correlated with a
pending run lose information and the next pick goes elsewhere.

Costs. When candidates differ in model size N (parameters) or training tokens D, a run's cost is
taken as proportional to N x D (steps stand in for tokens when tokens are absent), normalised so
the cheapest candidate costs 1, and every strategy trades value against cost with the same
``cost_power`` p (default 1; p = 0 ignores costs and gives the cost-blind strategies):

* the score strategies pick the largest ``information / cost ** p`` (information per unit of
  compute);
* Thompson sampling, for its draw s, picks the largest improvement per unit of compute,
  ``(f_s(best) - f_s(x)) / cost ** p``, where ``f_s(best)`` is the draw's objective at the best
  run already completed, pending or chosen (the worst candidate when there is none) - the
  expected-improvement-per-cost rule of Snoek et al. (2012) evaluated on one posterior sample.
  When the draw sees no improvement anywhere it takes the smallest deficit x cost
  (``(f_s(x) - f_s(best)) * cost ** p``); exact ties go to the cheaper run. With equal costs
  this is plain Thompson sampling (the draw's optimum);
* random selection draws pool rows with probability proportional to ``cost ** -p``, without
  replacement (Efraimidis & Spirakis keys): with p = 1 each candidate receives the same expected
  compute instead of the same expected number of runs, so a baseline with mixed sizes does not
  spend its budget on the few large runs.

Continuous candidates (:meth:`Candidates.continuous`): scrambled Sobol points uniform on the
feasible set and sparse Dirichlet(0.3) points (both :func:`bayesmix.loop.design.initial_design`),
the corners of the box-simplex, the per-draw optima and the posterior-mean optimum, and Gaussian
perturbations around those optima, all projected onto the feasible set; the score strategies then
refine locally around their best candidates. Every proposal is checked with
:meth:`bayesmix.data.constraints.Constraints.contains`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from bayesmix import errors
from bayesmix._compat import SEED, renamed_kwargs
from bayesmix.data.constraints import Constraints
from bayesmix.data.table import MIX_PREFIX
from bayesmix.decisions.draws import LawDraws
from bayesmix.decisions.feasible import check_constraints, ensure_feasible, feasible_points
from bayesmix.decisions.inputs import resolve_weights
from bayesmix.decisions.optimize import draw_optima, minimize_objective
from bayesmix.laws import Law
from bayesmix.laws.solvers import project
from bayesmix.loop import design

#: Strategy names accepted by :func:`get_strategy` (and ``bayesmix propose --strategy``).
STRATEGIES = ("thompson", "optimum-info", "bald", "random")
#: Posterior draws used for acquisition (evenly thinned when the posterior has more): the
#: acquisition arrays are draws x candidates x validation domains.
DEFAULT_MAX_DRAWS = 256
#: Size of the continuous candidate cloud.
DEFAULT_CANDIDATES = 2048
#: Groups of per-draw optima for optimum-info.
DEFAULT_GROUPS = 8
#: Diversity guard: smallest Euclidean distance (in shares) between a proposal and any pending,
#: completed or chosen run. Larger than the initial designs' 0.01 on purpose: under the Gaussian
#: approximation a replicate of the most uncertain run keeps half its information (its noise
#: averages out), so the information strategies would otherwise stack a batch on one spot.
DEFAULT_MIN_DISTANCE = 0.05
#: Local refinement of the score strategies: best candidates refined, points around each,
#: and the radii (sd of the Gaussian perturbation, in shares) they are drawn at.
REFINE_TOP = 16
REFINE_POINTS = 16
REFINE_RADII = (0.01, 0.03, 0.1)


# ------------------------------------------------------------------------------------ belief
@dataclass(frozen=True)
class Belief:
    """Posterior draws an acquisition works on.

    ``params``: draws of the law's parameters with a leading sample axis S (M4: m, rho (S, K),
    t (S, K, M)); ``sigma`` (S, K) noise scales (nats); ``weights`` (K,) the objective's
    validation-domain weights (normalised here); ``noise_factor``: variance of the unit noise
    (1 for Normal, nu / (nu - 2) for Student-t); ``law``: the mixing law (a
    :class:`bayesmix.laws.Law` or its name; default M4); ``inputs``: fixed values of the law's
    extra inputs (``n_params``, ``tokens``) when it takes them. ``draws`` is the validated
    :class:`bayesmix.decisions.draws.LawDraws` every computation goes through.
    """

    params: dict
    sigma: np.ndarray
    weights: np.ndarray
    train_domains: tuple[str, ...]
    eval_domains: tuple[str, ...]
    noise_factor: float = 1.0
    diagnostics_warning: str | None = None
    weights_description: str = ""
    law: Law | str | None = None
    inputs: Mapping = field(default_factory=dict)
    draws: LawDraws = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        draws = LawDraws(
            self.params,
            self.train_domains,
            self.eval_domains,
            self.diagnostics_warning,
            law=self.law,
            inputs=self.inputs,
        )
        object.__setattr__(self, "draws", draws)
        object.__setattr__(self, "law", draws.law)
        object.__setattr__(self, "inputs", draws.inputs)
        object.__setattr__(self, "params", draws.params)
        object.__setattr__(self, "train_domains", draws.train_domains)
        object.__setattr__(self, "eval_domains", draws.eval_domains)
        sigma = np.asarray(self.sigma, float)
        expected = (draws.n_samples, len(draws.eval_domains))
        if sigma.shape != expected or not np.all(np.isfinite(sigma)):
            raise errors.FormatError(
                f"sigma draws have shape {sigma.shape}; expected "
                f"{expected} (draws x validation domains), finite"
            )
        object.__setattr__(self, "sigma", sigma)
        w = np.asarray(self.weights, float).reshape(-1)
        if (
            w.shape != (len(self.eval_domains),)
            or not np.all(np.isfinite(w))
            or np.any(w < 0)
            or w.sum() <= 0
        ):
            raise errors.ObjectiveError(f"need {len(self.eval_domains)} weights >= 0, not all 0")
        object.__setattr__(self, "weights", w / w.sum())

    @classmethod
    def from_posterior(
        cls,
        posterior,
        *,
        weights=None,
        target: str | None = None,
        max_draws: int | None = DEFAULT_MAX_DRAWS,
        inputs: Mapping | None = None,
    ) -> Belief:
        """Draws of a fitted Posterior (any law); ``weights``/``target`` as in
        :func:`bayesmix.decisions.inputs.resolve_weights` (default: equal weights). ``max_draws``
        thins evenly over chains and draws (None keeps all); ``inputs``: the law's extra inputs
        (``n_params``, ``tokens``) when it takes them."""
        draws = LawDraws.from_posterior(posterior, inputs=inputs)
        w, desc = resolve_weights(draws.eval_domains, weights, target)
        sigma = posterior.law_params()["sigma"]
        lik = posterior.spec.likelihood
        factor = 1.0
        if lik.get("family") == "student_t":
            nu = float(lik["nu"])
            factor = nu / (nu - 2.0) if nu > 2 else 3.0  # infinite variance: a wide stand-in
        keep = _thin(draws.n_samples, max_draws)
        return cls(
            {k: v[keep] for k, v in draws.params.items()},
            sigma[keep],
            w,
            draws.train_domains,
            draws.eval_domains,
            factor,
            posterior.diagnostics_warning,
            desc,
            law=draws.law,
            inputs=draws.inputs,
        )

    @property
    def n_samples(self) -> int:
        return self.draws.n_samples

    def domain_loss(self, mixtures) -> np.ndarray:
        """Mean loss per draw, mixture and validation domain (S, n, K): the law's mean."""
        return self.draws.mean_loss(mixtures)

    def loss(self, mixtures) -> np.ndarray:
        """The objective (weighted mean loss) per draw and mixture: (S, n)."""
        return self.domain_loss(mixtures) @ self.weights

    def noise_var(self) -> np.ndarray:
        """Noise variance of one run's measured loss per validation domain (K,), nats^2."""
        return self.noise_factor * np.mean(self.sigma**2, axis=0)

    def objective_noise_var(self) -> float:
        """Noise variance of the measured objective (independent noise per domain)."""
        return float(np.sum(self.weights**2 * self.noise_var()))

    def optima(self, constraints: Constraints) -> np.ndarray:
        """Every draw's optimal mixture over the feasible set (S, M) (exact for M4, batched
        projected gradients for other laws: :func:`bayesmix.decisions.optimize.draw_optima`)."""
        return draw_optima(self.draws, constraints, self.weights)[0]


def _thin(n: int, max_draws: int | None) -> np.ndarray:
    if max_draws is None or n <= max_draws:
        return np.arange(n)
    if max_draws < 2:
        raise errors.OptionError(f"max_draws must be >= 2, got {max_draws}")
    return np.unique(np.linspace(0, n - 1, int(max_draws)).round().astype(int))


# -------------------------------------------------------------------------------- candidates
@dataclass(frozen=True)
class Candidates:
    """Mixtures a batch is chosen from: (N, M) in ``train_domains`` order.

    ``ids``: pool row ids (None for a generated cloud); ``n_params``, ``steps``, ``tokens``:
    per-candidate planned size and training amount (None when not given); ``constraints``: the
    feasible set of a continuous cloud (local refinement stays inside it; None for a pool).
    """

    mixtures: np.ndarray
    train_domains: tuple[str, ...]
    ids: tuple[str, ...] | None = None
    n_params: np.ndarray | None = None
    steps: np.ndarray | None = None
    tokens: np.ndarray | None = None
    constraints: Constraints | None = None
    notes: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.mixtures)

    @property
    def is_pool(self) -> bool:
        return self.constraints is None

    @property
    def cost(self) -> np.ndarray | None:
        """Relative cost per candidate (cheapest = 1): n_params x tokens (or steps); None when
        no candidate has a size or training amount."""
        amount = self.tokens if self.tokens is not None else self.steps
        parts = [np.asarray(p, float) for p in (self.n_params, amount) if p is not None]
        if not parts:
            return None
        cost = np.prod(parts, axis=0)
        return cost / cost.min()

    @classmethod
    def pool(
        cls,
        pool,
        train_domains: Sequence[str],
        *,
        constraints: Constraints | None = None,
        source: str | None = None,
    ) -> Candidates:
        """A finite pool: a DataFrame (columns ``mix.<domain>`` or domain names, optional
        ``run``, ``n_params``, ``steps``, ``tokens``) or an array (N, M). Rows outside
        ``constraints`` are dropped (with a note); none left is an InfeasibleError."""
        from bayesmix.data.mixtures import as_mixtures

        train_domains = tuple(train_domains)
        extra = {}
        if isinstance(pool, pd.DataFrame):
            for col in ("n_params", "steps", "tokens"):
                if col in pool.columns:
                    values = pd.to_numeric(pool[col], errors="coerce").to_numpy(float)
                    if not np.all(np.isfinite(values) & (values > 0)):
                        row = int(np.flatnonzero(~(np.isfinite(values) & (values > 0)))[0])
                        raise errors.NonNumericError(
                            f"{col} must be a positive number in every row",
                            source=source,
                            row=row + 2,
                            column=col,
                        )
                    extra[col] = values
            if "step" in pool.columns and "steps" not in extra:
                raise errors.FormatError(
                    "a candidate pool names training amounts 'steps' (planned), not 'step'",
                    source=source,
                    column="step",
                )
        frame = as_mixtures(pool, train_domains, source=source)
        mix = frame.to_numpy(float)
        ids = tuple(frame.index)
        notes = []
        if constraints is not None:
            constraints = check_constraints(constraints, train_domains)
            inside = constraints.contains(mix)
            if not inside.any():
                raise errors.InfeasibleError(
                    "no pool mixture satisfies the constraints",
                    source=source,
                    hint="relax the constraints or add candidates",
                )
            if not inside.all():
                notes.append(
                    f"{int((~inside).sum())} of {len(mix)} pool mixtures violate the "
                    "constraints and were dropped"
                )
            mix, ids = mix[inside], tuple(np.asarray(ids, dtype=object)[inside])
            extra = {k: v[inside] for k, v in extra.items()}
        return cls(
            mix,
            train_domains,
            ids,
            extra.get("n_params"),
            extra.get("steps"),
            extra.get("tokens"),
            None,
            tuple(notes),
        )

    @classmethod
    @renamed_kwargs(**SEED)
    def continuous(
        cls,
        constraints: Constraints,
        n: int = DEFAULT_CANDIDATES,
        *,
        belief: Belief | None = None,
        random_seed: int | None = 0,
    ) -> Candidates:
        """A cloud of ~``n`` feasible mixtures (see the module docstring); with ``belief``, its
        per-draw optima, its posterior-mean optimum and points around them are included.
        Drawn with ``random_seed``."""
        if n < 1:
            raise errors.OptionError(f"the number of candidates must be >= 1, got {n}")
        m = len(constraints.domains)
        seed = random_seed
        rng = np.random.default_rng(seed)
        parts = [
            _design_points(constraints, max(1, n // 2), seed, "sobol", 1.0),
            _design_points(constraints, max(1, n // 4), seed, "dirichlet", 0.3),
            project(np.eye(m), constraints.lower, constraints.upper),
        ]
        if belief is not None:
            check_constraints(constraints, belief.train_domains)
            optima = belief.optima(constraints)
            best = minimize_objective(
                belief.draws,
                constraints,
                belief.weights,
                "mean",
                n_starts=2,
                extra_starts=optima.mean(axis=0)[None],
                random_seed=seed,
            ).mixture
            centres = np.vstack([best[None], optima])
            n_local = max(0, n - sum(len(p) for p in parts))
            parts += [
                centres,
                _around(
                    centres[rng.integers(0, len(centres), n_local)], constraints, rng, REFINE_RADII
                ),
            ]
        mix = ensure_feasible(np.vstack(parts), constraints, "candidate mixture")
        return cls(mix, tuple(constraints.domains), constraints=constraints)

    def select(self, index) -> Candidates:
        """The candidates at ``index`` (an int array), same kind."""
        index = np.asarray(index, int)

        def pick(a):
            return None if a is None else np.asarray(a)[index]

        ids = None if self.ids is None else tuple(np.asarray(self.ids, dtype=object)[index])
        return Candidates(
            self.mixtures[index],
            self.train_domains,
            ids,
            pick(self.n_params),
            pick(self.steps),
            pick(self.tokens),
            self.constraints,
            self.notes,
        )

    def extended(self, mixtures: np.ndarray) -> Candidates:
        """This cloud plus ``mixtures`` (continuous candidates only)."""
        if self.is_pool:
            raise errors.DesignError("a finite pool cannot be extended")
        assert self.constraints is not None  # continuous clouds are built from constraints
        mix = ensure_feasible(
            np.vstack([self.mixtures, mixtures]), self.constraints, "candidate mixture"
        )
        return Candidates(mix, self.train_domains, constraints=self.constraints, notes=self.notes)


def _design_points(constraints, n, seed, method, alpha) -> np.ndarray:
    """``n`` feasible points from design.initial_design (no distance guard); projected
    Dirichlet points when the box leaves a single mixture or is too tight to fill."""
    try:
        return design.initial_design(
            constraints,
            n,
            seed=seed,
            method=method,
            alpha=alpha,
            min_distance=0.0,
            max_candidates=max(20_000, 4 * n),
        )
    except errors.DesignError:
        return feasible_points(constraints, n, seed)


def _around(centres: np.ndarray, constraints: Constraints, rng, radii) -> np.ndarray:
    """Gaussian perturbations of ``centres`` (n, M) in the simplex's plane, radius cycling
    through ``radii``, projected onto the feasible set."""
    if len(centres) == 0:
        return np.empty((0, len(constraints.domains)))
    step = rng.standard_normal(centres.shape)
    step -= step.mean(axis=1, keepdims=True)
    scale = np.resize(np.asarray(radii, float), len(centres))[:, None]
    return project(centres + scale * step, constraints.lower, constraints.upper)


# ------------------------------------------------------------------------------------- batch
#: Name of the score column of :meth:`Batch.frame` per strategy.
SCORE_NAMES = {"thompson": "draw_objective", "optimum-info": "information", "bald": "information"}


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


def _as_matrix(mixtures, m: int) -> np.ndarray:
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


def _distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance from each row of ``a`` (N, M) to its nearest row of ``b`` (k, M); inf if k=0."""
    if len(b) == 0:
        return np.full(len(a), np.inf)
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.clip(sq, 0.0, None)).min(axis=1)


class _Guard:
    """The diversity guard: which candidates are still allowed (far enough from every pending,
    completed and chosen run)."""

    def __init__(self, candidates: Candidates, taken: np.ndarray, min_distance: float):
        self.x = candidates.mixtures
        self.dist = float(min_distance)
        self.allowed = (
            _distance(self.x, taken) >= self.dist if self.dist > 0 else (np.ones(len(self.x), bool))
        )
        if candidates.is_pool and len(taken):
            # a pool row that was already run is never proposed again, whatever the distance
            self.allowed &= _distance(self.x, taken) > 1e-12

    def take(self, j: int) -> None:
        self.allowed[j] = False
        if self.dist > 0:
            self.allowed &= np.sqrt(((self.x - self.x[j]) ** 2).sum(1)) >= self.dist


def _check_q(q) -> int:
    if isinstance(q, bool) or not isinstance(q, (int, np.integer)) or q < 1:
        raise errors.OptionError(f"the batch size must be a positive integer, got {q!r}")
    return int(q)


def _short(what: str, got: int, q: int, min_distance: float) -> errors.DesignError:
    return errors.DesignError(
        f"{what}: found only {got} of {q} candidates at least {min_distance:g} apart and from "
        "the pending and completed runs",
        hint="ask for fewer runs, lower the minimum distance, or give a larger pool",
    )


# -------------------------------------------------------------------------------- ensemble
class Ensemble:
    """Posterior draws of predicted losses over columns (candidates and pending runs), kept as
    mean (N, D) + anomalies (S, N, D), with the square-root Gaussian update of the module
    docstring for an observation at one column. ``noise`` (D,): observation noise variances."""

    def __init__(self, values: np.ndarray, noise: np.ndarray):
        values = np.asarray(values, float)
        if values.ndim == 2:
            values = values[..., None]
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


# -------------------------------------------------------------------------------- strategies
class Strategy:
    """A way to choose a batch. ``propose`` returns a :class:`Batch` of ``q`` candidates,
    respecting the diversity guard; ``pending`` (k, M) are runs in flight, ``existing`` (k, M)
    runs with results (both may be None)."""

    name = "strategy"

    def propose(
        self,
        belief: Belief | None,
        candidates: Candidates,
        q: int,
        *,
        pending=None,
        existing=None,
        min_distance: float = DEFAULT_MIN_DISTANCE,
        seed: int | None = 0,
    ) -> Batch:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class RandomSelection(Strategy):
    """RegMix's design: Dirichlet(``alpha``) mixtures in the feasible set (continuous) or random
    pool rows, drawn with probability proportional to ``cost ** -cost_power`` when the pool's
    costs differ (uniform otherwise); the diversity guard applies."""

    name = "random"

    def __init__(self, alpha: float = 1.0, cost_power: float = 1.0):
        if not cost_power >= 0:
            raise errors.OptionError(f"cost_power must be >= 0, got {cost_power}")
        self.alpha = float(alpha)
        self.cost_power = float(cost_power)

    def propose(
        self,
        belief,
        candidates,
        q,
        *,
        pending=None,
        existing=None,
        min_distance=DEFAULT_MIN_DISTANCE,
        seed=0,
    ) -> Batch:
        q = _check_q(q)
        m = len(candidates.train_domains)
        taken = np.vstack([_as_matrix(pending, m), _as_matrix(existing, m)])
        if not candidates.is_pool:
            mix = design.initial_design(
                candidates.constraints,
                q,
                seed=seed,
                method="dirichlet",
                alpha=self.alpha,
                min_distance=min_distance,
                existing=taken,
            )
            cands = Candidates(mix, candidates.train_domains, constraints=candidates.constraints)
            return Batch(self.name, mix, np.arange(q), np.full(q, np.nan), cands)
        guard = _Guard(candidates, taken, min_distance)
        rng = np.random.default_rng(seed)
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
        if len(chosen) < q:
            raise _short(self.name, len(chosen), q, min_distance)
        idx = np.asarray(chosen)
        return Batch(
            self.name,
            candidates.mixtures[idx],
            idx,
            np.full(q, np.nan),
            candidates,
            None if cost is None else cost[idx],
        )


class ThompsonSampling(Strategy):
    """Posterior sampling: each run of the batch is the allowed candidate minimising the
    objective of one random posterior draw (a new draw per run). When candidates differ in cost
    it is the largest improvement of that draw's objective over the best run so far per unit of
    cost (``cost ** cost_power``; module docstring); with equal costs, the draw's optimum."""

    name = "thompson"

    def __init__(self, cost_power: float = 1.0):
        if not cost_power >= 0:
            raise errors.OptionError(f"cost_power must be >= 0, got {cost_power}")
        self.cost_power = float(cost_power)

    def propose(
        self,
        belief,
        candidates,
        q,
        *,
        pending=None,
        existing=None,
        min_distance=DEFAULT_MIN_DISTANCE,
        seed=0,
    ) -> Batch:
        q = _check_q(q)
        m = len(candidates.train_domains)
        taken = np.vstack([_as_matrix(pending, m), _as_matrix(existing, m)])
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
        guard = _Guard(candidates, taken, min_distance)
        rng = np.random.default_rng(seed)
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
                j = _cost_aware_pick(values[s], best[s], factor, guard.allowed)
            chosen.append(j)
            scores.append(float(values[s, j]))
            guard.take(j)
            if aware:
                best = np.minimum(best, values[:, j])
        if len(chosen) < q:
            raise _short(self.name, len(chosen), q, min_distance)
        idx = np.asarray(chosen)
        return Batch(
            self.name,
            candidates.mixtures[idx],
            idx,
            np.asarray(scores),
            candidates,
            None if cost is None else cost[idx],
        )


def _cost_aware_pick(
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


class ScoreStrategy(Strategy):
    """Greedy batch by an information score over an :class:`Ensemble`: condition on the
    pending runs, then repeatedly take the allowed candidate with the largest
    ``score / cost ** cost_power`` and condition on it. Continuous candidates are refined
    locally around the best :data:`REFINE_TOP` before the batch is chosen."""

    def __init__(self, cost_power: float = 1.0, refine: bool = True):
        if not cost_power >= 0:
            raise errors.OptionError(f"cost_power must be >= 0, got {cost_power}")
        self.cost_power = float(cost_power)
        self.refine = refine

    # subclasses: build the state for columns X (candidates then pending) and score it
    def _prepare(self, belief: Belief, candidates: Candidates, existing: np.ndarray, seed) -> None:
        """Hook: anything computed once per proposal (e.g. the optimum groups)."""

    def _ensemble(self, belief: Belief, x: np.ndarray) -> Ensemble:
        raise NotImplementedError

    def _score(self, ens: Ensemble) -> np.ndarray:
        raise NotImplementedError

    def scores(
        self, belief: Belief, candidates: Candidates, *, pending=None, existing=None, seed=0
    ) -> np.ndarray:
        """Information of each candidate (N,) given the pending runs (nats)."""
        m = len(candidates.train_domains)
        pend, done = _as_matrix(pending, m), _as_matrix(existing, m)
        self._prepare(belief, candidates, done, seed)
        return self._scores(belief, candidates, pend)[1]

    def _scores(self, belief, candidates, pend):
        x = np.vstack([candidates.mixtures, pend])
        ens = self._ensemble(belief, x)
        for j in range(len(candidates), len(x)):
            ens.condition(j)
        return ens, self._score(ens)[: len(candidates)]

    def propose(
        self,
        belief,
        candidates,
        q,
        *,
        pending=None,
        existing=None,
        min_distance=DEFAULT_MIN_DISTANCE,
        seed=0,
    ) -> Batch:
        q = _check_q(q)
        m = len(candidates.train_domains)
        pend, done = _as_matrix(pending, m), _as_matrix(existing, m)
        self._prepare(belief, candidates, done, seed)
        ens, score = self._scores(belief, candidates, pend)
        if self.refine and not candidates.is_pool:
            guard = _Guard(candidates, np.vstack([pend, done]), min_distance)
            top = np.argsort(np.where(guard.allowed, -score, np.inf))[:REFINE_TOP]
            rng = np.random.default_rng(seed)
            local = _around(
                np.repeat(candidates.mixtures[top], REFINE_POINTS, axis=0),
                candidates.constraints,
                rng,
                REFINE_RADII,
            )
            candidates = candidates.extended(local)
            ens, score = self._scores(belief, candidates, pend)
        n = len(candidates)
        cost = candidates.cost
        divisor = np.ones(n) if cost is None else cost**self.cost_power
        guard = _Guard(candidates, np.vstack([pend, done]), min_distance)
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
        if len(chosen) < q:
            raise _short(self.name, len(chosen), q, min_distance)
        idx = np.asarray(chosen)
        return Batch(
            self.name,
            candidates.mixtures[idx],
            idx,
            np.asarray(scores),
            candidates,
            None if cost is None else cost[idx],
        )


class BALD(ScoreStrategy):
    """Information about the law's parameters: ``sum_i 1/2 log(1 + var_s L_si(x) / n_i)``."""

    name = "bald"

    def _ensemble(self, belief, x):
        return Ensemble(belief.domain_loss(x), belief.noise_var())

    def _score(self, ens):
        return 0.5 * np.log1p(ens.variance / ens.noise).sum(axis=1)


class OptimumInfo(ScoreStrategy):
    """Information about the optimum's location: mutual information between a candidate's
    measured objective and the group of the per-draw optimum (module docstring)."""

    name = "optimum-info"

    def __init__(
        self, n_groups: int = DEFAULT_GROUPS, cost_power: float = 1.0, refine: bool = True
    ):
        super().__init__(cost_power, refine)
        if isinstance(n_groups, bool) or int(n_groups) < 2:
            raise errors.OptionError(f"n_groups must be >= 2, got {n_groups}")
        self.n_groups = int(n_groups)
        self.groups: np.ndarray | None = None

    def _prepare(self, belief, candidates, existing, seed):
        if candidates.is_pool:
            # the optimum over the finite set of pool rows (unused and already run)
            points = np.vstack([candidates.mixtures, existing])
            optima = points[np.argmin(belief.loss(points), axis=1)]
        else:
            optima = belief.optima(candidates.constraints)
        self.groups = kmeans(optima, self.n_groups, seed=seed)

    def _ensemble(self, belief, x):
        return Ensemble(belief.loss(x), belief.objective_noise_var())

    def _score(self, ens):
        return group_information(ens.anom[..., 0], self.groups, float(ens.noise[0]))


def group_information(values: np.ndarray, groups: np.ndarray, noise: float) -> np.ndarray:
    """Mutual information (nats) between ``y = f(x) + noise`` and the group label, per column.

    ``values`` (S, N): draws of f at N candidates (or their anomalies); ``groups`` (S,) integer
    labels; ``noise``: noise variance. Gaussian moment approximation (module docstring):
    ``1/2 log(V + n) - sum_g p_g 1/2 log(V_g + n)``, clipped to ``[0, H(g)]`` because no
    observation can tell more than the entropy of the labels (the Gaussian approximation
    overshoots when groups are far apart). A ``1e-9 log(1 + V / n)`` term breaks ties when every
    draw is in one group (then the information is 0 everywhere); it grows only logarithmically,
    so draws with absurd predictions (variances of 1e200 from a wild posterior) cannot outweigh
    the information itself, as a term linear in V did.
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


def kmeans(points: np.ndarray, k: int, *, seed=0, iters: int = 25) -> np.ndarray:
    """Group labels (n,) of ``points`` (n, M) by k-means with k-means++ seeding (at most as
    many groups as distinct points). Deterministic for a given seed."""
    x = np.asarray(points, float)
    distinct = np.unique(x.round(12), axis=0)
    k = int(min(k, len(distinct)))
    if k <= 1:
        return np.zeros(len(x), int)
    rng = np.random.default_rng(seed)
    centres = [x[rng.integers(len(x))]]
    for _ in range(k - 1):
        d2 = np.min(((x[:, None, :] - np.asarray(centres)[None]) ** 2).sum(-1), axis=1)
        if d2.sum() <= 0:
            break
        centres.append(x[rng.choice(len(x), p=d2 / d2.sum())])
    c = np.asarray(centres)
    labels = np.zeros(len(x), int)
    for _ in range(iters):
        labels_new = np.argmin(((x[:, None, :] - c[None]) ** 2).sum(-1), axis=1)
        if np.array_equal(labels_new, labels) and _ > 0:
            break
        labels = labels_new
        for g in range(len(c)):
            if np.any(labels == g):
                c[g] = x[labels == g].mean(axis=0)
    return np.unique(labels, return_inverse=True)[1]


_STRATEGIES = {
    "thompson": ThompsonSampling,
    "optimum-info": OptimumInfo,
    "bald": BALD,
    "random": RandomSelection,
}


def get_strategy(name: str | Strategy, **options) -> Strategy:
    """A strategy by name (:data:`STRATEGIES`); ``options`` go to its constructor (e.g.
    ``cost_power``, ``n_groups``)."""
    if isinstance(name, Strategy):
        return name
    key = str(name).strip().lower().replace("_", "-")
    if key not in _STRATEGIES:
        raise errors.OptionError(
            f"unknown strategy {name!r}", hint=f"use one of {', '.join(STRATEGIES)}"
        )
    return _STRATEGIES[key](**options)


# ------------------------------------------------------------------------------ entry points
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
    seed = random_seed
    strat = get_strategy(strategy, **options)
    dist = DEFAULT_MIN_DISTANCE if min_distance is None else float(min_distance)
    if not np.isfinite(dist) or dist < 0:
        raise errors.OptionError(f"min_distance must be >= 0, got {min_distance!r}")
    constraints = check_constraints(constraints, belief.train_domains)
    if pool is None:
        needs_belief = not isinstance(strat, RandomSelection)
        pool = Candidates.continuous(
            constraints, n_candidates, belief=belief if needs_belief else None, random_seed=seed
        )
    elif tuple(pool.train_domains) != tuple(belief.train_domains):
        raise errors.DomainNameError("the pool's training domains differ from the posterior's")
    batch = strat.propose(
        belief, pool, q, pending=pending, existing=existing, min_distance=dist, seed=seed
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
    seed = random_seed
    q = _check_q(q)
    dist = design.DEFAULT_MIN_DISTANCE if min_distance is None else float(min_distance)
    m = len(constraints.domains)
    taken = np.vstack([_as_matrix(pending, m), _as_matrix(existing, m)])
    if pool is None:
        mix = design.initial_design(
            constraints, q, seed=seed, method="sobol", min_distance=dist, existing=taken
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
            None, pool, q, pending=pending, existing=existing, min_distance=dist, seed=seed
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
