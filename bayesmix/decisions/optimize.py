"""Choosing the mixture under uncertainty: constrained optimisation over posterior draws.

For one posterior draw s and validation-domain weights w (normalised, shape (K,)) the aggregate
loss of a mixture r is ``f_s(r) = sum_i w_i L_si(r)``, where ``L`` is the posterior's mixing law
(any :class:`bayesmix.laws.Law`). Everything here needs only the law's interface:
:meth:`Law.mean` for losses, :meth:`Law.value_grad` for ``f_s`` and its gradient in r at once
for every draw, :meth:`Law.draw_optima` for an exact per-draw solver when the law has one (M4:
a constant plus a sum of exponentials, solved by :func:`solve_exp_sum`), and ``Law.convex``
to decide how many starts a search needs.

* :func:`minimize_objective` - one mixture for a whole posterior: minimise the posterior mean of
  f, a posterior quantile or CVaR of f, or maximise the probability of beating a baseline
  mixture; SLSQP with the law's gradients and multi-start from feasible points. For a
  non-convex law it uses more starts and reports how many reached the best value
  (:attr:`Optimum.n_agree`), so a fragile optimum shows.
* :func:`draw_optima` - the optimum of every draw at once: the posterior of the optimum's
  location. The law's exact solver when it has one, else batched projected gradients over all
  draws (:func:`solve_projected_gradient`, several starts per draw for a non-convex law).
* :func:`project` - exact Euclidean projection onto ``{lower <= r <= upper, sum r = 1}``.

Draws are a :class:`LawDraws` (the law, its parameter draws with a leading sample axis S, domain
names, the posterior's diagnostics warning) or, for M4 and backwards compatibility, a plain dict
``{"m": (S, K), "rho": (S, K), "t": (S, K, M)}`` (any law with ``law=``). Every returned mixture
is projected onto the feasible set and checked with :meth:`Constraints.contains`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from scipy import optimize as sopt
from scipy import special

from bayesmix import errors
from bayesmix._compat import CI_PROB, SEED, renamed_kwargs
from bayesmix.data.constraints import Constraints
from bayesmix.laws import INPUTS, Law, get_law, m4
from bayesmix.laws.solvers import (
    NONCONVEX_DRAW_STARTS,
    PG_MAX_ITER,
    PG_TOL,
    project,
    solve_projected_gradient,
)
from bayesmix.posterior.intervals import DEFAULT_PROB, check_prob, credible_interval

#: Objective kinds accepted by :meth:`Objective.parse`.
OBJECTIVES = ("mean", "quantile", "cvar", "beat-baseline", "minimax")
#: Default fraction of the posterior sd of the improvement used as the logistic bandwidth of the
#: beat-baseline surrogate (see :class:`Objective`).
BEAT_BANDWIDTH = 0.25
#: SLSQP starts of :func:`minimize_objective` for a convex law (the objective may still be
#: non-convex: quantiles, beat-baseline) and for a non-convex law, where local optima are real.
DEFAULT_STARTS = 8
NONCONVEX_STARTS = 24
#: For a non-convex law the random starts of :func:`minimize_objective` are the best (by the
#: objective) of SCREEN times as many random feasible points: on m4log draws a quantile
#: objective's global optimum had a basin of about 19% of the simplex, which 21 unscreened
#: random starts missed.
SCREEN = 8
#: Starts whose final objective is within ``AGREE_RTOL * max(1, |best|)`` of the best count as
#: having reached it. SLSQP stops at ftol 1e-13 on a smooth objective, so starts that reach the
#: same optimum agree to far better than 1e-6; distinct local optima differ by much more.
AGREE_RTOL = 1e-6


# ---------------------------------------------------------------------------------------- draws
def _law_label(law: Law) -> str:
    return law.name.upper()


def _expected_shape(param) -> str:
    letters = {"eval_domain": "K", "latent": "L", "train_domain": "M"}
    return "(" + ", ".join(["S", *(letters[d] for d in param.dims)]) + ")"


def check_draws(
    draws: Mapping[str, np.ndarray], law: Law | str | None = None
) -> dict[str, np.ndarray]:
    """Validate draws of ``law``'s parameters (default M4) and return float64 copies.

    Every parameter of :attr:`Law.params` must be present with a leading sample axis S > 0 and
    then its declared dims: (S, K) for ``eval_domain``, (S, M) for ``train_domain``, (S, K, M)
    for both (one S, K and M across parameters), all values finite. Other keys (e.g. ``sigma``)
    are ignored. M4: m, rho (S, K), t (S, K, M).
    """
    law = get_law("m4" if law is None else law)
    names = law.param_names
    missing = [p for p in names if p not in draws]
    if missing:
        raise errors.FormatError(
            f"posterior draws lack the {_law_label(law)} parameter(s) {', '.join(missing)}",
            hint=f"law {law.name!r} needs draws of {', '.join(names)}",
        )
    out = {p: np.asarray(draws[p], dtype=float) for p in names}
    sizes: dict[str, set] = {
        "sample": set(),
        "eval_domain": set(),
        "latent": set(),
        "train_domain": set(),
    }
    ranks_ok = all(out[p.name].ndim == 1 + len(p.dims) for p in law.params)
    if ranks_ok:
        for p in law.params:
            for dim, n in zip(("sample", *p.dims), out[p.name].shape):
                sizes[dim].add(n)
    if not ranks_ok or any(len(v) > 1 for v in sizes.values()):
        got = ", ".join(f"{p} {out[p].shape}" for p in names)
        want = ", ".join(_expected_shape(p) for p in law.params)
        raise errors.FormatError(
            f"draws have shapes {got}; expected {want} with one leading sample axis (S draws, "
            "K validation, M training domains)"
        )
    if out[names[0]].shape[0] == 0:
        raise errors.FormatError(
            "no posterior draws (the sample axis is empty)",
            hint="give at least one draw of every parameter",
        )
    bad = [p for p in names if not np.isfinite(out[p]).all()]
    if bad:
        raise errors.FormatError(
            f"posterior draws of {', '.join(bad)} contain NaN or inf",
            hint="drop those draws or refit",
        )
    return out


def _check_inputs(law: Law, inputs: Mapping | None) -> dict[str, float]:
    """The fixed extra inputs (``n_params``, ``tokens``) the decision is made at, as floats.

    Keys the law does not take are dropped; values must be positive numbers."""
    out = {}
    for key, value in dict(inputs or {}).items():
        if key not in INPUTS or key == "r":
            raise errors.OptionError(
                f"unknown law input {key!r}", hint="inputs are n_params (parameters) and tokens"
            )
        try:
            v = float(value)
        except (TypeError, ValueError):
            v = float("nan")
        if not (np.isfinite(v) and v > 0):
            raise errors.OptionError(f"law input {key} must be a positive number, got {value!r}")
        if key in law.inputs:
            out[key] = v
    return out


def _require_inputs(law: Law, inputs: Mapping) -> None:
    missing = [k for k in law.inputs if k != "r" and k not in inputs]
    if missing:
        raise errors.OptionError(
            f"law {law.name!r} needs {missing[0]} (of the run the mixture is chosen for) to "
            "compare mixtures",
            hint=f"give LawDraws(..., inputs={{{missing[0]!r}: value}})",
        )


@dataclass(frozen=True)
class LawDraws:
    """Posterior draws of a law with the names of their axes.

    ``params``: the law's parameters, leading sample axis S (M4: m, rho (S, K), t (S, K, M));
    ``law``: a :class:`Law` or its name (default M4, for draws built from a plain dict);
    ``inputs``: fixed values of the law's extra inputs (``n_params``, ``tokens``) at which
    mixtures are compared, for laws that take them.
    """

    params: dict
    train_domains: tuple[str, ...]
    eval_domains: tuple[str, ...]
    diagnostics_warning: str | None = None
    source: str | None = None
    #: a Law, its name or None (M4) when built; always the Law after ``__post_init__``
    law: Any = None
    inputs: Mapping = field(default_factory=dict)

    def __post_init__(self):
        law = get_law("m4" if self.law is None else self.law)
        p = check_draws(self.params, law)
        object.__setattr__(self, "law", law)
        object.__setattr__(self, "params", p)
        object.__setattr__(self, "train_domains", tuple(self.train_domains))
        object.__setattr__(self, "eval_domains", tuple(self.eval_domains))
        object.__setattr__(self, "inputs", _check_inputs(law, self.inputs))
        names = {
            "eval_domain": len(self.eval_domains),
            "train_domain": len(self.train_domains),
            "latent": _dim_size(law, p, "latent"),
        }  # latent domains: as many as drawn
        for par in law.params:
            shape = p[par.name].shape[1:]
            want = tuple(names[d] for d in par.dims)
            if shape != want:
                raise errors.FormatError(
                    f"draws of {par.name} are {shape} per draw ({', '.join(par.dims)}) but "
                    f"{names['eval_domain']} validation x {names['train_domain']} training "
                    "domain names were given"
                )

    @property
    def n_samples(self) -> int:
        return self.params[self.law.param_names[0]].shape[0]

    def mean_loss(self, mixtures) -> np.ndarray:
        """Mean loss per draw, mixture and validation domain: (S, n, K) for mixtures (n, M)."""
        return domain_loss(self, mixtures)

    def select(self, index) -> LawDraws:
        """The draws at ``index`` (an int array or slice along the sample axis)."""
        return LawDraws(
            {k: v[index] for k, v in self.params.items()},
            self.train_domains,
            self.eval_domains,
            self.diagnostics_warning,
            self.source,
            self.law,
            self.inputs,
        )

    @classmethod
    def from_posterior(
        cls, posterior, source: str | None = None, *, inputs: Mapping | None = None
    ) -> LawDraws:
        """Draws of a fitted :class:`bayesmix.posterior.posterior.Posterior`, whatever its law."""
        law = getattr(posterior, "law", None)
        if law is None:
            law = get_law(getattr(getattr(posterior, "spec", None), "law", "m4"))
        params = posterior.law_params()
        return cls(
            {p: params[p] for p in law.param_names if p in params},
            posterior.train_domains,
            posterior.eval_domains,
            posterior.diagnostics_warning,
            source,
            law,
            inputs or {},
        )


def as_law_draws(source, law: Law | str | None = None) -> LawDraws:
    """Accept a :class:`LawDraws` or anything with ``law_params()`` and domain names."""
    if isinstance(source, LawDraws):
        return source
    if hasattr(source, "law_params"):
        return LawDraws.from_posterior(source)
    raise TypeError(
        "expected a Posterior or LawDraws; wrap a plain draws dict as "
        "LawDraws(params, train_domains, eval_domains, law=...)"
    )


def _unpack(draws, law: Law | str | None = None) -> tuple[Law, dict, dict]:
    """(law, params, inputs) of a LawDraws or Posterior, or of a plain draws dict under
    ``law`` (default M4). Checks that the law's extra inputs are given."""
    if isinstance(draws, LawDraws) or hasattr(draws, "law_params"):
        draws = as_law_draws(draws)
        if law is not None and get_law(law) is not draws.law:
            raise errors.SpecError(
                f"draws are of law {draws.law.name!r}, not {get_law(law).name!r}"
            )
        the_law, params, inputs = draws.law, draws.params, dict(draws.inputs)
    else:
        the_law = get_law("m4" if law is None else law)
        params, inputs = check_draws(draws, the_law), {}
    _require_inputs(the_law, inputs)
    return the_law, params, inputs


