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

:func:`simulate_law` does the same for any registered law (:mod:`bayesmix.laws`): the true
parameters are one draw from the law's own PyMC block under its priors, so each law can be
checked on data it should recover; it returns a :class:`LawTruth`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from bayesmix import errors
from bayesmix._compat import SEED, renamed_kwargs
from bayesmix.data.table import LOSS_PREFIX, MIX_PREFIX, RunTable
from bayesmix.data.ye_logs import TOKENS_PER_STEP, size_label
from bayesmix.laws import Law, m4
from bayesmix.model.simulation_draws import (
    add_noise,
    as_mixture_array,
    design_mixtures,
    domain_names,
    draw_noise,
    eval_names,
    noise_scales,
    sparsify,
)

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
        r, index, single = as_mixture_array(mixtures, self["train_domains"])
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
        coords = {
            "eval_domain": list(self["eval_domains"]),
            "train_domain": list(self["train_domains"]),
        }
        data: dict[str, tuple] = {
            name: (("eval_domain",), self[name]) for name in ("m", "rho", "c", "k", "sigma")
        }
        data["t"] = (("eval_domain", "train_domain"), self["t"])
        attrs = {
            k: v
            for k, v in self.items()
            if k not in data and k not in ("train_domains", "eval_domains") and v is not None
        }
        return xr.Dataset(data, coords=coords, attrs=attrs)


@renamed_kwargs(**SEED)
def simulate(
    train_domains: int | Sequence[str] = 5,
    eval_domains: int | Sequence[str] | None = None,
    n_runs: int = 40,
    *,
    random_seed: int,
    noise_sd: float | Sequence[float] = 0.02,
    student_t_df: float | None = None,
    sizes: Sequence[float] | None = None,
    steps: Sequence[int] | None = None,
    design: str | np.ndarray = "dirichlet",
    concentration: float = 1.0,
    corner_fraction: float = 0.0,
    diag_effect: bool = True,
    tokens_per_step: float = TOKENS_PER_STEP,
    scale: dict | None = None,
) -> tuple[RunTable, Truth]:
    """Draw a run table of proxy runs from a random M4 law; return it with the true law.

    Parameters
    ----------
    train_domains : int or sequence of str, default 5
        A count (names ``d1``, ``d2``, ...) or the training domain names.
    eval_domains : int or sequence of str, optional
        Validation domains: default the training domains (each validation domain then has a
        matching training domain); a larger count adds ``e<j>`` domains.
    n_runs : int, default 40
        Mixtures per model size.
    random_seed : int
        Seed of everything drawn: same seed, same output (``seed`` is its deprecated name).
    noise_sd : float or sequence of float, default 0.02
        Noise sd per validation domain (nats per token).
    student_t_df : float, optional
        Student-t noise with these degrees of freedom (scaled by ``noise_sd``).
    sizes, steps : sequence, optional
        Model sizes (parameters) and steps: every mixture is run at every size and recorded
        at every step, with the power law of the module docstring (``scale`` overrides
        :data:`SCALE_DEFAULTS`; ``tokens_per_step`` converts steps to tokens).
    design : "dirichlet" or ndarray, default "dirichlet"
        Symmetric Dirichlet mixtures with ``concentration`` (as RegMix draws them), or an
        (n, M) array of mixtures; ``corner_fraction`` of the drawn mixtures sit near a corner
        (95 % one domain).
    diag_effect : bool, default True
        Training on a domain lowers the loss of the validation domain of the same name.

    Returns
    -------
    runs : RunTable
        The simulated proxy runs.
    truth : Truth
        The true law (a dict usable as M4 parameters; ``truth.true_loss(mixtures)``).

    Examples
    --------
    >>> import bayesmix as bm
    >>> runs, truth = bm.simulate(["web", "code"], n_runs=6, random_seed=0)
    >>> runs.n_runs, runs.train_domains, runs.eval_domains
    (6, ('web', 'code'), ('web', 'code'))
    >>> truth.true_loss([[0.5, 0.5]]).shape  # (mixtures, validation domains)
    (1, 2)
    """
    rng = np.random.default_rng(random_seed)
    train = domain_names(train_domains, "d", "training")
    evals = eval_names(eval_domains, train)
    sigma = noise_scales(noise_sd, len(evals), student_t_df)
    m, rho, t = _draw_m4(rng, train, evals, diag_effect)
    c, k, _ = m4.to_ck({"m": m, "rho": rho, "t": t})
    mixtures = design_mixtures(design, n_runs, len(train), concentration, corner_fraction, rng)
    sizes_, steps_, law = _scale_settings(sizes, steps, scale)
    truth = Truth(
        m=m,
        rho=rho,
        t=t,
        c=c,
        k=k,
        sigma=sigma,
        train_domains=tuple(train),
        eval_domains=tuple(evals),
        noise="student_t" if student_t_df is not None else "gaussian",
        student_t_df=student_t_df,
        tokens_per_step=float(tokens_per_step),
        n_ref=min(sizes_) if sizes is not None else None,
        d_ref=max(steps_) * float(tokens_per_step) if steps is not None else None,
        **law,
    )

    runs, r_all, meta = _records(mixtures, sizes_, steps_, float(tokens_per_step))
    mean = truth.true_loss(r_all, n_params=meta.get("n_params"), step=meta.get("step"))
    loss = add_noise(rng, mean, sigma, student_t_df)
    source = f"simulate(random_seed={random_seed})"
    return _run_table(runs, meta, r_all, loss, train, evals, source), truth


