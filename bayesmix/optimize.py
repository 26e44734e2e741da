"""Choosing the mixture under uncertainty: constrained optimisation over posterior draws.

For one posterior draw s and validation-domain weights w (normalised, shape (K,)) the aggregate
loss of a mixture r is ``f_s(r) = sum_i w_i L_si(r)`` with the M4 law of
:mod:`bayesmix.laws.m4`. Written with the paper's coefficients (``m4.to_ck``) it is a constant
plus a sum of exponentials, ``f_s(r) = sum_i w_i c_si + sum_i w_i k_si exp(t_si . r)``; with
``k > 0`` (always: ``k = m rho``, m > 0, rho in (0, 1)) it is convex in r. Everything here works
on that form:

* :func:`minimize_objective` - one mixture for a whole posterior: minimise the posterior mean of
  f (convex), a posterior quantile or CVaR of f, or maximise the probability of beating a
  baseline mixture; SLSQP with analytic gradients and multi-start from feasible points.
* :func:`draw_optima` - the optimum of every draw at once (batched projected Newton on the
  box-constrained simplex, pure NumPy): the posterior of the optimum's location.
* :func:`project` - exact Euclidean projection onto ``{lower <= r <= upper, sum r = 1}``.

Draws are a plain dict ``{"m": (S, K), "rho": (S, K), "t": (S, K, M)}`` (S = chain x draw), so
the core is independent of how they were produced; :class:`LawDraws` adds domain names and the
posterior's diagnostics warning. Every returned mixture is projected onto the feasible set and
checked with :meth:`Constraints.contains`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import xarray as xr
from scipy import optimize as sopt
from scipy import special

from bayesmix import errors
from bayesmix.constraints import Constraints
from bayesmix.laws import m4

#: Objective kinds accepted by :meth:`Objective.parse`.
OBJECTIVES = ("mean", "quantile", "cvar", "beat-baseline")
#: Default probability mass of the equal-tailed intervals in summaries.
DEFAULT_PROB = 0.9
#: Default fraction of the posterior sd of the improvement used as the logistic bandwidth of the
#: beat-baseline surrogate (see :class:`Objective`).
BEAT_BANDWIDTH = 0.25


# ---------------------------------------------------------------------------------------- draws
def check_draws(draws: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Validate an M4 draws dict and return float64 copies: m, rho (S, K), t (S, K, M)."""
    missing = [p for p in m4.PARAMS if p not in draws]
    if missing:
        raise errors.FormatError(f"posterior draws lack the M4 parameter(s) {', '.join(missing)}",
                                 hint="choosing a mixture needs m, rho and t draws")
    m, rho, t = (np.asarray(draws[p], dtype=float) for p in m4.PARAMS)
    if m.ndim != 2 or rho.shape != m.shape or t.ndim != 3 or t.shape[:2] != m.shape:
        raise errors.FormatError(
            f"draws have shapes m {m.shape}, rho {rho.shape}, t {t.shape}; expected "
            "(S, K), (S, K), (S, K, M) with one leading sample axis")
    if m.shape[0] == 0:
        raise errors.EmptyInputError("no posterior draws")
    if not (np.isfinite(m).all() and np.isfinite(rho).all() and np.isfinite(t).all()):
        raise errors.FormatError("posterior draws contain NaN or inf")
    return {"m": m, "rho": rho, "t": t}


@dataclass(frozen=True)
class LawDraws:
    """M4 draws with the names of their axes: ``params`` m, rho (S, K), t (S, K, M)."""

    params: dict
    train_domains: tuple[str, ...]
    eval_domains: tuple[str, ...]
    diagnostics_warning: str | None = None
    source: str | None = None

    def __post_init__(self):
        p = check_draws(self.params)
        object.__setattr__(self, "params", p)
        object.__setattr__(self, "train_domains", tuple(self.train_domains))
        object.__setattr__(self, "eval_domains", tuple(self.eval_domains))
        s, k, m = p["t"].shape
        if (k, m) != (len(self.eval_domains), len(self.train_domains)):
            raise errors.FormatError(
                f"draws are over {k} validation x {m} training domains but "
                f"{len(self.eval_domains)} x {len(self.train_domains)} names were given")

    @property
    def n_samples(self) -> int:
        return self.params["m"].shape[0]

    @classmethod
    def from_posterior(cls, posterior, source: str | None = None) -> LawDraws:
        """Draws of a fitted :class:`bayesmix.posterior.Posterior` (M4 law only)."""
        law = getattr(getattr(posterior, "spec", None), "law", "m4")
        if law != "m4":
            raise errors.SpecError(f"choosing a mixture needs the M4 law, the posterior uses "
                                   f"{law!r}", source=source)
        params = posterior.law_params()
        return cls({p: params[p] for p in m4.PARAMS}, posterior.train_domains,
                   posterior.eval_domains, posterior.diagnostics_warning, source)


