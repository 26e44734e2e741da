"""The fitted posterior: predict unseen mixtures, summarise intervals, save and load.

A ``Posterior`` wraps an ``xarray.DataTree`` in the stored layout of
:mod:`bayesmix.posterior.storage` (the sampler's groups, the data groups and the
``log_likelihood`` group of :mod:`bayesmix.posterior.data_groups`, the run table it was fitted
to and the specification, diagnostics and settings as JSON); its predictions are
:mod:`bayesmix.posterior.prediction`'s. One NetCDF file holds all of it, so ``az.summary``,
arviz-plots and ``arviz_stats.loo``/``compare`` read a saved posterior directly (``var_name=
"run_loss"`` for the leave-one-run-out unit), and another process can reload and extend it.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from bayesmix import errors
from bayesmix._compat import CI_PROB, SEED, renamed_kwargs
from bayesmix.data.mixtures import as_mixtures, domain_weights
from bayesmix.data.table import RunTable
from bayesmix.laws import get_law
from bayesmix.model.spec import ModelSpec
from bayesmix.posterior import data_groups, storage
from bayesmix.posterior.diagnostics import Diagnostics
from bayesmix.posterior.extrapolation import ATTR as EXTRAPOLATION_ATTR
from bayesmix.posterior.extrapolation import Calibration, axis_distances
from bayesmix.posterior.mixture_range import MixtureRange
from bayesmix.posterior.prediction import (
    MAX_EXTRAPOLATION,
    SHIFT_GROUP,
    Prediction,
    check_interval_options,
    draw_losses,
    mixture_rows,
    mixture_streams,
    scale_messages,
    summary_frame,
)

#: Bytes of (chain x draw x mixture x domain) float64 arrays that ``intervals`` holds at once;
#: more mixtures are predicted in chunks (same numbers, bounded memory).
CHUNK_BYTES = 32 * 2**20


class Posterior:
    """A fitted mixing law: posterior draws, the data and the diagnostics, in one DataTree.

    Build one with :func:`bayesmix.fit` or read a saved one with :meth:`Posterior.load`; the
    constructor checks a tree in the stored layout (:mod:`bayesmix.posterior.storage`).

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
        self.spec, self.diagnostics = storage.check_tree(tree)
        self.tree = tree
        #: The file this posterior was loaded from (None when built in memory); errors name it.
        self.source: str | None = None
        self._mixture_range: MixtureRange | None = None
        self.law = get_law(self.spec.law)
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
        return cls(storage.assemble(tree, spec, runs, diagnostics, settings))

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
        return storage.decode_fit_data(self.tree["fit_data"].to_dataset())

    def law_params(self, flat: bool = True) -> dict[str, np.ndarray]:
        """The law's parameters (:attr:`Law.params`, e.g. M4's m, rho (S, K), t (S, K, M)) and
        the noise scales sigma (S, K), as NumPy arrays.

        ``flat`` merges chain and draw into one leading sample axis S; otherwise (chain, draw).
        """
        out = data_groups.law_draws(self.tree["posterior"], self.law)
        return {k: v.reshape((-1,) + v.shape[2:]) for k, v in out.items()} if flat else out

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
        return data_groups.log_likelihood(
            self.tree["posterior"], self.law, self.spec.likelihood, table
        )

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
        """Fitted range ``{input: (min, max)}`` of the law's extra inputs (n_params, tokens),
        except those it reads only as a budget (:attr:`bayesmix.laws.Law.budget_inputs`)."""
        table = self.fit_data()
        out = {}
        for key in self.law.inputs:  # a budget (the runs' tokens under repetition) is no scale
            col = None if key in ("r", *self.law.budget_inputs) else table.column(key)
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
        ranges = self.scale_range() if n_params is not None or tokens is not None else {}
        return scale_messages(
            ranges, n_params=n_params, tokens=tokens, max_extrapolation=max_extrapolation
        )

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
            mix.to_numpy(), p, n_params, tokens, mixture_streams(random_seed, len(mix))
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
        """Mean and predictive loss (chain, draw, n, K) of mixtures ``r`` (n, M):
        :func:`~bayesmix.posterior.prediction.draw_losses` with this posterior's law,
        likelihood, imputation shifts (:attr:`imputation_shift`) and learned extrapolation
        error (:attr:`extrapolation`)."""
        cal = self.extrapolation
        return draw_losses(
            self.law,
            self.spec.likelihood,
            r,
            p,
            n_params,
            tokens,
            streams,
            calibration=cal,
            distance=None if cal is None else self.extrapolation_distance(n_params, tokens),
            with_noise=with_noise,
            shift=self.imputation_shift,
        )

    @property
    def imputation_shift(self) -> np.ndarray | None:
        """Shifts (J, K) in nats per token that predictions add, one per posterior draw in
        turn (the nested pipeline's stages 1-2 uncertainty: :mod:`bayesmix.scaling.pooling`),
        or None."""
        if SHIFT_GROUP not in self.tree.children:
            return None
        shift = self.tree[SHIFT_GROUP]["shift"].sel(eval_domain=list(self.eval_domains))
        return shift.transpose("imputation", "eval_domain").values.astype(float)

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

    def extrapolation_distance(self, n_params=None, tokens=None) -> np.ndarray:
        """Log-distances (size, tokens) of a prediction beyond the fitted scale, shape (2,) or
        (n, 2) (0 inside it): the calibration's own target for a posterior fitted at a target
        scale (nested pipeline), else computed from ``n_params``/``tokens`` against
        :meth:`scale_range`."""
        cal = self.extrapolation
        if cal is not None and cal.target_axes is not None:
            return np.asarray(cal.target_axes, float)
        return axis_distances(n_params, tokens, self.scale_range())

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
        check_interval_options(ci_prob, kind, ci_kind)
        # Chunks of mixtures keep memory bounded (chain x draw x chunk x K floats, a few times);
        # each mixture's noise has its own stream, so the numbers do not depend on the chunking.
        p = self.law_params(flat=False)
        n = len(mix)
        per_mixture = 8 * self.n_samples * len(self.eval_domains)
        size = chunk_size or max(1, CHUNK_BYTES // max(per_mixture, 1))
        streams = mixture_streams(random_seed, n)
        domains = list(self.eval_domains) + (["overall"] if w is not None else [])
        frames = []
        for start in range(0, n, size):
            stop = min(start + size, n)
            mean, pred = self._draw(
                mix.iloc[start:stop].to_numpy(),
                p,
                mixture_rows(n_params, start, stop, n),
                mixture_rows(tokens, start, stop, n),
                streams[start:stop],
                with_noise=kind == "predictive",
            )
            v = pred.reshape((-1,) + pred.shape[2:])  # (sample, mixture, K)
            del mean, pred
            if w is not None:
                v = np.concatenate([v, (v @ w)[..., None]], axis=-1)  # + overall
            frames.append(summary_frame(v, list(mix.index[start:stop]), domains, ci_prob, ci_kind))
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
        """Write one NetCDF file with :mod:`bayesmix.io`'s atomic writer
        (:func:`bayesmix.posterior.storage.save`).

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
        return storage.save(self.tree, path)

    @classmethod
    def load(cls, path: str | Path) -> Posterior:
        """Read a posterior written by :meth:`save` (:func:`bayesmix.posterior.storage.load`).

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
        return storage.load(path, cls)
