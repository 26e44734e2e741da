"""Fit a model specification to a run table with MCMC.

NUTS through nutpie by default (PyMC's own sampler selectable). The compiled model is cached per
model structure (specification, training and validation domains) for the life of the process:
a refit with new data of the same structure swaps the ``pm.Data`` values and skips compilation.
Across processes, :mod:`bayesmix.inference.compile_cache` keeps the compiled machine code on disk,
so a fresh process fitting a known structure loads it instead of compiling.
Every fit passes through the diagnostics gate; when it fails, the fit samples again with settings
chosen from what failed, within a time budget (:mod:`bayesmix.inference.gate_retry`); a gate still
failed warns and is stored with the posterior, with the record of every attempt.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pymc as pm

from bayesmix import errors
from bayesmix._compat import PROGRESS, SEED, renamed_kwargs
from bayesmix.data.table import RunTable, as_run_table
from bayesmix.inference import compile_cache
from bayesmix.inference.gate_retry import (
    SamplerSettings,
    attempts_note,
    check_max_time,
    sample_to_gate,
    say_progress,
)
from bayesmix.inference.nutpie_loader import import_nutpie
from bayesmix.model.model import build_model, prepare_data, select_for_fit, structure_key
from bayesmix.model.priors import Prior
from bayesmix.model.spec import ModelSpec, load_spec
from bayesmix.posterior.diagnostics import ConvergenceWarning
from bayesmix.posterior.posterior import Posterior

SAMPLERS = ("nutpie", "pymc")

#: Models with at least this many sampled dimensions update nutpie's low-rank mass matrix every
#: :data:`LARGE_UPDATE_FREQ` tuning draws instead of nutpie's 20 (:func:`update_freq`).
LARGE_DIM = 200
LARGE_UPDATE_FREQ = 60

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


def _model_for(spec: ModelSpec, runs: RunTable, data, sampler: str, progressbar: bool = False):
    """(pm.Model, nutpie compiled model with ``data`` or None): from this process's cache,
    else built and compiled (or loaded from :mod:`bayesmix.inference.compile_cache`)."""
    n_runs = len(data.run_ids) if data.multi_record and data.run_ids is not None else None
    key = structure_key(spec, runs.train_domains, runs.eval_domains, data.multi_record, n_runs)
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

        compiled = compile_cache.compile_model(
            model, structure=key, on_compile=announce if progressbar else None
        )
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
    used = {var.name for var in compiled.shared_var_keys}  # pm.Data the density reads
    return model, compiled.with_data(**{k: v for k, v in values.items() if k in used})


def update_freq(n_dim: int, adaptation: str) -> int | None:
    """Tuning draws between two estimates of nutpie's low-rank mass matrix, or None for
    nutpie's default (20).

    Why: each estimate takes eigendecompositions that grow with the cube of the model's
    dimension. Measured on RegMix 512 ``logshare`` (509 dimensions, one chain, 300 tuning
    draws): tuning took 23.1 s at the default and 7.0 s every 60 draws (4.8 s every 100),
    for the same 15 leapfrog steps per draw; the chains' draws themselves cost the same. At
    4 chains x 1000 draws, min bulk ESS over seeds 1-3 was 547/557/786 at the default and
    496/694/495 every 60 draws (every 100: 324, seed 1 before the shear of m4log). Small
    models keep nutpie's default: there an estimate costs milliseconds."""
    if adaptation != "low_rank" or n_dim < LARGE_DIM:
        return None
    return LARGE_UPDATE_FREQ


def _sample_nutpie(compiled, *, adaptation: str, **kwargs):
    """(tree, update frequency used or None): ``nutpie.sample(compiled, adaptation=...,
    **kwargs)``, with the low-rank mass matrix updated every :func:`update_freq` tuning draws
    where that differs from nutpie's default.

    nutpie's ``sample`` does not take that setting, so this builds the sampler the way
    ``nutpie.sample`` does (settings object, then its background sampler). If the installed
    nutpie lacks those pieces, it falls back to ``nutpie.sample`` with the default."""
    nutpie = import_nutpie()

    freq = update_freq(compiled.n_dim, adaptation)
    started = _low_rank_sampler(compiled, freq, **kwargs) if freq else None
    if started is None:
        return nutpie.sample(compiled, adaptation=adaptation, **kwargs), None
    try:
        return started.wait(), freq
    except KeyboardInterrupt:  # as nutpie.sample: keep the draws so far
        return started.abort(), freq
    except BaseException:
        started.cancel()
        raise


