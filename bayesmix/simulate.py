"""Simulated proxy runs drawn from a known M4 law, for tests, demos and benchmarks.

Loss of validation domain i for mixture r, model size N (parameters) and D training tokens::

    L_i(r, N, D) = M4_i(r) * s(N, D) + noise
    M4_i(r)      = m_i (1 - rho_i + rho_i exp(t_i . r))          (bayesmix.laws.m4.mean_loss)
    s(N, D)      = 1 + a_n ((N / n_ref)^-alpha - 1) + a_d ((D / d_ref)^-beta - 1)

so the M4 law holds exactly at the reference scale (``n_ref`` = the smallest size, ``d_ref`` =
the tokens of the last step) and a power law in N and D scales every domain's loss by the same
factor elsewhere (s > 0 as long as ``a_n + a_d < 1``). Without ``sizes``/``steps`` s = 1.

Parameter draws (realistic for small Pile proxies): m_i ~ U(2, 4) nats (loss at the uniform
mixture), rho_i ~ U(0.2, 0.4) (so c = 60-80 % of it), t_ij ~ N(0, 1) plus N(-2, 0.5) where
training and validation domain share a name (``diag_effect``), each row then centred to sum 0.
Noise: N(0, sigma_i) per record and domain, or sigma_i * Student-t(df) (redrawn in the rare case
it would make a loss non-positive).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import xarray as xr

from bayesmix import errors
from bayesmix.data import LOSS_PREFIX, MIX_PREFIX, RunTable
from bayesmix.laws import m4
from bayesmix.loaders import TOKENS_PER_STEP, size_label

#: Defaults of the size/step power law (a_n + a_d < 1 keeps losses positive at any scale).
SCALE_DEFAULTS = {"a_n": 0.25, "alpha": 0.3, "a_d": 0.3, "beta": 0.35}


class Truth(dict):
    """The true parameters of a simulation: a dict usable directly as M4 ``params``.

    Keys: ``m``, ``rho`` (K,), ``t`` (K, M; rows sum to 0), ``c``, ``k`` (K,), ``sigma`` (K,),
    ``train_domains`` (M names), ``eval_domains`` (K names), ``noise`` ("gaussian" or
    "student_t"), ``student_t_df``, and the scale law ``a_n, alpha, n_ref, a_d, beta, d_ref``
    (tokens), ``tokens_per_step``. Arrays are NumPy; :meth:`to_dataset` gives named dims.
    """

    def scale_factor(self, n_params=None, step=None) -> np.ndarray:
        """s(N, D) of the module docstring; None means the reference size / step (factor 1)."""
        s = np.asarray(1.0)
        if n_params is not None and self["n_ref"] is not None:
            n = np.asarray(n_params, float)
            s = s + self["a_n"] * ((n / self["n_ref"]) ** -self["alpha"] - 1.0)
        if step is not None and self["d_ref"] is not None:
            d = np.asarray(step, float) * self["tokens_per_step"]
            s = s + self["a_d"] * ((d / self["d_ref"]) ** -self["beta"] - 1.0)
        return s

    def true_loss(self, mixtures, *, n_params=None, step=None):
        """Noise-free losses of new mixtures.

        ``mixtures``: array (n, M) or (M,) in ``train_domains`` order, or a DataFrame with those
        columns (e.g. ``RunTable.mixtures``). ``n_params``/``step``: scalars or (n,) arrays, None
        for the reference scale. Returns (n, K) / (K,) NumPy, or a DataFrame (same index, columns
        ``eval_domains``) for DataFrame input.
        """
        index = None
        if isinstance(mixtures, pd.DataFrame):
            missing = [d for d in self["train_domains"] if d not in mixtures.columns]
            if missing:
                raise errors.DomainNameError(f"no column for training domain {missing[0]!r}",
                                             column=missing[0],
                                             hint="columns must be the training domains")
            index = mixtures.index
            mixtures = mixtures[list(self["train_domains"])]
        r = np.asarray(mixtures, float)
        single = r.ndim == 1
        r = np.atleast_2d(r)
        if r.shape[-1] != len(self["train_domains"]):
            raise errors.SimulationError(
                f"mixtures have {r.shape[-1]} shares, the law has "
                f"{len(self['train_domains'])} training domains")
        loss = m4.mean_loss(r, self)
        s = np.asarray(self.scale_factor(n_params, step), float)
        loss = loss * (s[:, None] if s.ndim == 1 else s)
        if index is not None:
            out = pd.DataFrame(loss, index=index, columns=list(self["eval_domains"]))
            out.columns.name = "eval_domain"
            return out
        return loss[0] if single else loss

    def to_dataset(self) -> xr.Dataset:
        """The law's parameters with named dims ``eval_domain`` and ``train_domain``."""
        coords = {"eval_domain": list(self["eval_domains"]),
                  "train_domain": list(self["train_domains"])}
        data = {name: (("eval_domain",), self[name]) for name in ("m", "rho", "c", "k", "sigma")}
        data["t"] = (("eval_domain", "train_domain"), self["t"])
        attrs = {k: v for k, v in self.items()
                 if k not in data and k not in ("train_domains", "eval_domains")
                 and v is not None}
        return xr.Dataset(data, coords=coords, attrs=attrs)


