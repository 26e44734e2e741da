"""Chance constraints on posterior draws, and the solver that meets them exactly.

A chance constraint j (a :class:`bayesmix.decisions.guarantees.Guarantee`) bounds one validation
domain's loss ``L_d`` (or a weighted aggregate of validation losses) over the posterior draws s:
with ``X_sj(r) = L_sd(r) - ref_sj`` (``ref = L_sd(b) + TOL`` for ``no-worse``, b the baseline,
paired draw by draw; ``ref = VALUE`` for ``max-loss``) it holds on the draws when at least
``ceil(PROB S)`` of the S draws have ``X_sj <= 0``. That count is a step function of r (no
gradient), so :func:`solve` uses a smooth stand-in: the Harrell-Davis PROB-quantile ``q_j(r)`` of
``X_sj(r)`` over draws (the L-statistic of the ``quantile`` objective, gradient from
:meth:`Law.value_grad`), as the SLSQP inequality ``q_j(r) + margin_j <= 0``. The solution is then
checked exactly on the draws; where it fails, the margin of the failing constraint grows by the
shortfall (its ``ceil(PROB S)``-th smallest ``X_sj``) and SLSQP runs again. Finally the best
exactly-feasible point is polished along the segments towards the unconstrained optimum and the
margin-free solution (grid, then bisection on the exact check), so the answer sits on the exact
boundary when a constraint binds.

When no mixture meets them, :class:`bayesmix.errors.GuaranteeError` names the binding one (largest
probability shortfall at the mixture minimising the largest smooth quantile ``max_j q_j``) and the
highest probability of it reachable while the others hold (or on its own when they cannot hold).
"""

from __future__ import annotations

import numpy as np
from scipy import special

from bayesmix import errors
from bayesmix.data.constraints import Constraints
from bayesmix.decisions.epigraph import DomainValues, minimise_max, minimise_max_from, worst_piece
from bayesmix.decisions.feasible import ensure_feasible
from bayesmix.decisions.objectives import order_weights
from bayesmix.laws.solvers import project

#: Slack of the exact check (nats): ``X_sj <= EXACT_ATOL`` counts as met, so the baseline itself
#: meets ``no-worse d=0`` although its two loss evaluations may differ by rounding (~1e-15).
EXACT_ATOL = 1e-10
#: Rounds of margin tightening after SLSQP when the exact check on the draws fails.
MARGIN_ROUNDS = 8
#: Polishing along a segment: grid points, then bisection steps on the exact check.
POLISH_GRID = 33
POLISH_BISECT = 50
#: Logistic bandwidth of the probability surrogate used to find the best reachable probability
#: of an infeasible guarantee, as a fraction of the sd of ``X_sj`` over draws.
PROB_BANDWIDTH = 0.25


# ------------------------------------------------------------------------------ evaluation
class ChanceSet:
    """The guarantees on one posterior: ``X_sj(r)`` (S, J), the smooth quantiles ``q_j(r)``
    with their gradients, and the exact check on the draws."""

    def __init__(self, law, params, inputs, guarantees, weights, baseline):
        self.guarantees = list(guarantees)
        self.values = DomainValues(law, params, inputs, weights)
        base = self.values.at(np.asarray(baseline, float))[:, 0, :]  # (S, J)
        bound = np.array([g.bound for g in self.guarantees], float)
        relative = np.array([g.kind == "no-worse" for g in self.guarantees])
        self.ref = np.where(relative, base + bound, bound)  # (S, J)
        self.level = np.array([g.prob for g in self.guarantees], float)
        s = self.ref.shape[0]
        self.n_draws = s
        self.order_w = np.stack([order_weights("quantile", p, s) for p in self.level])
        #: draws that must satisfy X <= 0, per guarantee
        self.need = np.ceil(self.level * s - 1e-9).astype(int)
        self.margin = np.zeros(len(self.guarantees))

    def __len__(self):
        return len(self.guarantees)

    def x(self, r):
        f, g = self.values(r)
        return f - self.ref, g

    def smooth(self, r):
        """Harrell-Davis quantiles q (J,) and gradients (J, M)."""
        x, g = self.x(r)
        order = np.argsort(x, axis=0, kind="stable")  # (S, J)
        xs = np.take_along_axis(x, order, axis=0)
        gs = np.take_along_axis(g, order[:, :, None], axis=0)
        q = np.einsum("js,sj->j", self.order_w, xs)
        dq = np.einsum("js,sjm->jm", self.order_w, gs)
        return q, dq

    def probs(self, r) -> np.ndarray:
        """Exact fraction of draws meeting each guarantee (J,)."""
        return (self.x(r)[0] <= EXACT_ATOL).mean(axis=0)

    def shortfall(self, r) -> np.ndarray:
        """The ``need_j``-th smallest X_sj: <= 0 exactly when guarantee j holds (J,)."""
        xs = np.sort(self.x(r)[0], axis=0)
        return xs[self.need - 1, np.arange(len(self.need))]

    def ok(self, r) -> bool:
        return bool(np.all(self.shortfall(r) <= EXACT_ATOL))


