"""What an acquisition knows: posterior draws of the mixing law, its noise and the objective.

A :class:`Belief` holds draws of the law's parameters (any :class:`bayesmix.laws.Law`: losses
come from its mean, optima from :mod:`bayesmix.decisions.optimize`), the draws' noise scales and
the objective's validation-domain weights. Every acquisition quantity (predicted losses, their
spread, the per-draw optima, the noise of a measured run) is computed from these draws; no
Gaussian process.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from bayesmix import errors
from bayesmix.data.constraints import Constraints
from bayesmix.decisions.draws import LawDraws
from bayesmix.decisions.inputs import resolve_weights
from bayesmix.decisions.optimize import draw_optima
from bayesmix.laws import Law

#: Posterior draws used for acquisition (evenly thinned when the posterior has more): the
#: acquisition arrays are draws x candidates x validation domains.
DEFAULT_MAX_DRAWS = 256


@dataclass(frozen=True)
class Belief:
    """Posterior draws an acquisition works on.

    ``params``: draws of the law's parameters with a leading sample axis S (M4: m, rho (S, K),
    t (S, K, M)); ``sigma`` (S, K) noise scales (nats); ``weights`` (K,) the objective's
    validation-domain weights (normalised here); ``noise_factor``: variance of the unit noise
    (1 for Normal, nu / (nu - 2) for Student-t); ``law``: the mixing law (a
    :class:`bayesmix.laws.Law` or its name; default M4); ``inputs``: fixed values of the law's
    extra inputs (``n_params``, ``tokens``) when it takes them. ``draws`` is the validated
    :class:`bayesmix.decisions.draws.LawDraws` every computation goes through.
    """

    params: dict
    sigma: np.ndarray
    weights: np.ndarray
    train_domains: tuple[str, ...]
    eval_domains: tuple[str, ...]
    noise_factor: float = 1.0
    diagnostics_warning: str | None = None
    weights_description: str = ""
    law: Law | str | None = None
    inputs: Mapping = field(default_factory=dict)
    draws: LawDraws = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        draws = LawDraws(
            self.params,
            self.train_domains,
            self.eval_domains,
            self.diagnostics_warning,
            law=self.law,
            inputs=self.inputs,
        )
        object.__setattr__(self, "draws", draws)
        object.__setattr__(self, "law", draws.law)
        object.__setattr__(self, "inputs", draws.inputs)
        object.__setattr__(self, "params", draws.params)
        object.__setattr__(self, "train_domains", draws.train_domains)
        object.__setattr__(self, "eval_domains", draws.eval_domains)
        sigma = np.asarray(self.sigma, float)
        expected = (draws.n_samples, len(draws.eval_domains))
        if sigma.shape != expected or not np.all(np.isfinite(sigma)):
            raise errors.FormatError(
                f"sigma draws have shape {sigma.shape}; expected "
                f"{expected} (draws x validation domains), finite"
            )
        object.__setattr__(self, "sigma", sigma)
        w = np.asarray(self.weights, float).reshape(-1)
        if (
            w.shape != (len(self.eval_domains),)
            or not np.all(np.isfinite(w))
            or np.any(w < 0)
            or w.sum() <= 0
        ):
            raise errors.ObjectiveError(f"need {len(self.eval_domains)} weights >= 0, not all 0")
        object.__setattr__(self, "weights", w / w.sum())

    @classmethod
    def from_posterior(
        cls,
        posterior,
        *,
        weights=None,
        target: str | None = None,
        max_draws: int | None = DEFAULT_MAX_DRAWS,
        inputs: Mapping | None = None,
    ) -> Belief:
        """Draws of a fitted Posterior (any law); ``weights``/``target`` as in
        :func:`bayesmix.decisions.inputs.resolve_weights` (default: equal weights). ``max_draws``
        thins evenly over chains and draws (None keeps all); ``inputs``: the law's extra inputs
        (``n_params``, ``tokens``) when it takes them."""
        draws = LawDraws.from_posterior(posterior, inputs=inputs)
        w, desc = resolve_weights(draws.eval_domains, weights, target)
        sigma = posterior.law_params()["sigma"]
        lik = posterior.spec.likelihood
        factor = 1.0
        if lik.get("family") == "student_t":
            nu = float(lik["nu"])
            factor = nu / (nu - 2.0) if nu > 2 else 3.0  # infinite variance: a wide stand-in
        keep = thin(draws.n_samples, max_draws)
        return cls(
            {k: v[keep] for k, v in draws.params.items()},
            sigma[keep],
            w,
            draws.train_domains,
            draws.eval_domains,
            factor,
            posterior.diagnostics_warning,
            desc,
            law=draws.law,
            inputs=draws.inputs,
        )

    @property
    def n_samples(self) -> int:
        return self.draws.n_samples

    def domain_loss(self, mixtures) -> np.ndarray:
        """Mean loss per draw, mixture and validation domain (S, n, K): the law's mean."""
        return self.draws.mean_loss(mixtures)

    def loss(self, mixtures) -> np.ndarray:
        """The objective (weighted mean loss) per draw and mixture: (S, n)."""
        return self.domain_loss(mixtures) @ self.weights

    def noise_var(self) -> np.ndarray:
        """Noise variance of one run's measured loss per validation domain (K,), nats^2."""
        return self.noise_factor * np.mean(self.sigma**2, axis=0)

    def objective_noise_var(self) -> float:
        """Noise variance of the measured objective (independent noise per domain)."""
        return float(np.sum(self.weights**2 * self.noise_var()))

    def optima(self, constraints: Constraints) -> np.ndarray:
        """Every draw's optimal mixture over the feasible set (S, M) (exact for M4, batched
        projected gradients for other laws: :func:`bayesmix.decisions.optimize.draw_optima`)."""
        return draw_optima(self.draws, constraints, self.weights)[0]


def thin(n: int, max_draws: int | None) -> np.ndarray:
    """Indices of at most ``max_draws`` of ``n`` draws, evenly spaced (all when None)."""
    if max_draws is None or n <= max_draws:
        return np.arange(n)
    if max_draws < 2:
        raise errors.OptionError(f"max_draws={max_draws!r} must be >= 2", param="max_draws")
    return np.unique(np.linspace(0, n - 1, int(max_draws)).round().astype(int))
