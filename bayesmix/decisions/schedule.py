"""Choosing a multi-phase schedule: one mixture per phase, with constraints per phase and on
the whole run, under a law of phased runs (``<law>+phases``, :mod:`bayesmix.laws.phases`).

The phase shares of the steps ``f`` (P,) are given (e.g. 0.8 then a 0.2 annealing phase); the
schedule ``R = (r^(1), ..., r^(P))`` minimises the posterior expected weighted loss

    F(R) = E_draws[ sum_i w_i L_i(r_eff(R; gamma)) ],   r_eff = sum_k w_k(f, gamma) r^(k)

Where the law says the loss depends on a schedule only through ``r_eff`` (this one does), a
schedule is worth more than one static mixture only when constraints bind differently per
phase: a domain capped early but allowed in the annealing phase (small high-quality data), a
floor on web text in the first phase, or a whole-run token budget per domain. Without such
constraints and with ``gamma`` known, the best static mixture already reaches every reachable
``r_eff``; the uncertainty in ``gamma`` then still makes the static choice no worse.

Constraints: ``constraints`` one :class:`~bayesmix.data.constraints.Constraints` for every
phase or a list of one per phase (simplex ∩ box each); ``whole`` optional bounds on the whole
run's mixture ``sum_k f_k r^(k)`` (the tokens each domain gets, e.g. token availability). The
feasible set is convex; projections onto it are Dykstra's alternating projections between the
per-phase boxes (exact, :func:`bayesmix.laws.solvers.project`) and the whole-run bounds (exact
per domain). The optimiser is projected gradient with backtracking on the mean over draws (the
gradient of each draw's base-law loss at its ``r_eff``, :meth:`Law.value_grad`, times ``w_k``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bayesmix import errors
from bayesmix.data.constraints import Constraints
from bayesmix.laws import get_law
from bayesmix.laws.phases import PhasesLaw, effective_mixture, phase_weights
from bayesmix.laws.solvers import project

#: Largest number of posterior draws the objective averages over (thinned evenly).
MAX_DRAWS = 1000


@dataclass(frozen=True)
class Schedule:
    """A chosen schedule.

    ``mixtures`` (phase x train_domain; index 1..P named ``phase``), ``fractions`` (P,) phase
    shares of the steps, ``whole`` (train_domain) the run's token shares, ``effective``
    (train_domain) the posterior-mean effective mixture, ``expected_loss`` (nats/token) the
    posterior expected weighted loss; ``static`` / ``static_loss``: the best single mixture
    feasible in every phase (and on the whole run) and its expected loss, for comparison.
    """

    mixtures: pd.DataFrame
    fractions: np.ndarray
    whole: pd.Series
    effective: pd.Series
    expected_loss: float
    static: pd.Series
    static_loss: float

    @property
    def gain(self) -> float:
        """Expected loss the schedule saves over the best static mixture (nats/token, >= 0)."""
        return self.static_loss - self.expected_loss


def schedule_loss(law, params: Mapping, fractions, mixtures, weights) -> np.ndarray:
    """Weighted loss (S,) per draw of one schedule: ``mixtures`` (P, M), ``fractions`` (P,),
    ``params`` with a leading draw axis S, ``weights`` (K,)."""
    law = _phases_law(law)
    r_eff = effective_mixture(
        np.asarray(fractions, float)[None],
        np.asarray(mixtures, float)[None],
        params["late_emphasis"],
    )  # (S, 1, M)
    f, _ = law.base.value_grad(r_eff, params, np.asarray(weights, float))
    return f[:, 0]


def decide_schedule(
    posterior,
    fractions: Sequence[float],
    *,
    constraints: Constraints | Sequence[Constraints] | None = None,
    whole: Constraints | None = None,
    weights: Mapping[str, float] | Sequence[float] | None = None,
    params: Mapping | None = None,
    max_iter: int = 500,
) -> Schedule:
    """The schedule minimising the posterior expected weighted loss (module docstring).

    ``posterior``: a :class:`bayesmix.Posterior` of a ``<law>+phases`` fit, or a law (name or
    Law) with ``params`` (draws, leading axis S; e.g. a known truth); ``fractions``: each
    phase's share of the training steps (>= 0, sum 1); ``weights``: per validation domain
    (default equal). Returns a :class:`Schedule`; every phase mixture is checked with
    :meth:`Constraints.contains`.
    """
    if params is None:
        law, params = posterior.law, posterior.law_params()
        train = tuple(posterior.train_domains)
        evals = tuple(posterior.eval_domains)
    else:
        law = _phases_law(posterior)
        train, evals = _domains(law, params, constraints, whole)
    law = _phases_law(law)
    params = _thin({p: np.asarray(v, float) for p, v in params.items()})
    frac = np.asarray(fractions, float)
    if frac.ndim != 1 or frac.size < 1 or (frac < 0).any() or abs(frac.sum() - 1) > 1e-6:
        raise errors.OptionError(
            f"phase fractions must be >= 0 and sum to 1, got {list(frac)}",
            hint="give each phase's share of the training steps, e.g. [0.8, 0.2]",
            param="fractions",
        )
    n_p, n_m = frac.size, len(train)
    boxes = _phase_boxes(constraints, n_p, train)
    w = _weights(weights, evals)
    lo = np.stack([b.lower for b in boxes])
    hi = np.stack([b.upper for b in boxes])

    def proj(x):
        return project_schedule(x, lo, hi, frac, whole)

    start = proj(np.full((n_p, n_m), 1.0 / n_m))
    if whole is not None and not whole.contains((frac @ start)[None], atol=1e-6)[0]:
        raise errors.InfeasibleError(
            "no schedule meets the per-phase and whole-run constraints together",
            hint="loosen a per-phase bound or the whole-run bound",
        )

    def value_grad(x):
        r_eff = effective_mixture(frac[None], x[None], params["late_emphasis"])  # (S, 1, M)
        f, g = law.base.value_grad(r_eff, params, w)  # (S, 1), (S, 1, M)
        wk = phase_weights(frac[None], params["late_emphasis"])[:, 0]  # (S, P)
        return f[:, 0].mean(), np.einsum("sp,sm->pm", wk, g[:, 0]) / len(wk)

    x = _descend(value_grad, proj, start, max_iter)
    static, static_loss = _best_static(value_grad, lo, hi, whole, max_iter)
    for k, box in enumerate(boxes):
        if not box.contains(x[k][None])[0]:
            raise errors.InfeasibleError(f"phase {k + 1}'s mixture left its constraints")
    if whole is not None and not whole.contains((frac @ x)[None], atol=1e-6)[0]:
        raise errors.InfeasibleError(
            "no schedule meets the per-phase and whole-run constraints together",
            hint="loosen a per-phase bound or the whole-run bound",
        )
    loss = float(value_grad(x)[0])
    r_eff = effective_mixture(frac[None], x[None], params["late_emphasis"])[:, 0].mean(axis=0)
    index = pd.Index(range(1, n_p + 1), name="phase")
    cols = pd.Index(train, name="train_domain")
    return Schedule(
        mixtures=pd.DataFrame(x, index=index, columns=cols),
        fractions=frac,
        whole=pd.Series(frac @ x, index=cols),
        effective=pd.Series(r_eff, index=cols),
        expected_loss=loss,
        static=pd.Series(static, index=cols),
        static_loss=float(static_loss),
    )


def _domains(law, params, constraints, whole) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Training and validation domain names for draws given without a posterior: from the
    constraints, else ``d0..``; ``e0..`` for validation domains."""
    effect = law.effect_matrix()
    k, m = np.asarray(params[effect.name]).shape[-2:] if effect else (1, 0)
    first: Constraints | None
    if isinstance(constraints, Constraints):
        first = constraints
    elif constraints:
        first = constraints[0]
    else:
        first = whole
    train = tuple(first.domains) if first is not None else tuple(f"d{j}" for j in range(m))
    return train, tuple(f"e{i}" for i in range(k))