# ------------------------------------------------------------------------------ the solver
def solve(
    pieces, chance: ChanceSet | None, constraints: Constraints, starts, *, anchor=None
) -> tuple[np.ndarray, np.ndarray]:
    """Minimise ``max pieces`` over the share constraints with every guarantee of ``chance``
    exactly met on the draws. ``starts`` (n, M): SLSQP starts; ``anchor``: the optimum without
    guarantees (polishing target). Returns (mixture (M,), margins (J,)); raises
    :class:`bayesmix.errors.GuaranteeError` when nothing feasible is found."""
    if chance is None or len(chance) == 0:
        return minimise_max_from(pieces, constraints, starts), np.zeros(0)
    starts = [project(np.asarray(s, float), constraints.lower, constraints.upper) for s in starts]
    feasible = [s for s in starts if chance.ok(s)]
    if not feasible:
        feasible = [_phase_one(chance, constraints, starts)]
    candidates = list(feasible)
    smooth_points = []
    margins = np.zeros(len(chance))
    for x0 in _dedupe(feasible[:1] + starts):
        chance.margin = np.zeros(len(chance))
        x = x0
        for round_ in range(MARGIN_ROUNDS):
            x = minimise_max(pieces, x, constraints, ineq=_ineq(chance))
            if round_ == 0:
                smooth_points.append(x)
            short = chance.shortfall(x)
            if np.all(short <= EXACT_ATOL):
                candidates.append(x)
                margins = np.maximum(margins, chance.margin)
                break
            bad = short > 0
            chance.margin[bad] += short[bad] + 1e-9
    chance.margin = np.zeros(len(chance))
    best = min(candidates, key=lambda r: worst_piece(pieces, r))
    targets = smooth_points + ([anchor] if anchor is not None else [])
    for target in targets:
        best = _polish(pieces, chance, best, np.asarray(target, float))
    best = ensure_feasible(best, constraints)
    if not chance.ok(best):  # projection rounding only; fall back to a checked candidate
        best = min((c for c in candidates if chance.ok(c)), key=lambda r: worst_piece(pieces, r))
    return best, margins


def _ineq(chance: ChanceSet):
    def fn(r):
        q, dq = chance.smooth(r)
        return -(q + chance.margin), -dq

    return fn


def _dedupe(points):
    out = []
    for p in points:
        if not any(np.abs(p - q).max() < 1e-9 for q in out):
            out.append(p)
    return out


def _polish(pieces, chance, r0, r1):
    """The best exactly-feasible point on the segment r0 -> r1 (r0 feasible): a grid, then
    bisection between the best feasible grid point and its infeasible neighbour."""
    if np.abs(r1 - r0).max() < 1e-12:
        return r0
    ts = np.linspace(0.0, 1.0, POLISH_GRID)
    best_t, best_v = 0.0, worst_piece(pieces, r0)
    feas = np.zeros(POLISH_GRID, bool)
    feas[0] = True
    for i, t in enumerate(ts[1:], 1):
        r = r0 + t * (r1 - r0)
        feas[i] = chance.ok(r)
        if feas[i]:
            v = worst_piece(pieces, r)
            if v < best_v:
                best_t, best_v = t, v
    i = int(round(best_t * (POLISH_GRID - 1)))
    if i + 1 < POLISH_GRID and not feas[i + 1]:
        lo, hi = ts[i], ts[i + 1]
        for _ in range(POLISH_BISECT):
            mid = 0.5 * (lo + hi)
            r = r0 + mid * (r1 - r0)
            if chance.ok(r) and worst_piece(pieces, r) <= best_v:
                lo, best_t, best_v = mid, mid, worst_piece(pieces, r)
            else:
                hi = mid
    return r0 + best_t * (r1 - r0)


