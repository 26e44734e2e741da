"""Build the PyMC model of a specification for a run table.

Everything that changes between refits of the same experiment (mixtures, losses, data-scaled prior
constants) enters through ``pm.Data``, so one compiled model serves every refit with the same
structure (specification, training and validation domains). Missing losses are simply not
observations: the likelihood runs over the observed (run, eval_domain) pairs only.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass

import numpy as np
import pymc as pm
import pytensor.tensor as pt

from bayesmix import errors
from bayesmix.data import RunTable, _normalise_name
from bayesmix.laws import BuildContext, get_law
from bayesmix.spec import ModelSpec


@dataclass(frozen=True)
class ModelData:
    """Arrays fed to the model's ``pm.Data`` containers (shapes in brackets).

    r [run, train_domain] proportions; y [obs] observed losses; run_idx, eval_idx [obs] positions;
    loss_mean, loss_scale [eval_domain] mean observed loss and 2 x its spread (for priors scaled
    to the data); log_sigma_loc [] data-scaled centre of the log noise scale; n_params, tokens
    [run] model size and training tokens, present when the law takes them as inputs.
    """

    runs: tuple[str, ...]
    r: np.ndarray
    y: np.ndarray
    run_idx: np.ndarray
    eval_idx: np.ndarray
    loss_mean: np.ndarray
    loss_scale: np.ndarray
    log_sigma_loc: float
    n_params: np.ndarray | None = None
    tokens: np.ndarray | None = None

    def as_dict(self) -> dict:
        out = {"r": self.r, "y": self.y, "run_idx": self.run_idx, "eval_idx": self.eval_idx,
               "loss_mean": self.loss_mean, "loss_scale": self.loss_scale,
               "log_sigma_loc": np.asarray(self.log_sigma_loc)}
        for key in ("n_params", "tokens"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out


def select_for_fit(runs: RunTable, *, step: float | None = None, law=None) -> RunTable:
    """The records the mixing law is fitted to: one per run (last checkpoint, or ``step``).

    A law without a model-size input cannot pool runs of several model sizes: select one size
    first. A law that takes ``n_params`` (see :attr:`bayesmix.laws.Law.inputs`) may.
    """
    table = runs.at_step(step) if step is not None else runs.final()
    sizes = table.column("n_params")
    takes_size = law is not None and "n_params" in get_law(law).inputs
    if sizes is not None and sizes.nunique() > 1 and not takes_size:
        values = ", ".join(f"{v:g}" for v in sorted(sizes.unique()))
        raise errors.FormatError(
            f"runs of several model sizes ({values}) cannot share one mixing law",
            source=runs.source, column="n_params",
            hint="fit one size at a time (CLI: --size N)")
    return table


def prepare_data(runs: RunTable, law=None) -> ModelData:
    """Flatten a run table (one record per run) into the arrays of :class:`ModelData`.

    ``law`` (a name or Law): its extra inputs (``n_params``, ``tokens``) are taken from the table
    and must be present for every run.
    """
    if runs.has_steps and len(runs) != runs.n_runs:
        runs = runs.final()
    mix = runs.mixtures
    losses = runs.losses.to_numpy(dtype=float)  # (run, eval_domain), NaN = missing
    run_idx, eval_idx = np.nonzero(~np.isnan(losses))
    y = losses[run_idx, eval_idx]
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # empty domains are reported below
        mean = np.nanmean(losses, axis=0)
        spread = np.nanstd(losses, axis=0)
    empty = np.isnan(mean)
    if empty.any():
        dom = runs.eval_domains[int(np.flatnonzero(empty)[0])]
        raise errors.NoLossesError(f"validation domain {dom!r} has no observed loss",
                                   source=runs.source, column=f"loss.{dom}",
                                   hint="drop the column or add runs that measure it")
    floor = 0.02 * mean
    spread = np.where(np.isfinite(spread) & (spread > floor), spread, floor)
    extra = {}
    for key in () if law is None else get_law(law).inputs:
        if key == "r":
            continue
        col = runs.column(key)
        values = None if col is None else col.to_numpy(dtype=float)
        if values is None or not np.all(np.isfinite(values) & (values > 0)):
            raise errors.FormatError(f"law {get_law(law).name!r} needs {key} for every run",
                                     source=runs.source, column=key,
                                     hint=f"add a positive '{key}' column to the runs")
        extra[key] = values
    return ModelData(runs=tuple(mix.index), r=mix.to_numpy(dtype=float), y=y,
                     run_idx=run_idx.astype(np.int64), eval_idx=eval_idx.astype(np.int64),
                     loss_mean=mean, loss_scale=2.0 * spread,
                     log_sigma_loc=float(np.log(0.25 * np.median(spread))), **extra)


def diagonal_pairs(spec: ModelSpec, train_domains, eval_domains) -> list[tuple[int, int]]:
    """(eval index, train index) of domains whose names match, when the diagonal is on."""
    mode = spec.hierarchy.get("diagonal", "auto")
    if mode == "off":
        return []
    train = {_normalise_name(d): j for j, d in enumerate(train_domains)}
    pairs = [(i, train[_normalise_name(d)]) for i, d in enumerate(eval_domains)
             if _normalise_name(d) in train]
    if mode == "on" and not pairs:
        raise errors.SpecError("hierarchy diagonal = \"on\" but no validation domain name "
                               "matches a training domain", hint="use \"auto\" or \"off\"")
    return pairs


def structure_key(spec: ModelSpec, train_domains, eval_domains) -> str:
    """Identifies a model structure: equal keys can share one compiled model."""
    text = "|".join([spec.to_json(), ",".join(train_domains), ",".join(eval_domains)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def build_model(spec: ModelSpec, train_domains, eval_domains, data: ModelData) -> pm.Model:
    """The PyMC model of ``spec``: the law's parameter block, the noise model, the likelihood.

    The law (:meth:`bayesmix.laws.Law.build`) creates its parameters with named dims; the noise
    scales sigma [eval_domain] are pooled on the log scale; the likelihood (Normal or
    Student-t) runs over the observed (run, eval_domain) pairs.
    """
    law = get_law(spec.law)
    train_domains, eval_domains = list(train_domains), list(eval_domains)
    pairs = diagonal_pairs(spec, train_domains, eval_domains)
    coords = {"train_domain": train_domains, "eval_domain": eval_domains,
              "run": list(data.runs), "obs": np.arange(len(data.y))}
    mask = None
    if pairs:
        mask = np.zeros((len(eval_domains), len(train_domains)))
        for i, j in pairs:
            mask[i, j] = 1.0

    with pm.Model(coords=coords) as model:
        inputs = {"r": pm.Data("r", data.r, dims=("run", "train_domain"))}
        for key in law.inputs:
            if key != "r":
                inputs[key] = pm.Data(key, getattr(data, key), dims="run")
        y = pm.Data("y", data.y, dims="obs")
        run_idx = pm.Data("run_idx", data.run_idx, dims="obs")
        eval_idx = pm.Data("eval_idx", data.eval_idx, dims="obs")
        ctx = BuildContext(
            priors=spec.priors, hierarchy=spec.hierarchy, train_domains=tuple(train_domains),
            eval_domains=tuple(eval_domains), diagonal=mask,
            loss_mean=pm.Data("loss_mean", data.loss_mean, dims="eval_domain"),
            loss_scale=pm.Data("loss_scale", data.loss_scale, dims="eval_domain"),
            inputs=inputs)
        log_sigma_loc = pm.Data("log_sigma_loc", np.asarray(data.log_sigma_loc))

        params = law.build(ctx)
        missing = [p for p in law.param_names if p not in params or p not in model.named_vars]
        if missing:
            raise errors.SpecError(f"law {law.name!r} did not create its parameter "
                                   f"{missing[0]!r} as a model variable",
                                   hint="name it with pm.Deterministic(name, ..., dims=...)")

        ls_mu = ctx.prior("log_sigma_mu", mu=log_sigma_loc)
        ls_sigma = ctx.prior("log_sigma_sigma")
        # Always non-centred: noise scales of similar domains pull log_sigma_sigma towards 0,
        # where a centred prior forms a funnel (measured: divergences concentrate there).
        ls_z = pm.Normal("log_sigma_z", 0.0, 1.0, dims="eval_domain")
        sigma = pm.Deterministic("sigma", pt.exp(ls_mu + ls_sigma * ls_z), dims="eval_domain")

        mean = law.mean(inputs, params, pt)  # (run, eval_domain)
        mu = mean[run_idx, eval_idx]
        if spec.likelihood["family"] == "student_t":
            pm.StudentT("loss", nu=float(spec.likelihood["nu"]), mu=mu, sigma=sigma[eval_idx],
                        observed=y, dims="obs")
        else:
            pm.Normal("loss", mu=mu, sigma=sigma[eval_idx], observed=y, dims="obs")
    return model


def build_naive_model(train_domains, eval_domains, data: ModelData) -> pm.Model:
    """The plain, unconstrained M4 model (independent c, k, t; Normal noise).

    Only for benchmarks: it shows what the identifiable, hierarchical parameterisation buys.
    """
    coords = {"train_domain": list(train_domains), "eval_domain": list(eval_domains)}
    with pm.Model(coords=coords) as model:
        r = pm.Data("r", data.r)
        y = pm.Data("y", data.y)
        c = pm.HalfNormal("c", sigma=2.0 * data.loss_mean, dims="eval_domain")
        k = pm.HalfNormal("k", sigma=data.loss_mean, dims="eval_domain")
        t = pm.Normal("t", 0.0, 2.0, dims=("eval_domain", "train_domain"))
        sigma = pm.HalfNormal("sigma", sigma=data.loss_scale, dims="eval_domain")
        mean = c[None, :] + k[None, :] * pt.exp(r @ t.T)
        pm.Normal("loss", mu=mean[data.run_idx, data.eval_idx], sigma=sigma[data.eval_idx],
                  observed=y)
    return model
