"""Fit a model specification to a run table with MCMC.

NUTS through nutpie by default (PyMC's own sampler selectable). The compiled model is cached per
model structure (specification, training and validation domains) for the life of the process:
a refit with new data of the same structure swaps the ``pm.Data`` values and skips compilation.
Across processes, :mod:`bayesmix.inference.compile_cache` keeps the compiled machine code on disk,
so a fresh process fitting a known structure loads it instead of compiling. Every use of nutpie's,
numba's and NumPy's internals goes through :mod:`bayesmix.inference.nutpie_adapter`.
Every fit passes through the diagnostics gate; when it fails, the fit samples again with settings
chosen from what failed, within a time budget (:mod:`bayesmix.inference.gate_retry`); a gate still
failed warns and is stored with the posterior, with the record of every attempt.
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import pymc as pm

from bayesmix import errors
from bayesmix._compat import PROGRESS, SEED, renamed_kwargs
from bayesmix.data.table import RunTable, as_run_table
from bayesmix.inference import compile_cache, nutpie_adapter
from bayesmix.inference.gate_retry import (
    GateResult,
    SamplerSettings,
    attempts_note,
    check_max_time,
    sample_to_gate,
    say_progress,
)
from bayesmix.laws import get_law
from bayesmix.model.model import (
    build_model,
    check_enough_runs,
    prepare_data,
    sampler_owners,
    select_for_fit,
    select_size,
    split_key,
    structure_key,
    with_latent_splits,
)
from bayesmix.model.priors import Prior
from bayesmix.model.spec import ModelSpec, load_spec
from bayesmix.posterior.diagnostics import ConvergenceWarning
from bayesmix.posterior.groups import split_groups
from bayesmix.posterior.posterior import Posterior

SAMPLERS = ("nutpie", "pymc")

# structure key -> (pm.Model, nutpie compiled model or None)
_COMPILED: dict[str, tuple[pm.Model, Any]] = {}  # Any: nutpie's compiled model


def clear_cache() -> None:
    """Forget the compiled models of this process (the on-disk cache stays: to time a real
    compilation, set ``BAYESMIX_NO_COMPILE_CACHE=1`` or call ``compile_cache.clear()``)."""
    _COMPILED.clear()
    compile_cache.forget()


def compiled_count() -> int:
    """How many model structures are compiled (or loaded compiled) in this process."""
    return sum(1 for _, c in _COMPILED.values() if c is not None)


def check_counts(draws, tune, chains) -> None:
    """Raise BayesmixError unless the sampler's ``draws``, ``tune`` and ``chains`` are >= 1
    (before any compiling or sampling)."""
    for name, value in (("draws", draws), ("tune", tune), ("chains", chains)):
        if int(value) < 1:
            raise errors.BayesmixError(f"{name} must be >= 1, got {value}")


def compiled_model(key: str, build: Callable[[], pm.Model]):
    """The nutpie compiled model of structure ``key``: from this process's cache, else
    ``build()`` compiled (or loaded from :mod:`bayesmix.inference.compile_cache`) and kept.

    The cache of every fit (:func:`fit`, :func:`fit_compiled`), so :func:`clear_cache` and
    :func:`compiled_count` cover the pipeline's curve models too.
    ``key`` must name everything of the model that is not ``pm.Data``."""
    model, compiled = _COMPILED.get(key, (None, None))
    if compiled is None:
        model = build() if model is None else model
        compiled = compile_cache.compile_model(model)
        _COMPILED[key] = (model, compiled)
    return compiled


def _model_for(spec: ModelSpec, runs: RunTable, data, sampler: str, progressbar: bool = False):
    """(pm.Model, nutpie compiled model with ``data`` or None): from this process's cache,
    else built and compiled (or loaded from :mod:`bayesmix.inference.compile_cache`)."""
    n_runs = len(data.run_ids) if data.multi_record and data.run_ids is not None else None
    key = structure_key(
        spec, runs.train_domains, runs.eval_domains, data.multi_record, n_runs, split_key(data)
    )
    model, compiled = _COMPILED.get(key, (None, None))
    if model is None:
        model = build_model(spec, runs.train_domains, runs.eval_domains, data)
    if sampler == "nutpie" and compiled is None:

        def announce():
            where = f"; stored in {compile_cache.cache_dir()}" if compile_cache.enabled() else ""
            print(
                f"compiling the model (once per model structure{where}) ...",
                file=sys.stderr,
                flush=True,
            )

        compiled = compile_cache.compile_model(model, on_compile=announce if progressbar else None)
    _COMPILED[key] = (model, compiled)
    values = data.as_dict()
    # The model's pm.Data: PyMC's sampler reads them, and so does nutpie's start of the chains
    # (its initial point function is compiled from the model; its density is not).
    with model:
        pm.set_data(
            values,
            coords={
                data.record_dim: list(data.runs),
                "obs": range(len(data.y)),
                **({"run": list(data.run_ids)} if data.multi_record else {}),
            },
        )
    if sampler != "nutpie":
        return model, None
    return model, nutpie_adapter.with_data(compiled, values)


class _LineProgress:
    """nutpie progress callback writing one line to stderr every ``every`` seconds: draws done
    of all chains (tuning included), elapsed time and the remaining time at the mean rate
    so far (tuning draws are slower, so early estimates run high)."""

    def __init__(self, every: float = 10.0):
        self.every, self.start, self.last = every, time.perf_counter(), 0.0

    def __call__(self, chains) -> None:
        now = time.perf_counter() - self.start
        done = sum(c.finished_draws for c in chains)
        total = sum(c.total_draws for c in chains)
        if done < total and now - self.last < self.every:
            return
        self.last = now
        eta = f"{now * (total - done) / done:.0f} s" if done else "?"
        divergences = sum(c.divergences for c in chains)
        print(
            f"sampling: {done}/{total} draws ({100 * done / max(total, 1):.0f}%), "
            f"{divergences} divergent, elapsed {now:.0f} s, remaining ~{eta}",
            file=sys.stderr,
            flush=True,
        )


@renamed_kwargs(**SEED, **PROGRESS)
def fit(
    runs: RunTable,
    model: str | ModelSpec = "default",
    *,
    step: float | None = None,
    max_step: float | None = None,
    size=None,
    draws: int = 1000,
    tune: int = 1000,
    chains: int = 4,
    random_seed: int | None = None,
    sampler: str = "nutpie",
    progressbar: bool = False,
    adaptation: str | None = None,
    target_accept: float = 0.95,
    priors: Mapping[str, Prior | Mapping] | None = None,
    warn: bool = True,
    max_time: float | None = None,
    latent_splits=None,
) -> Posterior:
    """Fit a mixing law to a run table with MCMC (NUTS) and check the fit.

    Parameters
    ----------
    runs : RunTable
        The proxy runs (:func:`bayesmix.load`). One record per run enters the fit (the last
        checkpoint, or ``step``), except for laws over training tokens (:attr:`Law.inputs`),
        which take every checkpoint up to ``max_step`` (:func:`fit_table`).
    model : str or ModelSpec, default "default"
        A shipped specification name (``default``, ``additive``, ...), a TOML path or a
        ModelSpec.
    step, max_step : float, optional
        The checkpoint to fit, or the last checkpoint for laws over tokens.
    size : float, str or sequence, optional
        The model size(s) to fit among several (:func:`fit_table`; fewer runs than the law's
        ``min_runs`` are a TooFewRunsError).
    draws, tune, chains : int
        MCMC draws per chain after ``tune`` tuning steps, and the number of chains.
    random_seed : int, optional
        Seed of the sampler (None: fresh randomness; ``seed`` is its deprecated name).
    sampler : {"nutpie", "pymc"}, default "nutpie"
        The NUTS implementation (PyMC's, with a warning, where nutpie is not installed).
    progressbar : bool, default False
        Show the sampler's progress (a bar on a terminal, else a line every 10 s; ``progress``
        is its deprecated name).
    adaptation : {"low_rank", "diag"}, optional
        nutpie's mass-matrix adaptation; None: the law's (:attr:`Law.adaptation`: low rank,
        several times fewer leapfrog steps where the posterior is correlated; ``m4log`` diag).
    target_accept : float, default 0.95
        At 0.9 a few draws per thousand diverged in the noise-scale hierarchy (5 seeds).
    priors : mapping, optional
        Priors of the specification to override, by name.
    warn : bool, default True
        Warn (``ConvergenceWarning``, listing what failed) when the diagnostics gate fails;
        the report is stored with the posterior either way.
    max_time : float, optional
        Seconds of sampling towards the gate (None: ``BAYESMIX_MAX_TIME``, else 600; 0: one
        attempt): a failed gate samples again with settings chosen from what failed
        (:mod:`bayesmix.inference.gate_retry`) while the next attempt fits the time left. The
        passing attempt (else the best) is kept; ``settings["attempts"]`` records them all.
    latent_splits : LatentSplits, optional
        Split fractions of remapped old runs to infer, not fix
        (:func:`bayesmix.data.latent_splits.latent_splits`; posterior ``split_fraction``, dim
        ``split_part``). None: every share as in the table (exactly the model without it).

    Returns
    -------
    Posterior
        The fitted law with its data and diagnostics report.

    Examples
    --------
    >>> import bayesmix as bm
    >>> runs, truth = bm.simulate(["web", "code", "books"], n_runs=16, random_seed=0)
    >>> post = bm.fit(runs, draws=300, tune=300, chains=2, random_seed=1)  # doctest: +SKIP
    >>> post.diagnostics.ok                                                # doctest: +SKIP
    True
    """
    sampler = _check_sampler(sampler, draws=draws, tune=tune, chains=chains)
    budget = check_max_time(max_time)
    spec, table = fit_table(runs, model, priors=priors, size=size, step=step, max_step=max_step)
    start = time.perf_counter()
    adaptation = adaptation or get_law(spec.law).adaptation
    sample_once = _sampling(spec, table, sampler, adaptation, progressbar, latent_splits)
    compile_s = time.perf_counter() - start
    form = sample_once.form if get_law(spec.law).has_noncentered else ""  # "": no choice
    with nutpie_adapter.ordinary_pages():  # the sampler's trace, the gate, the posterior's groups
        result, settings = _sample_to_gate(
            sample_once,
            SamplerSettings(int(draws), int(tune), float(target_accept), int(chains), form),
            budget,
            random_seed,
            compile_s,
        )
        settings.update(step=step, max_step=max_step)
        spec = with_form(spec, result.used.settings.parameterization)
        post = Posterior.from_fit(result.tree, spec, table, result.diagnostics, settings)
    if warn and not result.diagnostics.ok:
        _warn_gate(result, budget)
    return post


def fit_compiled(
    key: str,
    build: Callable[[], pm.Model],
    values: Mapping[str, Any],
    *,
    draws: int,
    tune: int,
    chains: int,
    target_accept: float,
    adaptation: str = "low_rank",
    random_seed: int | None = None,
    progressbar: bool = False,
    max_time: float | None = None,
) -> tuple[GateResult, dict]:
    """Fit a law's model that :func:`fit` does not build from a run table (the nested
    pipeline's step and size laws) along :func:`fit`'s own path: compiled once per structure
    ``key`` (:func:`compiled_model`), its ``pm.Data`` set to ``values``, sampled with nutpie
    by :class:`Sampling` towards the gate within ``max_time`` (seconds, as in :func:`fit`).

    Returns (the gate driver's result: tree, diagnostics, attempts; the settings a fit
    stores, as :func:`fit`'s posterior stores them). Warns nothing: the caller names the law.
    """
    check_counts(draws, tune, chains)
    budget = check_max_time(max_time)
    start = time.perf_counter()
    compiled = nutpie_adapter.with_data(compiled_model(key, build), values)
    compile_s = time.perf_counter() - start
    sample_once = Sampling(lambda form: (_COMPILED[key][0], compiled), "", adaptation, progressbar)
    with nutpie_adapter.ordinary_pages():
        return _sample_to_gate(
            sample_once,
            SamplerSettings(int(draws), int(tune), float(target_accept), int(chains)),
            budget,
            random_seed,
            compile_s,
        )


def _sample_to_gate(
    sample_once: Sampling,
    start: SamplerSettings,
    budget: float,
    random_seed: int | None,
    compile_s: float,
) -> tuple[GateResult, dict]:
    """Every fit's sampling: ``sample_once`` towards the gate from ``start`` within
    ``budget`` seconds; (result, the settings stored with it)."""
    result = sample_to_gate(
        sample_once,
        start,
        max_time=budget,
        seed=random_seed,
        progress=say_progress if sample_once.progressbar else None,
    )
    sampler = "nutpie" if sample_once.compiled is not None else "pymc"
    return result, _settings(result, budget, sampler, sample_once.adaptation, compile_s)


def _warn_gate(result, budget: float) -> None:
    """The ConvergenceWarning of a failed gate: what failed, how many attempts in what budget."""
    warnings.warn(
        f"{result.diagnostics.warning()} ({attempts_note(len(result.attempts), budget)})",
        ConvergenceWarning,
        stacklevel=4,  # past this helper, fit and the renamed_kwargs wrapper
    )


def _settings(result, budget: float, sampler: str, adaptation: str, compile_s: float) -> dict:
    """The settings a posterior stores: the used attempt's (``GateResult.settings``), the
    sampler, nutpie's adaptation and update frequency, compilation and sampling seconds."""
    return {
        **result.settings(budget),
        "sampler": sampler,
        "adaptation": adaptation if sampler == "nutpie" else None,
        "mass_matrix_update_freq": result.extra,  # None: nutpie's default
        "compile_s": round(compile_s, 3),
        "sample_s": round(result.sample_s, 3),  # every attempt's sampling
    }


def _check_sampler(sampler: str, **counts: int) -> str:
    """The sampler to use: ``sampler`` checked, PyMC's where nutpie is not installed
    (:func:`bayesmix.inference.nutpie_adapter.choose_sampler`); ``counts`` (draws, tune,
    chains) must be >= 1."""
    if sampler not in SAMPLERS:
        raise errors.BayesmixError(
            f"unknown sampler {sampler!r}", hint=f"use one of {', '.join(SAMPLERS)}"
        )
    check_counts(**counts)
    return nutpie_adapter.choose_sampler(sampler)


def with_form(spec: ModelSpec, form: str) -> ModelSpec:
    """``spec`` with its hierarchy in ``form`` ("centered"/"noncentered"; "": unchanged)."""
    if not form or spec.hierarchy.get("parameterization", "centered") == form:
        return spec
    return replace(spec, hierarchy={**spec.hierarchy, "parameterization": form})


def fit_table(
    runs, model, *, priors=None, size=None, step=None, max_step=None
) -> tuple[ModelSpec, RunTable]:
    """(specification with ``priors``, records to fit) of :func:`fit`'s arguments: the runs of
    ``size`` (a number of parameters or a label, ``7e7``, ``"70M"``, ``"1.4B"``; several, as a
    list or ``"70M,160M"``, for a law over model size; None: every run), the records
    :func:`bayesmix.model.model.select_for_fit` takes, at least the law's ``min_runs`` runs
    (else TooFewRunsError). Every check that can fail does so here, before the MCMC."""
    runs = as_run_table(runs)
    spec = load_spec(model)
    if priors:
        spec = spec.with_priors(**priors)
    if size is not None:
        runs = select_size(runs, size)
    table = select_for_fit(runs, step=step, law=spec.law, max_step=max_step)
    check_enough_runs(table, spec.law)
    return spec, table


def _sampling(
    spec: ModelSpec, table: RunTable, sampler: str, adaptation: str, progressbar, splits=None
):
    """The :class:`Sampling` of a fit: its model data (with latent ``splits`` when given), the
    model in the specification's hierarchy form (compiled, or loaded compiled), the law whose
    sampler variables it sets apart."""
    data = with_latent_splits(prepare_data(table, spec.law), splits, table.train_domains)
    return Sampling(
        lambda form: _model_for(with_form(spec, form), table, data, sampler, progressbar),
        spec.hierarchy.get("parameterization", "centered"),
        adaptation,
        progressbar,
        get_law(spec.law),
    )


@dataclass
class Sampling:
    """One fresh sampling of a fit's model (the ``sample_once`` of
    :func:`bayesmix.inference.gate_retry.sample_to_gate`): nutpie's through the adapter when
    the model is compiled for nutpie, else PyMC's NUTS. ``build(form)`` gives (pm.Model,
    nutpie's compiled model or None) of the hierarchy's form ``form`` ("centered" or
    "noncentered"); an attempt asking for the other form (divergences of a centred
    hierarchy, :func:`~bayesmix.inference.gate_retry.next_settings`) is sampled on that one.
    With ``law``, the sampler's own variables go to their group, labelled with the law's
    parameters they feed (:func:`bayesmix.posterior.groups.split_groups`), before the gate."""

    build: Callable[[str], tuple[pm.Model, Any]]
    form: str
    adaptation: str
    progressbar: bool
    law: Any = None  # a Law, or None to keep the sampler's tree as it is
    model: pm.Model = field(init=False)
    compiled: Any = field(init=False)  # nutpie's compiled model, or None

    def __post_init__(self):
        self.model, self.compiled = self.build(self.form)

    def __call__(self, attempt: SamplerSettings, seed: int | None) -> tuple[Any, int | None]:
        """(tree, nutpie's mass-matrix update frequency used or None)."""
        if attempt.parameterization and attempt.parameterization != self.form:
            self.form = attempt.parameterization
            self.model, self.compiled = self.build(self.form)
        tree, extra = self._sample(attempt, seed)
        if self.law is not None:
            tree = split_groups(tree, self.law, sampler_owners(self.model, self.law))
        return tree, extra

    def _sample(self, attempt: SamplerSettings, seed: int | None) -> tuple[Any, int | None]:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=RuntimeWarning)
            if self.compiled is not None:
                return self._nutpie(attempt, seed)
            with self.model:
                tree = pm.sample(
                    draws=attempt.draws,
                    tune=attempt.tune,
                    chains=attempt.chains,
                    random_seed=seed,
                    nuts_sampler="pymc",
                    progressbar=self.progressbar,
                    target_accept=attempt.target_accept,
                    compute_convergence_checks=False,
                )
            return tree, None

    def _nutpie(self, attempt: SamplerSettings, seed: int | None):
        # on a terminal nutpie draws per-chain bars with elapsed and remaining time; when
        # stderr is not a terminal (logs, CI) its bar is invisible, so print lines instead
        lines = _LineProgress() if self.progressbar and not sys.stderr.isatty() else None
        return nutpie_adapter.sample(
            self.compiled,
            draws=attempt.draws,
            tune=attempt.tune,
            chains=attempt.chains,
            seed=seed,
            progress_bar=self.progressbar and lines is None,
            save_warmup=False,
            progress_callback=lines,
            progress_rate=500,
            adaptation=self.adaptation,
            target_accept=attempt.target_accept,
        )