def as_law_draws(source) -> LawDraws:
    """Accept a :class:`LawDraws` or anything with ``law_params()`` and domain names."""
    if isinstance(source, LawDraws):
        return source
    if hasattr(source, "law_params"):
        return LawDraws.from_posterior(source)
    raise TypeError("expected a Posterior or LawDraws; wrap a plain draws dict as "
                    "LawDraws(params, train_domains, eval_domains)")


def aggregate_loss(draws: Mapping[str, np.ndarray], mixtures, weights) -> np.ndarray:
    """Aggregate mean loss ``sum_i w_i L_si(r)`` (S, n) of mixtures (n, M); weights (K,)."""
    p = check_draws(draws)
    r = np.atleast_2d(np.asarray(mixtures, float))
    return m4.mean_loss(r, p) @ np.asarray(weights, float)


def exp_terms(draws: Mapping[str, np.ndarray], weights) -> tuple[np.ndarray, ...]:
    """``(const (S,), a (S, K), t (S, K, M))`` with ``f_s(r) = const_s + sum_i a_si e^{t_si . r}``.

    ``a = w k`` and ``const = w . c`` from the paper's coefficients of :func:`m4.to_ck`.
    """
    c, k, t = m4.to_ck(check_draws(draws))
    w = np.asarray(weights, float)
    return c @ w, k * w, t


def _exp_value_grad(a, t, r, hessian=False):
    """Value (...,), gradient (..., M) [and Hessian (..., M, M)] of ``sum_i a_i exp(t_i . r)``.

    Shapes broadcast: a (..., K), t (..., K, M), r (..., M).
    """
    e = a * np.exp(m4.exponent(r[..., None, :], t)[..., 0, :])
    f = e.sum(-1)
    g = np.matmul(e[..., None, :], t)[..., 0, :]
    if not hessian:
        return f, g
    return f, g, np.matmul(np.swapaxes(t, -1, -2) * e[..., None, :], t)


# ---------------------------------------------------------------------------------- feasible set
def project(y, lower, upper) -> np.ndarray:
    """Euclidean projection of points y (..., M) onto ``{lower <= r <= upper, sum r = 1}``.

    Exact: the projection is ``clip(y - lam, lower, upper)`` with lam solving a piecewise-linear
    equation whose breakpoints (``y - upper`` and ``y - lower``) are sorted once per point. Needs
    ``sum(lower) <= 1 <= sum(upper)`` (guaranteed by :meth:`Constraints.build`).
    """
    y = np.asarray(y, float)
    shape = y.shape
    m = shape[-1]
    y = y.reshape(-1, m)
    n = y.shape[0]
    lo = np.broadcast_to(np.asarray(lower, float), y.shape)
    hi = np.broadcast_to(np.asarray(upper, float), y.shape)
    breaks = np.concatenate([y - hi, y - lo], axis=1)
    # Crossing a "y - upper" breakpoint frees a coordinate from its upper bound (+1 free),
    # crossing "y - lower" pins it at its lower bound (-1 free).
    kind = np.concatenate([np.ones((n, m)), -np.ones((n, m))], axis=1)
    order = np.argsort(breaks, axis=1, kind="stable")
    breaks = np.take_along_axis(breaks, order, axis=1)
    n_free = np.cumsum(np.take_along_axis(kind, order, axis=1), axis=1)
    total = np.empty_like(breaks)  # sum of clip(y - lam) at each breakpoint: sum(upper) .. sum(lower)
    total[:, 0] = hi.sum(axis=1)
    total[:, 1:] = total[:, :1] - np.cumsum(n_free[:, :-1] * np.diff(breaks, axis=1), axis=1)
    j = np.clip((total >= 1.0).sum(axis=1) - 1, 0, 2 * m - 1)
    rows = np.arange(n)
    slope = n_free[rows, j]
    lam = breaks[rows, j] + np.where(slope > 0, (total[rows, j] - 1.0) / np.maximum(slope, 1), 0.0)
    x = np.clip(y - lam[:, None], lo, hi)
    return _fix_sum(x, lo, hi).reshape(shape)


