"""A small serialisable prior: a PyMC distribution name and its parameters.

``Prior("Normal", mu=0, sigma=1)`` round-trips through ``to_dict``/``from_dict`` (and so TOML
and JSON). A parameter given as the string ``"data"`` is filled in from the data by the model
builder (priors scaled to the data by default).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import pymc as pm

from bayesmix.errors import SpecError

#: Distributions a specification may use, with the parameters each accepts.
DISTRIBUTIONS: dict[str, tuple[str, ...]] = {
    "Normal": ("mu", "sigma"),
    "HalfNormal": ("sigma",),
    "StudentT": ("nu", "mu", "sigma"),
    "HalfStudentT": ("nu", "sigma"),
    "Exponential": ("lam",),
    "Gamma": ("alpha", "beta"),
    "LogNormal": ("mu", "sigma"),
    "Beta": ("alpha", "beta"),
    "ZeroSumNormal": ("sigma",),
}

DATA = "data"


@dataclass(frozen=True)
class Prior:
    """A distribution name and its parameters (floats, or ``"data"`` for data-scaled values)."""

    dist: str
    params: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.dist not in DISTRIBUTIONS:
            raise SpecError(
                f"unknown distribution {self.dist!r}", hint=f"use one of {', '.join(DISTRIBUTIONS)}"
            )
        allowed = DISTRIBUTIONS[self.dist]
        for k, v in self.params.items():
            if k not in allowed:
                raise SpecError(
                    f"{self.dist} has no parameter {k!r}",
                    hint=f"{self.dist} takes {', '.join(allowed)}",
                )
            if v != DATA and not isinstance(v, (int, float)):
                raise SpecError(
                    f'parameter {k!r} of {self.dist} must be a number or "data", got {v!r}'
                )

    @classmethod
    def from_dict(cls, d: Mapping, name: str = "prior") -> Prior:
        if not isinstance(d, Mapping) or "dist" not in d:
            raise SpecError(f"prior {name!r} needs a table with a 'dist' key, got {d!r}")
        params = {k: v for k, v in d.items() if k != "dist"}
        try:
            return cls(str(d["dist"]), params)
        except SpecError as err:
            raise SpecError(f"prior {name!r}: {err.problem}", hint=err.hint) from None

    def to_dict(self) -> dict:
        return {"dist": self.dist, **self.params}

    def uses_data(self) -> bool:
        return any(v == DATA for v in self.params.values())

    def mean(self) -> float:
        """The distribution's mean, for the positive scale priors a law may fix a scale at
        (:func:`bayesmix.laws.m4.pooling_scale`); SpecError for another distribution or a
        data-scaled parameter."""
        p = self.params
        if not self.uses_data():
            if self.dist == "Gamma":
                return float(p["alpha"]) / float(p["beta"])
            if self.dist == "HalfNormal":
                return float(p.get("sigma", 1.0)) * (2.0 / math.pi) ** 0.5
            if self.dist == "Exponential":
                return 1.0 / float(p["lam"])
            if self.dist == "LogNormal":
                return math.exp(float(p.get("mu", 0.0)) + float(p.get("sigma", 1.0)) ** 2 / 2)
        raise SpecError(
            f"{self} has no mean a scale can be fixed at",
            hint="use a Gamma, HalfNormal, Exponential or LogNormal prior with numbers",
        )

    def create(self, name: str, *, dims=None, data: Mapping | None = None, **kwargs):
        """Create the PyMC variable ``name`` in the current model context.

        ``data`` maps parameter names to values (numbers or ``pm.Data``) that replace ``"data"``.
        """
        params = {}
        for k, v in self.params.items():
            if v == DATA:
                if not data or k not in data:
                    raise SpecError(
                        f"prior {name!r}: parameter {k!r} cannot be scaled to the data",
                        hint='give a number instead of "data"',
                    )
                v = data[k]
            params[k] = v
        return getattr(pm, self.dist)(name, **params, dims=dims, **kwargs)

    def __str__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.dist}({args})"
