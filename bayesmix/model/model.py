"""Build the PyMC model of a specification for a run table.

Everything that changes between refits of the same experiment (mixtures, losses, data-scaled prior
constants) enters through ``pm.Data``, so one compiled model serves every refit with the same
structure (specification, training and validation domains). Missing losses are simply not
observations: the likelihood runs over the observed (run, eval_domain) pairs only.
"""

from __future__ import annotations

import hashlib
import re
import warnings
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import pymc as pm
import pytensor.tensor as pt

from bayesmix import errors
from bayesmix.data.table import RunTable, normalise_name
from bayesmix.data.ye_logs import parse_size, size_label
from bayesmix.laws import BuildContext, get_law, model_with
from bayesmix.laws.m4 import pooling_scale
from bayesmix.model.spec import ModelSpec
from bayesmix.model.splits import latent_r


@dataclass(frozen=True)
class ModelData:
    """Arrays fed to the model's ``pm.Data`` containers (shapes in brackets).

    One row per *record* (a run at one checkpoint). r [record, train_domain] proportions;
    y [obs] observed losses; run_idx, eval_idx [obs] record and validation-domain positions;
    loss_mean, loss_scale [eval_domain] mean observed loss and 2 x its spread (for priors scaled
    to the data); log_sigma_loc [] data-scaled centre of the log noise scale; n_params, tokens
    [record] model size and training tokens, present when the law takes them as inputs.
    ``runs`` labels the records: the run ids when there is one record per run, else
    ``"<run>@<step>"``; then ``run_ids`` are the distinct runs and ``record_run`` [record] the
    run of each record (checkpoints of one run share a run effect, see :func:`build_model`).
    ``law_data``: arrays the law derives from the data (:func:`law_arrays`, e.g. m4log's
    whitening matrix), by ``pm.Data`` name; None = derive them when the model is built.
    ``splits``: latent split fractions (:class:`bayesmix.data.latent_splits.LatentSplits`,
    :mod:`bayesmix.model.splits`), set by :func:`with_latent_splits`: then ``r`` has the latent
    parts of old runs at 0, ``split_share`` [record, split_group] their groups' shares and
    ``split_alpha`` [split_part] the Dirichlet parameters.
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
    run_ids: tuple[str, ...] | None = None
    record_run: np.ndarray | None = None
    law_data: dict | None = None
    splits: Any = None
    split_share: np.ndarray | None = None
    split_alpha: np.ndarray | None = None

    @property
    def multi_record(self) -> bool:
        """True when some run enters with several checkpoints (dims ``record`` and ``run``)."""
        return self.record_run is not None

    @property
    def record_dim(self) -> str:
        return "record" if self.multi_record else "run"

    def as_dict(self) -> dict:
        out = {
            "r": self.r,
            "y": self.y,
            "run_idx": self.run_idx,
            "eval_idx": self.eval_idx,
            "loss_mean": self.loss_mean,
            "loss_scale": self.loss_scale,
            "log_sigma_loc": np.asarray(self.log_sigma_loc),
        }
        for key in ("n_params", "tokens", "record_run", "split_share", "split_alpha"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        out[NOISE_CENTERING] = noise_centering(self.eval_idx, len(self.loss_mean))
        out.update(self.law_data or {})
        return out


#: The noise model's named variables (units, meaning): stored in the posterior group with the
#: law's parameters (:mod:`bayesmix.posterior.groups`); ``run_*`` only for laws over tokens.
NOISE_VARIABLES = {
    "sigma": ("nats per token", "noise sd of one measured loss, per validation domain"),
    "run_sigma": ("nats per token", "sd of a run's shared offset across its checkpoints"),
    "run_effect": ("nats per token", "offset of each fitted run's losses (all checkpoints)"),
}

#: Name of the ``pm.Data`` weight [eval_domain] of the noise scales' centring (see
#: :func:`noise_centering`).
NOISE_CENTERING = "noise_centering"
#: Observed losses of a validation domain from which its noise scale is sampled centred.
CENTERED_NOISE_MIN_OBS = 100


def noise_centering(eval_idx, n_eval: int) -> np.ndarray:
    """Centring weight w [eval_domain] of the pooled log noise scales: 1 (centred) for a domain
    with at least :data:`CENTERED_NOISE_MIN_OBS` observed losses, else 0 (non-centred).

    Why: with n losses a domain's log noise scale is pinned to about 1/sqrt(2n) (0.07 at
    n = 100); then the non-centred form trades the pooled mean off against every pinned offset
    and mixes slowly (RegMix 512 runs: R-hat 1.23 in ``log_sigma_mu`` after 4 x 250 draws),
    while with few losses per domain the centred form has a funnel where similar domains pull
    ``log_sigma_sigma`` towards 0. Data, not structure: a refit may switch it without
    recompiling."""
    counts = np.bincount(np.asarray(eval_idx, np.int64), minlength=n_eval)[:n_eval]
    return (counts >= CENTERED_NOISE_MIN_OBS).astype(float)


def law_arrays(law, r, losses, loss_mean, loss_scale) -> dict:
    """``pm.Data`` arrays a law derives from the data (:meth:`bayesmix.laws.Law.data_arrays`,
    e.g. m4log's whitening matrix and start): refreshed with every refit."""
    return {} if law is None else dict(get_law(law).data_arrays(r, losses, loss_mean, loss_scale))


def uses_checkpoints(law) -> bool:
    """A law with a training-tokens input is fitted to every checkpoint of every run, unless
    it reads the tokens only as the run's budget (:attr:`bayesmix.laws.Law.budget_inputs`)."""
    if law is None:
        return False
    law = get_law(law)
    return "tokens" in law.inputs and "tokens" not in law.budget_inputs


def select_for_fit(
    runs: RunTable, *, step: float | None = None, law=None, max_step: float | None = None
) -> RunTable:
    """The records the law is fitted to.

    A law without a tokens input: one record per run (the last checkpoint, or ``step``). A law
    that takes ``tokens`` (see :attr:`bayesmix.laws.Law.inputs`): every checkpoint with tokens
    > 0 (step-0 records of continued runs carry no training), up to ``max_step`` when given.
    A law without a model-size input cannot pool runs of several model sizes: select one size
    first. A law that takes ``n_params`` may.
    """
    if uses_checkpoints(law) and step is None:
        table = runs
        tokens = runs.column("tokens")
        if tokens is not None:
            keep = tokens.to_numpy(dtype=float) > 0
            steps = runs.column("step")
            if max_step is not None and steps is not None:
                keep &= steps.to_numpy(dtype=float) <= max_step
            if not keep.any():
                raise errors.EmptyInputError(
                    "no checkpoint with tokens > 0"
                    + (f" at or below step {max_step:g}" if max_step is not None else ""),
                    source=runs.source,
                    column="tokens",
                    hint="check max_step=",
                    param="max_step",
                )
            table = runs._subset(runs._records[keep])
    else:
        table = runs.at_step(step) if step is not None else runs.final()
    sizes = table.column("n_params")
    takes_size = law is not None and "n_params" in get_law(law).inputs
    if sizes is not None and sizes.nunique() > 1 and not takes_size:
        values = ", ".join(f"{v:g}" for v in sorted(sizes.unique()))
        raise errors.FormatError(
            f"runs of several model sizes ({values}) cannot share one mixing law",
            source=runs.source,
            column="n_params",
            hint="fit one size at a time (size=), or a law over model size and tokens "
            f"(model={model_with(takes='n_params')!r})",
            param="size",
        )
    return table


def size_values(size, param: str = "size") -> list[float]:
    """Model sizes in parameters from ``size``: a number, a label (``"70M"``, ``"1.4B"``,
    ``"7e7"``), a comma-separated string or a sequence of those. OptionError naming ``param``
    for anything else."""
    items = size.split(",") if isinstance(size, str) else np.atleast_1d(np.asarray(size, object))
    out = []
    for item in items:
        text = str(item).strip()
        try:
            value = float(text)
        except ValueError:
            if not re.fullmatch(r"\d+(\.\d+)?[KMBT]", text, flags=re.I):
                raise errors.OptionError(
                    f"{param}={text!r} is not a model size",
                    hint="write e.g. 70M, 1.4B or 7e7",
                    param=param,
                ) from None
            value = parse_size(text)
        if not value > 0:
            raise errors.OptionError(f"{param}={text!r} is not a positive size", param=param)
        out.append(value)
    return out


def select_size(runs: RunTable, size) -> RunTable:
    """The runs of ``runs`` whose model size is one of ``size`` (see :func:`size_values`;
    relative tolerance 1e-6): the choice of one size (or, for a law over model size, several)
    among runs of several."""
    wanted = size_values(size)
    sizes = runs.column("n_params")
    if sizes is None:
        raise errors.FormatError(
            f"size={size!r} given but the runs have no model size (n_params)",
            source=runs.source,
            param="size",
        )
    values = sizes.to_numpy(dtype=float)
    match = np.zeros(len(values), bool)
    for one in wanted:
        hit = np.isclose(values, one, rtol=1e-6)
        if not hit.any():
            known = ", ".join(size_label(v) for v in sorted(sizes.dropna().unique()))
            raise errors.FormatError(
                f"no runs of size {size_label(one)}",
                source=runs.source,
                column="n_params",
                hint=f"sizes present: {known}",
            )
        match |= hit
    return runs.select(dict.fromkeys(runs.to_tidy()["run"][match]))


def check_enough_runs(table: RunTable, law) -> None:
    """Refuse (TooFewRunsError) a table with fewer runs than the law needs
    (:attr:`bayesmix.laws.Law.min_runs`): below it the law is barely identified."""
    law = get_law(law)
    if table.n_runs < law.min_runs:
        raise errors.TooFewRunsError(
            f"law {law.name!r} needs at least {law.min_runs} runs to be fitted; "
            f"{table.n_runs} given",
            source=table.source,
            hint="add runs, or fit a law that needs fewer",
        )


def prepare_data(runs: RunTable, law=None) -> ModelData:
    """Flatten a run table into the arrays of :class:`ModelData`.

    ``law`` (a name or Law): its extra inputs (``n_params``, ``tokens``) are taken from the table
    and must be present for every record. A law without a tokens input gets one record per run
    (the last checkpoint); a law with one gets every record of the table.
    """
    if runs.has_steps and len(runs) != runs.n_runs and not uses_checkpoints(law):
        runs = runs.final()
    records = runs.to_tidy()
    mix = records[[f"mix.{d}" for d in runs.train_domains]]
    losses = runs.losses.to_numpy(dtype=float)  # (record, eval_domain), NaN = missing
    run_idx, eval_idx = np.nonzero(~np.isnan(losses))
    y = losses[run_idx, eval_idx]
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # empty domains are reported below
        mean = np.nanmean(losses, axis=0)
        spread = np.nanstd(losses, axis=0)
    empty = np.isnan(mean)
    if empty.any():
        dom = runs.eval_domains[int(np.flatnonzero(empty)[0])]
        raise errors.NoLossesError(
            f"validation domain {dom!r} has no observed loss",
            source=runs.source,
            column=f"loss.{dom}",
            hint="drop the column or add runs that measure it",
        )
    floor = 0.02 * mean
    spread = np.where(np.isfinite(spread) & (spread > floor), spread, floor)
    extra = {}
    for key in () if law is None else get_law(law).inputs:
        if key == "r":
            continue
        col = runs.column(key)
        values = None if col is None else col.to_numpy(dtype=float)
        if values is None or not np.all(np.isfinite(values) & (values > 0)):
            raise errors.FormatError(
                f"law {get_law(law).name!r} needs {key} for every run",
                source=runs.source,
                column=key,
                hint=f"add a positive '{key}' column to the runs",
            )
        extra[key] = values
    run_col = records["run"].astype(str).to_numpy()
    labels = tuple(run_col)
    if len(set(labels)) < len(labels):  # several checkpoints per run
        run_ids = tuple(pd.unique(run_col))
        position = {r: i for i, r in enumerate(run_ids)}
        extra["run_ids"] = run_ids
        extra["record_run"] = np.array([position[r] for r in run_col], dtype=np.int64)
        steps = records["step"].to_numpy(dtype=float)
        labels = tuple(f"{r}@{s:g}" for r, s in zip(run_col, steps, strict=True))
    r = mix.to_numpy(dtype=float)
    return ModelData(
        runs=labels,
        r=r,
        y=y,
        run_idx=run_idx.astype(np.int64),
        eval_idx=eval_idx.astype(np.int64),
        loss_mean=mean,
        loss_scale=2.0 * spread,
        log_sigma_loc=float(np.log(0.25 * np.median(spread))),
        law_data={
            **law_arrays(law, r, losses, mean, 2.0 * spread),
            **({} if law is None else get_law(law).table_arrays(runs)),
        },
        **extra,
    )


def with_latent_splits(data: ModelData, splits, train_domains) -> ModelData:
    """``data`` with latent split fractions (:mod:`bayesmix.model.splits`): the latent parts of
    the runs ``splits`` lists set to 0 in ``r`` and their groups' shares in ``split_share``.
    ``splits``: a :class:`bayesmix.data.latent_splits.LatentSplits`, or None (``data`` as it
    is). The law's data arrays stay those of the fixed-fraction shares (centring constants)."""
    if splits is None:
        return data
    runs = data.runs
    if data.record_run is not None and data.run_ids is not None:  # a run's checkpoints
        runs = tuple(data.run_ids[i] for i in data.record_run)
    r, share = splits.for_records(runs, data.r, train_domains)
    if not share.any():
        raise errors.OptionError(
            "latent_splits lists none of the fitted runs (or only zero shares of its groups)",
            hint="build them from the old runs the table was remapped from",
            param="latent_splits",
        )
    return replace(data, r=r, splits=splits, split_share=share, split_alpha=splits.alpha())


def split_key(data: ModelData) -> str:
    """The latent splits' part of :func:`structure_key` ("" without latent splits)."""
    if data.splits is None:
        return ""
    return data.splits.key() + (f"|records={len(data.runs)}" if data.splits.per_run else "")


def diagonal_pairs(spec: ModelSpec, train_domains, eval_domains) -> list[tuple[int, int]]:
    """(eval index, train index) of domains whose names match, when the diagonal is on."""
    mode = spec.hierarchy.get("diagonal", "auto")
    if mode == "off":
        return []
    train = {normalise_name(d): j for j, d in enumerate(train_domains)}
    pairs = [
        (i, train[normalise_name(d)])
        for i, d in enumerate(eval_domains)
        if normalise_name(d) in train
    ]
    if mode == "on" and not pairs:
        raise errors.SpecError(
            'hierarchy diagonal = "on" but no validation domain name matches a training domain',
            hint='use "auto" or "off"',
        )
    return pairs


def structure_key(
    spec: ModelSpec,
    train_domains,
    eval_domains,
    multi_record: bool = False,
    n_runs: int | None = None,
    splits: str = "",
) -> str:
    """Identifies a model structure: equal keys can share one compiled model.

    ``n_runs``: for laws fitted to every checkpoint, the number of runs, which sizes the run
    effects (a free variable of dims (run, eval_domain)): a compiled model of another number
    of runs would read and write past its arrays. ``splits``: the latent splits' structure
    (:meth:`bayesmix.data.latent_splits.LatentSplits.key`, with the number of records when
    fractions are per run); "" for none (the key is then what it always was)."""
    text = "|".join(
        [
            spec.to_json(),
            ",".join(train_domains),
            ",".join(eval_domains),
            "records" if multi_record else "runs",
            *([f"n_runs={int(n_runs)}"] if multi_record and n_runs is not None else []),
            *([splits] if splits else []),
        ]
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _mixture_input(data: ModelData, train_domains: list[str]):
    """The shares ``r`` (record, train_domain) as ``pm.Data``, or with latent split fractions
    (:func:`bayesmix.model.splits.latent_r`) where the data carry splits."""
    rec = data.record_dim
    r = pm.Data("r", data.r, dims=(rec, "train_domain"))
    if data.splits is None:
        return r
    return latent_r(
        r,
        pm.Data("split_share", data.split_share, dims=(rec, "split_group")),
        pm.Data("split_alpha", data.split_alpha, dims="split_part"),
        data.splits.layout(train_domains),
        len(train_domains),
        rec,
        len(data.runs) if data.splits.per_run else None,
    )


def build_model(spec: ModelSpec, train_domains, eval_domains, data: ModelData) -> pm.Model:
    """The PyMC model of ``spec``: the law's parameter block, the noise model, the likelihood.

    The law (:meth:`bayesmix.laws.Law.build`) creates its parameters with named dims; the noise
    scales sigma [eval_domain] are pooled on the log scale; the likelihood (Normal or
    Student-t) runs over the observed (run, eval_domain) pairs.
    """
    law = get_law(spec.law)
    train_domains, eval_domains = list(train_domains), list(eval_domains)
    pairs = diagonal_pairs(spec, train_domains, eval_domains)
    rec = data.record_dim
    coords = {
        "train_domain": train_domains,
        "eval_domain": eval_domains,
        rec: list(data.runs),
        "obs": np.arange(len(data.y)),
    }
    if data.multi_record:
        assert data.run_ids is not None  # multi_record means run_ids were set
        coords["run"] = list(data.run_ids)
    mask = None
    if pairs:
        mask = np.zeros((len(eval_domains), len(train_domains)))
        for i, j in pairs:
            mask[i, j] = 1.0

    if data.splits is not None:
        coords["split_part"] = list(data.splits.parts)
        coords["split_group"] = [g.name for g in data.splits.groups]

    with pm.Model(coords=coords) as model:
        inputs = {"r": _mixture_input(data, train_domains)}
        for key in law.inputs:
            if key != "r":
                inputs[key] = pm.Data(key, getattr(data, key), dims=rec)
        law_data = data.law_data
        if law_data is None:
            losses = np.full((len(data.r), len(eval_domains)), np.nan)
            losses[data.run_idx, data.eval_idx] = data.y
            law_data = law_arrays(law, data.r, losses, data.loss_mean, data.loss_scale)
        for key, value in law_data.items():
            inputs[key] = pm.Data(key, value)
        y = pm.Data("y", data.y, dims="obs")
        run_idx = pm.Data("run_idx", data.run_idx, dims="obs")
        eval_idx = pm.Data("eval_idx", data.eval_idx, dims="obs")
        ctx = BuildContext(
            priors=spec.priors,
            hierarchy=spec.hierarchy,
            train_domains=tuple(train_domains),
            eval_domains=tuple(eval_domains),
            diagonal=mask,
            loss_mean=pm.Data("loss_mean", data.loss_mean, dims="eval_domain"),
            loss_scale=pm.Data("loss_scale", data.loss_scale, dims="eval_domain"),
            inputs=inputs,
        )
        log_sigma_loc = pm.Data("log_sigma_loc", np.asarray(data.log_sigma_loc))

        params = law.build(ctx)
        missing = [p for p in law.param_names if p not in params or p not in model.named_vars]
        if missing:
            raise errors.SpecError(
                f"law {law.name!r} did not create its parameter {missing[0]!r} as a model variable",
                hint="name it with pm.Deterministic(name, ..., dims=...)",
            )

        ls_mu = ctx.prior("log_sigma_mu", mu=log_sigma_loc)
        ls_sigma = pooling_scale(ctx, "log_sigma_sigma")  # fixed for 3 or fewer domains
        # Partially centred pooling, weight w [eval_domain] from the data (noise_centering):
        # raw ~ Normal(w mu, sigma^w), log sigma = mu + sigma^(1-w) (raw - w mu), so that
        # log sigma ~ Normal(mu, sigma) for every w; w = 1 is the centred form, w = 0 the
        # non-centred one.
        w = pm.Data(NOISE_CENTERING, noise_centering(data.eval_idx, len(eval_domains)))
        ls_raw = pm.Normal("log_sigma_raw", w * ls_mu, ls_sigma**w, dims="eval_domain")
        log_sigma = ls_mu + ls_sigma ** (1.0 - w) * (ls_raw - w * ls_mu)
        sigma = pm.Deterministic("sigma", pt.exp(log_sigma), dims="eval_domain")

        mean = law.mean(inputs, params, pt)  # (record, eval_domain)
        mu = mean[run_idx, eval_idx]
        if data.multi_record:
            record_run = pm.Data("record_run", data.record_run, dims=rec)
            if run_effect_on(spec):
                mu = mu + _run_effect(ctx, data, log_sigma_loc)[record_run[run_idx], eval_idx]
        if spec.likelihood["family"] == "student_t":
            pm.StudentT(
                "loss",
                nu=float(spec.likelihood["nu"]),
                mu=mu,
                sigma=sigma[eval_idx],
                observed=y,
                dims="obs",
            )
        else:
            pm.Normal("loss", mu=mu, sigma=sigma[eval_idx], observed=y, dims="obs")
    return model


def sampler_owners(model: pm.Model, law) -> dict[str, tuple[str, ...]]:
    """For every sampler variable of ``model`` (neither one the law shows nor a noise variable,
    :data:`NOISE_VARIABLES`), the law's parameters (role "law") and noise variables computed
    from it (e.g. M4's ``b_raw`` -> ``("t",)``, ``log_sigma_raw`` -> ``("sigma",)``), or else
    those it is computed from: what a poorly mixing sampler variable means for the law, read
    off the model's graph. Variables related to none are left out."""
    from pytensor.graph.traversal import ancestors

    law = get_law(law)
    named = {v: n for n, v in model.named_vars.items()}
    stored = {n for n in law.shown_names} | set(NOISE_VARIABLES)
    sampler = {v.name for v in (*model.free_RVs, *model.deterministics)} - stored
    kept = [n for n in (*law.param_names, *NOISE_VARIABLES) if n in model.named_vars]
    owners: dict[str, list[str]] = {}
    for name in kept:
        for v in ancestors([model.named_vars[name]]):
            other = named.get(v, "")
            if other in sampler and name not in owners.get(other, []):
                owners.setdefault(other, []).append(name)
    for name in sorted(sampler - set(owners)):  # computed from the parameters instead
        found = {named.get(v) for v in ancestors([model.named_vars[name]])}
        owners[name] = [n for n in kept if n in found]
    return {k: tuple(v) for k, v in owners.items() if v}


def run_effect_on(spec: ModelSpec) -> bool:
    """Whether checkpoints of one run share a run effect (hierarchy ``run_effect``, default on)."""
    return spec.hierarchy.get("run_effect", "on") == "on"


def _run_effect(ctx: BuildContext, data: ModelData, log_sigma_loc):
    """Offsets (run, eval_domain) shared by every checkpoint of a run.

    Checkpoints of one training run are not independent draws around the law: a run that is
    luckier or unluckier than the law says stays so along its learning curve. Without this term
    the likelihood counts 10-20 checkpoints as 10-20 independent confirmations and the intervals
    shrink accordingly. ``run_sigma`` [eval_domain] (nats/token), pooled on the log scale like
    ``sigma``; non-centred. A prediction for a new run adds a fresh offset (see
    :meth:`bayesmix.posterior.posterior.Posterior.predict`).
    """
    mu = ctx.prior("log_run_sigma_mu", mu=log_sigma_loc)
    sd = ctx.prior("log_run_sigma_sigma")
    z_dom = pm.Normal("log_run_sigma_z", 0.0, 1.0, dims="eval_domain")
    run_sigma = pm.Deterministic("run_sigma", pt.exp(mu + sd * z_dom), dims="eval_domain")
    z = pm.Normal("run_z", 0.0, 1.0, dims=("run", "eval_domain"))
    return pm.Deterministic("run_effect", z * run_sigma, dims=("run", "eval_domain"))
