"""What a decision is asked: :class:`DecisionProblem`, given to :func:`bayesmix.decide`.

The problem is everything that does not depend on a posterior: the feasible set, how validation
losses aggregate (weights or one target domain), the objective, the baseline, the guarantees
(chance constraints), the interval settings and the scale the mixture is for. It is checked once,
when it is built, and an error names the Python parameter at fault (``ci_prob=1.5: ...``; the
CLI shows its flag instead). What needs the posterior's domain names (weights and baseline over
its domains, constraints over its training domains) is resolved when the decision runs.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bayesmix import errors
from bayesmix.data.constraints import Constraints
from bayesmix.decisions.guarantees import Guarantee, as_guarantees
from bayesmix.decisions.objectives import Objective
from bayesmix.posterior.intervals import DEFAULT_PROB, check_ci_kind, check_prob


@dataclass(frozen=True)
class DecisionProblem:
    """The decision to make: which mixture, judged how, under which constraints.

    Parameters
    ----------
    constraints : Constraints, optional
        Feasible mixtures over the training domains (default: the plain simplex).
    weights : mapping, path or array_like, optional
        How validation losses aggregate: ``{domain: weight}``, a JSON file of that, or an
        array (K,) (:func:`bayesmix.decisions.inputs.resolve_weights`); default equal weights.
    target : str, optional
        One validation domain gets all the weight (instead of ``weights``).
    allow_subset : bool, default False
        Allow ``weights`` naming only some validation domains.
    objective : str or Objective, default "mean"
        ``mean``, ``quantile:Q``, ``cvar:Q``, ``beat-baseline`` or ``minimax`` (the worst
        domain's expected change vs the baseline); kept as an :class:`Objective`.
    baseline : mapping, array_like or path, optional
        The comparison mixture (default uniform,
        :func:`bayesmix.decisions.inputs.resolve_baseline`).
    guarantees : sequence, optional
        Chance constraints per validation domain (:class:`bayesmix.decisions.guarantees.Guarantee`
        or strings ``"no-worse:DOMAIN=TOL@PROB"``, ``"max-loss:DOMAIN=VALUE@PROB"``; ``all``
        for every domain); kept as a tuple of ``Guarantee``.
    ci_prob : float, default 0.9
        Mass of every interval in the report.
    ci_kind : {"eti", "hdi"}, default "eti"
        Equal-tailed or highest density intervals.
    inputs : mapping, optional
        ``{"n_params": N, "tokens": D}`` of the run the mixture is for, when the law takes them.
    proxy_inputs : mapping, optional
        The proxies' scale to compare the decision with (default: read from the posterior).
    max_extrapolation : float, optional
        A target scale more than this factor outside the fitted range is refused (less is
        noted); default :meth:`bayesmix.Posterior.check_scale`'s (10).

    Examples
    --------
    >>> import bayesmix as bm
    >>> cons = bm.Constraints.build(["web", "code", "books"], max_share={"code": 0.3})
    >>> problem = bm.DecisionProblem(constraints=cons, objective="quantile:0.9")
    >>> problem.objective.kind, problem.ci_prob
    ('quantile', 0.9)
    >>> rec = bm.decide(post, problem)                 # doctest: +SKIP
    """

    constraints: Constraints | None = None
    weights: Any = None
    target: str | None = None
    allow_subset: bool = False
    objective: Objective = field(default_factory=lambda: Objective("mean"))
    baseline: Any = None
    guarantees: Sequence[Guarantee] = ()
    ci_prob: float = DEFAULT_PROB
    ci_kind: str = "eti"
    inputs: Mapping | None = None
    proxy_inputs: Mapping | None = None
    max_extrapolation: float | None = None

    def __post_init__(self):
        def keep(name: str, value) -> None:  # frozen: normalised fields are set once, here
            object.__setattr__(self, name, value)

        if self.weights is not None and self.target is not None:
            raise errors.ObjectiveError(
                f"target={self.target!r} and weights were both given: give one", param="target"
            )
        if self.constraints is not None and not isinstance(self.constraints, Constraints):
            raise errors.OptionError(
                f"constraints={type(self.constraints).__name__} is not a Constraints",
                hint="build one with bayesmix.Constraints.build",
                param="constraints",
            )
        keep("objective", _named("objective", self.objective, Objective.parse))
        if not _real(self.ci_prob):
            raise errors.OptionError(f"ci_prob={self.ci_prob!r} is not a number", param="ci_prob")
        keep("ci_prob", _named("ci_prob", self.ci_prob, check_prob))
        keep("ci_kind", _named("ci_kind", self.ci_kind, check_ci_kind))
        keep("guarantees", tuple(as_guarantees(self.guarantees, param="guarantees")))
        x = self.max_extrapolation
        if x is not None and not (_real(x) and 0 < x < math.inf):
            raise errors.OptionError(
                f"max_extrapolation={x!r} is not a factor > 0", param="max_extrapolation"
            )
        for name in ("inputs", "proxy_inputs"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Mapping):
                raise errors.OptionError(
                    f"{name}={value!r} is not a mapping",
                    hint='e.g. {"n_params": 1e9, "tokens": 2e10}',
                    param=name,
                )
        if self.inputs is not None:
            keep("inputs", dict(self.inputs))

    @property
    def scale_options(self) -> dict:
        """``{"max_extrapolation": x}`` when given, for the posterior's scale checks."""
        x = self.max_extrapolation
        return {} if x is None else {"max_extrapolation": float(x)}


def _real(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _named(param: str, value, check: Callable):
    """``check(value)``, its error naming the parameter at fault (``param=value: ...``)."""
    try:
        return check(value)
    except errors.BayesmixError as err:
        raise type(err)(f"{param}={value!r}: {err.problem}", hint=err.hint, param=param) from None
