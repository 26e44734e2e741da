"""The fitted posterior: predict unseen mixtures, summarise intervals, save and load.

A ``Posterior`` wraps an ``xarray.DataTree`` with the groups ``posterior`` and ``sample_stats``
(from the sampler; variables carry ``units`` and ``description`` attrs), ``observed_data``,
``posterior_predictive`` (both ``loss`` (run, eval_domain), so ``arviz_plots.plot_ppc_dist``
pairs them) and ``constant_data`` (``proportions`` (run, train_domain) [, n_params, tokens]), see
:func:`data_groups`, ``log_likelihood`` (see below) and ``fit_data`` (the run table it was fitted
to); the root attrs hold the model specification, the diagnostics report and package versions
as JSON strings. Files written before the data groups existed load as they are. One NetCDF file
holds all of it, so ``az.summary``, arviz-plots and ``arviz_stats.loo``/``compare`` read a saved
posterior directly, and another process can reload and extend it.

The ``log_likelihood`` group (computed in NumPy from the law's mean, ``sigma`` and the
likelihood family, so any law works without PyMC) has two variables:

* ``loss`` (chain, draw, obs): log density of each observed (run, eval_domain) loss, in the
  model's order of observations (coords ``obs_run``, ``obs_eval_domain`` name each one);
* ``run_loss`` (chain, draw, run): the sum over a run's observed validation domains, i.e. the
  joint log density of one run's losses. A new mixture is what a user predicts, so this is the
  unit for model comparison (leave-one-run-out).

With two variables ArviZ has no default: pass ``var_name``, e.g.
``arviz_stats.loo(tree, var_name="run_loss")`` (``bayesmix compare`` uses ``run_loss`` unless
told ``--var loss``). Files written before the group existed get it computed on load.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from scipy import special

from bayesmix import errors
from bayesmix._compat import CI_PROB, SEED, renamed_kwargs
from bayesmix.data.mixtures import as_mixtures, domain_weights
from bayesmix.data.table import RunTable
from bayesmix.io import atomic_path
from bayesmix.laws import get_law
from bayesmix.model.model import prepare_data
from bayesmix.model.spec import ModelSpec
from bayesmix.posterior.diagnostics import BLOCK_ELEMENTS, Diagnostics
from bayesmix.posterior.extrapolation import ATTR as EXTRAPOLATION_ATTR
from bayesmix.posterior.extrapolation import Calibration, apply_calibration, log_distance
from bayesmix.posterior.intervals import check_ci_kind, credible_interval
from bayesmix.posterior.mixture_range import MixtureRange

FORMAT = "bayesmix-posterior/1"
_VERSIONED = (
    "bayesmix",
    "pymc",
    "pytensor",
    "nutpie",
    "arviz-base",
    "arviz-stats",
    "numpy",
    "xarray",
)


def package_versions() -> dict[str, str]:
    out = {}
    for name in _VERSIONED:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


@dataclass
class Prediction:
    """Posterior of the mean loss and posterior predictive loss of some mixtures.

    Both are DataArrays with dims (chain, draw, mixture, eval_domain), in nats per token.
    """

    mean: xr.DataArray
    predictive: xr.DataArray
    mixtures: pd.DataFrame

    def aggregate(self, weights: np.ndarray, kind: str = "predictive") -> xr.DataArray:
        """Weighted sum over eval_domain with normalised weights (K,): dims (chain, draw, mixture).

        Draws with a missing domain propagate NaN; the predictive aggregate adds each domain's
        noise draw, weighted.
        """
        da = self.predictive if kind == "predictive" else self.mean
        w = xr.DataArray(
            np.asarray(weights, float), dims="eval_domain", coords={"eval_domain": da.eval_domain}
        )
        return (da * w).sum("eval_domain")

    @renamed_kwargs(**CI_PROB)
    def intervals(
        self,
        ci_prob: float = 0.9,
        *,
        weights: np.ndarray | None = None,
        kind: str = "predictive",
        ci_kind: str = "eti",
    ) -> pd.DataFrame:
        """Tidy table of the predicted losses' intervals over draws.

        Parameters
        ----------
        ci_prob : float, default 0.9
            Probability mass of the intervals, in (0, 1) (``prob`` is its deprecated name).
        weights : array_like, optional
            Normalised weights (K,) over the validation domains: adds rows with
            ``eval_domain == "overall"`` for the aggregate loss.
        kind : {"predictive", "mean"}, default "predictive"
            One run's measured loss, or the law's expected loss.
        ci_kind : {"eti", "hdi"}, default "eti"
            Equal-tailed or highest density intervals
            (:func:`bayesmix.posterior.intervals.credible_interval`).

        Returns
        -------
        pandas.DataFrame
            Columns mixture, eval_domain, mean, median, lower, upper (nats per token).
        """
        if not 0 < ci_prob < 1:
            raise errors.BayesmixError(f"interval probability must be in (0, 1), got {ci_prob}")
        if kind not in ("predictive", "mean"):
            raise errors.BayesmixError(f"kind must be 'predictive' or 'mean', got {kind!r}")
        check_ci_kind(ci_kind)
        da = self.predictive if kind == "predictive" else self.mean
        frames = [_interval_table(da, ci_prob, ci_kind)]
        if weights is not None:
            agg = self.aggregate(weights, kind).expand_dims(eval_domain=["overall"], axis=-1)
            frames.append(_interval_table(agg, ci_prob, ci_kind))
        out = pd.concat(frames, ignore_index=True)
        # Input order of mixtures, then of domains; one order per column, because a mixture
        # may be named like a domain (e.g. "web" for a web-heavy mixture).
        order = {
            "mixture": {m: i for i, m in enumerate(self.mixtures.index)},
            "eval_domain": {d: i for i, d in enumerate([*da.eval_domain.values, "overall"])},
        }
        out = out.sort_values(
            ["mixture", "eval_domain"], kind="stable", key=lambda s: s.map(order[s.name])
        )
        return out.reset_index(drop=True)


def _interval_table(da: xr.DataArray, ci_prob: float, ci_kind: str = "eti") -> pd.DataFrame:
    """Rows (mixture, eval_domain) of mean, median and bounds over the draws (NaN left out)."""
    stacked = da.stack(sample=("chain", "draw")).transpose("mixture", "eval_domain", "sample")
    v = stacked.values
    lo, hi = credible_interval(v, ci_prob, axis=-1, ci_kind=ci_kind, skipna=True)
    mix, dom = np.meshgrid(da.mixture.values, da.eval_domain.values, indexing="ij")
    return pd.DataFrame(
        {
            "mixture": mix.ravel(),
            "eval_domain": dom.ravel(),
            "mean": np.nanmean(v, axis=-1).ravel(),
            "median": np.nanquantile(v, 0.5, axis=-1).ravel(),
            "lower": lo.ravel(),
            "upper": hi.ravel(),
        }
    )


#: Predictions more than this factor beyond the fitted model sizes / tokens are refused.
MAX_EXTRAPOLATION = 10.0
#: Said whenever a joint law (inputs n_params/tokens) predicts beyond its fitted range: it is
#: retired as a target-scale predictor (docs/scale.md).
JOINT_RETIRED = (
    "extrapolating with a joint law, retired for targets beyond the proxies (on 5Mix its 1B "
    "predictions missed by 0.053 nats on average against 0.028 for the nested pipeline, and "
    "its fit failed the gate); use bayesmix pipeline, whose backtests calibrate the intervals"
)
#: Root attributes holding JSON objects; the first two must be present.
_JSON_ATTRS = (
    "bayesmix_model_spec",
    "bayesmix_diagnostics",
    "bayesmix_settings",
    "bayesmix_versions",
)
_REQUIRED_ATTRS = ("bayesmix_model_spec", "bayesmix_diagnostics")
#: Bytes of (chain x draw x mixture x domain) float64 arrays that ``intervals`` holds at once;
#: more mixtures are predicted in chunks (same numbers, bounded memory).
CHUNK_BYTES = 32 * 2**20


def _damaged(problem: str) -> errors.PosteriorFileError:
    return errors.PosteriorFileError(
        f"the file is damaged: {problem}", hint="refit it with 'bayesmix fit', or restore a copy"
    )


def _check_format(value) -> None:
    """The format attribute: this format, else a named reason (missing, newer, foreign)."""
    if value is None:
        raise errors.PosteriorFileError(
            "not a bayesmix posterior (missing format attribute)",
            hint="fit one with 'bayesmix fit'",
        )
    if not isinstance(value, str):
        raise _damaged(f"format attribute {value!r} is not text")
    if value == FORMAT:
        return
    family, _, number = value.partition("/")
    mine = int(FORMAT.rpartition("/")[2])
    if family == FORMAT.partition("/")[0] and number.isdigit() and int(number) > mine:
        raise errors.PosteriorFileError(
            f"written by a newer bayesmix format {value} (this bayesmix reads {FORMAT})",
            hint="upgrade bayesmix to read it",
        )
    raise errors.PosteriorFileError(
        f"not a bayesmix posterior (format attribute {value!r})", hint="fit one with 'bayesmix fit'"
    )


def _json_attr(attrs, name: str, required: bool) -> None:
    """A root attribute that must hold a JSON object (as text)."""
    if name not in attrs:
        if required:
            raise _damaged(f"attribute {name!r} is missing")
        return
    value = attrs[name]
    if not isinstance(value, str):
        raise _damaged(f"attribute {name!r} is a {type(value).__name__}, not JSON text")
    try:
        obj = json.loads(value)
    except ValueError:
        raise _damaged(f"attribute {name!r} is not valid JSON") from None
    if not isinstance(obj, dict):
        raise _damaged(f"attribute {name!r} is not a JSON object")


def _check_groups(tree: xr.DataTree, law) -> None:
    """The groups and variables every reader needs: the law's parameters and sigma (with the
    domain coordinates) in ``posterior``, and the run table in ``fit_data``."""
    if "posterior" not in tree.children:
        raise _damaged("group 'posterior' is missing")
    post = tree["posterior"]
    for coord in ("chain", "draw", "train_domain", "eval_domain"):
        if coord not in post.coords and coord not in post.dims:
            raise _damaged(f"coordinate {coord!r} of group 'posterior' is missing")
    for name in (*law.param_names, "sigma"):
        if name not in post.data_vars:
            raise _damaged(f"variable {name!r} of group 'posterior' is missing")
    if "fit_data" not in tree.children:
        raise _damaged("group 'fit_data' is missing")
    fit_data = tree["fit_data"]
    for name in ("columns", "train_domains", "eval_domains"):
        try:
            value = json.loads(fit_data.attrs[name])
        except (KeyError, TypeError, ValueError):
            raise _damaged(
                f"attribute {name!r} of group 'fit_data' is missing or not JSON"
            ) from None
        if not isinstance(value, list):
            raise _damaged(f"attribute {name!r} of group 'fit_data' is not a list")
    missing = [c for c in json.loads(fit_data.attrs["columns"]) if c not in fit_data.data_vars]
    if missing:
        raise _damaged(f"variable {missing[0]!r} of group 'fit_data' is missing")


class Posterior:
    """A fitted mixing law: posterior draws, the data and the diagnostics, in one DataTree.

    Build one with :func:`bayesmix.fit` or read a saved one with :meth:`Posterior.load`; the
    constructor checks a tree in the stored layout (see the module docstring).

    Parameters
    ----------
    tree : xarray.DataTree
        Groups ``posterior``, ``sample_stats``, ``fit_data`` [, ``observed_data``,
        ``posterior_predictive``, ``constant_data``, ``log_likelihood``] and the root attributes
        ``bayesmix_format``, ``bayesmix_model_spec``, ``bayesmix_diagnostics``.

    Attributes
    ----------
    tree : xarray.DataTree
        The ArviZ-readable data (``arviz_stats.summary(post.tree)`` works).
    spec : ModelSpec
        The model specification fitted; ``law`` its mixing law.
    diagnostics : Diagnostics
        The diagnostics gate's report (``diagnostics.ok``, ``diagnostics.table()``).
    train_domains, eval_domains : tuple of str
        Training and validation domain names.
    source : str or None
        The file it was loaded from.

    Examples
    --------
    >>> import bayesmix as bm
    >>> runs, _ = bm.simulate(["web", "code"], n_runs=12, random_seed=0)
    >>> post = bm.fit(runs, draws=300, tune=300, chains=2, random_seed=1)  # doctest: +SKIP
    >>> post.intervals({"even": {"web": 0.5, "code": 0.5}})               # doctest: +SKIP
    >>> post.save("posterior.nc")                                          # doctest: +SKIP
    >>> post = bm.Posterior.load("posterior.nc")                           # doctest: +SKIP
    """

    def __init__(self, tree: xr.DataTree):
        attrs = tree.attrs
        _check_format(attrs.get("bayesmix_format"))
        for name in _JSON_ATTRS:
            _json_attr(attrs, name, required=name in _REQUIRED_ATTRS)
        self.tree = tree
        #: The file this posterior was loaded from (None when built in memory); errors name it.
        self.source: str | None = None
        self._mixture_range: MixtureRange | None = None
        try:
            self.spec = ModelSpec.from_json(attrs["bayesmix_model_spec"])
        except errors.SpecError as err:
            if err.problem.startswith("unknown law"):
                hint = (
                    "a law defined outside bayesmix must be registered first "
                    "(import its module, or bayesmix.laws.register)"
                )
            else:
                hint = "it was written by another version of bayesmix: refit it"
            raise errors.PosteriorFileError(
                f"its model specification does not fit this bayesmix ({err.problem})", hint=hint
            ) from None
        try:
            self.diagnostics = Diagnostics.from_json(attrs["bayesmix_diagnostics"])
        except (TypeError, ValueError) as err:
            raise errors.PosteriorFileError(
                f"the file is damaged: attribute 'bayesmix_diagnostics' is not a diagnostics "
                f"report ({type(err).__name__})",
                hint="refit, or restore the file",
            ) from None
        self.law = get_law(self.spec.law)
        _check_groups(tree, self.law)
        post = tree["posterior"]
        self.train_domains = tuple(str(v) for v in post.coords["train_domain"].values)
        self.eval_domains = tuple(str(v) for v in post.coords["eval_domain"].values)
        if "log_likelihood" not in tree.children:
            # Fresh from the sampler, or a file written before the group existed.
            tree["log_likelihood"] = xr.DataTree(self.log_likelihood())

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_fit(
        cls,
        tree: xr.DataTree,
        spec: ModelSpec,
        runs: RunTable,
        diagnostics: Diagnostics,
        settings: dict,
    ) -> Posterior:
        """Assemble the stored layout from a sampler's DataTree and the fit's inputs."""
        keep = {name: tree[name].to_dataset() for name in ("posterior", "sample_stats")}
        stats = keep["sample_stats"]
        keep["sample_stats"] = stats[[v for v in stats.data_vars if stats[v].dtype != object]]
        law = get_law(spec.law)
        keep["posterior"] = describe_variables(keep["posterior"], law)
        # observed_data, constant_data, posterior_predictive: ArviZ's layout, one row per run
        keep.update(
            data_groups(
                keep["posterior"], law, spec.likelihood, runs, random_seed=settings.get("seed")
            )
        )
        keep["fit_data"] = _encode_fit_data(runs)
        # The log_likelihood group is added by __init__, from the stored fit_data, so a fresh
        # posterior and a reloaded one compute it from exactly the same numbers.
        out = xr.DataTree.from_dict(keep)
        out.attrs.update(
            {
                "bayesmix_format": FORMAT,
                "bayesmix_model_spec": spec.to_json(),
                "bayesmix_diagnostics": diagnostics.to_json(),
                "bayesmix_settings": json.dumps(settings, sort_keys=True),
                "bayesmix_versions": json.dumps(package_versions(), sort_keys=True),
            }
        )
        return cls(out)

    # ------------------------------------------------------------------ facts
    @property
    def diagnostics_warning(self) -> str | None:
        """One line naming the failed checks, or None when the fit passed the gate."""
        return self.diagnostics.warning()

    @property
    def settings(self) -> dict:
        return json.loads(self.tree.attrs.get("bayesmix_settings", "{}"))

    @property
    def versions(self) -> dict:
        return json.loads(self.tree.attrs.get("bayesmix_versions", "{}"))

    @property
    def n_samples(self) -> int:
        post = self.tree["posterior"]
        return int(post.sizes["chain"] * post.sizes["draw"])

    def fit_data(self) -> RunTable:
        """The run table this posterior was fitted to (exactly as validated)."""
        return _decode_fit_data(self.tree["fit_data"].to_dataset())

    def law_params(self, flat: bool = True) -> dict[str, np.ndarray]:
        """The law's parameters (:attr:`Law.params`, e.g. M4's m, rho (S, K), t (S, K, M)) and
        the noise scales sigma (S, K), as NumPy arrays.

        ``flat`` merges chain and draw into one leading sample axis S; otherwise (chain, draw).
        """
        post = self.tree["posterior"]
        out = {}
        extra = ("sigma", "run_sigma") if "run_sigma" in post else ("sigma",)
        for name in (*self.law.param_names, *extra):
            da = post[name]
            order = ["chain", "draw"] + [
                d for d in ("eval_domain", "latent", "train_domain") if d in da.dims
            ]
            arr = da.transpose(*order).values
            out[name] = arr.reshape((-1,) + arr.shape[2:]) if flat else arr
        return out

    def log_likelihood(self, runs: RunTable | None = None) -> xr.Dataset:
        """Pointwise log-likelihood of observed losses under every posterior draw.

        ``runs``: the table to score (default: the fit data, which is what the stored
        ``log_likelihood`` group holds); any table with this posterior's domains works, e.g.
        held-out runs. The records a fit of this law uses are scored (one per run, the last
        checkpoint; every checkpoint for laws over training tokens).
        Returns a Dataset with

        * ``loss`` (chain, draw, obs): log p(y | draw) of each observed (run, eval_domain)
          loss, in the model's order (row-major over run x eval_domain, missing pairs
          skipped; coords ``obs_run`` and ``obs_eval_domain`` name each observation); only
          when there is one record per run;
        * ``run_loss`` (chain, draw, run): its sum over each run's observed domains (and
          checkpoints; fitted runs conditional on their run effect, others with it as noise).

        Log densities of losses measured in nats per token (so in units of log(1 / (nats per
        token))); the likelihood is the specification's Normal or Student-t with the fitted
        per-domain noise scale ``sigma``.
        """
        table = self.fit_data() if runs is None else runs
        if (
            tuple(table.train_domains) != self.train_domains
            or tuple(table.eval_domains) != self.eval_domains
        ):
            raise errors.DomainNameError(
                "runs to score have other domains than the posterior",
                source=table.source,
                hint=f"training {list(self.train_domains)}, validation {list(self.eval_domains)}",
            )
        data = prepare_data(table, self.law)
        p = self.law_params(flat=False)
        post = self.tree["posterior"]
        lik = self.spec.likelihood
        if data.multi_record:
            assert data.record_run is not None  # set with several records per run
            run_of_obs = np.asarray(data.run_ids, dtype=str)[data.record_run[data.run_idx]]
        else:
            run_of_obs = np.asarray(data.runs, dtype=str)[data.run_idx]
        n_rec, n_dom = data.r.shape[-2], len(self.eval_domains)
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
            p["run_effect"] = (
                post["run_effect"].transpose("chain", "draw", "run", "eval_domain").values
            )
        n_chain, n_draw = p["sigma"].shape[:2]
        loglik = np.empty((n_chain * n_draw, len(data.y)))
        for block, pb in _sample_blocks(p, max(n_rec * n_dom, len(data.y))):
            mean = self.law.predict(
                data.r, pb, n_params=data.n_params, tokens=data.tokens
            )  # (B, record, K)
            if y_grid is not None:
                dens = _log_density(y_grid, mean, pb["sigma"][:, None, :], lik)
                loglik[block] = dens.reshape(len(dens), -1)
                continue
            mu = mean[:, data.run_idx, data.eval_idx]  # (B, obs)
            sigma = pb["sigma"][:, data.eval_idx]
            if "run_effect" in pb:
                mu = mu + np.where(known, pb["run_effect"][:, pos, data.eval_idx], 0.0)
                sigma = np.where(known, sigma, np.hypot(sigma, pb["run_sigma"][:, data.eval_idx]))
            loglik[block] = _log_density(data.y, mu, sigma, lik)
        loglik = loglik.reshape(n_chain, n_draw, -1)
        # Sum each run's observations (all its checkpoints when several enter the fit).
        run_names = list(pd.unique(run_of_obs))
        group = pd.Index(run_names).get_indexer(run_of_obs)
        if np.all(np.diff(group) >= 0):
            # each run's observations are consecutive: one reduction per run
            starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
            run_loglik = np.add.reduceat(loglik, starts, axis=-1)
        else:
            run_loglik = np.zeros(loglik.shape[:2] + (len(run_names),))
            # (chain, draw, run); numpy's stubs type ufunc.at's indices too narrowly
            np.add.at(run_loglik, (slice(None), slice(None), group), loglik)  # type: ignore[arg-type]
        sample = {"chain": post["chain"].values, "draw": post["draw"].values}
        obs_coords = {
            "obs": np.arange(len(data.y)),
            "obs_run": ("obs", run_of_obs),
            "obs_eval_domain": ("obs", np.asarray(self.eval_domains, dtype=str)[data.eval_idx]),
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
        return xr.Dataset(out, attrs={"likelihood": json.dumps(lik, sort_keys=True)})

    def _repr_html_(self) -> str:
        from bayesmix.display import card

        facts = [
            ("model", f"{self.spec.name} (law {self.law.name})"),
            ("draws", str(self.n_samples)),
            ("gate", "passed" if self.diagnostics.ok else f"FAILED: {self.diagnostics_warning}"),
            ("training domains", ", ".join(self.train_domains)),
            ("validation domains", ", ".join(self.eval_domains)),
        ]
        if self.source:
            facts.append(("file", str(self.source)))
        return card("Posterior", facts)

    def __repr__(self) -> str:
        status = "passed" if self.diagnostics.ok else "FAILED diagnostics"
        return (
            f"Posterior(model={self.spec.name!r}, {len(self.train_domains)} training x "
            f"{len(self.eval_domains)} validation domains, {self.n_samples} draws, {status})"
        )

    # ------------------------------------------------------------------ prediction
    def scale_range(self) -> dict[str, tuple[float, float]]:
        """Fitted range ``{input: (min, max)}`` of the law's extra inputs (n_params, tokens)."""
        table = self.fit_data()
        out = {}
        for key in self.law.inputs:
            col = None if key == "r" else table.column(key)
            if col is not None:
                values = col.to_numpy(dtype=float)
                values = values[np.isfinite(values) & (values > 0)]
                if values.size:
                    out[key] = (float(values.min()), float(values.max()))
        return out

    def mixture_range(self) -> MixtureRange:
        """Where the fitted runs lie in the mixture space (share range per training domain,
        nearest-run distances): :mod:`bayesmix.posterior.mixture_range`."""
        if self._mixture_range is None:
            self._mixture_range = MixtureRange.of(self.fit_data().final().mixtures)
        return self._mixture_range

    def check_scale(
        self, *, n_params=None, tokens=None, max_extrapolation: float = MAX_EXTRAPOLATION
    ) -> list[str]:
        """Compare a target scale with the fitted range.

        Returns one message per input outside the fitted range (empty when inside) and raises
        :class:`~bayesmix.errors.ExtrapolationError` when a value lies more than
        ``max_extrapolation`` times beyond it (default 10: a power law fitted over less than a
        decade says little about two decades on; pass ``float("inf")`` to allow anything).
        """
        messages = []
        names = {"n_params": "model size (parameters)", "tokens": "training tokens"}
        ranges = self.scale_range() if n_params is not None or tokens is not None else {}
        for key, value in (("n_params", n_params), ("tokens", tokens)):
            if value is None or key not in ranges:
                continue
            lo, hi = ranges[key]
            for v in np.atleast_1d(np.asarray(value, float)):
                if not np.isfinite(v) or v <= 0:
                    raise errors.OptionError(f"{key} must be a positive number, got {v:g}")
                factor = v / hi if v > hi else (lo / v if v < lo else 1.0)
                if factor <= 1.0:
                    continue
                where = "above the largest" if v > hi else "below the smallest"
                text = (
                    f"{names[key]} {v:.3g} is {factor:.2g}x {where} fitted ({lo:.3g} to {hi:.3g})"
                )
                if factor > max_extrapolation:
                    raise errors.ExtrapolationError(
                        f"{text}: more than {max_extrapolation:g}x outside the fitted range",
                        hint="fit runs closer to the target, or allow it explicitly "
                        "(max_extrapolation=, CLI --max-extrapolation)",
                    )
                messages.append(text + ": " + JOINT_RETIRED)
        return list(dict.fromkeys(messages))

    @renamed_kwargs(**SEED)
    def predict(
        self,
        mixtures,
        *,
        n_params=None,
        tokens=None,
        random_seed: int | None = 0,
        max_extrapolation: float = MAX_EXTRAPOLATION,
        warn: bool = True,
    ) -> Prediction:
        """Posterior mean loss and posterior predictive loss of ``mixtures``.

        Parameters
        ----------
        mixtures : mapping, DataFrame or array_like
            Anything :func:`bayesmix.data.mixtures.as_mixtures` takes: ``{name: {domain: share}}``,
            a DataFrame with one column per training domain, or an array (n, M).
        n_params, tokens : float or array_like, optional
            Model size and training tokens (a number, or one per mixture), needed when the law
            takes them as inputs. Outside the fitted range an ``ExtrapolationWarning`` gives
            the numbers; more than ``max_extrapolation`` times outside is refused
            (:meth:`check_scale`).
        random_seed : int or None, default 0
            Seed of the predictive noise (``seed`` is its deprecated name).
        max_extrapolation : float, default 10
            Largest factor beyond the fitted scale range that is allowed.
        warn : bool, default True
            Warn (``ExtrapolationWarning``) when extrapolating.

        Returns
        -------
        Prediction
            ``.mean`` and ``.predictive``: DataArrays (chain, draw, mixture, eval_domain) in
            nats per token. The predictive adds the fitted noise (Normal or Student-t, per
            validation domain) and, for laws fitted to every checkpoint, a new run's offset.

        Examples
        --------
        >>> pred = post.predict({"even": {"web": 0.5, "code": 0.5}})  # doctest: +SKIP
        >>> pred.predictive.sizes                                      # doctest: +SKIP
        """
        mix = as_mixtures(mixtures, self.train_domains)
        self.check_finite()
        for text in self.check_scale(
            n_params=n_params, tokens=tokens, max_extrapolation=max_extrapolation
        ):
            if warn:
                # stacklevel 3: past the renamed_kwargs wrapper
                warnings.warn(text, errors.ExtrapolationWarning, stacklevel=3)
        if warn:
            outside = self.mixture_range().notes(mix)
            if outside:
                more = f" (and {len(outside) - 1} more of {len(mix)})" if len(outside) > 1 else ""
                warnings.warn(outside[0] + more, errors.ExtrapolationWarning, stacklevel=3)
        p = self.law_params(flat=False)
        mean, pred = self._draw(
            mix.to_numpy(), p, n_params, tokens, _streams(random_seed, len(mix))
        )
        post = self.tree["posterior"]
        coords = {
            "chain": post["chain"].values,
            "draw": post["draw"].values,
            "mixture": list(mix.index),
            "eval_domain": list(self.eval_domains),
        }
        dims = ("chain", "draw", "mixture", "eval_domain")
        attrs = {"units": "nats per token"}
        return Prediction(
            mean=xr.DataArray(mean, coords, dims, name="mean_loss", attrs=attrs),
            predictive=xr.DataArray(pred, coords, dims, name="loss", attrs=attrs),
            mixtures=mix,
        )

    def _draw(
        self,
        r: np.ndarray,
        p: dict,
        n_params,
        tokens,
        streams: list[np.random.Generator],
        with_noise: bool = True,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Mean and predictive loss (chain, draw, n, K) of mixtures ``r`` (n, M); mixture i's
        noise comes from ``streams[i]`` alone, so a chunk of mixtures gets the same numbers as
        the whole set. ``with_noise=False``: the mean only (returned twice, no noise drawn). With a
        learned extrapolation error (:attr:`extrapolation`) both include it."""
        mean = self.law.predict(r, p, n_params=n_params, tokens=tokens)  # (chain, draw, n, K)
        cal = self.extrapolation
        if not with_noise:
            if cal is not None:
                mean, _ = apply_calibration(
                    mean, mean, cal, self.extrapolation_distance(n_params, tokens), streams
                )
            return mean, mean
        lik = self.spec.likelihood
        shape = mean.shape[:2] + mean.shape[3:]  # (chain, draw, K)
        noise = np.empty((len(streams),) + shape)  # one mixture's draws contiguous
        for i, rng in enumerate(streams):
            if lik["family"] == "student_t":
                noise[i] = rng.standard_t(float(lik["nu"]), size=shape)
            else:
                noise[i] = rng.standard_normal(size=shape)
            noise[i] *= p["sigma"]
            if "run_sigma" in p:
                noise[i] += rng.standard_normal(size=shape) * p["run_sigma"]
        pred = mean + noise.transpose(1, 2, 0, 3)
        if cal is not None:
            mean, pred = apply_calibration(
                mean, pred, cal, self.extrapolation_distance(n_params, tokens), streams
            )
        return mean, pred

    # ------------------------------------------------------------------ extrapolation error
    @property
    def extrapolation(self) -> Calibration | None:
        """The extrapolation error learned from backtests (:mod:`bayesmix.posterior.extrapolation`),
        or
        None: then target-scale intervals rest on the law's form alone."""
        text = self.tree.attrs.get(EXTRAPOLATION_ATTR)
        return Calibration.from_json(text) if text else None

    def with_extrapolation(self, calibration: Calibration | None) -> Posterior:
        """This posterior with ``calibration`` stored (None removes it); returns self."""
        if calibration is None:
            self.tree.attrs.pop(EXTRAPOLATION_ATTR, None)
        else:
            self.tree.attrs[EXTRAPOLATION_ATTR] = calibration.to_json()
        return self

    def extrapolation_distance(self, n_params=None, tokens=None):
        """Log-distance of a prediction beyond the fitted scale (0 inside it): the
        calibration's own target for a posterior fitted at a target scale (nested pipeline),
        else computed from ``n_params``/``tokens`` against :meth:`scale_range`."""
        cal = self.extrapolation
        if cal is not None and cal.target_distance is not None:
            return cal.target_distance
        return log_distance(n_params, tokens, self.scale_range())

    def nonfinite_draws(self) -> dict[str, int]:
        """``{variable: count}`` of NaN or inf values in the law's parameters and noise scales
        (empty for a sound posterior; a damaged or hand-edited file may have some)."""
        post = self.tree["posterior"]
        names = [*self.law.param_names, "sigma", *(["run_sigma"] if "run_sigma" in post else [])]
        out = {}
        for name in names:
            n = int((~np.isfinite(np.asarray(post[name].values, dtype=float))).sum())
            if n:
                out[name] = n
        return out

    def check_finite(self) -> None:
        """Refuse a posterior with NaN or inf draws (PosteriorFileError naming the variables):
        predictions would silently skip or spread them."""
        bad = self.nonfinite_draws()
        if bad:
            what = ", ".join(f"{name} ({n} values)" for name, n in bad.items())
            raise errors.PosteriorFileError(
                f"posterior draws of {what} are NaN or inf",
                source=self.source,
                hint="the file is damaged: refit it",
            )

    @renamed_kwargs(**SEED, **CI_PROB)
    def intervals(
        self,
        mixtures,
        ci_prob: float = 0.9,
        *,
        weights=None,
        kind: str = "predictive",
        allow_subset: bool = False,
        random_seed: int | None = 0,
        n_params=None,
        tokens=None,
        max_extrapolation: float = MAX_EXTRAPOLATION,
        chunk_size: int | None = None,
        ci_kind: str = "eti",
    ) -> pd.DataFrame:
        """Tidy intervals of the predicted loss of ``mixtures``, per validation domain.

        Parameters
        ----------
        mixtures : mapping, DataFrame or array_like
            The mixtures to predict (as :meth:`predict` takes them).
        ci_prob : float, default 0.9
            Probability mass of the intervals, in (0, 1) (``prob`` is its deprecated name).
        weights : mapping or path, optional
            ``{domain: weight}`` or a JSON file of that: adds rows with
            ``eval_domain == "overall"`` for the weighted aggregate loss.
        kind : {"predictive", "mean"}, default "predictive"
            One run's measured loss (with noise), or the law's expected loss.
        allow_subset : bool, default False
            Allow ``weights`` naming only some validation domains (the others get 0).
        random_seed : int or None, default 0
            Seed of the predictive noise (``seed`` is its deprecated name).
        n_params, tokens : float or array_like, optional
            The scale to predict at, for laws that take them (see :meth:`predict`).
        max_extrapolation : float, default 10
            Largest factor beyond the fitted scale range that is allowed.
        chunk_size : int, optional
            Mixtures predicted at a time (default: as many as fit in :data:`CHUNK_BYTES`);
            the table is the same for any chunk size.
        ci_kind : {"eti", "hdi"}, default "eti"
            Equal-tailed or highest density intervals
            (:func:`bayesmix.posterior.intervals.credible_interval`).

        Returns
        -------
        pandas.DataFrame
            One row per (mixture, eval_domain): mean, median, lower, upper (nats per token).

        Examples
        --------
        >>> post.intervals({"even": {"web": 0.5, "code": 0.5}}, ci_prob=0.9)  # doctest: +SKIP
        """
        w = (
            None
            if weights is None
            else domain_weights(weights, self.eval_domains, allow_subset=allow_subset)
        )
        mix = as_mixtures(mixtures, self.train_domains)
        self.check_finite()
        for text in self.check_scale(
            n_params=n_params, tokens=tokens, max_extrapolation=max_extrapolation
        ):
            # stacklevel 3: past the renamed_kwargs wrapper
            warnings.warn(text, errors.ExtrapolationWarning, stacklevel=3)
        if not 0 < ci_prob < 1:
            raise errors.BayesmixError(f"interval probability must be in (0, 1), got {ci_prob}")
        if kind not in ("predictive", "mean"):
            raise errors.BayesmixError(f"kind must be 'predictive' or 'mean', got {kind!r}")
        check_ci_kind(ci_kind)
        # Chunks of mixtures keep memory bounded (chain x draw x chunk x K floats, a few times);
        # each mixture's noise has its own stream, so the numbers do not depend on the chunking.
        p = self.law_params(flat=False)
        n = len(mix)
        per_mixture = 8 * self.n_samples * len(self.eval_domains)
        size = chunk_size or max(1, CHUNK_BYTES // max(per_mixture, 1))
        streams = _streams(random_seed, n)
        domains = list(self.eval_domains) + (["overall"] if w is not None else [])
        frames = []
        for start in range(0, n, size):
            stop = min(start + size, n)
            mean, pred = self._draw(
                mix.iloc[start:stop].to_numpy(),
                p,
                _rows(n_params, start, stop, n),
                _rows(tokens, start, stop, n),
                streams[start:stop],
                with_noise=kind == "predictive",
            )
            v = pred.reshape((-1,) + pred.shape[2:])  # (sample, mixture, K)
            del mean, pred
            if w is not None:
                v = np.concatenate([v, (v @ w)[..., None]], axis=-1)  # + overall
            frames.append(_summary_frame(v, list(mix.index[start:stop]), domains, ci_prob, ci_kind))
        return pd.concat(frames, ignore_index=True)

    # ------------------------------------------------------------------ report
    @renamed_kwargs(**CI_PROB)
    def report(
        self,
        path: str | Path | None = None,
        *,
        decision=None,
        ledger=None,
        ternary=None,
        ci_prob: float = 0.9,
        ci_kind: str = "eti",
        force: bool = False,
    ):
        """The self-contained HTML report of this posterior (:func:`bayesmix.report`).

        Parameters
        ----------
        path : str or path, optional
            Where to write the page (atomically; an existing file only with ``force``).
        decision : DecisionReport or path, optional
            A decision (or its JSON file) for the decision section.
        ledger : path, optional
            An experiment ledger for the progress section.
        ternary : sequence of str or str, optional
            Three training domains for the ternary view.
        ci_prob : float, default 0.9
            Mass of the intervals (``prob`` is its deprecated name).
        ci_kind : {"eti", "hdi"}, default "eti"
            Equal-tailed or highest density intervals.
        force : bool, default False
            Replace an existing file.

        Returns
        -------
        str or pathlib.Path
            The page as text without ``path``, else the path written.

        Examples
        --------
        >>> post.report("report.html")  # doctest: +SKIP
        """
        import bayesmix  # the public API: reporting sits above the posterior (ARCHITECTURE.md)

        return bayesmix.report(
            path,
            self,
            decision=decision,
            ledger=ledger,
            ternary=ternary,
            ci_prob=ci_prob,
            ci_kind=ci_kind,
            force=force,
        )

    # ------------------------------------------------------------------ storage
    def save(self, path: str | Path) -> Path:
        """Write one NetCDF file with :mod:`bayesmix.io`'s atomic writer.

        Parameters
        ----------
        path : str or path
            The file to write (mode 0666 & ~umask); a failed write is a WriteError and leaves
            any old file intact.

        Returns
        -------
        pathlib.Path
            ``path``.

        Examples
        --------
        >>> post.save("posterior.nc")  # doctest: +SKIP
        """
        path = Path(path)
        with atomic_path(path) as tmp:
            try:
                self.tree.to_netcdf(tmp, engine="h5netcdf")
            except OSError as err:
                raise errors.WriteError(
                    f"cannot write the posterior ({err.strerror or err})",
                    source=str(path),
                    hint="check the folder's permissions and free space; nothing was replaced",
                ) from None
        return path

    @classmethod
    def load(cls, path: str | Path) -> Posterior:
        """Read a posterior written by :meth:`save`.

        Parameters
        ----------
        path : str or path
            A NetCDF file written by :meth:`save` (or ``bayesmix fit -o``).

        Returns
        -------
        Posterior
            With ``source`` set to ``path``. A missing, foreign, damaged (unreadable,
            attributes of the wrong type, variables deleted) or newer-format file is a
            PosteriorFileError naming the file and what is wrong.

        Examples
        --------
        >>> import bayesmix as bm
        >>> bm.Posterior.load("missing.nc")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        bayesmix.errors.PosteriorFileError: missing.nc: file not found (...)
        """
        path = Path(path)
        if not path.is_file():
            raise errors.PosteriorFileError(
                "file not found", source=str(path), hint="fit one with 'bayesmix fit RUNS -o FILE'"
            )
        try:
            with open(path, "rb") as fh:
                head = fh.read(8)
        except OSError as err:
            raise errors.PosteriorFileError(
                f"cannot open the file ({err.strerror or err})",
                source=str(path),
                hint="check its permissions",
            ) from None
        if head != b"\x89HDF\r\n\x1a\n":
            raise errors.PosteriorFileError(
                "cannot read NetCDF: "
                + (
                    "the file is empty"
                    if not head
                    else "no NetCDF-4/HDF5 signature (damaged, or not a posterior)"
                ),
                source=str(path),
                hint="give a posterior saved by 'bayesmix fit'",
            )
        try:
            tree = xr.open_datatree(path, engine="h5netcdf").load()
        except Exception as err:  # h5py/netCDF raise many types for a damaged file
            raise errors.PosteriorFileError(
                f"the file is damaged: cannot read NetCDF ({type(err).__name__})",
                source=str(path),
                hint="refit it with 'bayesmix fit', or restore a copy",
            ) from None
        try:
            post = cls(tree)
            post.source = str(path)
            return post
        except errors.PosteriorFileError as err:
            raise errors.PosteriorFileError(err.problem, source=str(path), hint=err.hint) from None
        except (KeyError, ValueError, TypeError, AttributeError, IndexError) as err:
            raise errors.PosteriorFileError(
                f"the file is damaged or incomplete ({type(err).__name__}: {err})",
                source=str(path),
                hint="refit it with 'bayesmix fit', or restore a copy",
            ) from None


def _summary_frame(
    v: np.ndarray, mixtures: list, domains: list, ci_prob: float, ci_kind: str = "eti"
) -> pd.DataFrame:
    """Rows (mixture, domain) of mean, median and interval bounds over the sample axis of
    ``v`` (sample, mixture, domain); NaN draws are left out as in :meth:`Prediction.intervals`."""
    nan = bool(np.isnan(v).any())  # without NaN: the same numbers, without nan-loops
    lo, hi = credible_interval(v, ci_prob, axis=0, ci_kind=ci_kind, skipna=nan)
    med = np.nanquantile(v, 0.5, axis=0) if nan else np.quantile(v, 0.5, axis=0)
    avg = np.nanmean(v, axis=0) if nan else v.mean(axis=0)
    mix, dom = np.meshgrid(
        np.asarray(mixtures, dtype=object), np.asarray(domains, dtype=object), indexing="ij"
    )
    return pd.DataFrame(
        {
            "mixture": mix.ravel(),
            "eval_domain": dom.ravel(),
            "mean": avg.ravel(),
            "median": med.ravel(),
            "lower": lo.ravel(),
            "upper": hi.ravel(),
        }
    )


def _streams(seed: int | None, n: int) -> list[np.random.Generator]:
    """One independent random stream per mixture, all from ``seed`` (None: fresh entropy)."""
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(n)]


def _rows(value, start: int, stop: int, n: int):
    """Rows ``start:stop`` of a per-mixture input (n values); a single value as it is."""
    if value is None:
        return None
    arr = np.asarray(value)
    return arr[start:stop] if arr.ndim >= 1 and arr.shape[0] == n and n > 1 else value


def _encode_fit_data(runs: RunTable) -> xr.Dataset:
    """The run table as a Dataset with a ``record`` dim (NetCDF-safe; names keep their order)."""
    tidy = runs.to_tidy()
    ds = xr.Dataset(
        {
            c: (("record",), tidy[c].to_numpy(dtype=str if c == "run" else float))
            for c in tidy.columns
        }
    )
    ds.attrs["columns"] = json.dumps(list(tidy.columns))
    ds.attrs["train_domains"] = json.dumps(list(runs.train_domains))
    ds.attrs["eval_domains"] = json.dumps(list(runs.eval_domains))
    ds.attrs["source"] = runs.source or ""
    return ds


def _decode_fit_data(ds: xr.Dataset) -> RunTable:
    cols = json.loads(ds.attrs["columns"])
    tidy = pd.DataFrame({c: ds[c].values for c in cols})
    tidy["run"] = tidy["run"].astype(str)
    return RunTable(
        tidy,
        json.loads(ds.attrs["train_domains"]),
        json.loads(ds.attrs["eval_domains"]),
        source=ds.attrs.get("source") or None,
    )


# ---------------------------------------------------------------------- ArviZ groups
#: Units and meaning of the variables every posterior has besides the law's parameters.
_NOISE_ATTRS = {
    "sigma": ("nats per token", "noise sd of one measured loss, per validation domain"),
    "run_sigma": ("nats per token", "sd of a run's shared offset across its checkpoints"),
    "run_effect": ("nats per token", "offset of each fitted run's losses (all checkpoints)"),
}


def describe_variables(ds: xr.Dataset, law) -> xr.Dataset:
    """``ds`` (a ``posterior`` group) with ``units`` and ``description`` attrs on the law's
    parameters (from :attr:`Law.params`) and the noise scales; attrs already set are kept."""
    info = {p.name: (p.units, p.description) for p in law.params}
    info.update({k: v for k, v in _NOISE_ATTRS.items() if k not in info})
    ds = ds.copy()
    for name, (units, description) in info.items():
        if name in ds.data_vars:
            attrs = dict(ds[name].attrs)
            attrs.setdefault("units", units or "dimensionless")
            attrs.setdefault("description", description)
            ds[name].attrs = attrs
    return ds


def _draw_params(post: xr.Dataset, names) -> dict[str, np.ndarray]:
    """Posterior draws of ``names`` as arrays (chain, draw, [eval_domain, latent,
    train_domain]): the layout :meth:`Law.predict` takes."""
    out = {}
    for name in names:
        da = post[name]
        order = ["chain", "draw"] + [
            d for d in ("eval_domain", "latent", "train_domain") if d in da.dims
        ]
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
    extra = [n for n in ("sigma", "run_sigma") if n in post.data_vars]
    p = _draw_params(post, [*law.param_names, *extra])
    n_chain, n_draw = p["sigma"].shape[:2]
    rng = np.random.default_rng(random_seed)
    pred = np.empty((n_chain * n_draw, len(run_ids), len(table.eval_domains)))
    for block, pb in _sample_blocks(p, pred[0].size):
        mean = law.predict(data.r, pb, n_params=data.n_params, tokens=data.tokens)  # (B, run, K)
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