def _records(mixtures: np.ndarray, sizes: list, steps: list, tokens_per_step: float):
    """Every mixture at every size, recorded at every step: run ids (``<size>_<i>``, or
    ``r<i>`` without sizes), the mixture of each record (n, M) and the meta columns
    (n_params, step, tokens; each (n,)) of the sizes and steps given (not ``[None]``)."""
    width = len(str(len(mixtures) - 1))
    rows = []
    for size in sizes:
        for i, r in enumerate(mixtures):
            run = (f"{size_label(size)}_" if size is not None else "r") + f"{i:0{width}d}"
            for step in steps:
                rows.append((run, size, step, r))
    meta: dict[str, np.ndarray] = {}
    if sizes != [None]:
        meta["n_params"] = np.array([row[1] for row in rows], float)
    if steps != [None]:
        meta["step"] = np.array([row[2] for row in rows], float)
        meta["tokens"] = meta["step"] * tokens_per_step
    return [row[0] for row in rows], np.array([row[3] for row in rows]), meta


def _draw_m4(rng, train: list[str], evals: list[str], diag_effect: bool):
    """M4's ``m`` (K,) ~ U(2, 4) nats, ``rho`` (K,) ~ U(0.2, 0.4) and ``t`` (K, M) ~ N(0, 1)
    plus N(-2, 0.5) where the domains share a name (``diag_effect``), rows centred to sum 0."""
    m = rng.uniform(2.0, 4.0, len(evals))
    rho = rng.uniform(0.2, 0.4, len(evals))
    t = rng.normal(0.0, 1.0, (len(evals), len(train)))
    if diag_effect:
        for i, name in enumerate(evals):
            if name in train:
                t[i, train.index(name)] += rng.normal(-2.0, 0.5)
    t -= t.mean(axis=1, keepdims=True)
    return m, rho, t


def _scale_settings(sizes, steps, scale) -> tuple[list[Any], list[Any], dict]:
    """The sizes (parameters) and steps every mixture is run at (``[None]`` when not given)
    and the size/step power law (:data:`SCALE_DEFAULTS` overridden by ``scale``), checked."""
    sizes_: list[Any] = [float(s) for s in sizes] if sizes is not None else [None]
    if sizes is not None and (not sizes_ or min(sizes_) <= 0):
        raise errors.SimulationError("sizes must be positive numbers of parameters")
    steps_: list[Any] = [int(s) for s in steps] if steps is not None else [None]
    if steps is not None and (not steps_ or min(steps_) <= 0):
        raise errors.SimulationError("steps must be positive integers")
    law = dict(SCALE_DEFAULTS, **(scale or {}))
    if law["a_n"] + law["a_d"] >= 1:
        raise errors.SimulationError("scale a_n + a_d must be < 1 to keep losses positive")
    return sizes_, steps_, law


def _run_table(
    runs: list[str],
    meta: dict[str, np.ndarray],
    mixtures: np.ndarray,
    loss: np.ndarray,
    train: list[str],
    evals: list[str],
    source: str,
) -> RunTable:
    """The simulated records as a validated RunTable: run ids, meta columns (n_params, step,
    tokens; one value per record), mixtures (n, M) and losses (n, K)."""
    frame: dict[str, Any] = {"run": runs, **meta}
    for j, name in enumerate(train):
        frame[MIX_PREFIX + name] = mixtures[:, j]
    for i, name in enumerate(evals):
        frame[LOSS_PREFIX + name] = loss[:, i]
    return RunTable.from_frame(pd.DataFrame(frame), source=source)


