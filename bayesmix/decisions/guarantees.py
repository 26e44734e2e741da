"""Decisions with guarantees: per-domain chance constraints, the minimax objective, and
continual pre-training's critical share as a special case.

A guarantee is a chance constraint on one validation domain's loss ``L_d`` (or, from Python, on
a weighted aggregate of validation losses), over the posterior draws s:

* ``no-worse d=TOL@PROB``: ``P_s(L_sd(r) - L_sd(b) <= TOL) >= PROB``, b the baseline mixture,
  paired draw by draw (the same draw's law at both mixtures);
* ``max-loss d=VALUE@PROB``: ``P_s(L_sd(r) <= VALUE) >= PROB`` (absolute, nats per token).

:class:`Guarantee` is one such request (parsed from ``DOMAIN=BOUND@PROB``);
:func:`minimize_guaranteed` optimises an objective with every guarantee met exactly on the draws
(the solver: :mod:`bayesmix.decisions.chance`); every returned mixture meets every guarantee
exactly on the draws and every share constraint. When none does, :class:`GuaranteeError` names the
binding guarantee and the highest probability of it reachable.

``minimax`` minimises the worst validation domain's expected excess over the baseline,
``max_d (E_s L_sd(r) - E_s L_sd(b))`` over the domains with positive weight, exactly, by SLSQP on
the epigraph form (minimise u subject to u >= each domain's excess): no smoothing temperature.
The trade-off frontier of a guarantee is :mod:`bayesmix.decisions.frontier`.

Everything works for any law through :meth:`Law.value_grad` / :meth:`Law.mean` and at the draws'
fixed extra inputs (``n_params``, ``tokens``: a target scale).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bayesmix import errors
from bayesmix._compat import CI_PROB, SEED, renamed_kwargs
from bayesmix.data.constraints import Constraints
from bayesmix.data.mixtures import domain_weights
from bayesmix.data.table import check_known_domains
from bayesmix.decisions.chance import ChanceSet, solve
from bayesmix.decisions.continual_inputs import (
    ContinualProblem,
    continual_problem,
    law_inputs,
    original_loss_weights,
    original_start,
    share_line,
)
from bayesmix.decisions.draws import LawDraws, as_law_draws, normalise_weights, unpack_draws
from bayesmix.decisions.epigraph import excess_pieces, minimax_plain, worst_piece
from bayesmix.decisions.feasible import centre, check_constraints, feasible_points
from bayesmix.decisions.objectives import Criterion, DrawValues, Objective, beat_temperature
from bayesmix.decisions.optimize import minimize_objective
from bayesmix.posterior.intervals import DEFAULT_PROB, credible_interval

#: Guarantee kinds: relative to the baseline (paired per draw) or absolute.
KINDS = ("no-worse", "max-loss")
#: Domain name standing for every validation domain.
ALL = "all"
#: Probability of a guarantee given without ``@PROB``.
DEFAULT_GUARANTEE_PROB = 0.9


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
    def parse(cls, text: str, kind: str, *, param: str | None = None) -> list[Guarantee]:
        """``"Github=0.01@0.9"`` (or comma-separated several; ``@PROB`` optional, default
        :data:`DEFAULT_GUARANTEE_PROB`) as guarantees of ``kind``. ``param``: the Python
        parameter the text came from, named in errors (``no_worse='x' is not ...``)."""
        out = []
        for item in str(text).split(","):
            item = item.strip()
            where = f"{param}={item!r}" if param else f"{kind} guarantee {item!r}"
            name, sep, rest = item.partition("=")
            name, rest = name.strip(), rest.strip()
            value, at, prob = rest.partition("@")
            if not sep or not name or not value.strip() or (at and not prob.strip()):
                raise errors.OptionError(
                    f"{where} is not DOMAIN=BOUND@PROB", hint="e.g. all=0.01@0.9", param=param
                )
            try:
                bound = float(value)
                p = float(prob) if at else DEFAULT_GUARANTEE_PROB
            except ValueError:
                raise errors.OptionError(
                    f"{where}: bound and probability must be numbers",
                    hint="e.g. all=0.01@0.9",
                    param=param,
                ) from None
            try:
                out.append(cls(kind, name, bound, p))
            except errors.OptionError as err:
                raise errors.OptionError(
                    f"{where}: {err.problem}", hint=err.hint, param=param
                ) from None
        return out


def parse_guarantees(no_worse: Sequence[str] = (), max_loss: Sequence[str] = ()) -> list[Guarantee]:
    """The guarantees of ``no_worse`` and ``max_loss`` texts (``DOMAIN=BOUND@PROB``, several
    comma-separated), e.g. the values of the CLI's repeated options; errors name the parameter."""
    out = []
    for text in no_worse or ():
        out += Guarantee.parse(text, "no-worse", param="no_worse")
    for text in max_loss or ():
        out += Guarantee.parse(text, "max-loss", param="max_loss")
    return out


def as_guarantees(guarantees, *, param: str = "guarantees") -> list[Guarantee]:
    """Accept Guarantee objects or strings ``"no-worse:Github=0.01@0.9"``; errors name
    ``param``, the Python parameter they came from."""
    if isinstance(guarantees, (str, Guarantee)):
        guarantees = [guarantees]
    out = []
    for g in guarantees or ():
        if isinstance(g, Guarantee):
            out.append(g)
        else:
            kind, sep, rest = str(g).partition(":")
            if not sep:
                raise errors.OptionError(
                    f"{param}= holds {g!r}, which is not KIND:DOMAIN=BOUND@PROB",
                    hint="e.g. no-worse:all=0.01@0.9",
                    param=param,
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


# ------------------------------------------------------------------------------ the result
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
    chance = ChanceSet(law, params, inputs, expanded, wg, base) if expanded else None
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
    problem: ContinualProblem | None = None,
    *,
    original: str | None = None,
    new: str | None = None,
    start_loss=None,
    runs=None,
    weights=None,
    tolerance: float | None = None,
    prob: float | None = None,
    other_shares: Mapping[str, float] | None = None,
) -> GuaranteedShare:
    """Continual pre-training through the guarantee machinery: maximise the new domain's
    share subject to ``max-loss original=start+tolerance@prob`` (the question, a
    :class:`~bayesmix.decisions.continual_inputs.ContinualProblem` or its fields as keywords,
    as in :func:`bayesmix.decisions.continual.critical_share`). Equals the ``1 - prob`` lower
    order statistic of the per-draw critical shares (:func:`critical_share_at_prob`) when each
    draw's loss rises along the line."""
    problem = continual_problem(problem, locals())
    new, tolerance, prob = str(problem.new), float(problem.tolerance), float(problem.prob)
    train = list(posterior.train_domains)
    w, giver, _, label = original_loss_weights(
        posterior, str(problem.original), new, problem.weights
    )
    base, direction, x_max = share_line(train, giver, new, problem.other_shares)
    start, _ = original_start(posterior, problem, w)
    inputs = law_inputs(posterior)
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
    chance = ChanceSet(law, params, inp, expanded, wg, base)
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
    chance-constrained answer when every draw's original loss rises along the line)."""
    x = np.sort(np.asarray(cs.draws.values, float).reshape(-1))
    need = int(np.ceil(prob * x.size - 1e-9))
    return float(x[x.size - need])
