"""The ArviZ groups a posterior holds besides the sampler's: the data and its replicates
(``observed_data``, ``posterior_predictive``, ``constant_data``: :func:`data_groups`) and the
pointwise ``log_likelihood`` (:func:`log_likelihood`), computed in NumPy from the law's mean,
``sigma`` and the likelihood family, so any law works without PyMC.

The ``log_likelihood`` group has two variables:

* ``loss`` (chain, draw, obs): log density of each observed (run, eval_domain) loss, in the
  model's order of observations (coords ``obs_run``, ``obs_eval_domain`` name each one);
* ``run_loss`` (chain, draw, run): the sum over a run's observed validation domains, i.e. the
  joint log density of one run's losses. A new mixture is what a user predicts, so this is the
  unit for model comparison (leave-one-run-out).

With two variables ArviZ has no default: pass ``var_name``, e.g.
``arviz_stats.loo(tree, var_name="run_loss")`` (``bayesmix compare`` uses ``run_loss`` unless
told ``--var loss``). Files written before the group existed get it computed on load.

Both the predictive and the log-likelihood groups are computed over blocks of draws
(:data:`~bayesmix.posterior.diagnostics.BLOCK_ELEMENTS` values at a time, docs/performance.md).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import xarray as xr
from scipy import special

from bayesmix._compat import SEED, renamed_kwargs
from bayesmix.data.table import RunTable
from bayesmix.model.model import NOISE_VARIABLES, ModelData, prepare_data
from bayesmix.model.splits import SPLIT_VARIABLE
from bayesmix.posterior.diagnostics import BLOCK_ELEMENTS


def describe_variables(ds: xr.Dataset, law) -> xr.Dataset:
    """``ds`` (a ``posterior`` group) with ``units`` and ``description`` attrs on the law's
    parameters (from :attr:`Law.shown`) and the noise scales; attrs already set are kept."""
    info = {p.name: (p.units, p.description) for p in law.shown}
    info.update({k: v for k, v in {**NOISE_VARIABLES, **SPLIT_VARIABLE}.items() if k not in info})
    ds = ds.copy()
    for name, (units, description) in info.items():
        if name in ds.data_vars:
            attrs = dict(ds[name].attrs)
            attrs.setdefault("units", units or "dimensionless")
            attrs.setdefault("description", description)
            ds[name].attrs = attrs
    return ds


def law_draws(post, law) -> dict[str, np.ndarray]:
    """The law's parameters and the noise scales (``sigma`` [, ``run_sigma``]) of ``post`` (the
    ``posterior`` group, Dataset or DataTree node) as arrays (chain, draw, [the law's dims,
    :attr:`Law.dims`]): the layout :meth:`Law.predict` takes."""
    extra = ("sigma", "run_sigma") if "run_sigma" in post.data_vars else ("sigma",)
    out = {}
    for name in (*law.param_names, *extra):
        da = post[name]
        order = ["chain", "draw"] + [d for d in law.dims if d in da.dims]
        out[name] = da.transpose(*order).values
    return out


def _sample_blocks(params: dict[str, np.ndarray], per_sample: int):
    """(slice, params of those samples) over blocks of the samples of ``params`` (arrays
    (chain, draw, ...), flattened to one sample axis), each block ``per_sample`` x B values
    of at most about :data:`~bayesmix.posterior.diagnostics.BLOCK_ELEMENTS`. Why: the predictive and
    log-likelihood groups are (chain, draw, run, eval_domain); computed whole, each of their
    half-dozen temporaries is a fresh array of that size (320 MB on RegMix 512 x 6,000 draws),
    which cost more to map than to compute (docs/performance.md)."""
    flat = {k: v.reshape((-1,) + v.shape[2:]) for k, v in params.items()}
    n = len(next(iter(flat.values())))
    size = max(1, BLOCK_ELEMENTS // max(per_sample, 1))
    for start in range(0, n, size):
        block = slice(start, min(start + size, n))
        yield block, {k: v[block] for k, v in flat.items()}


def _log_density(y, mu, sigma, likelihood: dict) -> np.ndarray:
    """Log density of ``y`` under the Normal or Student-t likelihood (location ``mu``, scale
    ``sigma``; broadcast), in NumPy: scipy.stats' logpdf took 12 s of a 15 s posterior
    assembly on RegMix 512 (3,000 draws x 6,656 losses)."""
    # in place on one result array: every full-size temporary costs ~0.5 s per 200 MB here
    # (fresh pages), more than the arithmetic
    out = np.subtract(y, mu, dtype=float)
    out /= sigma
    np.square(out, out=out)
    if likelihood["family"] == "student_t":
        nu = float(likelihood["nu"])
        const = special.gammaln((nu + 1) / 2) - special.gammaln(nu / 2) - 0.5 * np.log(nu * np.pi)
        out /= nu
        np.log1p(out, out=out)
        out *= -(nu + 1) / 2
    else:
        const = -0.5 * np.log(2 * np.pi)
        out *= -0.5
    out += const
    out -= np.log(sigma)
    return out


def _law_inputs(law, data: ModelData) -> dict:
    """The inputs of :meth:`Law.mean` for the fitted records: the mixtures (and sizes, tokens)
    plus the arrays the law read from the run table (e.g. phased runs' phases), as in the fit."""
    inputs = law.make_inputs(data.r, n_params=data.n_params, tokens=data.tokens)
    return {**(data.law_data or {}), **inputs}


@renamed_kwargs(**SEED)
def data_groups(
    post: xr.Dataset, law, likelihood: dict, runs: RunTable, *, random_seed: int | None = 0
) -> dict[str, xr.Dataset]:
    """ArviZ's data groups for a fit to ``runs``: ``observed_data``, ``constant_data`` and
    ``posterior_predictive``, one row per run (its last checkpoint: the record a law without a
    tokens input is fitted to; for laws fitted to every checkpoint, the last one of each run).

    * ``observed_data.loss`` (run, eval_domain): measured loss, NaN where missing;
    * ``posterior_predictive.loss`` (chain, draw, run, eval_domain): a replicate of that
      measurement per draw (the law's mean + the noise model, + the run's fitted offset for laws
      with run effects), drawn with ``random_seed``; same dims and coords as the observed loss, so
      ``arviz_plots.plot_ppc_dist(tree)`` pairs them;
    * ``constant_data``: ``proportions`` (run, train_domain) and, when the table has them,
      ``n_params`` and ``tokens`` (run).

    ``post``: the ``posterior`` group (chain and draw coords are taken from it); ``law``: a Law;
    ``likelihood``: the specification's likelihood table.
    """
    table = runs.final()
    data = prepare_data(table, law)
    run_ids = [str(r) for r in table.runs]
    p = law_draws(post, law)
    n_chain, n_draw = p["sigma"].shape[:2]
    rng = np.random.default_rng(random_seed)
    pred = np.empty((n_chain * n_draw, len(run_ids), len(table.eval_domains)))
    inputs = _law_inputs(law, data)
    for block, pb in _sample_blocks(p, pred[0].size):
        mean = law.mean(inputs, pb)  # (B, run, K)
        if likelihood.get("family") == "student_t":
            noise = rng.standard_t(float(likelihood["nu"]), size=mean.shape)
        else:
            noise = rng.standard_normal(size=mean.shape)
        noise *= pb["sigma"][:, None, :]  # in place: no temporaries of the block's size
        noise += mean
        pred[block] = noise
    pred = pred.reshape((n_chain, n_draw) + pred.shape[1:])
    if "run_effect" in post.data_vars:
        # fitted runs keep their own offset; a run the posterior has none for gets a new one
        fitted = {str(v): i for i, v in enumerate(post["run"].values)}
        eff = post["run_effect"].transpose("chain", "draw", "run", "eval_domain").values
        for j, run in enumerate(run_ids):
            if run in fitted:
                pred[:, :, j, :] += eff[:, :, fitted[run], :]
            else:
                pred[:, :, j, :] += (
                    rng.standard_normal(size=pred.shape[:2] + pred.shape[3:]) * p["run_sigma"]
                )
    coords = {"run": run_ids, "eval_domain": [str(d) for d in table.eval_domains]}
    sample = {"chain": post["chain"].values, "draw": post["draw"].values}
    checkpoint = (
        "each run's last checkpoint" if table.has_steps or runs.has_steps else "one record per run"
    )
    observed = xr.DataArray(
        table.losses.to_numpy(dtype=float),
        coords,
        ("run", "eval_domain"),
        attrs={
            "units": "nats per token",
            "description": f"measured validation loss ({checkpoint})",
        },
    )
    predictive = xr.DataArray(
        pred,
        {**sample, **coords},
        ("chain", "draw", "run", "eval_domain"),
        attrs={
            "units": "nats per token",
            "description": "replicated measurement: the law's mean "
            "plus the fitted noise (and run offset) "
            "per draw",
        },
    )
    const = {
        "proportions": xr.DataArray(
            data.r,
            {"run": run_ids, "train_domain": [str(d) for d in table.train_domains]},
            ("run", "train_domain"),
            attrs={
                "units": "share of training tokens",
                "description": "training mixture of each run (rows sum to 1)",
            },
        )
    }
    for key, units, description in (
        ("n_params", "parameters", "model size"),
        ("tokens", "tokens", "training tokens seen"),
    ):
        col = table.column(key)
        if col is not None and np.isfinite(col.to_numpy(dtype=float)).any():
            const[key] = xr.DataArray(
                col.to_numpy(dtype=float),
                {"run": run_ids},
                ("run",),
                attrs={"units": units, "description": description},
            )
    return {
        "observed_data": xr.Dataset({"loss": observed}),
        "constant_data": xr.Dataset(const),
        "posterior_predictive": xr.Dataset({"loss": predictive}),
    }


def log_likelihood(post, law, likelihood: dict, table: RunTable) -> xr.Dataset:
    """The ``log_likelihood`` group of ``table``'s observed losses under every draw of ``post``
    (the ``posterior`` group): ``run_loss`` (chain, draw, run) and, with one record per run,
    ``loss`` (chain, draw, obs); see the module docstring and
    :meth:`~bayesmix.posterior.posterior.Posterior.log_likelihood`. ``table`` has the
    posterior's domains (the caller checks them)."""
    data = prepare_data(table, law)
    eval_domains = [str(v) for v in post.coords["eval_domain"].values]
    if data.multi_record:
        assert data.record_run is not None  # set with several records per run
        run_of_obs = np.asarray(data.run_ids, dtype=str)[data.record_run[data.run_idx]]
    else:
        run_of_obs = np.asarray(data.runs, dtype=str)[data.run_idx]
    loglik = _pointwise(post, law, likelihood, data, run_of_obs, len(eval_domains))
    run_names, run_loglik = _sum_by_run(loglik, run_of_obs)
    sample = {"chain": post["chain"].values, "draw": post["draw"].values}
    obs_coords = {
        "obs": np.arange(len(data.y)),
        "obs_run": ("obs", run_of_obs),
        "obs_eval_domain": ("obs", np.asarray(eval_domains, dtype=str)[data.eval_idx]),
    }
    units = "log density of a loss in nats per token"
    out = {
        "run_loss": xr.DataArray(
            run_loglik,
            {**sample, "run": run_names},
            ("chain", "draw", "run"),
            attrs={
                "units": units,
                "description": "sum over a run's observed validation domains",
            },
        )
    }
    if not data.multi_record:
        # With several checkpoints per run the observations of a run are correlated (they
        # share its run effect): leaving one out is not a prediction task, and the array
        # (draws x every checkpoint x domain) grows large. Only run_loss is kept then.
        out["loss"] = xr.DataArray(
            loglik,
            {**sample, **obs_coords},
            ("chain", "draw", "obs"),
            attrs={"units": units, "description": "per observed (run, eval_domain)"},
        )
    return xr.Dataset(out, attrs={"likelihood": json.dumps(likelihood, sort_keys=True)})


def _pointwise(
    post, law, likelihood: dict, data: ModelData, run_of_obs: np.ndarray, n_dom: int
) -> np.ndarray:
    """log p(y | draw) of every observation of ``data`` (chain, draw, obs); ``run_of_obs``
    names each observation's run. Fitted runs are scored conditional on their run effect; a
    run the posterior has no effect for gets it as one more Normal term in the noise."""
    p = law_draws(post, law)
    n_rec = data.r.shape[-2]
    # every (record, domain) observed, row-major: broadcast instead of gathering two
    # (draw, obs) copies (1.5 s of memory traffic on RegMix 512 x 13 x 4,000)
    grid = (
        "run_effect" not in post
        and len(data.y) == n_rec * n_dom
        and np.array_equal(data.run_idx, np.repeat(np.arange(n_rec), n_dom))
        and np.array_equal(data.eval_idx, np.tile(np.arange(n_dom), n_rec))
    )
    y_grid = np.asarray(data.y, dtype=float).reshape(n_rec, n_dom) if grid else None
    if "run_effect" in post:
        # Checkpoints of a fitted run: conditional on its run effect. A run the posterior
        # has no effect for: the effect is one more Normal term in the noise.
        fitted = {str(v): i for i, v in enumerate(post.coords["run"].values)}
        known = np.array([r in fitted for r in run_of_obs])
        pos = np.array([fitted.get(r, 0) for r in run_of_obs])
        p["run_effect"] = post["run_effect"].transpose("chain", "draw", "run", "eval_domain").values
    n_chain, n_draw = p["sigma"].shape[:2]
    loglik = np.empty((n_chain * n_draw, len(data.y)))
    inputs = _law_inputs(law, data)
    for block, pb in _sample_blocks(p, max(n_rec * n_dom, len(data.y))):
        mean = law.mean(inputs, pb)  # (B, record, K)
        if y_grid is not None:
            dens = _log_density(y_grid, mean, pb["sigma"][:, None, :], likelihood)
            loglik[block] = dens.reshape(len(dens), -1)
            continue
        mu = mean[:, data.run_idx, data.eval_idx]  # (B, obs)
        sigma = pb["sigma"][:, data.eval_idx]
        if "run_effect" in pb:
            mu = mu + np.where(known, pb["run_effect"][:, pos, data.eval_idx], 0.0)
            sigma = np.where(known, sigma, np.hypot(sigma, pb["run_sigma"][:, data.eval_idx]))
        loglik[block] = _log_density(data.y, mu, sigma, likelihood)
    return loglik.reshape(n_chain, n_draw, -1)


def _sum_by_run(loglik: np.ndarray, run_of_obs: np.ndarray) -> tuple[list, np.ndarray]:
    """Each run's names (in order of first observation) and the sum (chain, draw, run) of its
    observations in ``loglik`` (chain, draw, obs): all its checkpoints when several enter the
    fit."""
    run_names = list(pd.unique(run_of_obs))
    group = pd.Index(run_names).get_indexer(run_of_obs)
    if np.all(np.diff(group) >= 0):
        # each run's observations are consecutive: one reduction per run
        starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
        return run_names, np.add.reduceat(loglik, starts, axis=-1)
    run_loglik = np.zeros(loglik.shape[:2] + (len(run_names),))
    # (chain, draw, run); numpy's stubs type ufunc.at's indices too narrowly
    np.add.at(run_loglik, (slice(None), slice(None), group), loglik)  # type: ignore[arg-type]
    return run_names, run_loglik


__all__ = ["data_groups", "describe_variables", "law_draws", "log_likelihood"]