def _fix_sum(x, lo, hi):
    """Remove the rounding residual of ``sum(x) - 1`` using the coordinate with most room."""
    resid = 1.0 - x.sum(axis=1)
    room = np.where(resid[:, None] > 0, hi - x, x - lo)
    j = np.argmax(room, axis=1)
    rows = np.arange(len(x))
    x[rows, j] = np.clip(x[rows, j] + resid, lo[rows, j], hi[rows, j])
    return x


def centre(constraints: Constraints) -> np.ndarray:
    """The feasible point closest to the uniform mixture (M,)."""
    m = len(constraints.domains)
    return project(np.full(m, 1.0 / m), constraints.lower, constraints.upper)


def feasible_points(constraints: Constraints, n: int, seed=0) -> np.ndarray:
    """``n`` feasible mixtures (n, M): uniform Dirichlet draws projected onto the feasible set."""
    rng = np.random.default_rng(seed)
    m = len(constraints.domains)
    return project(rng.dirichlet(np.ones(m), size=n), constraints.lower, constraints.upper)


def ensure_feasible(r, constraints: Constraints, what: str = "mixture") -> np.ndarray:
    """Project ``r`` (..., M) onto the feasible set and verify it; raise if that failed."""
    x = project(r, constraints.lower, constraints.upper)
    ok = constraints.contains(x)
    if not np.all(ok):
        raise errors.InfeasibleError(f"{what} could not be made feasible (numerical failure)",
                                     hint="report this with the constraints used")
    return x


def check_constraints(constraints: Constraints | None, train_domains: Sequence[str]) -> Constraints:
    """``constraints`` over ``train_domains`` (unconstrained when None); names must match."""
    train_domains = tuple(train_domains)
    if constraints is None:
        return Constraints.unconstrained(train_domains)
    if tuple(constraints.domains) != train_domains:
        raise errors.DomainNameError(
            f"constraints are over training domains ({', '.join(constraints.domains)}) but the "
            f"posterior's are ({', '.join(train_domains)})",
            hint="build the constraints with Constraints.build(posterior.train_domains, ...)")
    return constraints


