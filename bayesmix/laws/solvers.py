"""Solvers the laws use: projection onto the feasible set and per-draw optimisers.

Below the laws and the decisions: a law's exact optimiser (:meth:`Law.draw_optima`, e.g. M4's
sum of exponentials, :func:`solve_exp_sum`) and the generic batched projected-gradient solver
(:func:`solve_projected_gradient`) live here, so the laws do not import the decision layer
(:mod:`bayesmix.decisions.optimize`), which uses them too.

* :func:`project` - exact Euclidean projection onto ``{lower <= r <= upper, sum r = 1}``.
"""

from __future__ import annotations

import numpy as np

#: Starts per draw of the generic per-draw solver for a non-convex law (the centre of the
#: feasible set plus random feasible points); a convex law needs one.
NONCONVEX_DRAW_STARTS = 4
#: Generic per-draw solver: stop when the projected-gradient residual ``max|x - P(x - g)|`` is
#: below PG_TOL (zero exactly at a KKT point; with curvature of order 1 nat per unit share^2,
#: as for losses of a few nats, the share error is of the same order), or after PG_MAX_ITER.
PG_TOL = 1e-9
PG_MAX_ITER = 2000


def _exp_value_grad(a, t, r, hessian=False):
    """Value (...,), gradient (..., M) [and Hessian (..., M, M)] of ``sum_i a_i exp(t_i . r)``.

    Shapes broadcast: a (..., K), t (..., K, M), r (..., M).
    """
    e = a * np.exp(np.matmul(r[..., None, :], np.swapaxes(t, -1, -2))[..., 0, :])  # t_i . r
    f = e.sum(-1)
    g = np.matmul(e[..., None, :], t)[..., 0, :]
    if not hessian:
        return f, g
    return f, g, np.matmul(np.swapaxes(t, -1, -2) * e[..., None, :], t)


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
    # sum of clip(y - lam) at each breakpoint: sum(upper) .. sum(lower)
    total = np.empty_like(breaks)
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
        kkt[:, :m, :m] = (
            np.where(both, hp, 0.0) + eye * np.where(free, 1e-10 * scale[:, None], 1.0)[:, :, None]
        )
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


#: Armijo's sufficient-decrease fraction, the most halvings of one line search, and how many
#: past values the non-monotone test compares with (Grippo-Lampariello-Lucidi memory).
_ARMIJO = 1e-4
_HALVINGS = 40
_MEMORY = 10
#: Smallest Barzilai-Borwein step (shares per unit gradient); the largest is the step that
#: moves some share by 2 before projection (more than the simplex's diameter, sqrt 2).
_STEP_MIN = 1e-12
#: Iterations of plain projected gradients before a problem still running also takes Newton
#: steps, and the finite-difference step (in shares) of their Hessian.
NEWTON_AFTER = 10
_FD_STEP = 1e-6