def _n_draws(law: Law, params: Mapping) -> int:
    return params[law.param_names[0]].shape[0]


def _dim_size(law: Law, params: Mapping, dim: str) -> int | None:
    """Size of ``dim`` in the draws (None when no parameter has it)."""
    for p in law.params:
        if dim in p.dims:
            return params[p.name].shape[1 + p.dims.index(dim)]
    return None


def _predict(law: Law, params: Mapping, r: np.ndarray, inputs: Mapping) -> np.ndarray:
    """Law mean (S, n, K) of mixtures r (n, M), extra inputs repeated for every mixture."""
    extra = {k: np.full(r.shape[:-1], v) for k, v in inputs.items()}
    return law.predict(r, params, **extra)


def domain_loss(draws, mixtures, *, law: Law | str | None = None) -> np.ndarray:
    """Mean loss ``L_si(r)`` per draw, mixture and validation domain: (S, n, K)."""
    law, params, inputs = _unpack(draws, law)
    return _predict(law, params, np.atleast_2d(np.asarray(mixtures, float)), inputs)


def aggregate_loss(draws, mixtures, weights, *, law: Law | str | None = None) -> np.ndarray:
    """Aggregate mean loss ``sum_i w_i L_si(r)`` (S, n) of mixtures (n, M); weights (K,)."""
    return domain_loss(draws, mixtures, law=law) @ np.asarray(weights, float)