# ------------------------------------------------------------------------------------ objective
@dataclass(frozen=True)
class Objective:
    """What "best mixture" means across posterior draws of the aggregate loss f_s(r).

    * ``mean``: posterior expected loss ``mean_s f_s(r)`` (convex).
    * ``quantile`` (``level`` q): the q-quantile of f_s(r) over draws, estimated with
      Harrell-Davis weights on the sorted draws - a smooth L-statistic, so SLSQP sees gradients
      that change continuously (the plain sample quantile jumps between draws). Not convex in
      general; multi-start guards against local optima.
    * ``cvar`` (``level`` q): mean of the worst (1 - q) fraction of draws (convex).
    * ``beat-baseline``: maximise P(f_s(r) < f_s(baseline)), the draws paired. The indicator
      has zero gradient almost everywhere, so the optimiser uses the smooth surrogate
      ``mean_s logistic((f_s(b) - f_s(r)) / tau)``. ``tau`` (loss units) defaults to
      ``BEAT_BANDWIDTH`` times the posterior sd of the improvement at the mean-optimal mixture:
      improvements small against the posterior's uncertainty count about half, so the surrogate
      prefers clear wins over arbitrarily small ones near the baseline (where the exact
      probability can approach 1 with a negligible gain). Reports give the exact probability.
    """

    kind: str = "mean"
    level: float | None = None
    temperature: float | None = None

    def __post_init__(self):
        if self.kind not in OBJECTIVES:
            raise errors.ObjectiveError(f"unknown objective {self.kind!r}",
                                        hint="use mean, quantile:Q, cvar:Q or beat-baseline")
        if self.kind in ("quantile", "cvar"):
            if self.level is None or not 0.0 < float(self.level) < 1.0:
                raise errors.ObjectiveError(
                    f"objective {self.kind} needs a level in (0, 1), got {self.level}",
                    hint=f"e.g. {self.kind}:0.9")
        elif self.level is not None:
            raise errors.ObjectiveError(f"objective {self.kind} takes no level")
        if self.temperature is not None and not float(self.temperature) > 0:
            raise errors.ObjectiveError(f"temperature must be > 0, got {self.temperature}")

    @classmethod
    def parse(cls, text: str | Objective) -> Objective:
        """``"mean"``, ``"quantile:0.9"``, ``"cvar:0.9"`` or ``"beat-baseline"``."""
        if isinstance(text, Objective):
            return text
        kind, _, level = str(text).strip().partition(":")
        kind = kind.strip().lower().replace("_", "-")
        if level:
            try:
                value = float(level)
            except ValueError:
                raise errors.ObjectiveError(f"objective level {level!r} is not a number",
                                            hint="e.g. quantile:0.9") from None
            return cls(kind, value)
        return cls(kind)

    @property
    def needs_baseline(self) -> bool:
        return self.kind == "beat-baseline"

    @property
    def sense(self) -> str:
        """``"min"`` or ``"max"``: what the reported objective value wants."""
        return "max" if self.kind == "beat-baseline" else "min"

    def describe(self) -> str:
        if self.kind == "quantile":
            return f"{self.level:g}-quantile of the aggregate loss over draws"
        if self.kind == "cvar":
            return f"mean of the worst {1 - self.level:.3g} of draws of the aggregate loss"
        if self.kind == "beat-baseline":
            return "probability of a lower aggregate loss than the baseline"
        return "posterior mean of the aggregate loss"

    def __str__(self) -> str:
        return self.kind if self.level is None else f"{self.kind}:{self.level:g}"


def _order_weights(kind: str, level: float, n: int) -> np.ndarray:
    """Weights (n,) on ascending-sorted draws for the quantile (Harrell-Davis) or CVaR."""
    grid = np.arange(n + 1) / n
    if kind == "quantile":
        a, b = level * (n + 1), (1 - level) * (n + 1)
        return np.diff(special.betainc(a, b, grid))
    upper = np.minimum(grid[1:], 1.0)
    lower = np.maximum(grid[:-1], level)
    return np.clip(upper - lower, 0, None) / (1 - level)


class _Criterion:
    """Scalar objective (to minimise) and its gradient at r, from per-draw values f_s(r)."""

    def __init__(self, objective: Objective, const, a, t, baseline=None, temperature=None):
        self.objective, self.const, self.a, self.t = objective, const, a, t
        s = len(const)
        self.order_w = (_order_weights(objective.kind, objective.level, s)
                        if objective.kind in ("quantile", "cvar") else None)
        self.base_values = None
        if baseline is not None:
            self.base_values = const + _exp_value_grad(a, t, np.asarray(baseline, float))[0]
        self.temperature = temperature

    def draws(self, r):
        f, g = _exp_value_grad(self.a, self.t, r)
        return self.const + f, g

    def __call__(self, r):
        """(value to minimise, gradient (M,))."""
        f, g = self.draws(r)
        kind = self.objective.kind
        if kind == "mean":
            return f.mean(), g.mean(axis=0)
        if kind in ("quantile", "cvar"):
            order = np.argsort(f, kind="stable")
            return self.order_w @ f[order], self.order_w @ g[order]
        z = (self.base_values - f) / self.temperature
        p = special.expit(z)
        dp = p * (1 - p) / self.temperature  # d logistic / d f_s = -dp
        return -p.mean(), (dp[:, None] * g).mean(axis=0)

    def value(self, r) -> float:
        """The reported value: the exact beat probability, otherwise the optimised statistic."""
        if self.objective.kind == "beat-baseline":
            f, _ = self.draws(r)
            return float(np.mean(f < self.base_values))
        return float(self(r)[0])


