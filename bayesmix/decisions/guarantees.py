"""Decisions with guarantees: per-domain chance constraints, the minimax objective, the
trade-off frontier, and continual pre-training's critical share as a special case.

A guarantee j is a chance constraint on one validation domain's loss ``L_d`` (or, from Python, on
a weighted aggregate of validation losses), over the posterior draws s:

* ``no-worse d=TOL@PROB``: ``P_s(L_sd(r) - L_sd(b) <= TOL) >= PROB``, b the baseline mixture,
  paired draw by draw (the same draw's law at both mixtures);
* ``max-loss d=VALUE@PROB``: ``P_s(L_sd(r) <= VALUE) >= PROB`` (absolute, nats per token).

With ``X_sj(r) = L_sd(r) - ref_sj`` (``ref = L_sd(b) + TOL`` or ``VALUE``) a guarantee holds on
the draws when at least ``ceil(PROB S)`` of the S draws have ``X_sj <= 0``. That count is a step
function of r (no gradient), so the optimiser uses a smooth stand-in: the Harrell-Davis
PROB-quantile ``q_j(r)`` of ``X_sj(r)`` over draws (the L-statistic the ``quantile`` objective of
:mod:`bayesmix.decisions.optimize` uses, gradient from :meth:`Law.value_grad`), as the SLSQP
inequality ``q_j(r) + margin_j <= 0``. The solution is then checked exactly on the draws; where it
fails, the margin of the failing guarantee grows by the shortfall (its ``ceil(PROB S)``-th smallest
``X_sj``) and SLSQP runs again. Finally the best exactly-feasible point is polished along the
segments towards the unguaranteed optimum and the margin-free solution (grid, then bisection on the
exact check), so the answer sits on the exact boundary when a guarantee binds. Every returned
mixture meets every guarantee exactly on the draws and every share constraint.

When no mixture meets the guarantees, :class:`GuaranteeError` names the binding one (largest
probability shortfall at the mixture minimising the largest smooth quantile ``max_j q_j``) and the
highest probability of it reachable while the others hold (or on its own when they cannot hold).

``minimax`` minimises the worst validation domain's expected excess over the baseline,
``max_d (E_s L_sd(r) - E_s L_sd(b))`` over the domains with positive weight, exactly, by SLSQP on
the epigraph form (minimise u subject to u >= each domain's excess): no smoothing temperature.

Everything works for any law through :meth:`Law.value_grad` / :meth:`Law.mean` and at the draws'
fixed extra inputs (``n_params``, ``tokens``: a target scale).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import special

from bayesmix import errors
from bayesmix._compat import CI_PROB, SEED, renamed_kwargs
from bayesmix.data.constraints import Constraints
from bayesmix.data.mixtures import domain_weights
from bayesmix.data.table import check_known_domains
from bayesmix.decisions import continual
from bayesmix.decisions.draws import (
    LawDraws,
    as_law_draws,
    normalise_weights,
    unpack_draws,
)
from bayesmix.decisions.epigraph import (
    DomainValues,
    excess_pieces,
    minimax_plain,
    minimise_max,
    minimise_max_from,
    worst_piece,
)
from bayesmix.decisions.feasible import centre, check_constraints, ensure_feasible, feasible_points
from bayesmix.decisions.inputs import resolve_baseline, resolve_weights
from bayesmix.decisions.objectives import (
    Criterion,
    DrawValues,
    Objective,
    beat_temperature,
    order_weights,
)
from bayesmix.decisions.optimize import minimize_objective
from bayesmix.io import atomic_path
from bayesmix.laws.solvers import project
from bayesmix.posterior.intervals import DEFAULT_PROB, credible_interval

#: Guarantee kinds: relative to the baseline (paired per draw) or absolute.
KINDS = ("no-worse", "max-loss")
#: Domain name standing for every validation domain.
ALL = "all"
#: Probability of a guarantee given without ``@PROB``.
DEFAULT_GUARANTEE_PROB = 0.9
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
#: Frontier defaults: tolerances 0, TOL/4, ..., 2 TOL.
FRONTIER_STEPS = 9
PLOT_SUFFIXES = (".png", ".pdf", ".svg")


GuaranteeError = errors.GuaranteeError  # re-exported: bayesmix.decisions.guarantees.GuaranteeError


# ------------------------------------------------------------------------------ guarantees
@dataclass(frozen=True)
class Guarantee:
    """One chance constraint (see the module docstring).

    ``kind``: ``no-worse`` (``bound`` = TOL, nats above the baseline's loss) or ``max-loss``
    (``bound`` = VALUE, nats per token); ``domain``: a validation domain, or ``all`` (expanded to
    one guarantee per validation domain); ``prob`` in (0, 1). ``weights`` ({validation domain:
    weight}): constrain that weighted aggregate instead of one domain (``domain`` is then only
    its label), e.g. an original domain's loss defined over several validation domains.
    """

    kind: str
    domain: str
    bound: float
    prob: float = DEFAULT_GUARANTEE_PROB
    weights: Mapping | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise errors.OptionError(
                f"unknown guarantee kind {self.kind!r}", hint="use no-worse or max-loss"
            )
        if not (isinstance(self.prob, (int, float)) and 0.0 < float(self.prob) < 1.0):
            raise errors.OptionError(
                f"{self.label()}: probability must be in (0, 1)", hint="e.g. @0.9"
            )
        if not math.isfinite(float(self.bound)):
            raise errors.OptionError(f"{self.label()}: the bound must be a finite number")
        if self.kind == "max-loss" and not float(self.bound) > 0:
            raise errors.OptionError(f"{self.label()}: a loss bound must be > 0 nats per token")

    def label(self) -> str:
        """``no-worse Github=0.01@0.9``: how the option was written."""
        return f"{self.kind} {self.domain}={self.bound:g}@{self.prob:g}"

    def replace(self, *, bound: float | None = None, prob: float | None = None) -> Guarantee:
        return Guarantee(
            self.kind,
            self.domain,
            self.bound if bound is None else float(bound),
            self.prob if prob is None else float(prob),
            self.weights,
        )

    @classmethod
    def parse(cls, text: str, kind: str) -> list[Guarantee]:
        """``"Github=0.01@0.9"`` (or comma-separated several; ``@PROB`` optional, default
        :data:`DEFAULT_GUARANTEE_PROB`) as guarantees of ``kind``."""
        option = f"--{kind}"
        out = []
        for item in str(text).split(","):
            name, sep, rest = item.partition("=")
            name, rest = name.strip(), rest.strip()
            value, at, prob = rest.partition("@")
            if not sep or not name or not value.strip() or (at and not prob.strip()):
                raise errors.OptionError(
                    f"{option} {item.strip()!r} is not DOMAIN=BOUND@PROB",
                    hint=f"e.g. {option} all=0.01@0.9",
                )
            try:
                bound = float(value)
                p = float(prob) if at else DEFAULT_GUARANTEE_PROB
            except ValueError:
                raise errors.OptionError(
                    f"{option} {item.strip()!r}: bound and probability must be numbers",
                    hint=f"e.g. {option} all=0.01@0.9",
                ) from None
            try:
                out.append(cls(kind, name, bound, p))
            except errors.OptionError as err:
                raise errors.OptionError(
                    f"{option} {item.strip()!r}: {err.problem}", hint=err.hint
                ) from None
        return out


def parse_guarantees(no_worse: Sequence[str] = (), max_loss: Sequence[str] = ()) -> list[Guarantee]:
    """The guarantees of repeated ``--no-worse`` and ``--max-loss`` option values."""
    out = []
    for text in no_worse or ():
        out += Guarantee.parse(text, "no-worse")
    for text in max_loss or ():
        out += Guarantee.parse(text, "max-loss")
    return out


def as_guarantees(guarantees) -> list[Guarantee]:
    """Accept Guarantee objects or strings ``"no-worse:Github=0.01@0.9"``."""
    out = []
    for g in guarantees or ():
        if isinstance(g, Guarantee):
            out.append(g)
        else:
            kind, sep, rest = str(g).partition(":")
            if not sep:
                raise errors.OptionError(
                    f"guarantee {g!r} is not KIND:DOMAIN=BOUND@PROB",
                    hint="e.g. no-worse:all=0.01@0.9",
                )
            out += Guarantee.parse(rest, kind.strip().lower())
    return out


def expand(guarantees, eval_domains: Sequence[str]) -> tuple[list[Guarantee], np.ndarray]:
    """Guarantees with ``all`` replaced by one per validation domain, and their weights (J, K)
    over ``eval_domains`` (one-hot for a domain; normalised for an aggregate)."""
    eval_domains = list(eval_domains)
    out, rows = [], []
    for g in as_guarantees(guarantees):
        if g.weights is not None:
            w = np.asarray(domain_weights(g.weights, eval_domains), float)
            out.append(g)
            rows.append(w / w.sum())
            continue
        names = eval_domains if g.domain == ALL else [g.domain]
        check_known_domains(names, eval_domains, "validation")
        for d in names:
            out.append(Guarantee(g.kind, d, g.bound, g.prob))
            rows.append(np.eye(len(eval_domains))[eval_domains.index(d)])
    return out, np.array(rows).reshape(len(out), len(eval_domains))


# ------------------------------------------------------------------------------ evaluation


class _ChanceSet:
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
@dataclass
class GuaranteedOptimum:
    """A mixture meeting every guarantee exactly on the draws.

    ``mixture`` (M,); ``value``: the optimised criterion there (the worst expected excess for
    minimax); ``probs``: exact fraction of draws meeting each (expanded) guarantee;
    ``guarantees``: the expanded guarantees; ``margins``: the extra tightening the exact check
    needed (nats); ``unguaranteed``: the optimum without guarantees (M,) and its ``value``.
    """

    mixture: np.ndarray
    value: float
    guarantees: list
    probs: np.ndarray
    margins: np.ndarray
    unguaranteed: np.ndarray
    unguaranteed_value: float
    n_starts: int = 1

    def table(self) -> pd.DataFrame:
        """One row per guarantee: guarantee, kind, domain, bound, prob_required,
        prob_achieved (exact, on the draws), met."""
        rows = []
        for g, p in zip(self.guarantees, self.probs):
            rows.append(
                {
                    "guarantee": g.label(),
                    "kind": g.kind,
                    "domain": g.domain,
                    "bound": g.bound,
                    "prob_required": g.prob,
                    "prob_achieved": float(p),
                    "met": bool(p >= g.prob - 1e-12),
                }
            )
        return pd.DataFrame(
            rows,
            columns=[
                "guarantee",
                "kind",
                "domain",
                "bound",
                "prob_required",
                "prob_achieved",
                "met",
            ],
        )


def _criterion_pieces(
    objective: Objective, law, params, inputs, w, baseline, constraints, reference, seed
):
    """The objective as pieces (r -> (v (1,), G (1, M)), or per domain for minimax) and a
    function giving the reported value."""
    if objective.kind == "minimax":
        pieces, _ = excess_pieces(law, params, inputs, w, baseline)
        return pieces, lambda r: worst_piece(pieces, r)
    values = DrawValues(law, params, w, inputs)
    temperature = None
    if objective.kind == "beat-baseline":
        temperature = objective.temperature or beat_temperature(
            values, baseline, reference, constraints, seed
        )
    crit = Criterion(objective, values, baseline if objective.needs_baseline else None, temperature)

    def crit_pieces(r):
        v, g = crit(r)
        return np.array([v]), np.asarray(g)[None, :]

    return crit_pieces, crit.value


def solve(
    pieces, chance: _ChanceSet | None, constraints: Constraints, starts, *, anchor=None
) -> tuple[np.ndarray, np.ndarray]:
    """Minimise ``max pieces`` over the share constraints with every guarantee of ``chance``
    exactly met on the draws. ``starts`` (n, M): SLSQP starts; ``anchor``: the optimum without
    guarantees (polishing target). Returns (mixture (M,), margins (J,)); raises
    :class:`GuaranteeError` when nothing feasible is found."""
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


def _ineq(chance: _ChanceSet):
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


def _phase_one(chance: _ChanceSet, constraints: Constraints, starts) -> np.ndarray:
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
    raise GuaranteeError(problem, guarantee=g, best_prob=prob, mixture=where, hint=hint)


def _best_probability(chance: _ChanceSet, j: int, others: list[int], constraints, starts):
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


# ------------------------------------------------------------------------------ one decision
@renamed_kwargs(**SEED)
def minimize_guaranteed(
    draws,
    constraints: Constraints | None,
    weights,
    objective: Objective | str = "mean",
    *,
    guarantees=(),
    baseline=None,
    extra_starts=None,
    n_starts: int = 4,
    random_seed=0,
) -> GuaranteedOptimum:
    """The feasible mixture optimising ``objective`` (mean, quantile:Q, cvar:Q, beat-baseline
    or minimax) with every guarantee met exactly on the draws.

    ``draws``: a :class:`LawDraws` or Posterior (any law; its ``inputs`` fix the target scale);
    ``weights`` (K,) over validation domains; ``guarantees``: :class:`Guarantee` objects or
    ``"no-worse:DOMAIN=TOL@PROB"`` strings; ``baseline`` (M,), default uniform. Starts: the
    optimum without guarantees, the baseline, the centre of the feasible set, ``extra_starts``,
    random feasible points up to ``n_starts``. Raises :class:`GuaranteeError` (one line: the
    binding guarantee and its best reachable probability) when no mixture meets them.
    ``random_seed`` draws the random starts.
    """
    seed = random_seed
    objective = Objective.parse(objective)
    draws = as_law_draws(draws)
    law, params, inputs = unpack_draws(draws)
    constraints = check_constraints(constraints, draws.train_domains)
    m = len(draws.train_domains)
    w = normalise_weights(weights, len(draws.eval_domains))
    base = np.full(m, 1.0 / m) if baseline is None else np.asarray(baseline, float)
    if objective.kind == "minimax":
        plain = minimax_plain(law, params, inputs, w, base, constraints, extra_starts, seed)
        anchor = plain
    else:
        anchor = minimize_objective(
            draws,
            constraints,
            w,
            objective,
            baseline=base if objective.needs_baseline else None,
            extra_starts=extra_starts,
            random_seed=seed,
        ).mixture
    pieces, value = _criterion_pieces(
        objective, law, params, inputs, w, base, constraints, anchor, seed
    )
    starts = [anchor, base, centre(constraints)]
    if extra_starts is not None:
        starts += list(np.atleast_2d(extra_starts))
    if len(starts) < n_starts:
        starts += list(feasible_points(constraints, n_starts - len(starts), seed))
    expanded, wg = expand(guarantees, draws.eval_domains)
    chance = _ChanceSet(law, params, inputs, expanded, wg, base) if expanded else None
    if chance is None:
        return GuaranteedOptimum(
            anchor, value(anchor), [], np.zeros(0), np.zeros(0), anchor, value(anchor), len(starts)
        )
    x, margins = solve(pieces, chance, constraints, starts, anchor=anchor)
    return GuaranteedOptimum(
        x, value(x), expanded, chance.probs(x), margins, anchor, value(anchor), len(starts)
    )


@renamed_kwargs(**CI_PROB)
def domain_changes(
    draws, recommended, baseline, ci_prob: float = DEFAULT_PROB, *, ci_kind: str = "eti"
) -> pd.DataFrame:
    """Each validation domain's change of expected loss from the baseline to the
    recommendation, per draw paired: eval_domain, change_mean, change_lower, change_upper
    (interval of mass ``ci_prob``, equal-tailed or ``ci_kind="hdi"``; negative = better),
    p_worse (share of draws where the recommendation's loss is higher)."""
    draws = as_law_draws(draws)
    loss = draws.mean_loss(np.vstack([recommended, baseline]))  # (S, 2, K)
    diff = loss[:, 0] - loss[:, 1]
    lo, hi = credible_interval(diff, ci_prob, ci_kind=ci_kind)
    return pd.DataFrame(
        {
            "eval_domain": list(draws.eval_domains),
            "change_mean": diff.mean(axis=0),
            "change_lower": lo,
            "change_upper": hi,
            "p_worse": (diff > 0).mean(axis=0),
        }
    )


# ------------------------------------------------------------------------------ continual
@dataclass
class GuaranteedShare:
    """The critical share as a chance-constrained decision: the largest share of ``new`` with
    the original loss at most ``start_loss + tolerance`` with probability ``prob``."""

    share: float
    original_share: float
    mixture: np.ndarray
    prob: float
    prob_achieved: float
    start_loss: float
    tolerance: float
    new: str
    original: str


def guaranteed_critical_share(
    posterior,
    *,
    original: str,
    new: str,
    start_loss=None,
    runs=None,
    weights=None,
    tolerance: float = 0.0,
    prob: float = DEFAULT_GUARANTEE_PROB,
    other_shares: Mapping[str, float] | None = None,
) -> GuaranteedShare:
    """Continual pre-training through the guarantee machinery: maximise the new domain's
    share subject to ``max-loss original=start+tolerance@prob`` (the original loss as in
    :func:`bayesmix.decisions.continual.critical_share`, other training domains held at
    ``other_shares``, default 0). Equals the ``1 - prob`` lower order statistic of the per-draw
    critical shares (:func:`critical_share_at_prob`) when each draw's loss rises along the
    line."""
    train = list(posterior.train_domains)
    w, giver, _, label = continual.original_loss_weights(posterior, original, new, weights)
    base, direction, x_max = continual._line(train, giver, new, other_shares)
    start, _ = continual._start(posterior, start_loss, runs, w)
    inputs = continual._law_inputs(posterior)
    draws = LawDraws.from_posterior(posterior, inputs=inputs)
    fixed = {d: float(base[i]) for i, d in enumerate(train) if d not in (giver, new)}
    c = Constraints.build(train, fixed=fixed)
    g = Guarantee(
        "max-loss",
        label,
        start + float(tolerance),
        float(prob),
        weights=dict(zip(posterior.eval_domains, w)),
    )
    expanded, wg = expand([g], draws.eval_domains)
    law, params, inp = unpack_draws(draws)
    chance = _ChanceSet(law, params, inp, expanded, wg, base)
    j = train.index(new)

    def pieces(r):
        grad = np.zeros(len(train))
        grad[j] = -1.0
        return np.array([-r[j]]), grad[None, :]

    top = base + x_max * direction
    top = np.clip(top, 0, None)
    x, _ = solve(pieces, chance, c, [base, 0.5 * (base + top), top], anchor=top)
    share = float(x[j])
    return GuaranteedShare(
        share=share,
        original_share=float(x[train.index(giver)]),
        mixture=x,
        prob=float(prob),
        prob_achieved=float(chance.probs(x)[0]),
        start_loss=start,
        tolerance=float(tolerance),
        new=new,
        original=giver,
    )


def critical_share_at_prob(cs, prob: float) -> float:
    """From per-draw critical shares (:class:`bayesmix.decisions.continual.CriticalShare`): the
    largest share x with at least ``ceil(prob S)`` draws' critical share >= x (the
    chance-constrained
    answer when every draw's original loss rises along the line)."""
    x = np.sort(np.asarray(cs.draws.values, float).reshape(-1))
    need = int(np.ceil(prob * x.size - 1e-9))
    return float(x[x.size - need])


# ------------------------------------------------------------------------------ frontier
@dataclass
class Frontier:
    """Best target-domain loss along a sweep of guarantee tolerances or probabilities.

    ``table``: one row per swept value: sweep value (``tolerance`` or ``prob``), ``feasible``,
    ``target_loss`` (posterior mean, nats/token) with ``target_lower``/``target_upper``
    (equal-tailed, mass ``interval_prob``), ``price`` (target loss minus the unguaranteed
    optimum's), ``gain`` (drop of target loss from the previous, tighter row), the tightest
    guarantee and its exact probability, ``share.<domain>`` columns. Target loss never rises
    as the guarantee loosens (each point starts from the tighter one's mixture, which stays
    feasible, and keeps it when the optimiser finds nothing better).
    """

    table: pd.DataFrame
    target: str
    sweep: str
    guards: list
    unguaranteed_loss: float
    interval_prob: float = DEFAULT_PROB
    source: str | None = None

    def to_text(self) -> str:
        cols = [
            self.sweep,
            "feasible",
            "target_loss",
            "target_lower",
            "target_upper",
            "price",
            "gain",
            "tightest",
            "tightest_prob",
        ]
        shares = [c for c in self.table if c.startswith("share.")]
        out = [
            f"Frontier of {self.target}'s expected loss ({self.source or 'posterior'}): "
            f"guards {', '.join(g.label() for g in self.guards)}, sweeping {self.sweep}; "
            f"without guarantees {self.unguaranteed_loss:.4f} nats/token"
        ]
        out.append(
            self.table[cols + shares].to_string(index=False, float_format=lambda v: f"{v:.4f}")
        )
        return "\n".join(out)

    def plot(self, path) -> Path:
        """Target loss (mean and interval) against the swept value (PNG/PDF/SVG, atomic)."""
        from matplotlib.figure import Figure

        path = Path(path)
        if path.suffix.lower() not in PLOT_SUFFIXES:
            raise errors.OptionError(
                f"{path}: unknown figure format {path.suffix!r}",
                hint=f"use a file ending in {' or '.join(PLOT_SUFFIXES)}",
            )
        t = self.table[self.table["feasible"]]
        fig = Figure(figsize=(6.4, 4.4))
        ax = fig.add_subplot()
        ax.fill_between(
            t[self.sweep],
            t["target_lower"],
            t["target_upper"],
            alpha=0.25,
            color="tab:blue",
            label=f"{self.interval_prob:.0%} interval",
        )
        ax.plot(t[self.sweep], t["target_loss"], "o-", color="tab:blue", label="posterior mean")
        ax.axhline(self.unguaranteed_loss, color="black", ls="--", lw=1, label="without guarantees")
        ax.set_xlabel(
            "tolerance (nats per token above the baseline)"
            if self.sweep == "tolerance"
            else "required probability"
        )
        ax.set_ylabel(f"{self.target} expected loss (nats per token)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        with atomic_path(path, suffix=True) as tmp:
            fig.savefig(tmp)
        return path


@renamed_kwargs(**CI_PROB, **SEED)
def frontier(
    source,
    *,
    target: str,
    guards,
    tolerances=None,
    probs=None,
    constraints: Constraints | None = None,
    baseline=None,
    inputs: Mapping | None = None,
    ci_prob: float = DEFAULT_PROB,
    random_seed: int = 0,
) -> Frontier:
    """The trade-off frontier: minimise ``target``'s posterior expected loss subject to
    ``guards`` with their tolerance set to each of ``tolerances`` (no-worse guards; max-loss
    guards stay fixed), or their probability set to each of ``probs``. Default: tolerances
    ``0, TOL/4, ..., 2 TOL`` (TOL the largest no-worse bound). Points are solved from the
    tightest to the loosest (tolerance up, probability down), each warm-started from the
    previous mixture, which stays feasible, so the target loss never rises. Target-loss
    intervals have mass ``ci_prob`` (equal-tailed); ``random_seed`` draws the random starts."""
    import dataclasses

    draws = as_law_draws(source)
    if inputs is not None:
        draws = dataclasses.replace(draws, inputs=inputs)
    constraints = check_constraints(constraints, draws.train_domains)
    guards = as_guarantees(guards)
    if not guards:
        raise errors.OptionError(
            "the frontier needs at least one guard", hint="e.g. --guard all=0.01@0.9"
        )
    if tolerances is not None and probs is not None:
        raise errors.OptionError("sweep tolerances or probabilities, not both")
    w, _ = resolve_weights(draws.eval_domains, None, target)
    base, _ = resolve_baseline(draws.train_domains, baseline)
    if probs is not None:
        sweep, values = "prob", sorted({float(p) for p in probs}, reverse=True)
        for p in values:
            if not 0 < p < 1:
                raise errors.OptionError(f"probabilities must be in (0, 1), got {p:g}")
    else:
        tols = [g.bound for g in guards if g.kind == "no-worse"]
        if not tols:
            raise errors.OptionError(
                "a tolerance sweep needs a no-worse guard",
                hint="add --guard DOMAIN=TOL@PROB or sweep --probs",
            )
        if tolerances is None:
            top = max(tols) if max(tols) > 0 else 0.01
            tolerances = np.linspace(0.0, 2 * top, FRONTIER_STEPS)
        sweep, values = "tolerance", sorted({float(t) for t in tolerances})
        for t in values:
            if not math.isfinite(t):
                raise errors.OptionError("tolerances must be finite numbers")
    law, params, inp = unpack_draws(draws)
    anchor = minimize_objective(draws, constraints, w, "mean", random_seed=random_seed).mixture
    tdv = DomainValues(law, params, inp, w[None, :])
    free_loss = float(tdv.at(anchor)[:, 0, 0].mean())

    def pieces(r):
        f, g = tdv(r)
        return np.array([f[:, 0].mean()]), g[:, 0, :].mean(axis=0)[None, :]

    rows, prev, prev_v = [], None, np.inf
    for v in values:
        gs = [
            g.replace(bound=v)
            if sweep == "tolerance" and g.kind == "no-worse"
            else (g.replace(prob=v) if sweep == "prob" else g)
            for g in guards
        ]
        expanded, wg = expand(gs, draws.eval_domains)
        chance = _ChanceSet(law, params, inp, expanded, wg, base)
        starts = ([prev] if prev is not None else []) + [anchor, base, centre(constraints)]
        try:
            x, _ = solve(pieces, chance, constraints, starts, anchor=anchor)
        except GuaranteeError:
            x = None
        if (
            x is not None
            and prev is not None
            and chance.ok(prev)
            and worst_piece(pieces, x) > prev_v
        ):
            x = prev  # monotone: the tighter point's mixture is feasible here and better
        row: dict[str, Any] = {sweep: v, "feasible": x is not None}
        if x is None:
            rows.append(row)
            continue
        target_loss = tdv.at(x)[:, 0, 0]
        lo, hi = credible_interval(target_loss, ci_prob)
        probs_x = chance.probs(x)
        slack = probs_x - chance.level
        k = int(np.argmin(slack))
        mean_loss = float(target_loss.mean())
        row.update(
            {
                "target_loss": mean_loss,
                "target_lower": float(lo),
                "target_upper": float(hi),
                "price": mean_loss - free_loss,
                "gain": (prev_v - mean_loss) if prev is not None else np.nan,
                "tightest": expanded[k].label(),
                "tightest_prob": float(probs_x[k]),
            }
        )
        row.update({f"share.{d}": float(s) for d, s in zip(draws.train_domains, x)})
        rows.append(row)
        prev, prev_v = x, mean_loss
    table = pd.DataFrame(rows)
    for col in (
        "target_loss",
        "target_lower",
        "target_upper",
        "price",
        "gain",
        "tightest",
        "tightest_prob",
        *[f"share.{d}" for d in draws.train_domains],
    ):
        if col not in table:
            table[col] = np.nan
    feas = table[table["feasible"]]["target_loss"].to_numpy()
    if np.any(np.diff(feas) > 1e-12):  # by construction this cannot happen
        raise errors.InfeasibleError(
            "frontier is not monotone (internal error)",
            hint="report this with the posterior and guards",
        )
    table = table.sort_values(sweep, kind="stable").reset_index(drop=True)
    return Frontier(
        table=table,
        target=target,
        sweep=sweep,
        guards=guards,
        unguaranteed_loss=free_loss,
        interval_prob=ci_prob,
        source=draws.source,
    )