def exp_terms(draws: Mapping[str, np.ndarray], weights) -> tuple[np.ndarray, ...]:
    """M4 only: ``(const (S,), a (S, K), t (S, K, M))`` with
    ``f_s(r) = const_s + sum_i a_si e^{t_si . r}``.

    ``a = w k`` and ``const = w . c`` from the paper's coefficients of :func:`m4.to_ck`.
    """
    params = draws.params if isinstance(draws, LawDraws) else draws
    c, k, t = m4.to_ck(check_draws(params, "m4"))
    w = np.asarray(weights, float)
    return c @ w, k * w, t


# ---------------------------------------------------------------------------------- feasible set


def centre(constraints: Constraints) -> np.ndarray:
    """The feasible point closest to the uniform mixture (M,)."""
    m = len(constraints.domains)
    return project(np.full(m, 1.0 / m), constraints.lower, constraints.upper)


@renamed_kwargs(**SEED)
def feasible_points(constraints: Constraints, n: int, random_seed=0) -> np.ndarray:
    """``n`` feasible mixtures (n, M): uniform Dirichlet draws projected onto the feasible set
    (drawn with ``random_seed``)."""
    rng = np.random.default_rng(random_seed)
    m = len(constraints.domains)
    return project(rng.dirichlet(np.ones(m), size=n), constraints.lower, constraints.upper)