# ----------------------------------------------------------------------------- one mixture
@dataclass
class Optimum:
    """The chosen mixture and how it was found.

    ``mixture`` (M,) is feasible; ``value`` is the objective there (loss units, or the exact
    probability for beat-baseline); ``starts`` the optimised criterion reached from each start
    (for multi-start diagnostics; the smooth surrogate for beat-baseline); ``temperature`` the
    surrogate bandwidth actually used (beat-baseline only); ``converged``/``message``: whether
    SLSQP reported success from the start that won, and its message when it did not.
    """

    mixture: np.ndarray
    value: float
    objective: Objective
    train_domains: tuple[str, ...]
    starts: list[float] = field(default_factory=list)
    temperature: float | None = None
    converged: bool = True
    message: str = ""

    def as_series(self) -> pd.Series:
        return pd.Series(self.mixture, index=pd.Index(self.train_domains, name="train_domain"),
                         name="share")


def _slsqp(fun, x0, constraints: Constraints, maxiter=500):
    """SLSQP over the coordinates the box leaves free; fixed shares stay fixed."""
    lo, hi = constraints.lower, constraints.upper
    free = hi - lo > 1e-12
    if free.sum() <= 1:  # the feasible set is a single point
        return x0, True, "feasible set is a single mixture"
    base = x0.copy()

    def full(z):
        x = base.copy()
        x[free] = z
        return x

    def f(z):
        v, g = fun(full(z))
        return v, g[free]

    fixed_sum = base[~free].sum()
    res = sopt.minimize(
        f, x0[free], jac=True, method="SLSQP",
        bounds=list(zip(lo[free], hi[free])),
        constraints=[{"type": "eq", "fun": lambda z: z.sum() + fixed_sum - 1.0,
                      "jac": lambda z: np.ones_like(z)}],
        options={"maxiter": maxiter, "ftol": 1e-13})
    return full(res.x), bool(res.success), str(res.message)


def minimize_objective(draws: Mapping[str, np.ndarray], constraints: Constraints, weights,
                       objective: Objective | str = "mean", *, baseline=None,
                       n_starts: int = 8, extra_starts=None, seed=0) -> Optimum:
    """The feasible mixture optimising ``objective`` over the draws' aggregate loss.

    ``weights`` (K,) over validation domains (normalised here); ``baseline`` (M,) is needed for
    beat-baseline. Starts: the posterior-mean optimum (exact, from the batched convex solver),
    the centre of the feasible set, the baseline projected onto it, ``extra_starts`` (n, M) and
    random feasible points, ``n_starts`` in all at least. Each SLSQP result is projected onto the
    feasible set and the best by the smooth objective is returned.
    """
    objective = Objective.parse(objective)
    w = _normalise_weights(weights, check_draws(draws)["m"].shape[1])
    const, a, t = exp_terms(draws, w)
    if t.shape[2] != len(constraints.domains):
        raise errors.DomainNameError(f"draws have {t.shape[2]} training domains, constraints "
                                     f"{len(constraints.domains)}")
    if objective.needs_baseline and baseline is None:
        raise errors.ObjectiveError("objective beat-baseline needs a baseline mixture",
                                    hint="give --baseline or baseline=")
    lo, hi = constraints.lower, constraints.upper

    # The posterior mean is itself a sum of S*K exponentials: solve it exactly as one "draw".
    s, k, m = t.shape
    mean_opt = solve_exp_sum(a.reshape(1, s * k) / s, t.reshape(1, s * k, m), lo, hi)[0][0]
    starts = [mean_opt, centre(constraints)]
    if baseline is not None:
        starts.append(project(np.asarray(baseline, float), lo, hi))
    if extra_starts is not None:
        starts.extend(project(np.atleast_2d(extra_starts), lo, hi))
    n_random = max(0, n_starts - len(starts))
    if n_random:
        starts.extend(feasible_points(constraints, n_random, seed))

    temperature = None
    if objective.kind == "beat-baseline":
        temperature = objective.temperature or _beat_temperature(const, a, t, baseline, mean_opt,
                                                                 constraints, seed)
    crit = _Criterion(objective, const, a, t, baseline, temperature)

    best, values = None, []
    for x0 in starts:
        x, ok, msg = _slsqp(crit, np.asarray(x0, float), constraints)
        x = ensure_feasible(x, constraints)
        # SLSQP may stop early; never return something worse than its own start.
        if crit(x)[0] > crit(x0)[0]:
            x = np.asarray(x0, float)
        v = float(crit(x)[0])
        values.append(v)
        if best is None or v < best[0]:
            best = (v, x, ok, msg)
    _, x, ok, msg = best
    x = ensure_feasible(x, constraints)
    sign = -1.0 if objective.sense == "max" else 1.0
    return Optimum(mixture=x, value=crit.value(x), objective=objective,
                   train_domains=tuple(constraints.domains), starts=[sign * v for v in values],
                   temperature=temperature, converged=ok, message="" if ok else msg)


