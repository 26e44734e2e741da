"""Posterior draws of a law as the decision layer sees them.

:class:`LawDraws` (a law, its parameter draws with a leading sample axis S, domain names, the
fixed extra inputs), checked by :func:`check_draws`; the law's mean losses of mixtures per draw
(:func:`domain_loss`, :func:`aggregate_loss`, :func:`predict_draws`) and the validation-domain
weights (:func:`normalise_weights`). Everything above (objectives, optimisation, guarantees,
decisions) reads draws through this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bayesmix import errors
from bayesmix.laws import DEFAULT_LAW, INPUTS, Law, get_law, m4


def _law_label(law: Law) -> str:
    return law.name.upper()


def _expected_shape(param) -> str:
    letters = {"eval_domain": "K", "train_domain": "M"}
    return "(" + ", ".join(["S", *(letters.get(d, d) for d in param.dims)]) + ")"


def check_draws(
    draws: Mapping[str, np.ndarray], law: Law | str | None = None
) -> dict[str, np.ndarray]:
    """Validate draws of ``law``'s parameters (default :data:`~bayesmix.laws.DEFAULT_LAW`) and
    return float64 copies.

    Every parameter of :attr:`Law.params` must be present with a leading sample axis S > 0 and
    then its declared dims: (S, K) for ``eval_domain``, (S, M) for ``train_domain``, (S, K, M)
    for both (one S, K and M across parameters), all values finite. Other keys (e.g. ``sigma``)
    are ignored. M4: m, rho (S, K), t (S, K, M).
    """
    law = get_law(DEFAULT_LAW if law is None else law)
    names = law.param_names
    missing = [p for p in names if p not in draws]
    if missing:
        raise errors.FormatError(
            f"posterior draws lack the {_law_label(law)} parameter(s) {', '.join(missing)}",
            hint=f"law {law.name!r} needs draws of {', '.join(names)}",
        )
    out = {p: np.asarray(draws[p], dtype=float) for p in names}
    sizes: dict[str, set] = {dim: set() for dim in ("sample", *law.dims)}
    ranks_ok = all(out[p.name].ndim == 1 + len(p.dims) for p in law.params)
    if ranks_ok:
        for p in law.params:
            for dim, n in zip(("sample", *p.dims), out[p.name].shape):
                sizes[dim].add(n)
    if not ranks_ok or any(len(v) > 1 for v in sizes.values()):
        got = ", ".join(f"{p} {out[p].shape}" for p in names)
        want = ", ".join(_expected_shape(p) for p in law.params)
        raise errors.FormatError(
            f"draws have shapes {got}; expected {want} with one leading sample axis (S draws, "
            "K validation, M training domains)"
        )
    if out[names[0]].shape[0] == 0:
        raise errors.FormatError(
            "no posterior draws (the sample axis is empty)",
            hint="give at least one draw of every parameter",
        )
    bad = [p for p in names if not np.isfinite(out[p]).all()]
    if bad:
        raise errors.FormatError(
            f"posterior draws of {', '.join(bad)} contain NaN or inf",
            hint="drop those draws or refit",
        )
    return out


def _check_inputs(law: Law, inputs: Mapping | None) -> dict[str, float]:
    """The fixed extra inputs (``n_params``, ``tokens``) the decision is made at, as floats.

    Keys the law does not take are dropped; values must be positive numbers."""
    out = {}
    for key, value in dict(inputs or {}).items():
        if key not in INPUTS or key == "r":
            raise errors.OptionError(
                f"unknown law input {key!r}", hint="inputs are n_params (parameters) and tokens"
            )
        try:
            v = float(value)
        except (TypeError, ValueError):
            v = float("nan")
        if not (np.isfinite(v) and v > 0):
            raise errors.OptionError(f"law input {key} must be a positive number, got {value!r}")
        if key in law.inputs:
            out[key] = v
    return out


def _require_inputs(law: Law, inputs: Mapping) -> None:
    missing = [k for k in law.inputs if k != "r" and k not in inputs]
    if missing:
        raise errors.OptionError(
            f"law {law.name!r} needs {missing[0]} (of the run the mixture is chosen for) to "
            "compare mixtures",
            hint=f"give LawDraws(..., inputs={{{missing[0]!r}: value}})",
        )


@dataclass(frozen=True)
class LawDraws:
    """Posterior draws of a law with the names of their axes.

    ``params``: the law's parameters, leading sample axis S (M4: m, rho (S, K), t (S, K, M));
    ``law``: a :class:`Law` or its name (default :data:`~bayesmix.laws.DEFAULT_LAW`, for draws
    built from a plain dict);
    ``inputs``: fixed values of the law's extra inputs (``n_params``, ``tokens``) at which
    mixtures are compared, for laws that take them.
    """

    params: dict
    train_domains: tuple[str, ...]
    eval_domains: tuple[str, ...]
    diagnostics_warning: str | None = None
    source: str | None = None
    #: a Law, its name or None (DEFAULT_LAW) when built; always the Law after ``__post_init__``
    law: Any = None
    inputs: Mapping = field(default_factory=dict)

    def __post_init__(self):
        law = get_law(DEFAULT_LAW if self.law is None else self.law)
        p = check_draws(self.params, law)
        object.__setattr__(self, "law", law)
        object.__setattr__(self, "params", p)
        object.__setattr__(self, "train_domains", tuple(self.train_domains))
        object.__setattr__(self, "eval_domains", tuple(self.eval_domains))
        object.__setattr__(self, "inputs", _check_inputs(law, self.inputs))
        names = {d: dim_size(law, p, d) for d in law.extra_dims}  # as many as drawn
        names.update(eval_domain=len(self.eval_domains), train_domain=len(self.train_domains))
        for par in law.params:
            shape = p[par.name].shape[1:]
            want = tuple(names[d] for d in par.dims)
            if shape != want:
                raise errors.FormatError(
                    f"draws of {par.name} are {shape} per draw ({', '.join(par.dims)}) but "
                    f"{names['eval_domain']} validation x {names['train_domain']} training "
                    "domain names were given"
                )

    @property
    def n_samples(self) -> int:
        return self.params[self.law.param_names[0]].shape[0]

    def mean_loss(self, mixtures) -> np.ndarray:
        """Mean loss per draw, mixture and validation domain: (S, n, K) for mixtures (n, M)."""
        return domain_loss(self, mixtures)

    def select(self, index) -> LawDraws:
        """The draws at ``index`` (an int array or slice along the sample axis)."""
        return LawDraws(
            {k: v[index] for k, v in self.params.items()},
            self.train_domains,
            self.eval_domains,
            self.diagnostics_warning,
            self.source,
            self.law,
            self.inputs,
        )

    @classmethod
    def from_posterior(
        cls, posterior, source: str | None = None, *, inputs: Mapping | None = None
    ) -> LawDraws:
        """Draws of a fitted :class:`bayesmix.posterior.posterior.Posterior`, whatever its law."""
        law = getattr(posterior, "law", None)
        if law is None:
            law = get_law(getattr(getattr(posterior, "spec", None), "law", DEFAULT_LAW))
        params = posterior.law_params()
        return cls(
            {p: params[p] for p in law.param_names if p in params},
            posterior.train_domains,
            posterior.eval_domains,
            posterior.diagnostics_warning,
            source,
            law,
            inputs or {},
        )


def as_law_draws(source, law: Law | str | None = None) -> LawDraws:
    """Accept a :class:`LawDraws` or anything with ``law_params()`` and domain names."""
    if isinstance(source, LawDraws):
        return source
    if hasattr(source, "law_params"):
        return LawDraws.from_posterior(source)
    raise TypeError(
        "expected a Posterior or LawDraws; wrap a plain draws dict as "
        "LawDraws(params, train_domains, eval_domains, law=...)"
    )


def unpack_draws(draws, law: Law | str | None = None) -> tuple[Law, dict, dict]:
    """(law, params, inputs) of a LawDraws or Posterior, or of a plain draws dict under
    ``law`` (default :data:`~bayesmix.laws.DEFAULT_LAW`). Checks that the law's extra inputs
    are given."""
    if isinstance(draws, LawDraws) or hasattr(draws, "law_params"):
        draws = as_law_draws(draws)
        if law is not None and get_law(law) is not draws.law:
            raise errors.SpecError(
                f"draws are of law {draws.law.name!r}, not {get_law(law).name!r}"
            )
        the_law, params, inputs = draws.law, draws.params, dict(draws.inputs)
    else:
        the_law = get_law(DEFAULT_LAW if law is None else law)
        params, inputs = check_draws(draws, the_law), {}
    _require_inputs(the_law, inputs)
    return the_law, params, inputs


def count_draws(law: Law, params: Mapping) -> int:
    return params[law.param_names[0]].shape[0]


def dim_size(law: Law, params: Mapping, dim: str) -> int | None:
    """Size of ``dim`` in the draws (None when no parameter has it)."""
    for p in law.params:
        if dim in p.dims:
            return params[p.name].shape[1 + p.dims.index(dim)]
    return None


def predict_draws(law: Law, params: Mapping, r: np.ndarray, inputs: Mapping) -> np.ndarray:
    """Law mean (S, n, K) of mixtures r (n, M), extra inputs repeated for every mixture."""
    extra = {k: np.full(r.shape[:-1], v) for k, v in inputs.items()}
    return law.predict(r, params, **extra)


def domain_loss(draws, mixtures, *, law: Law | str | None = None) -> np.ndarray:
    """Mean loss ``L_si(r)`` per draw, mixture and validation domain: (S, n, K)."""
    law, params, inputs = unpack_draws(draws, law)
    return predict_draws(law, params, np.atleast_2d(np.asarray(mixtures, float)), inputs)


def aggregate_loss(draws, mixtures, weights, *, law: Law | str | None = None) -> np.ndarray:
    """Aggregate mean loss ``sum_i w_i L_si(r)`` (S, n) of mixtures (n, M); weights (K,)."""
    return domain_loss(draws, mixtures, law=law) @ np.asarray(weights, float)


def exp_terms(draws: Mapping[str, np.ndarray], weights) -> tuple[np.ndarray, ...]:
    """M4 only: ``(const (S,), a (S, K), t (S, K, M))`` with
    ``f_s(r) = const_s + sum_i a_si e^{t_si . r}``.

    ``a = w k`` and ``const = w . c`` from the paper's coefficients of :func:`m4.to_ck`.
    """
    params = draws.params if isinstance(draws, LawDraws) else draws
    c, k, t = m4.to_ck(check_draws(params, m4.M4()))
    w = np.asarray(weights, float)
    return c @ w, k * w, t


def normalise_weights(weights, k: int | None) -> np.ndarray:
    w = np.asarray(weights, float).reshape(-1)
    if k is not None and w.shape != (k,):
        raise errors.ObjectiveError(f"{w.size} weights for {k} validation domains")
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise errors.ObjectiveError(
            "validation-domain weights must be finite, >= 0 and not all zero"
        )
    return w / w.sum()
