"""Minimising the largest of several smooth pieces over the feasible set (epigraph SLSQP).

The minimax objective (the worst validation domain's expected loss change against a baseline,
:func:`excess_pieces`) and the guarantees' solver (:mod:`bayesmix.decisions.guarantees`, which
adds the chance constraints as inequalities) both minimise ``max_p pieces(r)``:
:func:`minimise_max` from one start, :func:`minimise_max_from` from several.
"""

from __future__ import annotations

import numpy as np
from scipy import optimize as sopt

from bayesmix.data.constraints import Constraints
from bayesmix.decisions.draws import predict_draws
from bayesmix.decisions.feasible import centre, ensure_feasible, feasible_points
from bayesmix.laws.solvers import project

#: SLSQP iterations per solve.
MAXITER = 300


class DomainValues:
    """Per-draw weighted losses ``f_sj(r) = sum_i W_ji L_si(r)`` (S, J) and gradients in r
    (S, J, M) for weight rows W (J, K), from :meth:`Law.value_grad`; the last r is cached."""

    def __init__(self, law, params, inputs, weights):
        self.law, self.params, self.inputs = law, params, dict(inputs)
        self.weights = np.atleast_2d(np.asarray(weights, float))
        self._key, self._val = None, None

    def __call__(self, r):
        r = np.asarray(r, float)
        key = r.tobytes()
        if key != self._key:
            fs, gs = [], []
            for w in self.weights:
                f, g = self.law.value_grad(r[None, :], self.params, w, **self.inputs)
                fs.append(np.asarray(f)[:, 0])
                gs.append(np.asarray(g)[:, 0, :])
            self._key, self._val = key, (np.stack(fs, axis=1), np.stack(gs, axis=1))
        return self._val

    def at(self, mixtures) -> np.ndarray:
        """Values (S, n, J) at mixtures (n, M) without gradients."""
        r = np.atleast_2d(np.asarray(mixtures, float))
        return predict_draws(self.law, self.params, r, self.inputs) @ self.weights.T


def minimise_max(pieces, x0, constraints: Constraints, ineq=None, maxiter: int = MAXITER):
    """Minimise ``max_p pieces(r)`` (pieces: r -> (v (P,), G (P, M))) over the feasible set,
    subject to ``ineq(r) -> (c (J,), C (J, M)) >= 0``, by SLSQP over the free shares (plus the
    epigraph variable u when P > 1). Returns the point projected onto the share constraints."""
    lo, hi = constraints.lower, constraints.upper
    free = hi - lo > 1e-12
    x0 = project(np.asarray(x0, float), lo, hi)
    if free.sum() <= 1:
        return x0
    nf = int(free.sum())
    base = x0.copy()
    fixed_sum = base[~free].sum()
    v0 = np.atleast_1d(pieces(x0)[0])
    epi = v0.size > 1

    def full(z):
        x = base.copy()
        x[free] = z[:nf]
        return x

    cons = [
        {
            "type": "eq",
            "fun": lambda z: z[:nf].sum() + fixed_sum - 1.0,
            "jac": lambda z: np.concatenate([np.ones(nf), np.zeros(z.size - nf)]),
        }
    ]
    if epi:

        def f(z):
            return z[nf], np.concatenate([np.zeros(nf), [1.0]])

        def epi_c(z):
            return z[nf] - np.atleast_1d(pieces(full(z))[0])

        def epi_j(z):
            g = np.atleast_2d(pieces(full(z))[1])[:, free]
            return np.hstack([-g, np.ones((g.shape[0], 1))])

        cons.append({"type": "ineq", "fun": epi_c, "jac": epi_j})
        z0 = np.concatenate([x0[free], [v0.max()]])
        bounds = list(zip(lo[free], hi[free])) + [(None, None)]
    else:

        def f(z):
            v, g = pieces(full(z))
            return float(np.atleast_1d(v)[0]), np.atleast_2d(g)[0][free]

        z0 = x0[free]
        bounds = list(zip(lo[free], hi[free]))
    if ineq is not None:

        def ineq_j(z):
            jac = ineq(full(z))[1][:, free]
            return np.hstack([jac, np.zeros((jac.shape[0], z.size - nf))])

        cons.append({"type": "ineq", "fun": lambda z: ineq(full(z))[0], "jac": ineq_j})
    with np.errstate(over="ignore", invalid="ignore"):
        res = sopt.minimize(
            f,
            z0,
            jac=True,
            method="SLSQP",
            bounds=bounds,
            constraints=cons,
            options={"maxiter": maxiter, "ftol": 1e-12},
        )
    x = full(res.x)
    if not np.all(np.isfinite(x)):
        return x0
    return project(x, lo, hi)


def worst_piece(pieces, r) -> float:
    return float(np.max(np.atleast_1d(pieces(r)[0])))


def excess_pieces(law, params, inputs, w, baseline):
    """minimax: expected excess over the baseline per validation domain with weight > 0."""
    k = len(w)
    keep = np.flatnonzero(np.asarray(w) > 0)
    dv = DomainValues(law, params, inputs, np.eye(k)[keep])
    base = dv.at(baseline)[:, 0, :].mean(axis=0)

    def pieces(r):
        f, g = dv(r)
        return f.mean(axis=0) - base, g.mean(axis=0)

    return pieces, keep


def minimise_max_from(pieces, constraints: Constraints, starts) -> np.ndarray:
    """:func:`minimise_max` from every start (projected first); the best feasible result."""
    lo, hi = constraints.lower, constraints.upper
    starts = [project(np.asarray(s, float), lo, hi) for s in starts]
    best = min(
        (minimise_max(pieces, s, constraints) for s in starts), key=lambda r: worst_piece(pieces, r)
    )
    return ensure_feasible(best, constraints)


def minimax_plain(law, params, inputs, w, base, constraints, extra_starts, seed):
    """The minimax mixture without guarantees (epigraph SLSQP from a few starts)."""
    pieces, _ = excess_pieces(law, params, inputs, w, base)
    starts = [base, centre(constraints), *feasible_points(constraints, 2, seed)]
    if extra_starts is not None:
        starts += list(np.atleast_2d(extra_starts))
    return minimise_max_from(pieces, constraints, starts)