def _beat_temperature(const, a, t, baseline, mean_opt, constraints, seed) -> float:
    """Default logistic bandwidth for beat-baseline (see :class:`Objective`), in loss units."""
    base = const + _exp_value_grad(a, t, np.asarray(baseline, float))[0]
    candidates = np.vstack([mean_opt[None], feasible_points(constraints, 16, seed)])
    for r in candidates:
        sd = np.std(base - (const + _exp_value_grad(a, t, r)[0]))
        if sd > 1e-12:
            return BEAT_BANDWIDTH * float(sd)
    return 1e-6 * float(np.mean(np.abs(base)))


def _normalise_weights(weights, k: int) -> np.ndarray:
    w = np.asarray(weights, float).reshape(-1)
    if w.shape != (k,):
        raise errors.ObjectiveError(f"{w.size} weights for {k} validation domains")
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise errors.ObjectiveError("validation-domain weights must be finite, >= 0 and not "
                                    "all zero")
    return w / w.sum()


# --------------------------------------------------------------------------- per-draw optima
_NEWTON_STEPS = 0.5 ** np.arange(0, 16)
_GRADIENT_STEPS = np.array([1.0, 4.0, 16.0])


def solve_exp_sum(a, t, lower, upper, *, x0=None, tol: float = 1e-10, max_iter: int = 100):
    """Minimise ``sum_i a_si exp(t_si . r)`` over the box-simplex for every s at once.

    a (S, K) >= 0, t (S, K, M). Batched projected Newton: each iteration takes the best of a few
    projected-gradient steps (which also finds which shares sit on a bound), then a Newton step on
    the remaining free shares (KKT system with the sum constraint, lightly regularised because
    the Hessian has rank <= K) with a backtracking line search along the projection arc. Draws
    stop once a step moves no share by more than ``tol``. Returns (r (S, M), converged (S,)).
    Where the loss is flat along some direction (K < M) the optimum is a set; the point returned
    is the one reached from ``x0`` (default: the centre of the feasible set).
    """
    a, t = np.asarray(a, float), np.asarray(t, float)
    s, _, m = t.shape
    lo, hi = np.asarray(lower, float), np.asarray(upper, float)
    if x0 is None:
        x0 = np.full(m, 1.0 / m)
    x = project(np.broadcast_to(x0, (s, m)).copy(), lo, hi)
    live = np.arange(s)
    converged = np.zeros(s, bool)
    eye = np.eye(m)
    for _ in range(max_iter):
        if live.size == 0:
            break
        aa, tt, xx = a[live], t[live], x[live]
        n = live.size
        rows = np.arange(n)
        f, g, h = _exp_value_grad(aa, tt, xx, hessian=True)
        lip = np.trace(h, axis1=1, axis2=2) + 1e-300
        # 1. projected gradient, step 1/lip (a safe-ish Lipschitz guess) or longer.
        steps = _GRADIENT_STEPS[None, :, None] / lip[:, None, None]
        cand = project(xx[:, None, :] - steps * g[:, None, :], lo, hi)
        fc, _ = _exp_value_grad(aa[:, None], tt[:, None], cand)
        pick = np.argmin(fc, axis=1)
        better = fc[rows, pick] < f
        xp = np.where(better[:, None], cand[rows, pick], xx)
        # 2. Newton on the shares strictly inside their bounds, keeping their sum.
        fp, gp, hp = _exp_value_grad(aa, tt, xp, hessian=True)
        free = (xp > lo + 1e-12) & (xp < hi - 1e-12)
        both = free[:, :, None] & free[:, None, :]
        scale = np.trace(hp, axis1=1, axis2=2) / m + 1e-300
        kkt = np.zeros((n, m + 1, m + 1))
        kkt[:, :m, :m] = np.where(both, hp, 0.0) + eye * np.where(
            free, 1e-10 * scale[:, None], 1.0)[:, :, None]
        kkt[:, :m, m] = free
        kkt[:, m, :m] = free
        kkt[:, m, m] = free.sum(axis=1) == 0
        rhs = np.zeros((n, m + 1, 1))
        rhs[:, :m, 0] = np.where(free, -gp, 0.0)
        d = np.linalg.solve(kkt, rhs)[:, :m, 0]
        xn = _newton_line_search(aa, tt, xp, fp, gp, d, lo, hi)
        x[live] = xn
        done = np.abs(xn - xx).max(axis=1) <= tol
        converged[live[done]] = True
        live = live[~done]
    return x, converged