def ensure_feasible(r, constraints: Constraints, what: str = "mixture") -> np.ndarray:
    """Project ``r`` (..., M) onto the feasible set and verify it; raise if that failed."""
    x = project(r, constraints.lower, constraints.upper)
    ok = constraints.contains(x)
    if not np.all(ok):
        raise errors.InfeasibleError(
            f"{what} could not be made feasible (numerical failure)",
            hint="report this with the constraints used",
        )
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
            hint="build the constraints with Constraints.build(posterior.train_domains, ...)",
        )
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
    * ``minimax``: minimise the worst validation domain's expected excess over the baseline,
      ``max_d (E L_d(r) - E L_d(b))`` over domains with weight > 0, exactly (epigraph form, see
      :mod:`bayesmix.decisions.guarantees`); the baseline defaults to the uniform mixture.
    """

    kind: str = "mean"
    level: float | None = None
    temperature: float | None = None

    def __post_init__(self):
        if self.kind not in OBJECTIVES:
            raise errors.ObjectiveError(
                f"unknown objective {self.kind!r}",
                hint="use mean, quantile:Q, cvar:Q, beat-baseline or minimax",
            )
        if self.kind in ("quantile", "cvar"):
            if self.level is None or not 0.0 < float(self.level) < 1.0:
                raise errors.ObjectiveError(
                    f"objective {self.kind} needs a level in (0, 1), got {self.level}",
                    hint=f"e.g. {self.kind}:0.9",
                )
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
                raise errors.ObjectiveError(
                    f"objective level {level!r} is not a number", hint="e.g. quantile:0.9"
                ) from None
            return cls(kind, value)
        return cls(kind)

    @property
    def needs_baseline(self) -> bool:
        return self.kind == "beat-baseline"

    @property
    def uses_baseline(self) -> bool:
        """beat-baseline and minimax compare with a baseline mixture (minimax: uniform when
        none is given)."""
        return self.kind in ("beat-baseline", "minimax")

    @property
    def sense(self) -> str:
        """``"min"`` or ``"max"``: what the reported objective value wants."""
        return "max" if self.kind == "beat-baseline" else "min"

    def describe(self) -> str:
        level = float("nan") if self.level is None else self.level
        if self.kind == "quantile":
            return f"{level:g}-quantile of the aggregate loss over draws"
        if self.kind == "cvar":
            return f"mean of the worst {1 - level:.3g} of draws of the aggregate loss"
        if self.kind == "beat-baseline":
            return "probability of a lower aggregate loss than the baseline"
        if self.kind == "minimax":
            return "worst validation domain's expected loss change vs the baseline"
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


class _DrawValues:
    """Per-draw aggregate loss ``f_s(r) = sum_i w_i L_si(r)`` and its gradient in r, from
    :meth:`Law.value_grad` (analytic or PyTensor-compiled, whatever the law provides).

    ``params``: the law's draws (leading axis S); ``weights`` (K,) normalised; ``inputs``: the
    law's fixed extra inputs. Calling it at one mixture r (M,) gives (f (S,), g (S, M)).
    """

    def __init__(self, law: Law, params: Mapping, weights, inputs: Mapping | None = None):
        self.law, self.params = law, params
        self.weights = np.asarray(weights, float)
        self.inputs = dict(inputs or {})
        self.n_draws = _n_draws(law, params)

    def __call__(self, r) -> tuple[np.ndarray, np.ndarray]:
        r = np.asarray(r, float)[None, :]  # one mixture shared by every draw: (1, M)
        f, g = self.law.value_grad(r, self.params, self.weights, **self.inputs)
        return np.asarray(f)[:, 0], np.asarray(g)[:, 0, :]


class _Criterion:
    """Scalar objective (to minimise) and its gradient at r, from per-draw values f_s(r).

    ``values``: a :class:`_DrawValues` (f (S,), g (S, M) at one r); ``baseline`` (M,) for
    beat-baseline, with the surrogate's ``temperature`` (loss units).
    """

    def __init__(self, objective: Objective, values: _DrawValues, baseline=None, temperature=None):
        self.objective, self.values = objective, values
        self.order_w = (
            _order_weights(objective.kind, objective.level, values.n_draws)
            if objective.kind in ("quantile", "cvar") and objective.level is not None
            else None
        )
        self.base_values = None
        if baseline is not None:
            self.base_values = values(np.asarray(baseline, float))[0]
        self.temperature = temperature

    def draws(self, r):
        """Per-draw values f (S,) and gradients (S, M) at r."""
        return self.values(r)

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
    (the smooth surrogate for beat-baseline); ``temperature`` the surrogate bandwidth actually
    used (beat-baseline only); ``converged``/``message``: whether SLSQP reported success from
    the start that won, and its message when it did not; ``n_agree``: how many starts reached
    the best value (within :data:`AGREE_RTOL`); ``convex``: whether the law is convex (when it
    is not, starts that disagree mean local optima and a possibly fragile choice).
    """

    mixture: np.ndarray
    value: float
    objective: Objective
    train_domains: tuple[str, ...]
    starts: list[float] = field(default_factory=list)
    temperature: float | None = None
    converged: bool = True
    message: str = ""
    n_agree: int = 1
    convex: bool = True

    @property
    def n_starts(self) -> int:
        return max(len(self.starts), 1)

    @property
    def fragile(self) -> bool:
        """A non-convex law whose starts did not all reach the best value."""
        return not self.convex and self.n_agree < self.n_starts

    def status(self) -> str:
        """One line: did SLSQP converge at the winning start, how many starts agree."""
        conv = (
            "SLSQP converged"
            if self.converged
            else f"SLSQP did not converge ({self.message or 'no message'})"
        )
        kind = "" if self.convex else " (the law is not convex)"
        return (
            f"{conv} at the best start; {self.n_agree} of {self.n_starts} starts reached "
            f"the best value{kind}"
        )

    def as_series(self) -> pd.Series:
        return pd.Series(
            self.mixture, index=pd.Index(self.train_domains, name="train_domain"), name="share"
        )


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
        f,
        x0[free],
        jac=True,
        method="SLSQP",
        bounds=list(zip(lo[free], hi[free])),
        constraints=[
            {
                "type": "eq",
                "fun": lambda z: z.sum() + fixed_sum - 1.0,
                "jac": lambda z: np.ones_like(z),
            }
        ],
        options={"maxiter": maxiter, "ftol": 1e-13},
    )
    return full(res.x), bool(res.success), str(res.message)