def simulate(train_domains: int | Sequence[str] = 5,
             eval_domains: int | Sequence[str] | None = None, n_runs: int = 40, *,
             seed: int, noise_sd: float | Sequence[float] = 0.02,
             student_t_df: float | None = None, sizes: Sequence[float] | None = None,
             steps: Sequence[int] | None = None, design: str | np.ndarray = "dirichlet",
             concentration: float = 1.0, corner_fraction: float = 0.0, diag_effect: bool = True,
             tokens_per_step: float = TOKENS_PER_STEP, scale: dict | None = None,
             ) -> tuple[RunTable, Truth]:
    """Draw a run table of proxy runs from a random M4 law; return it with the true law.

    ``train_domains``/``eval_domains``: a count or names (validation defaults to the training
    domains, so every validation domain has a matching training domain; a larger count adds
    ``e<j>`` domains). ``n_runs``: mixtures per model size. ``design``: ``"dirichlet"``
    (symmetric Dirichlet with ``concentration``, as RegMix draws them) or an (n, M) array of
    mixtures; ``corner_fraction`` of the drawn mixtures sit near a corner (95 % one domain).
    ``sizes`` (parameters) and ``steps``: every mixture is run at every size and recorded at
    every step, with the power law of the module docstring (``scale`` overrides
    :data:`SCALE_DEFAULTS`). Same ``seed``, same output.
    """
    rng = np.random.default_rng(seed)
    train = _names(train_domains, "d", "training")
    if eval_domains is None:
        evals = list(train)
    elif isinstance(eval_domains, int):
        if eval_domains < 1:
            raise errors.SimulationError("eval_domains must be at least 1")
        evals = list(train[:eval_domains]) + [f"e{j}" for j in
                                              range(len(train) + 1, eval_domains + 1)]
    else:
        evals = _names(eval_domains, "e", "validation")
    n_train, n_eval = len(train), len(evals)

    sigma = np.broadcast_to(np.asarray(noise_sd, float), (n_eval,)).copy()
    if (sigma < 0).any() or not np.isfinite(sigma).all():
        raise errors.SimulationError("noise_sd must be finite and >= 0")
    if student_t_df is not None and not student_t_df > 0:
        raise errors.SimulationError("student_t_df must be > 0")

    # the law
    m = rng.uniform(2.0, 4.0, n_eval)
    rho = rng.uniform(0.2, 0.4, n_eval)
    t = rng.normal(0.0, 1.0, (n_eval, n_train))
    if diag_effect:
        for i, name in enumerate(evals):
            if name in train:
                t[i, train.index(name)] += rng.normal(-2.0, 0.5)
    t -= t.mean(axis=1, keepdims=True)
    c, k, _ = m4.to_ck({"m": m, "rho": rho, "t": t})

    # the design
    mixtures = _design(design, n_runs, n_train, concentration, corner_fraction, rng)

    sizes_ = [float(s) for s in sizes] if sizes is not None else [None]
    if sizes is not None and (not sizes_ or min(sizes_) <= 0):
        raise errors.SimulationError("sizes must be positive numbers of parameters")
    steps_ = [int(s) for s in steps] if steps is not None else [None]
    if steps is not None and (not steps_ or min(steps_) <= 0):
        raise errors.SimulationError("steps must be positive integers")
    law = dict(SCALE_DEFAULTS, **(scale or {}))
    if law["a_n"] + law["a_d"] >= 1:
        raise errors.SimulationError("scale a_n + a_d must be < 1 to keep losses positive")
    truth = Truth(m=m, rho=rho, t=t, c=c, k=k, sigma=sigma, train_domains=tuple(train),
                  eval_domains=tuple(evals),
                  noise="student_t" if student_t_df is not None else "gaussian",
                  student_t_df=student_t_df, tokens_per_step=float(tokens_per_step),
                  n_ref=min(sizes_) if sizes is not None else None,
                  d_ref=max(steps_) * float(tokens_per_step) if steps is not None else None,
                  **law)

    # the records: every mixture at every size, every step
    width = len(str(len(mixtures) - 1))
    rows = []
    for size in sizes_:
        for i, r in enumerate(mixtures):
            run = (f"{size_label(size)}_" if size is not None else "r") + f"{i:0{width}d}"
            for step in steps_:
                rows.append((run, size, step, r))
    r_all = np.array([row[3] for row in rows])
    n_all = np.array([row[1] for row in rows], float) if sizes is not None else None
    s_all = np.array([row[2] for row in rows], float) if steps is not None else None
    mean = truth.true_loss(r_all, n_params=n_all, step=s_all)
    loss = mean + _noise(rng, mean.shape, sigma, student_t_df)
    while (bad := loss <= 0).any():  # only reachable with very heavy tails
        loss[bad] = (mean + _noise(rng, mean.shape, sigma, student_t_df))[bad]

    frame = {"run": [row[0] for row in rows]}
    if sizes is not None:
        frame["n_params"] = n_all
    if steps is not None:
        frame["step"] = s_all
        frame["tokens"] = s_all * float(tokens_per_step)
    for j, name in enumerate(train):
        frame[MIX_PREFIX + name] = r_all[:, j]
    for i, name in enumerate(evals):
        frame[LOSS_PREFIX + name] = loss[:, i]
    table = RunTable.from_frame(pd.DataFrame(frame), source=f"simulate(seed={seed})")
    return table, truth


def _names(spec, prefix: str, kind: str) -> list[str]:
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


def _design(design, n_runs, n_train, concentration, corner_fraction, rng) -> np.ndarray:
    if isinstance(design, str):
        if design != "dirichlet":
            raise errors.SimulationError(f"unknown design {design!r}",
                                         hint="use 'dirichlet' or pass an (n, M) array")
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


def _noise(rng, shape, sigma, df) -> np.ndarray:
    if df is None:
        return rng.normal(0.0, 1.0, shape) * sigma
    return rng.standard_t(df, shape) * sigma