@dataclass(frozen=True)
class LawTruth:
    """The true law of :func:`simulate_law`: a law, one draw of its parameters, the noise.

    ``params``: the law's parameters (:attr:`Law.params`) as NumPy arrays with their declared
    dims (``m`` (K,), ``w`` (K, M), ...); ``sigma`` (K,) noise scales (nats); ``spec``: the
    name of the specification whose priors were drawn from.
    """

    law: Law
    spec: str
    params: dict
    sigma: np.ndarray
    train_domains: tuple[str, ...]
    eval_domains: tuple[str, ...]
    noise: str = "gaussian"
    student_t_df: float | None = None

    def true_loss(self, mixtures, *, n_params=None, tokens=None):
        """Noise-free losses of mixtures under the true law.

        ``mixtures``: (n, M) or (M,) in ``train_domains`` order, or a DataFrame with those
        columns. ``n_params``/``tokens`` (scalars or (n,)) when the law takes them. Returns
        (n, K) / (K,) NumPy, or a DataFrame (same index, columns ``eval_domains``).
        """
        r, index, single = as_mixture_array(mixtures, self.train_domains)
        n = r.shape[0]
        extra = {
            k: None if v is None else np.broadcast_to(np.asarray(v, float), (n,))
            for k, v in (("n_params", n_params), ("tokens", tokens))
        }
        loss = np.asarray(self.law.predict(r, self.params, **extra), float)
        if index is not None:
            out = pd.DataFrame(loss, index=index, columns=list(self.eval_domains))
            out.columns.name = "eval_domain"
            return out
        return loss[0] if single else loss

    def to_dataset(self) -> xr.Dataset:
        """The parameters and sigma with named dims ``eval_domain``/``train_domain``."""
        coords = {"eval_domain": list(self.eval_domains), "train_domain": list(self.train_domains)}
        data = {p.name: (p.dims, self.params[p.name]) for p in self.law.params}
        data["sigma"] = (("eval_domain",), self.sigma)
        attrs: dict[str, Any] = {"law": self.law.name, "spec": self.spec, "noise": self.noise}
        if self.student_t_df is not None:
            attrs["student_t_df"] = self.student_t_df
        return xr.Dataset(data, coords=coords, attrs=attrs)