def _exact_mean_optimum(law: Law, params: Mapping, w, lower, upper) -> np.ndarray | None:
    """The posterior-mean optimum from the law's exact per-draw solver, or None.

    The posterior mean of f is ``sum_s sum_i (w_i / S) L_si(r)``. When each validation domain's
    loss depends only on its own parameters (every parameter's first dim is ``eval_domain``)
    that is one "draw" whose S*K validation domains are the draws' domains side by side, with
    weights w / S (M4: a sum of S*K exponentials). Laws with other parameters, extra inputs or
    no exact solver give None.
    """
    if set(law.inputs) != {"r"} or any(p.dims[:1] != ("eval_domain",) for p in law.params):
        return None
    s = _n_draws(law, params)
    folded = {p: v.reshape((1, -1) + v.shape[2:]) for p, v in params.items()}
    out = law.draw_optima(folded, np.tile(w, s) / s, lower, upper)
    return None if out is None else np.asarray(out[0], float)[0]


@renamed_kwargs(**SEED)
def minimize_objective(
    draws,
    constraints: Constraints,
    weights,
    objective: Objective | str = "mean",
    *,
    baseline=None,
    n_starts: int | None = None,
    extra_starts=None,
    random_seed=0,
    law: Law | str | None = None,
) -> Optimum:
    """The feasible mixture optimising ``objective`` over the draws' aggregate loss.

    ``draws``: a :class:`LawDraws` (or Posterior), or a plain dict of ``law``'s draws (default
    M4). ``weights`` (K,) over validation domains (normalised here); ``baseline`` (M,) is needed
    for beat-baseline. Starts: the posterior-mean optimum (exact, when the law has a fast
    per-draw solver; otherwise, for objectives other than the mean, SLSQP on the mean from the
    best start), the centre of the feasible set, the baseline projected onto it,
    ``extra_starts`` (n, M) and random feasible points, ``n_starts`` in all at least (default
    :data:`DEFAULT_STARTS`, :data:`NONCONVEX_STARTS` for a non-convex law). Each SLSQP result is
    projected onto the feasible set and the best by the smooth objective is returned, with how
    many starts reached it (:attr:`Optimum.n_agree`). ``random_seed`` draws the random starts.
    """
    objective = Objective.parse(objective)
    law, params, inputs = _unpack(draws, law)
    w = _normalise_weights(weights, _dim_size(law, params, "eval_domain"))
    m = _dim_size(law, params, "train_domain")
    if m is not None and m != len(constraints.domains):
        raise errors.DomainNameError(
            f"draws have {m} training domains, constraints {len(constraints.domains)}"
        )
    if objective.needs_baseline and baseline is None:
        raise errors.ObjectiveError(
            "objective beat-baseline needs a baseline mixture", hint="give --baseline or baseline="
        )
    if n_starts is None:
        n_starts = DEFAULT_STARTS if law.convex else NONCONVEX_STARTS
    lo, hi = constraints.lower, constraints.upper
    if objective.kind == "minimax":  # exact epigraph SLSQP (bayesmix.decisions.guarantees)
        return _minimax_optimum(
            law, params, inputs, w, constraints, baseline, extra_starts, random_seed, objective
        )
    values = _DrawValues(law, params, w, inputs)

    mean_opt = _exact_mean_optimum(law, params, w, lo, hi)
    starts = [] if mean_opt is None else [mean_opt]
    starts.append(centre(constraints))
    if baseline is not None:
        starts.append(project(np.asarray(baseline, float), lo, hi))
    if extra_starts is not None:
        starts.extend(project(np.atleast_2d(extra_starts), lo, hi))
    n_random = max(0, n_starts - len(starts))
    screen = SCREEN if not law.convex else 1
    pool = feasible_points(constraints, screen * n_random, random_seed)  # (screen * n_random, M)
    starts.extend(pool[:n_random])
    if mean_opt is None and objective.kind != "mean":
        # No exact mean optimum: approximate it by SLSQP from the start with the lowest
        # posterior mean (a good start for risk objectives, and beat-baseline's reference).
        mean_crit = _Criterion(Objective("mean"), values)
        first = min(starts, key=lambda x: mean_crit(x)[0])
        mean_opt = ensure_feasible(
            _slsqp(mean_crit, np.asarray(first, float), constraints)[0], constraints
        )
        starts.insert(0, mean_opt)

    temperature = None
    if objective.kind == "beat-baseline":
        reference = mean_opt if mean_opt is not None else starts[0]
        temperature = objective.temperature or _beat_temperature(
            values, baseline, reference, constraints, random_seed
        )
    crit = _Criterion(objective, values, baseline, temperature)
    if screen > 1 and n_random:
        # a non-convex objective: the random starts are the best of SCREEN x as many points
        score = np.array([crit(x)[0] for x in pool])
        starts[len(starts) - n_random :] = pool[np.argsort(score, kind="stable")[:n_random]]

    results = []
    for x0 in starts:
        x0 = np.asarray(x0, float)
        x, ok, msg = _slsqp(crit, x0, constraints)
        x = ensure_feasible(x, constraints)
        # SLSQP may stop early; never return something worse than its own start.
        if crit(x)[0] > crit(x0)[0]:
            x = x0
        results.append((float(crit(x)[0]), x, ok, msg))
    best = min(range(len(results)), key=lambda i: results[i][0])  # first of equals
    v_best, x, ok, msg = results[best]
    tol = AGREE_RTOL * max(1.0, abs(v_best))
    n_agree = sum(v <= v_best + tol for v, *_ in results)
    x = ensure_feasible(x, constraints)
    sign = -1.0 if objective.sense == "max" else 1.0
    return Optimum(
        mixture=x,
        value=crit.value(x),
        objective=objective,
        train_domains=tuple(constraints.domains),
        starts=[sign * v for v, *_ in results],
        temperature=temperature,
        converged=ok,
        message="" if ok else msg,
        n_agree=int(n_agree),
        convex=bool(law.convex),
    )