def low_rank_settings(seed, freq: int):
    """nutpie's low-rank NUTS settings with the mass matrix estimated every ``freq`` tuning
    draws, or None if this nutpie has no way to set it."""
    try:
        import_nutpie()
        from nutpie import _lib

        settings = _lib.PyNutsSettings.LowRank(seed)
        tree = settings.as_dict()["settings"]
        if "mass_matrix_update_freq" not in tree["adapt_options"]:
            return None
        tree["adapt_options"]["mass_matrix_update_freq"] = int(freq)
        settings.update_settings(tree)
    except (ImportError, AttributeError, KeyError, TypeError, ValueError):
        return None
    return settings


def _low_rank_sampler(compiled, freq, *, draws, tune, chains, seed, target_accept, **kwargs):
    """A started nutpie background sampler (None if this nutpie cannot be driven so)."""
    settings = low_rank_settings(seed, freq)
    if settings is None:
        return None
    try:  # nutpie already imported by _sample_nutpie
        from nutpie.sample import _BackgroundSampler
    except ImportError:
        return None
    settings.update(
        {"num_tune": tune, "num_draws": draws, "num_chains": chains, "target_accept": target_accept}
    )
    # as nutpie.sample: the CPUs this process may use (Python >= 3.13), else all of them
    available = getattr(os, "process_cpu_count", os.cpu_count)() or 1
    return _BackgroundSampler(
        compiled, settings, np.zeros(compiled.n_dim), min(chains, available), **kwargs
    )