def _phase_one(chance: ChanceSet, constraints: Constraints, starts) -> np.ndarray:
    """A mixture meeting every guarantee exactly, or GuaranteeError naming the binding one.

    Minimises the largest smooth quantile ``max_j q_j`` (epigraph SLSQP) from every start, with
    the margin tightening of :func:`solve`; then, if still infeasible, maximises the binding
    guarantee's probability while the others hold."""

    def pieces(r):
        return chance.smooth(r)

    def tightened(r):
        q, dq = chance.smooth(r)
        return q + chance.margin, dq

    best, best_v = None, np.inf
    for x0 in starts:
        x = x0
        chance.margin = np.zeros(len(chance))
        for _ in range(MARGIN_ROUNDS):
            x = minimise_max(tightened, x, constraints)
            if chance.ok(x):
                chance.margin = np.zeros(len(chance))
                return x
            short = chance.shortfall(x)
            bad = short > 0
            if not np.any(short[bad] > 1e-12):
                break
            chance.margin[bad] += short[bad] + 1e-9
        v = worst_piece(pieces, x)
        if v < best_v:
            best, best_v = x, v
    chance.margin = np.zeros(len(chance))
    probs = chance.probs(best)
    gap = chance.level - probs
    j = int(np.argmax(gap))
    others = [i for i in range(len(chance)) if i != j]
    prob, where, with_others = _best_probability(chance, j, others, constraints, [best, *starts])
    if prob >= chance.level[j] - 1e-12 and where is not None and chance.ok(where):
        return where
    g = chance.guarantees[j]
    hint = "lower its probability, raise its bound, or relax the share constraints"
    if not others:
        problem = (
            f"guarantee {g.label()} cannot be met: the highest probability reachable "
            f"is {prob:.3f} (required {g.prob:g})"
        )
    elif with_others:
        problem = (
            f"guarantee {g.label()} cannot be met while the other guarantees hold: the "
            f"highest probability reachable is {prob:.3f} (required {g.prob:g})"
        )
    else:
        problem = (
            f"the guarantees cannot all hold: {g.label()} falls short most (probability "
            f"{probs[j]:.3f} where they come closest, at most {prob:.3f} on its own; "
            f"required {g.prob:g})"
        )
        hint = "drop or loosen some guarantees"
    raise errors.GuaranteeError(problem, guarantee=g, best_prob=prob, mixture=where, hint=hint)


def _best_probability(chance: ChanceSet, j: int, others: list[int], constraints, starts):
    """(highest exact probability of guarantee j found, the mixture, whether the other
    guarantees held there). Maximises the logistic surrogate ``mean_s expit(-X_sj / tau)``
    (tau = :data:`PROB_BANDWIDTH` x the sd of X_sj) subject to the others' smooth quantiles,
    then without them when they cannot hold."""
    x_start = chance.x(starts[0])[0][:, j]
    tau = max(PROB_BANDWIDTH * float(np.std(x_start)), 1e-9)

    def pieces(r):
        x, g = chance.x(r)
        p = special.expit(-x[:, j] / tau)
        dp = p * (1 - p) / tau
        return np.array([-p.mean()]), (dp[:, None] * g[:, j, :]).mean(axis=0)[None, :]

    def held(r, idx):
        if not idx:
            return True
        return bool(np.all(chance.shortfall(r)[idx] <= EXACT_ATOL))

    for idx in [others, []] if others else [[]]:
        sub = None
        if idx:

            def sub(r, idx=idx):
                q, dq = chance.smooth(r)
                return -q[idx], -dq[idx]

        found = []
        for x0 in starts:
            for x in (x0, minimise_max(pieces, x0, constraints, ineq=sub)):
                if held(x, idx):
                    found.append((float(chance.probs(x)[j]), x))
        if found:
            p, x = max(found, key=lambda t: t[0])
            return p, x, bool(idx)
    return float(chance.probs(starts[0])[j]), starts[0], False