def _minimax_optimum(
    law, params, inputs, w, constraints, baseline, extra_starts, seed, objective
) -> Optimum:
    from bayesmix.decisions.guarantees import _excess_pieces, _minimax_plain

    m = len(constraints.domains)
    base = np.full(m, 1.0 / m) if baseline is None else np.asarray(baseline, float)
    x = ensure_feasible(
        _minimax_plain(law, params, inputs, w, base, constraints, extra_starts, seed), constraints
    )
    pieces, _ = _excess_pieces(law, params, inputs, w, base)
    value = float(np.max(pieces(x)[0]))
    return Optimum(
        mixture=x,
        value=value,
        objective=objective,
        train_domains=tuple(constraints.domains),
        starts=[value],
        convex=bool(law.convex),
    )


def _beat_temperature(values: _DrawValues, baseline, reference, constraints, seed) -> float:
    """Default logistic bandwidth for beat-baseline (see :class:`Objective`), in loss units:
    :data:`BEAT_BANDWIDTH` times the sd over draws of the improvement at ``reference`` (the
    posterior-mean optimum), or at random feasible points where that sd vanishes."""
    base = values(np.asarray(baseline, float))[0]
    candidates = np.vstack(
        [np.asarray(reference, float)[None], feasible_points(constraints, 16, seed)]
    )
    for r in candidates:
        sd = np.std(base - values(r)[0])
        if sd > 1e-12:
            return BEAT_BANDWIDTH * float(sd)
    return 1e-6 * float(np.mean(np.abs(base)))