def solve_projected_gradient(
    fun,
    x0,
    lower,
    upper,
    *,
    tol: float = PG_TOL,
    max_iter: int = PG_MAX_ITER,
    newton_after: int = NEWTON_AFTER,
) -> tuple[np.ndarray, np.ndarray]:
    """Minimise P smooth functions over the box-simplex at once (NumPy, batched over problems).

    ``fun(rows, x)`` -> (f (n,), g (n, M)): problems ``rows`` (n,) evaluated at x (n, M);
    ``x0`` (P, M) starts (projected first). Every iteration, for every live problem:

    1. a spectral projected-gradient step (Birgin, Martinez & Raydan 2000): along the
       projection arc ``x(a) = P(x - a g)``, a starting at the Barzilai-Borwein value
       ``s.s / s.y`` of the last move (s, y: change of x and of g; scale-free, long where the
       function is flat), capped at the step that moves some share by 2 (the cap itself where
       the last move saw no positive curvature), and
       halving until the non-monotone Armijo test ``f(x(a)) <= max(last 10 f) + 1e-4 g.(x(a) -
       x)`` holds (non-monotone, so BB steps pass through narrow valleys; monotone, against f
       itself, once Newton steps start, which it would otherwise undo). This also finds which
       shares sit on a bound;
    2. after ``newton_after`` iterations (problems that are not done by then are the
       ill-conditioned ones, e.g. m4log's log shares near zero, where gradient steps crawl):
       a Newton step on the shares strictly inside their bounds, keeping their sum, from a
       finite-difference Hessian of ``fun``'s gradient (M extra gradients in one call), with
       absolute eigenvalues where the function is not convex, kept when it passes Armijo's test
       along the projection arc.

    A problem stops, converged, when its projected-gradient residual ``max_j |x - P(x - g)|_j``
    is <= ``tol`` (zero exactly at a KKT point of the box-simplex); it stops unconverged when
    no step passes the test or after ``max_iter`` iterations. Returns (x (P, M), converged
    (P,)), x the best point each unconverged problem visited.
    """
    lo, hi = np.asarray(lower, float), np.asarray(upper, float)
    x = project(np.asarray(x0, float), lo, hi)
    n = len(x)
    f, g = fun(np.arange(n), x)
    f, g = np.array(f, float), np.array(g, float)
    history = np.repeat(f[:, None], _MEMORY, axis=1)  # last values, for the non-monotone test
    best_x, best_f = x.copy(), f.copy()
    # First step: move the largest share by at most 0.1.
    step = 0.1 / _gradient_size(g)
    converged = np.zeros(n, bool)
    live = np.arange(n)
    for it in range(max_iter):
        residual = np.abs(x[live] - project(x[live] - g[live], lo, hi)).max(axis=1)
        done = residual <= tol
        converged[live[done]] = True
        live = live[~done]
        if live.size == 0:
            break
        newton = it >= newton_after
        # with Newton steps the gradient step turns monotone: a non-monotone one would undo them
        reference = f[live] if newton else history[live].max(axis=1)
        xn, fn, gn, moved = _arc_search(
            fun, live, x[live], g[live], g[live], step[live], lo, hi, reference
        )
        if newton:
            xn, fn, gn = _newton_step(fun, live, xn, fn, gn, lo, hi)
        s, y = xn - x[live], gn - g[live]
        sy, ss = (s * y).sum(axis=1), (s * s).sum(axis=1)
        cap = 2.0 / _gradient_size(gn)
        step[live] = np.clip(np.where(sy > 0, ss / np.where(sy > 0, sy, 1.0), cap), _STEP_MIN, cap)
        x[live], f[live], g[live] = xn, fn, gn
        history[live, it % _MEMORY] = fn
        better = live[fn < best_f[live]]
        best_x[better], best_f[better] = x[better], f[better]
        live = live[moved]  # no step passed: stop there (unconverged)
    # A converged problem's last point is its stationary point; otherwise keep the best seen.
    return np.where(converged[:, None], x, best_x), converged


def _gradient_size(g):
    """Largest component of g (n, M) along the simplex (g minus its mean), floored at 1e-12."""
    return np.maximum(np.abs(g - g.mean(axis=1, keepdims=True)).max(axis=1), 1e-12)