@renamed_kwargs(**SEED)
def simulate_law(
    law_or_spec,
    train_domains: int | Sequence[str] = 4,
    eval_domains: int | Sequence[str] | None = None,
    n_runs: int = 40,
    *,
    random_seed: int,
    noise_sd: float | Sequence[float] = 0.02,
    student_t_df: float | None = None,
    design: str | np.ndarray = "dirichlet",
    concentration: float = 1.0,
    zero_fraction: float = 0.0,
    corner_fraction: float = 0.0,
    loss_mean: float | Sequence[float] = 3.0,
    loss_scale: float | Sequence[float] = 0.5,
    n_params=None,
    tokens=None,
    truth: LawTruth | None = None,
) -> tuple[RunTable, LawTruth]:
    """Proxy runs from a random instance of any law; returns the run table and the truth.

    The truth is one draw of the law's parameters from its own PyMC block
    (:meth:`Law.build`, via :func:`bayesmix.model.model.build_model`) under the priors of
    ``law_or_spec``: a :class:`~bayesmix.model.spec.ModelSpec`, a shipped specification name or TOML
    path, a registered law name or a :class:`~bayesmix.laws.Law` (then the law's default
    priors). Priors written as ``"data"`` use ``loss_mean`` and ``loss_scale`` (nats; a number
    or one per validation domain) in place of the observed mean loss and 2 x its spread, so
    e.g. ``m ~ Normal(3, 0.5)`` by default. Prior draws vary a lot by design (that is what a
    law must be able to recover); pass a specification with tighter priors for tamer truths.

    Domains as in :func:`simulate` (validation defaults to the training domains, so the
    diagonal effect is on). Mixtures: ``design`` ``"dirichlet"`` (symmetric, ``concentration``)
    or an (n, M) array; ``zero_fraction``: each share is dropped with this probability (at
    least one domain is kept) and the rest is Dirichlet again - a sparse swarm as RegMix draws
    with many domains; ``corner_fraction`` as in :func:`simulate`. ``n_params``/``tokens``
    (a number or one per run) are required when the law takes them. Noise: Gaussian with sd
    ``noise_sd`` per validation domain, or ``noise_sd`` x Student-t(``student_t_df``); a
    non-positive loss is redrawn. ``truth``: a :class:`LawTruth` from an earlier call to reuse
    instead of drawing a new one (e.g. held-out runs of the same law; its law and domains must
    match). Same ``random_seed``, same output.
    """
    from bayesmix.laws import get_law

    rng = np.random.default_rng(random_seed)
    spec = _spec_for(law_or_spec)
    law = get_law(spec.law)
    train = domain_names(train_domains, "d", "training")
    evals = eval_names(eval_domains, train)
    sigma = noise_scales(noise_sd, len(evals), student_t_df)
    if not 0 <= zero_fraction < 1:
        raise errors.SimulationError("zero_fraction must be in [0, 1)")
    level = np.broadcast_to(np.asarray(loss_mean, float), (len(evals),)).copy()
    spread = np.broadcast_to(np.asarray(loss_scale, float), (len(evals),)).copy()
    if not (np.all(level > 0) and np.all(spread > 0)):
        raise errors.SimulationError("loss_mean and loss_scale must be positive")

    mixtures = design_mixtures(design, n_runs, len(train), concentration, corner_fraction, rng)
    if isinstance(design, str) and zero_fraction > 0:
        mixtures = sparsify(mixtures, zero_fraction, concentration, rng)
    extra = _law_inputs(law, len(mixtures), n_params=n_params, tokens=tokens)
    if truth is not None:
        if truth.law.name != law.name or (truth.train_domains, truth.eval_domains) != (
            tuple(train),
            tuple(evals),
        ):
            raise errors.SimulationError(
                "truth= comes from another law or other domains",
                hint=f"truth: law {truth.law.name!r}, domains "
                f"{truth.train_domains} -> {truth.eval_domains}",
            )
        spec_name, params = truth.spec, truth.params
    else:
        prior = _PriorPlaceholders(mixtures, level, spread, sigma, extra)
        spec_name, params = spec.name, _draw_params(spec, law, train, evals, prior, rng)
    truth = LawTruth(
        law=law,
        spec=spec_name,
        params=params,
        sigma=sigma,
        train_domains=tuple(train),
        eval_domains=tuple(evals),
        noise="student_t" if student_t_df is not None else "gaussian",
        student_t_df=student_t_df,
    )

    mean = truth.true_loss(mixtures, **extra)
    if not (np.all(np.isfinite(mean)) and np.all(mean > 0)):
        raise errors.SimulationError(
            f"the drawn {law.name!r} law gives non-positive or non-finite losses",
            hint="try another seed or tighter priors",
        )
    loss = add_noise(rng, mean, sigma, student_t_df)
    width = len(str(len(mixtures) - 1))
    runs = [f"r{i:0{width}d}" for i in range(len(mixtures))]
    source = f"simulate_law({law.name!r}, random_seed={random_seed})"
    return _run_table(runs, extra, mixtures, loss, train, evals, source), truth


def _law_inputs(law: Law, n: int, **given) -> dict[str, np.ndarray]:
    """The law's inputs beyond the mixture (``n_params``, ``tokens``) as positive (n,) arrays;
    SimulationError when the law takes one that is not given."""
    extra: dict[str, np.ndarray] = {}
    for key, value in given.items():
        if key in law.inputs:
            if value is None:
                raise errors.SimulationError(f"law {law.name!r} takes {key}: give {key}=")
            extra[key] = np.broadcast_to(np.asarray(value, float), (n,)).copy()
            if not np.all(extra[key] > 0):
                raise errors.SimulationError(f"{key} must be positive")
    return extra


@dataclass(frozen=True)
class _PriorPlaceholders:
    """What the PyMC model of a prior draw is built on: the runs' mixtures (n, M) and inputs,
    and in place of observed losses their level and spread (K,) and the noise sd (K,)."""

    mixtures: np.ndarray
    level: np.ndarray
    spread: np.ndarray
    sigma: np.ndarray
    extra: dict


