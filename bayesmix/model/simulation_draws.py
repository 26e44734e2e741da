"""The draws the simulators share (:mod:`bayesmix.model.simulation`): domain names, the
mixtures of the runs and the noise on their losses.

Mixtures are symmetric Dirichlet draws (as RegMix draws them), optionally with a share of
corner mixtures (95 % one domain) or sparse rows, or a given (n, M) array; arrays are (runs,
training domains). Noise is Gaussian with sd ``sigma`` per validation domain or ``sigma`` x
Student-t(df), in nats per token; a loss it makes non-positive is redrawn.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bayesmix import errors


def domain_names(spec, prefix: str, kind: str) -> list[str]:
    """Domain names from a count (``<prefix>1``, ``<prefix>2``, ...) or a sequence: unique,
    non-empty, at least 2 training domains."""
    if isinstance(spec, int):
        if spec < 2 and kind == "training":
            raise errors.SimulationError("a mixture needs at least 2 training domains")
        if spec < 1:
            raise errors.SimulationError(f"need at least one {kind} domain")
        return [f"{prefix}{j}" for j in range(1, spec + 1)]
    names = [str(n) for n in spec]
    if len(set(names)) != len(names) or not names:
        raise errors.SimulationError(f"{kind} domain names must be unique and non-empty")
    if kind == "training" and len(names) < 2:
        raise errors.SimulationError("a mixture needs at least 2 training domains")
    return names


def eval_names(eval_domains, train: list[str]) -> list[str]:
    """Validation domains: the training domains (None), a count (the first training domains,
    then ``e<j>``) or names."""
    if eval_domains is None:
        return list(train)
    if isinstance(eval_domains, int):
        if eval_domains < 1:
            raise errors.SimulationError("eval_domains must be at least 1")
        return list(train[:eval_domains]) + [
            f"e{j}" for j in range(len(train) + 1, eval_domains + 1)
        ]
    return domain_names(eval_domains, "e", "validation")


def design_mixtures(design, n_runs, n_train, concentration, corner_fraction, rng) -> np.ndarray:
    """The runs' mixtures (n, M): ``n_runs`` symmetric Dirichlet draws, the first
    ``corner_fraction`` of them near a corner, or a given array (checked)."""
    if isinstance(design, str):
        if design != "dirichlet":
            raise errors.SimulationError(
                f"unknown design {design!r}", hint="use 'dirichlet' or pass an (n, M) array"
            )
        if n_runs < 1:
            raise errors.SimulationError("n_runs must be at least 1")
        if not 0 <= corner_fraction <= 1:
            raise errors.SimulationError("corner_fraction must be in [0, 1]")
        mix = rng.dirichlet(np.full(n_train, float(concentration)), n_runs)
        n_corner = int(round(corner_fraction * n_runs))
        for i in range(n_corner):  # 95 % on one domain (cycling), 5 % spread at random
            mix[i] = 0.05 * rng.dirichlet(np.ones(n_train))
            mix[i, i % n_train] += 0.95
        return mix
    mix = np.asarray(design, float)
    if mix.ndim != 2 or mix.shape[1] != n_train:
        raise errors.SimulationError(f"design must have shape (n, {n_train}), got {mix.shape}")
    if (mix < 0).any() or not np.allclose(mix.sum(axis=1), 1.0, atol=1e-9):
        raise errors.SimulationError("design rows must be non-negative and sum to 1")
    return mix


def sparsify(mix: np.ndarray, zero_fraction: float, concentration: float, rng) -> np.ndarray:
    """Drop each share with probability ``zero_fraction`` (keeping at least one domain) and
    redraw the kept ones from the symmetric Dirichlet."""
    keep = rng.random(mix.shape) >= zero_fraction
    for i in np.flatnonzero(~keep.any(axis=1)):
        keep[i, rng.integers(mix.shape[1])] = True
    g = rng.gamma(float(concentration), 1.0, mix.shape) * keep
    return g / g.sum(axis=1, keepdims=True)


def as_mixture_array(mixtures, train_domains) -> tuple[np.ndarray, object, bool]:
    """(n, M) array, the DataFrame index (or None) and whether a single mixture was given."""
    index = None
    if isinstance(mixtures, pd.DataFrame):
        missing = [d for d in train_domains if d not in mixtures.columns]
        if missing:
            raise errors.DomainNameError(
                f"no column for training domain {missing[0]!r}",
                column=missing[0],
                hint="columns must be the training domains",
            )
        index = mixtures.index
        mixtures = mixtures[list(train_domains)]
    r = np.asarray(mixtures, float)
    single = r.ndim == 1
    r = np.atleast_2d(r)
    if r.shape[-1] != len(train_domains):
        raise errors.SimulationError(
            f"mixtures have {r.shape[-1]} shares, the law has {len(train_domains)} training domains"
        )
    return r, index, single


def noise_scales(noise_sd, n_eval: int, student_t_df) -> np.ndarray:
    """Noise sd per validation domain (n_eval,), checked; and a valid Student-t df."""
    sigma = np.broadcast_to(np.asarray(noise_sd, float), (n_eval,)).copy()
    if (sigma < 0).any() or not np.isfinite(sigma).all():
        raise errors.SimulationError("noise_sd must be finite and >= 0")
    if student_t_df is not None and not student_t_df > 0:
        raise errors.SimulationError("student_t_df must be > 0")
    return sigma


def draw_noise(rng, shape, sigma, df) -> np.ndarray:
    """Noise of ``shape`` (..., K): N(0, sigma) or sigma x Student-t(df) per domain."""
    if df is None:
        return rng.normal(0.0, 1.0, shape) * sigma
    return rng.standard_t(df, shape) * sigma


def add_noise(rng, mean: np.ndarray, sigma: np.ndarray, df) -> np.ndarray:
    """``mean`` (n, K) plus noise (:func:`draw_noise`), non-positive losses redrawn (reachable
    only with very heavy tails or large ``sigma``)."""
    loss = mean + draw_noise(rng, mean.shape, sigma, df)
    while (bad := loss <= 0).any():
        loss[bad] = (mean + draw_noise(rng, mean.shape, sigma, df))[bad]
    return loss