def _arc_search(fun, rows, x, direction, g, step, lo, hi, reference):
    """Backtracking along the projection arc ``x(a) = P(x - a direction)``, a = step, step/2,
    ..., for every problem in ``rows`` at once; accept when ``f(x(a)) <= reference + 1e-4
    g.(x(a) - x)`` with g the gradient at x (reference: the largest recent value for the
    non-monotone test, f itself for a monotone one).

    Returns the new points, values, gradients and whether each moved (problems where no
    halving passed keep x, with its value and gradient re-evaluated)."""
    x_new, g_new = x.copy(), g.copy()
    f_new = np.full(len(rows), np.nan)
    moved = np.zeros(len(rows), bool)
    a = np.array(step, float)
    slack = 8 * np.finfo(float).eps * np.abs(reference)  # rounding of f
    todo = np.arange(len(rows))
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for _ in range(_HALVINGS):
            cand = project(x[todo] - a[todo, None] * direction[todo], lo, hi)
            fc, gc = fun(rows[todo], cand)
            decrease = np.einsum("nm,nm->n", g[todo], cand - x[todo])
            ok = np.isfinite(fc) & np.all(np.isfinite(gc), axis=1)
            ok &= fc <= reference[todo] + _ARMIJO * decrease + slack[todo]
            take = todo[ok]
            x_new[take], f_new[take], g_new[take] = cand[ok], fc[ok], gc[ok]
            moved[take] = True
            todo = todo[~ok]
            if todo.size == 0:
                break
            a[todo] *= 0.5
    if todo.size:
        f_new[todo], g_new[todo] = fun(rows[todo], x[todo])
    return x_new, f_new, g_new, moved


def _newton_step(fun, rows, x, f, g, lo, hi):
    """One Newton step on the free shares (strictly inside their bounds, their sum kept) of
    every problem, kept where Armijo's test along the projection arc passes and f decreases
    (else x stays). Hessian: forward differences of the gradient along each share (h =
    :data:`_FD_STEP`), symmetrised, restricted to the shares strictly inside their bounds, with
    its eigenvalues replaced by their absolute values (floored at 1e-8 x the largest diagonal
    entry) so the step is a descent direction even where the function is not convex
    ("saddle-free" Newton). Returns (x, f, g)."""
    n, m = x.shape
    eye = np.eye(m)
    probe = (x[:, None, :] + _FD_STEP * eye).reshape(n * m, m)  # row j of problem i: x_i + h e_j
    with np.errstate(over="ignore", invalid="ignore"):
        _, gp = fun(np.repeat(rows, m), probe)
        h = (np.asarray(gp).reshape(n, m, m) - g[:, None, :]) / _FD_STEP
    h = 0.5 * (h + np.swapaxes(h, 1, 2))
    free = (x > lo + 1e-12) & (x < hi - 1e-12)
    both = free[:, :, None] & free[:, None, :]
    h = np.where(both, h, 0.0)
    # A gradient that failed just off the feasible set (e.g. a log of a negative share): no
    # Newton step for that problem (d = 0 below); its gradient steps carry on.
    broken = ~np.all(np.isfinite(h), axis=(1, 2))
    h[broken] = 0.0
    scale = np.maximum(np.abs(np.diagonal(h, axis1=1, axis2=2)).max(axis=1), 1e-12)
    # Fixed shares get the scale on the diagonal (their step is 0 anyway). Each eigenvalue is
    # replaced by its absolute value, floored at 1e-8 scale: positive definite, and a direction
    # of negative curvature keeps its own scale (one strongly concave share, as m4log has near
    # a zero share, would otherwise shrink the step in every direction).
    h += eye * np.where(free, 0.0, scale[:, None])[:, :, None]
    lam, vec = np.linalg.eigh(h)
    lam = np.maximum(np.abs(lam), 1e-8 * scale[:, None])
    kkt = np.zeros((n, m + 1, m + 1))
    kkt[:, :m, :m] = np.matmul(vec * lam[:, None, :], np.swapaxes(vec, 1, 2))
    kkt[:, :m, m] = free
    kkt[:, m, :m] = free
    kkt[:, m, m] = free.sum(axis=1) == 0
    rhs = np.zeros((n, m + 1, 1))
    rhs[:, :m, 0] = np.where(free, -g, 0.0)
    d = np.linalg.solve(kkt, rhs)[:, :m, 0]
    d[broken] = 0.0
    xn, fn, gn, moved = _arc_search(fun, rows, x, -d, g, np.ones(n), lo, hi, f)
    keep = moved & (fn < f)
    return (np.where(keep[:, None], xn, x), np.where(keep, fn, f), np.where(keep[:, None], gn, g))