def _draw_params(spec, law: Law, train, evals, prior: _PriorPlaceholders, rng) -> dict:
    """One draw of the law's parameters from its PyMC block under ``spec``'s priors (the
    likelihood's data are placeholders), as NumPy arrays with the declared dims."""
    import pymc as pm

    from bayesmix.model.model import ModelData, build_model

    n = len(prior.mixtures)
    run_idx, eval_idx = (
        a.ravel() for a in np.meshgrid(np.arange(n), np.arange(len(evals)), indexing="ij")
    )
    data = ModelData(
        runs=tuple(f"r{i}" for i in range(n)),
        r=prior.mixtures,
        y=prior.level[eval_idx].copy(),
        run_idx=run_idx,
        eval_idx=eval_idx,
        loss_mean=prior.level,
        loss_scale=prior.spread,
        log_sigma_loc=float(np.log(max(float(np.median(prior.sigma)), 1e-6))),
        **prior.extra,
    )
    model = build_model(spec, train, evals, data)
    draws = pm.draw([model[p] for p in law.param_names], random_seed=int(rng.integers(2**31 - 1)))
    return {p: np.asarray(v, float) for p, v in zip(law.param_names, draws, strict=True)}


@renamed_kwargs(**SEED)
def simulate_checkpoints(
    truth: LawTruth,
    mixtures,
    sizes: Sequence[float],
    steps: Sequence[float],
    *,
    random_seed: int,
    run_sd: float = 0.0,
    tokens_per_step: float = TOKENS_PER_STEP,
    run_prefix: str = "",
) -> RunTable:
    """Learning curves of a law over model size and tokens (e.g. the truth :func:`simulate_law`
    draws for such a law): every mixture trained at every size in ``sizes`` (parameters) and
    recorded at every step in ``steps`` (tokens = step x ``tokens_per_step``).

    Each run (mixture x size) gets one offset per validation domain, Normal(0, ``run_sd``),
    shared by all its checkpoints (runs are luckier or unluckier than the law, all along), plus
    independent noise with the truth's ``sigma`` per checkpoint. Run ids ``<prefix><size>_<i>``.
    Same ``random_seed``, same output.
    """
    if "tokens" not in truth.law.inputs or "n_params" not in truth.law.inputs:
        raise errors.SimulationError(
            f"law {truth.law.name!r} does not take model size and tokens",
            hint="use the 'scaling' law's truth",
        )
    rng = np.random.default_rng(random_seed)
    r, _, _ = as_mixture_array(mixtures, truth.train_domains)
    rows = []
    width = len(str(len(r) - 1))
    for size in sizes:
        for i, mix in enumerate(r):
            offset = rng.normal(0.0, run_sd, len(truth.eval_domains)) if run_sd > 0 else 0.0
            for step in steps:
                tokens = float(step) * float(tokens_per_step)
                mean = truth.true_loss(mix[None, :], n_params=float(size), tokens=tokens)[0]
                loss = mean + offset + draw_noise(rng, mean.shape, truth.sigma, truth.student_t_df)
                rows.append(
                    {
                        "run": f"{run_prefix}{size_label(size)}_{i:0{width}d}",
                        "n_params": float(size),
                        "step": float(step),
                        "tokens": tokens,
                        **{MIX_PREFIX + d: mix[j] for j, d in enumerate(truth.train_domains)},
                        **{LOSS_PREFIX + d: loss[k] for k, d in enumerate(truth.eval_domains)},
                    }
                )
    frame = pd.DataFrame(rows)
    if (frame[[LOSS_PREFIX + d for d in truth.eval_domains]] <= 0).any().any():
        raise errors.SimulationError(
            "simulated a non-positive loss", hint="use smaller noise or another seed"
        )
    return RunTable.from_frame(frame, source=f"simulate_checkpoints(random_seed={random_seed})")


def _spec_for(law_or_spec):
    """A ModelSpec from a spec, a spec name/path, a law name or a Law (its default priors)."""
    from bayesmix.laws import Law, available_laws, get_law
    from bayesmix.model.priors import Prior
    from bayesmix.model.spec import ModelSpec, available_models, default_priors, load_spec

    if isinstance(law_or_spec, ModelSpec):
        return law_or_spec
    text = None if isinstance(law_or_spec, Law) else str(law_or_spec)
    if text is not None and (text in available_models() or text.endswith(".toml")):
        return load_spec(text)
    if text is not None and text not in available_laws() and ":" not in text:
        raise errors.SimulationError(
            f"{text!r} is neither a law nor a model specification",
            hint=f"laws: {', '.join(sorted(available_laws()))}; "
            f"models: {', '.join(available_models())}",
        )
    law = get_law(law_or_spec)
    priors = {k: Prior.from_dict(v, name=k) for k, v in default_priors(law.name).items()}
    return ModelSpec(
        name=law.name,
        description=law.description,
        law=law.name,
        likelihood={"family": "normal"},
        hierarchy={"diagonal": "auto", "parameterization": "centered"},
        priors=priors,
    )
