"""What a decision optimises over the draws: the objective (mean, quantile, CVaR,
beat-baseline, minimax) and its value and gradient at a mixture.

:class:`Objective` is the parsed objective; :class:`DrawValues` gives every draw's aggregate
loss and gradient at a mixture (from :meth:`Law.value_grad`); :class:`Criterion` turns them into
the scalar statistic to minimise (Harrell-Davis quantile or CVaR weights from
:func:`order_weights`, the logistic surrogate of beat-baseline with bandwidth
:func:`beat_temperature`). Used by :mod:`bayesmix.decisions.optimize` and
:mod:`bayesmix.decisions.guarantees`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy import special

from bayesmix import errors
from bayesmix.decisions.draws import count_draws
from bayesmix.decisions.feasible import feasible_points
from bayesmix.laws import Law

#: Objective kinds accepted by :meth:`Objective.parse`.
OBJECTIVES = ("mean", "quantile", "cvar", "beat-baseline", "minimax")
#: Default fraction of the posterior sd of the improvement used as the logistic bandwidth of the
#: beat-baseline surrogate (see :class:`Objective`).
BEAT_BANDWIDTH = 0.25


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


def order_weights(kind: str, level: float, n: int) -> np.ndarray:
    """Weights (n,) on ascending-sorted draws for the quantile (Harrell-Davis) or CVaR."""
    grid = np.arange(n + 1) / n
    if kind == "quantile":
        a, b = level * (n + 1), (1 - level) * (n + 1)
        return np.diff(special.betainc(a, b, grid))
    upper = np.minimum(grid[1:], 1.0)
    lower = np.maximum(grid[:-1], level)
    return np.clip(upper - lower, 0, None) / (1 - level)


class DrawValues:
    """Per-draw aggregate loss ``f_s(r) = sum_i w_i L_si(r)`` and its gradient in r, from
    :meth:`Law.value_grad` (analytic or PyTensor-compiled, whatever the law provides).

    ``params``: the law's draws (leading axis S); ``weights`` (K,) normalised; ``inputs``: the
    law's fixed extra inputs. Calling it at one mixture r (M,) gives (f (S,), g (S, M)).
    """

    def __init__(self, law: Law, params: Mapping, weights, inputs: Mapping | None = None):
        self.law, self.params = law, params
        self.weights = np.asarray(weights, float)
        self.inputs = dict(inputs or {})
        self.n_draws = count_draws(law, params)

    def __call__(self, r) -> tuple[np.ndarray, np.ndarray]:
        r = np.asarray(r, float)[None, :]  # one mixture shared by every draw: (1, M)
        f, g = self.law.value_grad(r, self.params, self.weights, **self.inputs)
        return np.asarray(f)[:, 0], np.asarray(g)[:, 0, :]


class Criterion:
    """Scalar objective (to minimise) and its gradient at r, from per-draw values f_s(r).

    ``values``: a :class:`DrawValues` (f (S,), g (S, M) at one r); ``baseline`` (M,) for
    beat-baseline, with the surrogate's ``temperature`` (loss units).
    """

    def __init__(self, objective: Objective, values: DrawValues, baseline=None, temperature=None):
        self.objective, self.values = objective, values
        self.order_w = (
            order_weights(objective.kind, objective.level, values.n_draws)
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


def beat_temperature(values: DrawValues, baseline, reference, constraints, seed) -> float:
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