def _best_static(value_grad, lo, hi, whole, max_iter) -> tuple[np.ndarray, float]:
    """The best single mixture (M,) feasible in every phase's box and the whole-run bounds,
    and its expected loss; NaNs when no single mixture is feasible."""
    n_p, n_m = lo.shape
    s_lo, s_hi = lo.max(axis=0), hi.min(axis=0)
    if whole is not None:
        s_lo, s_hi = np.maximum(s_lo, whole.lower), np.minimum(s_hi, whole.upper)
    if s_lo.sum() > 1 + 1e-9 or s_hi.sum() < 1 - 1e-9 or (s_lo > s_hi + 1e-12).any():
        return np.full(n_m, np.nan), np.nan

    def proj_static(y):
        return np.broadcast_to(project(y[0], s_lo, s_hi), (n_p, n_m)).copy()

    xs = _descend(value_grad, proj_static, proj_static(np.full((n_p, n_m), 1 / n_m)), max_iter)
    return xs[0], float(value_grad(xs)[0])


def _phases_law(law) -> PhasesLaw:
    law = get_law(law)
    if not isinstance(law, PhasesLaw):
        raise errors.OptionError(
            f"law {law.name!r} does not describe phased runs",
            hint=f"fit the law '{law.name}+phases' to choose a schedule",
            param="posterior",
        )
    return law