def _newton_line_search(a, t, x, f, g, d, lo, hi):
    """Largest step 2^-j along the projection arc of ``x + step d`` passing Armijo, per draw.

    The full step is tried first for every draw; the shorter ones only where it failed (near the
    optimum the full Newton step almost always passes). Draws where no step passes keep ``x``.
    """
    def trial(rows, steps):
        cand = project(x[rows, None, :] + steps[None, :, None] * d[rows, None, :], lo, hi)
        fc, _ = _exp_value_grad(a[rows, None], t[rows, None], cand)
        move = np.einsum("nkm,nm->nk", cand - x[rows, None], g[rows])
        ok = (fc <= f[rows, None] + 1e-4 * move) & (fc <= f[rows, None])
        first = np.argmax(ok, axis=1)
        return cand[np.arange(len(rows)), first], ok.any(axis=1)

    out = x.copy()
    rows = np.arange(len(x))
    cand, ok = trial(rows, _NEWTON_STEPS[:1])
    out[ok] = cand[ok]
    rows = rows[~ok]
    if rows.size:
        cand, ok = trial(rows, _NEWTON_STEPS[1:])
        out[rows[ok]] = cand[ok]
    return out


def draw_optima(draws: Mapping[str, np.ndarray], constraints: Constraints, weights, *,
                tol: float = 1e-10, max_iter: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """The feasible mixture minimising each draw's aggregate loss: (r (S, M), converged (S,))."""
    w = _normalise_weights(weights, check_draws(draws)["m"].shape[1])
    _, a, t = exp_terms(draws, w)
    x, ok = solve_exp_sum(a, t, constraints.lower, constraints.upper, x0=centre(constraints),
                          tol=tol, max_iter=max_iter)
    return ensure_feasible(x, constraints, "per-draw optimum"), ok


def optima_dataarray(optima: np.ndarray, train_domains: Sequence[str]) -> xr.DataArray:
    """Per-draw optima as a DataArray with dims (sample, train_domain)."""
    optima = np.asarray(optima, float)
    return xr.DataArray(optima, dims=("sample", "train_domain"),
                        coords={"sample": np.arange(optima.shape[0]),
                                "train_domain": list(train_domains)},
                        name="optimal_share", attrs={"units": "share of training tokens"})


def optimum_spread(optima, train_domains: Sequence[str] | None = None,
                   prob: float = DEFAULT_PROB) -> pd.DataFrame:
    """Tidy table of the optimum's location: train_domain, mean, median, lower, upper.

    ``optima``: (S, M) array (then give ``train_domains``) or the DataArray of
    :func:`optima_dataarray`; intervals are equal-tailed with mass ``prob``.
    """
    check_prob(prob)
    if isinstance(optima, xr.DataArray):
        train_domains = [str(d) for d in optima["train_domain"].values]
        optima = optima.transpose("sample", "train_domain").values
    v = np.asarray(optima, float)
    lo, med, hi = np.quantile(v, [(1 - prob) / 2, 0.5, (1 + prob) / 2], axis=0)
    return pd.DataFrame({"train_domain": list(train_domains), "mean": v.mean(axis=0),
                         "median": med, "lower": lo, "upper": hi})


def check_prob(prob: float) -> float:
    if not 0.0 < float(prob) < 1.0:
        raise errors.ObjectiveError(f"interval probability must be in (0, 1), got {prob}")
    return float(prob)