@contextlib.contextmanager
def ordinary_pages() -> Iterator[None]:
    """Within the block, NumPy does not ask the kernel for transparent huge pages for large
    arrays (its ``madvise(MADV_HUGEPAGE)``); NumPy's setting is restored on leaving.

    Why: where the kernel compacts memory to serve such a fault (THP defrag "madvise", as on
    a 2-core VM, docs/performance.md), the first touch of a fresh 320 MB array took 1.5-3.2 s
    against 0.2 s with ordinary pages, and a fit's posterior assembly makes several (the
    predictive and log-likelihood groups of RegMix 512 x 6,000 draws: 10.4-10.7 s with huge
    pages, 4.1 s without). A no-op where NumPy lacks the switch.
    """
    try:
        from numpy._core.multiarray import _set_madvise_hugepage
    except ImportError:  # another NumPy layout: leave its setting alone
        yield
        return
    before = _set_madvise_hugepage(False)
    try:
        yield
    finally:
        _set_madvise_hugepage(before)


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
    draws: int = 1000,
    tune: int = 1000,
    chains: int = 4,
    random_seed: int | None = None,
    sampler: str = "nutpie",
    progressbar: bool = False,
    adaptation: str = "low_rank",
    target_accept: float = 0.95,
    priors: Mapping[str, Prior | Mapping] | None = None,
    warn: bool = True,
    max_time: float | None = None,
) -> Posterior:
    """Fit a mixing law to a run table with MCMC (NUTS) and check the fit.

    Parameters
    ----------
    runs : RunTable
        The proxy runs (:func:`bayesmix.load`). One record per run enters the fit (the last
        checkpoint, or ``step``), except for laws over training tokens (``"scaling"``), which
        take every checkpoint up to ``max_step`` (:func:`bayesmix.model.model.select_for_fit`).
    model : str or ModelSpec, default "default"
        A shipped specification name (``default``, ``additive``, ...), a TOML path or a
        ModelSpec.
    step, max_step : float, optional
        The checkpoint to fit, or the last checkpoint for laws over tokens.
    draws, tune, chains : int
        MCMC draws per chain after ``tune`` tuning steps, and the number of chains.
    random_seed : int, optional
        Seed of the sampler (None: fresh randomness; ``seed`` is its deprecated name).
    sampler : {"nutpie", "pymc"}, default "nutpie"
        The NUTS implementation.
    progressbar : bool, default False
        Show the sampler's progress (a bar on a terminal, else a line every 10 s; ``progress``
        is its deprecated name).
    adaptation : {"low_rank", "diag"}, default "low_rank"
        nutpie's mass-matrix adaptation ("low_rank": about 15 leapfrog steps per draw on the
        5 x 5 synthetic case, several times fewer than "diag").
    target_accept : float, default 0.95
        At 0.9 a few draws per thousand diverged in the tail of the noise-scale hierarchy
        (measured on 5 seeds); at 0.95 none did, for about 30% more steps.
    priors : mapping, optional
        Priors of the specification to override, by name.
    warn : bool, default True
        Warn (``ConvergenceWarning``, listing what failed) when the diagnostics gate fails;
        the report is stored with the posterior either way.
    max_time : float, optional
        Seconds the fit may spend sampling towards the gate (compilation excluded; None:
        ``BAYESMIX_MAX_TIME`` if set, else 600). When the gate fails, the fit samples again
        with settings chosen from what failed (:func:`bayesmix.inference.gate_retry.next_settings`:
        higher ``target_accept``, longer tuning, more draws) and a seed derived from
        ``random_seed``, while the next attempt is predicted to fit in the time left (at most
        4 attempts). 0: one attempt, as before. The passing attempt (else the best) is kept;
        ``settings`` describe it, ``settings["attempts"]`` records every attempt and
        ``settings["sample_s"]`` is the sampling time of all of them.

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
    if sampler not in SAMPLERS:
        raise errors.BayesmixError(
            f"unknown sampler {sampler!r}", hint=f"use one of {', '.join(SAMPLERS)}"
        )
    for name, value in (("draws", draws), ("tune", tune), ("chains", chains)):
        if int(value) < 1:
            raise errors.BayesmixError(f"{name} must be >= 1, got {value}")
    budget = check_max_time(max_time)
    runs = as_run_table(runs)
    spec = load_spec(model)
    if priors:
        spec = spec.with_priors(**priors)
    table = select_for_fit(runs, step=step, law=spec.law, max_step=max_step)
    data = prepare_data(table, spec.law)
    start = time.perf_counter()
    pm_model, compiled = _model_for(spec, table, data, sampler, progressbar)
    compile_s = time.perf_counter() - start
    # on a terminal nutpie draws per-chain bars with elapsed and remaining time; when stderr is
    # not a terminal (logs, CI) its bar is invisible, so print lines instead
    line_progress = progressbar and not sys.stderr.isatty()

    def sample_once(attempt: SamplerSettings, seed: int | None):
        """One sampling with ``attempt``'s settings: (tree, nutpie's update frequency used)."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=RuntimeWarning)
            if compiled is not None:
                lines = _LineProgress() if line_progress else None
                return _sample_nutpie(
                    compiled,
                    draws=attempt.draws,
                    tune=attempt.tune,
                    chains=attempt.chains,
                    seed=seed,
                    progress_bar=progressbar and lines is None,
                    save_warmup=False,
                    progress_callback=lines,
                    progress_rate=500,
                    adaptation=adaptation,
                    target_accept=attempt.target_accept,
                )
            with pm_model:
                tree = pm.sample(
                    draws=attempt.draws,
                    tune=attempt.tune,
                    chains=attempt.chains,
                    random_seed=seed,
                    nuts_sampler="pymc",
                    progressbar=progressbar,
                    target_accept=attempt.target_accept,
                    compute_convergence_checks=False,
                )
            return tree, None

    with ordinary_pages():  # the sampler's trace, the gate and the posterior's groups
        result = sample_to_gate(
            sample_once,
            SamplerSettings(int(draws), int(tune), float(target_accept), int(chains)),
            max_time=budget,
            seed=random_seed,
            progress=say_progress if progressbar else None,
        )
        report = result.diagnostics
        settings = {
            **result.settings(budget),
            "sampler": sampler,
            "adaptation": adaptation if sampler == "nutpie" else None,
            "mass_matrix_update_freq": result.extra,  # None: nutpie's default
            "step": step,
            "max_step": max_step,
            "compile_s": round(compile_s, 3),
            "sample_s": round(result.sample_s, 3),  # every attempt's sampling
        }
        post = Posterior.from_fit(result.tree, spec, table, report, settings)
    if warn and not report.ok:
        # stacklevel 3: past the renamed_kwargs wrapper
        warnings.warn(
            f"{report.warning()} ({attempts_note(len(result.attempts), budget)})",
            ConvergenceWarning,
            stacklevel=3,
        )
    return post
