"""The feasible set of mixtures: the simplex cut by per-domain lower and upper shares.

Minimum, maximum and fixed shares and availability caps all become a box ``lower <= r <= upper``
intersected with ``sum(r) = 1``. A cap from data availability is
``r_j <= tokens_available_j * max_epochs / target_tokens`` (all in tokens).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from bayesmix.data.table import check_known_domains
from bayesmix.errors import InfeasibleError

#: Slack when checking that a mixture satisfies the constraints (shares are rounded in reports).
FEASIBILITY_ATOL = 1e-6


@dataclass(frozen=True)
class Constraints:
    """The feasible mixtures: the simplex over ``domains`` within per-domain share bounds.

    Build with :meth:`build` (share limits, fixed shares, token availability) or
    :meth:`unconstrained`.

    Parameters
    ----------
    domains : tuple of str
        Training domain names (M).
    lower, upper : numpy.ndarray
        Smallest and largest share of each domain, shape (M,).

    Examples
    --------
    >>> from bayesmix import Constraints
    >>> cons = Constraints.build(["web", "code", "books"], max_share={"code": 0.3})
    >>> cons.upper.tolist()
    [1.0, 0.3, 1.0]
    >>> cons.contains([[0.5, 0.2, 0.3], [0.2, 0.5, 0.3]]).tolist()
    [True, False]
    """

    domains: tuple[str, ...]
    lower: np.ndarray
    upper: np.ndarray

    @classmethod
    def build(
        cls,
        domains: Sequence[str],
        *,
        min_share: Mapping[str, float] | None = None,
        max_share: Mapping[str, float] | None = None,
        fixed: Mapping[str, float] | None = None,
        tokens_available: Mapping[str, float] | None = None,
        max_epochs: float = 1.0,
        target_tokens: float | None = None,
    ) -> Constraints:
        """Combine every kind of constraint into one feasible set.

        Parameters
        ----------
        domains : sequence of str
            Training domain names.
        min_share, max_share, fixed : mapping, optional
            ``{domain: share}`` lower bounds, upper bounds and fixed shares.
        tokens_available : mapping, optional
            ``{domain: tokens}`` available; with ``target_tokens`` and ``max_epochs`` a
            domain's share is capped at ``tokens * max_epochs / target_tokens``.
        max_epochs : float, default 1
            Passes allowed over a domain's data.
        target_tokens : float, optional
            Training tokens of the target run.

        Returns
        -------
        Constraints
            The feasible set; an InfeasibleError names the conflict when it is empty.

        Examples
        --------
        >>> from bayesmix import Constraints
        >>> cons = Constraints.build(["web", "code"], tokens_available={"code": 1e9},
        ...                          target_tokens=1e10)
        >>> cons.upper.tolist()
        [1.0, 0.1]
        """
        domains = tuple(domains)
        box = _Box(domains)
        box.apply(min_share, "minimum")
        box.apply(max_share, "maximum")
        box.apply(fixed, "fixed")
        if tokens_available:
            box.apply(_token_caps(tokens_available, max_epochs, target_tokens), "cap")
        box.check_feasible()
        return cls(domains, box.lower, np.minimum(box.upper, 1.0))

    @classmethod
    def unconstrained(cls, domains: Sequence[str]) -> Constraints:
        return cls.build(domains)

    def contains(self, r: np.ndarray, atol: float = FEASIBILITY_ATOL) -> np.ndarray:
        """Whether mixtures are feasible: on the simplex and inside the box.

        Parameters
        ----------
        r : array_like
            Mixtures (..., M).
        atol : float
            Tolerance of the sum and the bounds.

        Returns
        -------
        numpy.ndarray
            Booleans of shape ``r.shape[:-1]``.

        Examples
        --------
        >>> from bayesmix import Constraints
        >>> Constraints.unconstrained(["a", "b"]).contains([0.4, 0.6])
        np.True_
        """
        r = np.asarray(r, float)
        return (
            (np.abs(r.sum(axis=-1) - 1.0) <= atol)
            & np.all(r >= self.lower - atol, axis=-1)
            & np.all(r <= self.upper + atol, axis=-1)
        )

    def to_dict(self) -> dict:
        return {
            "domains": list(self.domains),
            "lower": self.lower.tolist(),
            "upper": self.upper.tolist(),
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> Constraints:
        return cls(
            tuple(d["domains"]), np.asarray(d["lower"], float), np.asarray(d["upper"], float)
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, s: str) -> Constraints:
        return cls.from_dict(json.loads(s))


class _Box:
    """Per-domain share bounds while :meth:`Constraints.build` combines them, each bound with
    the constraint that set it (named when two conflict)."""

    def __init__(self, domains: tuple[str, ...]):
        self.domains = domains
        self.index = {d: i for i, d in enumerate(domains)}
        self.lower, self.upper = np.zeros(len(domains)), np.ones(len(domains))
        self.why_lo = ["" for _ in domains]
        self.why_hi = ["" for _ in domains]

    def apply(self, values: Mapping[str, float] | None, kind: str) -> None:
        """Tighten the bounds by ``{domain: share}`` of one kind: a "minimum" raises the lower
        bound, a "maximum" or "cap" lowers the upper one, "fixed" does both."""
        if not values:
            return
        check_known_domains(values, self.domains, "training")
        for d, v in values.items():
            v = float(v)
            if not 0.0 <= v <= 1.0:
                raise InfeasibleError(f"{kind} share {v:g} for {d!r} is outside [0, 1]")
            i = self.index[d]
            if kind in ("minimum", "fixed") and v > self.lower[i]:
                self.lower[i], self.why_lo[i] = v, f"{kind} share {v:g}"
            if kind in ("maximum", "fixed", "cap") and v < self.upper[i]:
                self.upper[i], self.why_hi[i] = v, f"{kind} share {v:g}"

    def check_feasible(self) -> None:
        """InfeasibleError naming the conflict when no mixture fits the bounds."""
        lower, upper, domains = self.lower, self.upper, self.domains
        for i, d in enumerate(domains):
            if lower[i] > upper[i] + FEASIBILITY_ATOL:
                raise InfeasibleError(
                    f"domain {d!r}: {self.why_lo[i]} exceeds {self.why_hi[i]}",
                    hint="relax one of the two constraints",
                )
        if lower.sum() > 1 + FEASIBILITY_ATOL:
            parts = ", ".join(f"{d}>={lower[i]:g}" for i, d in enumerate(domains) if lower[i] > 0)
            raise InfeasibleError(
                f"minimum/fixed shares sum to {lower.sum():.4g} > 1 ({parts})",
                hint="lower some minimum or fixed shares",
            )
        if upper.sum() < 1 - FEASIBILITY_ATOL:
            parts = ", ".join(f"{d}<={upper[i]:.4g}" for i, d in enumerate(domains) if upper[i] < 1)
            raise InfeasibleError(
                f"maximum shares and caps sum to {upper.sum():.4g} < 1 ({parts})",
                hint="raise a maximum, allow more epochs, or add data",
            )


def _token_caps(
    tokens_available: Mapping[str, float], max_epochs: float, target_tokens: float | None
) -> dict[str, float]:
    """``{domain: share cap}`` from the tokens available: ``tokens * max_epochs /
    target_tokens``, at most 1."""
    # NaN compares False with everything: test for the good case, not the bad one
    if not (target_tokens is not None and math.isfinite(target_tokens) and target_tokens > 0):
        raise InfeasibleError(
            "token caps need a positive target_tokens",
            hint="give the target run's training tokens",
        )
    if not (math.isfinite(max_epochs) and max_epochs > 0):
        raise InfeasibleError(f"max_epochs must be a finite number > 0, got {max_epochs:g}")
    caps = {}
    for d, tok in tokens_available.items():
        tok = float(tok)
        if not (math.isfinite(tok) and tok >= 0):
            raise InfeasibleError(
                f"tokens available for {d!r} must be a finite number >= 0, got {tok:g}"
            )
        caps[d] = min(1.0, tok * max_epochs / target_tokens)
    return caps