def _normalise_weights(weights, k: int | None) -> np.ndarray:
    w = np.asarray(weights, float).reshape(-1)
    if k is not None and w.shape != (k,):
        raise errors.ObjectiveError(f"{w.size} weights for {k} validation domains")
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise errors.ObjectiveError(
            "validation-domain weights must be finite, >= 0 and not all zero"
        )
    return w / w.sum()


# --------------------------------------------------------------------------- per-draw optima


def _generic_draw_optima(
    law: Law,
    params: Mapping,
    w,
    inputs: Mapping,
    constraints: Constraints,
    *,
    n_starts: int | None,
    seed,
    tol: float,
    max_iter: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-draw optima by batched projected gradients (:func:`solve_projected_gradient`) on
    :meth:`Law.value_grad`: ``n_starts`` starts per draw (default 1, the centre of the feasible
    set, for a convex law; :data:`NONCONVEX_DRAW_STARTS` otherwise, the others random feasible
    points), each draw keeping its best. Returns (r (S, M), converged (S,))."""
    s = _n_draws(law, params)
    m = len(constraints.domains)
    if n_starts is None:
        n_starts = 1 if law.convex else NONCONVEX_DRAW_STARTS
    starts = [np.broadcast_to(centre(constraints), (s, m))]
    if n_starts > 1:
        starts.append(feasible_points(constraints, s * (n_starts - 1), seed))
    x0 = np.vstack(starts)  # (n_starts * S, M); problem row k*S + i is draw i from start k

    def fun(rows, x):
        sub = {p: v[rows % s] for p, v in params.items()}
        f, g = law.value_grad(x[:, None, :], sub, w, **inputs)
        return np.asarray(f)[:, 0], np.asarray(g)[:, 0, :]

    x, ok = solve_projected_gradient(
        fun, x0, constraints.lower, constraints.upper, tol=tol, max_iter=max_iter
    )
    f = fun(np.arange(len(x)), x)[0].reshape(n_starts, s)
    pick = np.argmin(np.where(np.isfinite(f), f, np.inf), axis=0)  # the best start per draw
    rows = pick * s + np.arange(s)
    return x[rows], ok[rows]


@renamed_kwargs(**SEED)
def draw_optima(
    draws,
    constraints: Constraints,
    weights,
    *,
    law: Law | str | None = None,
    n_starts: int | None = None,
    random_seed=0,
    tol: float = PG_TOL,
    max_iter: int = PG_MAX_ITER,
) -> tuple[np.ndarray, np.ndarray]:
    """The feasible mixture minimising each draw's aggregate loss: (r (S, M), converged (S,)).

    ``draws``: a :class:`LawDraws` (or Posterior), or a plain dict of ``law``'s draws (default
    M4). The law's exact solver (:meth:`Law.draw_optima`, from the centre of the feasible set,
    at the draws' fixed extra inputs) when it has one; otherwise batched projected gradients
    (``n_starts``, ``random_seed``, ``tol``, ``max_iter`` apply to that path only).
    """
    law, params, inputs = _unpack(draws, law)
    w = _normalise_weights(weights, _dim_size(law, params, "eval_domain"))
    lo, hi = constraints.lower, constraints.upper
    out = None
    if not inputs or _takes_inputs(law.draw_optima, inputs):
        out = law.draw_optima(params, w, lo, hi, x0=centre(constraints), **inputs)
    if out is None:
        out = _generic_draw_optima(
            law,
            params,
            w,
            inputs,
            constraints,
            n_starts=n_starts,
            seed=random_seed,
            tol=tol,
            max_iter=max_iter,
        )
    x, ok = out
    return ensure_feasible(x, constraints, "per-draw optimum"), np.asarray(ok, bool)


def _takes_inputs(fn, inputs: Mapping) -> bool:
    """Whether a law's ``draw_optima`` accepts the extra inputs (laws written before inputs
    existed do not: they get the generic solver instead)."""
    import inspect

    params = inspect.signature(fn).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return True
    return set(inputs) <= {p.name for p in params}


def optima_dataarray(optima: np.ndarray, train_domains: Sequence[str]) -> xr.DataArray:
    """Per-draw optima as a DataArray with dims (sample, train_domain)."""
    optima = np.asarray(optima, float)
    return xr.DataArray(
        optima,
        dims=("sample", "train_domain"),
        coords={"sample": np.arange(optima.shape[0]), "train_domain": list(train_domains)},
        name="optimal_share",
        attrs={"units": "share of training tokens"},
    )


@renamed_kwargs(**CI_PROB)
def optimum_spread(
    optima,
    train_domains: Sequence[str] | None = None,
    ci_prob: float = DEFAULT_PROB,
    *,
    ci_kind: str = "eti",
) -> pd.DataFrame:
    """Tidy table of the optimum's location: train_domain, mean, median, lower, upper.

    ``optima``: (S, M) array (then give ``train_domains``) or the DataArray of
    :func:`optima_dataarray`; intervals of mass ``ci_prob`` by :func:`credible_interval`
    (``ci_kind`` "eti" equal-tailed, or "hdi").
    """
    check_prob(ci_prob)
    if isinstance(optima, xr.DataArray):
        train_domains = [str(d) for d in optima["train_domain"].values]
        optima = optima.transpose("sample", "train_domain").values
    if train_domains is None:
        raise ValueError("optimum_spread: give train_domains with an array of optima")
    v = np.asarray(optima, float)
    lo, hi = credible_interval(v, ci_prob, ci_kind=ci_kind)
    return pd.DataFrame(
        {
            "train_domain": list(train_domains),
            "mean": v.mean(axis=0),
            "median": np.quantile(v, 0.5, axis=0),
            "lower": lo,
            "upper": hi,
        }
    )
