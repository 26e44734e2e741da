"""Choosing the mixture under uncertainty: constrained optimisation over posterior draws.

For one posterior draw s and validation-domain weights w (normalised, shape (K,)) the aggregate
loss of a mixture r is ``f_s(r) = sum_i w_i L_si(r)``, where ``L`` is the posterior's mixing law
(any :class:`bayesmix.laws.Law`). Everything here needs only the law's interface:
:meth:`Law.mean` for losses, :meth:`Law.value_grad` for ``f_s`` and its gradient in r at once
for every draw, :meth:`Law.draw_optima` for an exact per-draw solver when the law has one (M4:
a constant plus a sum of exponentials, solved by :func:`bayesmix.laws.solvers.solve_exp_sum`),
and ``Law.convex`` to decide how many starts a search needs.

* :func:`minimize_objective` - one mixture for a whole posterior: minimise the posterior mean of
  f, a posterior quantile or CVaR of f, or maximise the probability of beating a baseline
  mixture; SLSQP with the law's gradients and multi-start from feasible points. For a
  non-convex law it uses more starts and reports how many reached the best value
  (:attr:`Optimum.n_agree`), so a fragile optimum shows.
* :func:`draw_optima` - the optimum of every draw at once: the posterior of the optimum's
  location. The law's exact solver when it has one, else batched projected gradients over all
  draws (:func:`solve_projected_gradient`, several starts per draw for a non-convex law).

The draws (:mod:`bayesmix.decisions.draws`), the objectives (:mod:`bayesmix.decisions.objectives`),
the feasible set's points (:mod:`bayesmix.decisions.feasible`), the minimax solver
(:mod:`bayesmix.decisions.epigraph`) and the per-draw solvers (:mod:`bayesmix.laws.solvers`)
live below this module.

Draws are a :class:`LawDraws` (the law, its parameter draws with a leading sample axis S, domain
names, the posterior's diagnostics warning) or, for M4 and backwards compatibility, a plain dict
``{"m": (S, K), "rho": (S, K), "t": (S, K, M)}`` (any law with ``law=``). Every returned mixture
is projected onto the feasible set and checked with :meth:`Constraints.contains`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import xarray as xr
from scipy import optimize as sopt

from bayesmix import errors
from bayesmix._compat import CI_PROB, SEED, renamed_kwargs
from bayesmix.data.constraints import Constraints
from bayesmix.decisions.draws import (
    count_draws,
    dim_size,
    normalise_weights,
    unpack_draws,
)
from bayesmix.decisions.epigraph import excess_pieces, minimax_plain
from bayesmix.decisions.feasible import centre, ensure_feasible, feasible_points
from bayesmix.decisions.objectives import (
    Criterion,
    DrawValues,
    Objective,
    beat_temperature,
)
from bayesmix.laws import Law
from bayesmix.laws.solvers import (
    NONCONVEX_DRAW_STARTS,
    PG_MAX_ITER,
    PG_TOL,
    project,
    solve_projected_gradient,
)
from bayesmix.posterior.intervals import DEFAULT_PROB, check_prob, credible_interval

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
    s = count_draws(law, params)
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
    law, params, inputs = unpack_draws(draws, law)
    w = normalise_weights(weights, dim_size(law, params, "eval_domain"))
    m = dim_size(law, params, "train_domain")
    if m is not None and m != len(constraints.domains):
        raise errors.DomainNameError(
            f"draws have {m} training domains, constraints {len(constraints.domains)}"
        )
    if objective.needs_baseline and baseline is None:
        raise errors.ObjectiveError(
            "baseline=None: objective beat-baseline needs a baseline mixture", param="baseline"
        )
    seed = random_seed
    if objective.kind == "minimax":  # exact epigraph SLSQP (bayesmix.decisions.epigraph)
        return _minimax_optimum(
            law, params, inputs, w, constraints, baseline, extra_starts, seed, objective
        )
    values = DrawValues(law, params, w, inputs)
    starts, pool, mean_opt = _starts(
        law, params, w, values, objective, constraints, baseline, extra_starts, n_starts, seed
    )
    screened = _screened(law, objective)
    n_random = len(pool) // (SCREEN if screened else 1)  # the last n_random starts
    temperature = None
    if objective.kind == "beat-baseline":
        reference = mean_opt if mean_opt is not None else starts[0]
        temperature = objective.temperature or beat_temperature(
            values, baseline, reference, constraints, seed
        )
    crit = Criterion(objective, values, baseline, temperature)
    if screened and n_random:
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


def _screened(law, objective) -> bool:
    """Whether the random starts are the best of :data:`SCREEN` x as many feasible points: for a
    non-convex law, and for any objective but the mean (a quantile or beat-baseline objective is
    not convex even when the law is)."""
    return not (law.convex and objective.kind == "mean")


def _starts(law, params, w, values, objective, constraints, baseline, extra_starts, n_starts, seed):
    """The SLSQP starts of :func:`minimize_objective` (see there), the random feasible points
    the last of them come from (:data:`SCREEN` times as many as taken for a non-convex law or
    an objective other than the mean, to be screened by the objective) and the posterior-mean
    optimum (or None)."""
    if n_starts is None:
        n_starts = DEFAULT_STARTS if law.convex else NONCONVEX_STARTS
    lo, hi = constraints.lower, constraints.upper
    mean_opt = _exact_mean_optimum(law, params, w, lo, hi)
    starts = [] if mean_opt is None else [mean_opt]
    starts.append(centre(constraints))
    if baseline is not None:
        starts.append(project(np.asarray(baseline, float), lo, hi))
    if extra_starts is not None:
        starts.extend(project(np.atleast_2d(extra_starts), lo, hi))
    n_random = max(0, n_starts - len(starts))
    screen = SCREEN if _screened(law, objective) else 1
    pool = feasible_points(constraints, screen * n_random, seed)  # (screen * n_random, M)
    starts.extend(pool[:n_random])
    if mean_opt is None and objective.kind != "mean":
        # No exact mean optimum: approximate it by SLSQP from the start with the lowest
        # posterior mean (a good start for risk objectives, and beat-baseline's reference).
        mean_crit = Criterion(Objective("mean"), values)
        first = min(starts, key=lambda x: mean_crit(x)[0])
        mean_opt = ensure_feasible(
            _slsqp(mean_crit, np.asarray(first, float), constraints)[0], constraints
        )
        starts.insert(0, mean_opt)
    return starts, pool, mean_opt


def _minimax_optimum(
    law, params, inputs, w, constraints, baseline, extra_starts, seed, objective
) -> Optimum:

    m = len(constraints.domains)
    base = np.full(m, 1.0 / m) if baseline is None else np.asarray(baseline, float)
    x = ensure_feasible(
        minimax_plain(law, params, inputs, w, base, constraints, extra_starts, seed), constraints
    )
    pieces, _ = excess_pieces(law, params, inputs, w, base)
    value = float(np.max(pieces(x)[0]))
    return Optimum(
        mixture=x,
        value=value,
        objective=objective,
        train_domains=tuple(constraints.domains),
        starts=[value],
        convex=bool(law.convex),
    )


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
    s = count_draws(law, params)
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
    law, params, inputs = unpack_draws(draws, law)
    w = normalise_weights(weights, dim_size(law, params, "eval_domain"))
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