def _thin(params: dict) -> dict:
    s = len(next(iter(params.values())))
    if s <= MAX_DRAWS:
        return params
    keep = np.linspace(0, s - 1, MAX_DRAWS).round().astype(int)
    return {k: v[keep] for k, v in params.items()}


def _phase_boxes(constraints, n_p: int, train) -> list[Constraints]:
    if constraints is None:
        return [Constraints.unconstrained(train)] * n_p
    if isinstance(constraints, Constraints):
        return [constraints] * n_p
    boxes = list(constraints)
    if len(boxes) != n_p:
        raise errors.OptionError(
            f"{len(boxes)} phase constraints for {n_p} phases",
            hint="give one Constraints per phase, or one for all",
            param="constraints",
        )
    return boxes


def _weights(weights, evals) -> np.ndarray:
    if weights is None:
        return np.full(len(evals), 1.0 / len(evals))
    if isinstance(weights, Mapping):
        unknown = [d for d in weights if d not in evals]
        if unknown:
            raise errors.OptionError(
                f"unknown validation domain {unknown[0]!r} in weights",
                hint=f"known: {', '.join(evals)}",
                param="weights",
            )
        w = np.array([float(weights.get(d, 0.0)) for d in evals])
    else:
        w = np.asarray(weights, float)
    if w.shape != (len(evals),) or (w < 0).any() or w.sum() <= 0:
        raise errors.OptionError("weights must be >= 0, one per validation domain", param="weights")
    return w / w.sum()


def project_schedule(x, lo, hi, frac, whole: Constraints | None, n_iter: int = 2000):
    """Projection of a schedule ``x`` (P, M) onto the per-phase boxes and the whole-run bounds:
    Dykstra's algorithm between the two convex sets, stopped when their iterates agree within
    1e-10 (exact per-phase projection when there are no whole-run bounds). Returns the iterate
    in the per-phase boxes."""
    if whole is None:
        return project(x, lo, hi)
    a_norm = float(frac @ frac)
    y, p, q = x.copy(), np.zeros_like(x), np.zeros_like(x)
    for _ in range(n_iter):
        z = project(y + p, lo, hi)  # onto the per-phase boxes
        p = y + p - z
        v = z + q
        s = frac @ v  # (M,) whole-run shares
        over = np.maximum(s - whole.upper, 0) - np.maximum(whole.lower - s, 0)
        y = v - np.outer(frac, over) / a_norm  # onto the whole-run bounds, per domain
        q = v - y
        if np.abs(z - y).max() < 1e-10:
            break
    return z


def _descend(value_grad, proj, x, max_iter: int):
    """Projected gradient with backtracking (Armijo on the projected step) from ``x``."""
    f, g = value_grad(x)
    step = 1.0
    for _ in range(max_iter):
        while True:
            x_new = proj(x - step * g)
            f_new, g_new = value_grad(x_new)
            if f_new <= f - 1e-4 / step * ((x_new - x) ** 2).sum() or step < 1e-10:
                break
            step *= 0.5
        moved = np.abs(x_new - x).max()
        x, f, g = x_new, f_new, g_new
        if moved < 1e-9:
            break
        step *= 2.0
    return x
