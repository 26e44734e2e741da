"""Ye et al.'s nested scaling pipeline (steps -> model size -> mixing law), carried by draws.

Ye et al. predict the loss of a large, long run from small, short proxies with three laws fitted
one after another with point estimates. Here every stage is a Bayesian fit and the uncertainty of
each stage reaches the next as posterior draws (multiple imputation):

1. **Steps** (:func:`fit_step_law`, one PyMC model for every (proxy run, validation domain)
   learning curve): ``L(S) = E + (B / S)^beta``. Output: draws of each run's loss at the target
   step ``S*`` per validation domain.
2. **Size** (:func:`fit_size_law`, per (mixture, validation domain) across the proxy sizes,
   fitted to one draw of the stage-1 output): ``L(N) = E + (A / N)^alpha``. Output: draws of
   each mixture's loss at the target size ``N*`` (and step ``S*``).
3. **Mixing law**: the repository's :func:`bayesmix.inference.fitting.fit` (any specification,
   default ``"target"``: M4 plus exact absence, ``models/target.toml``) on a run table of the
   stage-2 draws at (N*, S*), one record per mixture.

:func:`nested_fit` takes J draws of the stage-1 output, fits stage 2 once per draw (one compiled
model, data swapped) and takes one stage-2 posterior *predictive* draw per fit (fitted noise
included): J imputations of the losses the proxy mixtures would have if run at the target
scale. Their differences are a shift shared by every mixture of a validation domain (a draw of
an exponent or a level moves them all) and each mixture's own scatter. Stage 3 fits the mixing
law once, to one imputation's scatter around the imputations' mean level, so its noise scale
learns the scatter a target run has (and each mixture's imputation error, which makes
predictive intervals conservative); the J shared shifts go with the posterior and every
prediction adds one of them per posterior draw (:mod:`bayesmix.scaling.pooling`). The result
is an ordinary mixing-law :class:`~bayesmix.posterior.posterior.Posterior` at the target scale,
so ``predict``/``intervals``/``optimize``/``decide`` work on it unchanged, and differences
between mixtures are untouched by the shifts. One stage-3 fit instead of J: a stage-3 fit costs
about 8 size-law fits (5Mix), and J of them failed the gate about J times as often by chance.

The step and size laws are :class:`~bayesmix.laws.step.StepLaw` and
:class:`~bayesmix.laws.size.SizeLaw` (their form, parameters and priors:
:mod:`bayesmix.laws.curve`); the stages live in :mod:`bayesmix.scaling.stages`, the hand-off of
draws between them in :mod:`bayesmix.scaling.imputation`, stage 3's data and the target
posterior in :mod:`bayesmix.scaling.pooling`. This module runs them in order
(:func:`nested_fit`, one named step per stage) and is the pipeline's entry point: its
``__all__`` names the public pieces.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from bayesmix._compat import PROGRESS, SEED, renamed_kwargs
from bayesmix.data.schedules import Schedule, resolve_target
from bayesmix.data.table import RunTable
from bayesmix.data.ye_logs import size_label
from bayesmix.inference.fitting import check_counts
from bayesmix.inference.fitting import fit as fit_mixing_law
from bayesmix.inference.gate_retry import PIPELINE_DRAWS, PIPELINE_TUNE, stage_max_time
from bayesmix.laws.curve import CHINCHILLA
from bayesmix.model.spec import ModelSpec, load_spec
from bayesmix.posterior.diagnostics import ConvergenceWarning
from bayesmix.posterior.posterior import Posterior
from bayesmix.scaling.curve_model import build_curve_model
from bayesmix.scaling.curves import CurveData, size_data, step_data
from bayesmix.scaling.design import (
    Design,
    PipelineError,
    check_target,
    mixture_design,
    proxy_records,
)
from bayesmix.scaling.imputation import curve_draws, predict_curves, shock_sd
from bayesmix.scaling.pooling import (
    gate_warnings,
    pipeline_record,
    stage3_data,
    target_posterior,
    target_table,
)
from bayesmix.scaling.stages import StageFit, fit_size_law, fit_step_law, run_stage


@renamed_kwargs(**SEED, **PROGRESS)
def nested_fit(
    runs: RunTable,
    *,
    target_n_params: float,
    target_steps: float,
    imputations: int = 4,
    spec="target",
    draws: int = PIPELINE_DRAWS,
    tune: int = PIPELINE_TUNE,
    chains: int = 2,
    random_seed: int | None = None,
    progressbar: bool = False,
    max_step: float | None = None,
    step_fit: StageFit | None = None,
    warn: bool = True,
    max_time: float | None = None,
    target_schedule: Schedule | str | None = None,
) -> Posterior:
    """The mixing law at a target model size and step, fitted through the nested pipeline.

    ``runs``: proxy checkpoints with ``n_params`` and ``step`` (every checkpoint with
    0 < step <= ``max_step`` enters stage 1). ``target_n_params`` (parameters) and
    ``target_steps`` (optimiser steps; tokens = steps x the runs' tokens per step, 1,048,576
    when the runs have no tokens) are the scale to predict. ``imputations`` J, ``spec`` (the
    stage-3 specification, any name or TOML path :func:`bayesmix.inference.fitting.fit` takes),
    ``draws``/``tune``/``chains`` (every stage), ``random_seed`` (None: fresh randomness; the
    entropy used is recorded), ``progressbar``. ``step_fit``: a stage-1 fit from
    :func:`fit_step_law` on the same runs to reuse (e.g. one stage 1 for several target steps).
    ``max_time``: seconds each stage fit may spend sampling again towards its gate (None:
    ``BAYESMIX_MAX_TIME`` or :data:`STAGE_MAX_TIME`; 0: one attempt each;
    :mod:`bayesmix.inference.gate_retry`). ``target_schedule``: the target run's learning-rate
    schedule (a :class:`~bayesmix.data.schedules.Schedule`, or text such as ``"cosine,warmup=2000"``
    whose length defaults to ``target_steps``); None: the proxies' schedule kind ending at the
    target step when the run table gives one, else a constant rate. What was assumed is in
    the notes (:mod:`bayesmix.data.schedules`).

    Rules: fewer than 2 model sizes, or a target step below the fitted checkpoints, raise
    :class:`PipelineError`; a mixture present at fewer than 2 sizes is dropped from stages 2-3
    (its runs still inform stage 1's pooled exponents) and named in the notes.

    Returns one :class:`Posterior` of stage 3 (``chains`` chains) whose predictions add the
    imputations' shared shifts (group ``imputation_shift``, one per posterior draw in turn).
    ``tree.attrs["bayesmix_pipeline"]`` (JSON) holds the target, J, notes and each stage's
    settings, timings and gate report; stage-1/2 failures are warned about
    (``ConvergenceWarning``) there. ``fit_data``/``observed_data`` hold stage 3's table (one
    imputation at the imputations' mean level) and ``log_likelihood`` scores it; group
    ``imputed_data`` holds every imputation.

    The predictive intervals are conservative when the pipeline is right: each mixture's
    imputation error enters stage 3's noise scale along with the run noise (simulated in
    tests/scaling/test_pipeline.py: coverage 0.99-1.0 of nominal 0.9, widths 0.15-0.22 nats
    where the law fitted to the true target-scale runs gives 0.05). Intervals of ``kind="mean"`` are
    narrower.
    """
    wall = time.perf_counter()
    n_star = check_target("target_n_params", target_n_params)
    s_star = check_target("target_steps", target_steps)
    _check_counts(imputations, draws, tune, chains)
    spec = load_spec(spec)  # a bad specification fails before any sampling
    proxies = _proxies(runs, max_step, s_star)
    ss = np.random.SeedSequence(random_seed)
    seeds = iter(int(s) for s in ss.generate_state(2 + 2 * imputations))
    rng = np.random.default_rng(ss.spawn(1)[0])
    kw: dict[str, Any] = {
        "draws": draws,
        "tune": tune,
        "chains": chains,
        "progressbar": progressbar,
        "max_time": stage_max_time(max_time),  # a bad budget fails before any sampling
    }
    seed1 = next(seeds)  # drawn whether or not stage 1 is given, so later seeds do not move
    step_fit_given = step_fit is not None
    step_fit = _stage1(proxies, step_fit, seed1, kw)
    target_sched, stage1 = _impute_step(
        proxies, step_fit, s_star, target_schedule, imputations, rng
    )
    size_fits, imputed = _stage2(proxies, stage1, n_star, seeds, rng, kw)
    tps = step_fit.data.tokens_per_step
    table = target_table(
        stage3_data(imputed), proxies.design.mixtures, n_star, s_star, tps, proxies.notes
    )
    post = _stage3(table, spec, next(seeds), kw)
    target = (n_star, s_star, tps, target_sched)
    record = _record(proxies, target, ss, random_seed, spec, step_fit, size_fits, post)
    record["stage1"]["reused"] = step_fit_given
    record["timings"]["wall_s"] = round(time.perf_counter() - wall, 3)
    post = target_posterior(post, imputed, record)
    if warn:
        for line in gate_warnings(post):
            # stacklevel 3: past the renamed_kwargs wrapper
            warnings.warn(line, ConvergenceWarning, stacklevel=3)
    return post


@dataclass
class _Proxies:
    """The proxy checkpoints stage 1 fits (``table``), their mixtures across sizes
    (``design``), the fitted step range and the notes gathered on the way."""

    table: RunTable
    design: Design
    step_range: tuple[float, float]
    max_step: float | None
    notes: list[str]


def _check_counts(imputations, draws, tune, chains) -> None:
    """J and the sampler's counts are whole numbers >= 1 (before any sampling): the counts by
    :func:`~bayesmix.inference.fitting.check_counts`, as every stage fit checks them."""
    if (
        isinstance(imputations, bool)
        or not isinstance(imputations, (int, np.integer))
        or imputations < 1
    ):
        raise PipelineError(f"imputations must be a whole number >= 1, got {imputations!r}")
    check_counts(draws, tune, chains)


def _proxies(runs: RunTable, max_step: float | None, s_star: float) -> _Proxies:
    """The proxies checked for what the pipeline needs: 2+ model sizes, mixtures run at 2+
    sizes (the others dropped with a note), a target step not below the first checkpoint."""
    table, notes = proxy_records(runs, max_step)
    design = mixture_design(table)
    all_sizes = sorted(set(design.run_size.values()))
    if len(all_sizes) < 2:
        raise PipelineError(
            f"the proxy runs have {len(all_sizes)} model size ({size_label(all_sizes[0])}); "
            "a size law needs at least 2",
            source=runs.source,
            column="n_params",
            hint="add runs of another model size",
        )
    if design.dropped:
        notes.append(
            f"dropped {len(design.dropped)} mixture(s) present at one model size only "
            f"(they still inform stage 1): {', '.join(design.dropped)}"
        )
    if len(design.mixtures) == 0:
        raise PipelineError(
            "no mixture was run at 2 or more model sizes",
            source=runs.source,
            hint="run the same proportions at several sizes",
        )
    if len(design.sizes) < 2:
        raise PipelineError(
            "the mixtures run at several sizes span fewer than 2 sizes",
            source=runs.source,
            column="n_params",
        )
    steps = table.column("step")
    assert steps is not None  # _proxy_records refuses runs without steps
    min_step = float(steps.min())
    if s_star < min_step:
        raise PipelineError(
            f"target step {s_star:g} is below the fitted checkpoints (first step {min_step:g})",
            source=runs.source,
            column="step",
            hint="the step law extrapolates forwards only",
        )
    return _Proxies(table, design, (min_step, float(steps.max())), max_step, notes)


def _stage1(proxies: _Proxies, step_fit: StageFit | None, seed: int, kw: dict) -> StageFit:
    """Stage 1: the step law fitted to every learning curve, or ``step_fit`` checked to be a
    fit of these checkpoints; its notes join the pipeline's."""
    table, design = proxies.table, proxies.design
    if step_fit is None:
        step_fit = run_stage(step_data(table), random_seed=seed, warn=False, **kw)
    elif set(step_fit.data.series) != set(design.run_mixture) or step_fit.data.n_records != len(
        table
    ):
        raise PipelineError(
            "step_fit was fitted to other checkpoints than these runs",
            hint="fit stage 1 on the same runs and max_step",
        )
    proxies.notes += [n for n in step_fit.data.notes if n not in proxies.notes]
    return step_fit


def _impute_step(
    proxies: _Proxies,
    step_fit: StageFit,
    s_star: float,
    target_schedule: Schedule | str | None,
    imputations: int,
    rng: np.random.Generator,
) -> tuple[Schedule | None, xr.DataArray]:
    """The target run's schedule and J draws of every run's losses at the target step
    (draw, run, eval_domain): stage 2's data, with coordinate ``noise_floor`` (draw,
    eval_domain): the noise sd each draw carries (its stage-1 ``sigma``)."""
    try:
        target_sched, sched_notes = resolve_target(
            target_schedule, proxies.table.to_tidy(), s_star, learned=step_fit.data.annealed
        )
    except TypeError as err:
        raise PipelineError(str(err)) from None
    proxies.notes += sched_notes
    picks = _pick(step_fit.n_samples, imputations, rng)
    stage1 = predict_curves(step_fit, s_star, picks, rng, schedule=target_sched)
    # each imputation's noise scales (draw, eval_domain): stage 2's noise floor
    floor = xr.DataArray(step_fit.flat("sigma")[picks], dims=("draw", "eval_domain"))
    return target_sched, stage1.assign_coords(noise_floor=floor)


def _stage2(
    proxies: _Proxies,
    stage1: xr.DataArray,
    n_star: float,
    seeds,
    rng: np.random.Generator,
    kw: dict,
) -> tuple[list[StageFit], xr.DataArray]:
    """Stage 2: one size-law fit per imputation (compiled once, data swapped) and one of its
    predictive draws at the target size: the imputed losses (imputation, mixture, domain)."""
    size_fits, target_losses = [], []
    for j in range(stage1.sizes["draw"]):
        losses = stage1.isel(draw=j)
        sf = fit_size_law(
            losses.drop_vars("noise_floor"),
            proxies.design,
            noise_floor=losses["noise_floor"].values,
            random_seed=next(seeds),
            warn=False,
            **kw,
        )
        size_fits.append(sf)
        pick = _pick(sf.n_samples, 1, rng)
        target_losses.append(predict_curves(sf, n_star, pick, rng).isel(draw=0))
    imputed = xr.concat(target_losses, dim="imputation").assign_coords(
        imputation=np.arange(1, len(target_losses) + 1)
    )
    return size_fits, imputed


def _stage3(table: RunTable, spec: ModelSpec, seed: int, kw: dict) -> Posterior:
    """Stage 3: the mixing law fitted once to the imputed table at the target ``(N*, S*,
    tokens per step)`` (:func:`~bayesmix.scaling.pooling.stage3_data`)."""
    return fit_mixing_law(
        table,
        spec,
        draws=kw["draws"],
        tune=kw["tune"],
        chains=kw["chains"],
        random_seed=seed,
        progressbar=kw["progressbar"],
        warn=False,
        max_time=kw["max_time"],
    )


def _record(
    proxies: _Proxies,
    target: tuple[float, float, float, Schedule | None],
    ss: np.random.SeedSequence,
    random_seed: int | None,
    spec: ModelSpec,
    step_fit: StageFit,
    size_fits: list[StageFit],
    post: Posterior,
) -> dict:
    """The pipeline's record (``bayesmix_pipeline``): the target (N*, S*, tokens per step,
    schedule), J, proxies, each stage's settings, timings and gate report, notes."""
    design = proxies.design
    n_star, s_star, tps, schedule = target
    record = {
        "target": {
            "n_params": n_star,
            "steps": s_star,
            "tokens": s_star * tps,
            "tokens_per_step": tps,
            "schedule": None if schedule is None else schedule.describe(),
        },
        "imputations": len(size_fits),
        "seed": random_seed,
        "entropy": str(ss.entropy),
        "spec": spec.name,
        "proxies": {
            "runs": len(step_fit.data.series),
            "records": step_fit.data.n_records,
            "sizes": list(step_fit.data.groups),
            "mixtures": list(design.mixtures.index),
            "dropped_mixtures": list(design.dropped),
            "max_step": proxies.max_step,
            "step_range": list(proxies.step_range),
            "step_refs": list(step_fit.data.refs),
            "size_ref": float(size_fits[0].data.refs[0]),
        },
        "stage1": step_fit.report(),
        "stage2": [sf.report() for sf in size_fits],
        "stage3": {
            "settings": post.settings,
            "compile_s": post.settings.get("compile_s"),
            "sample_s": post.settings.get("sample_s"),
            "diagnostics": json.loads(post.diagnostics.to_json()),
        },
        "notes": proxies.notes,
    }
    record["timings"] = {
        "stage1_s": round(step_fit.compile_s + step_fit.sample_s, 3),
        "stage2_s": round(sum(sf.compile_s + sf.sample_s for sf in size_fits), 3),
        "stage3_s": round(post.settings["compile_s"] + post.settings["sample_s"], 3),
    }
    record["gate"] = {
        "stage1_ok": step_fit.diagnostics.ok,
        "stage2_ok": [sf.diagnostics.ok for sf in size_fits],
        "stage3_ok": post.diagnostics.ok,
    }
    return record


def _pick(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """k sample indices out of n, without replacement when possible."""
    return rng.choice(n, size=k, replace=k > n)


__all__ = [
    "CHINCHILLA",
    "CurveData",
    "Design",
    "PipelineError",
    "StageFit",
    "build_curve_model",
    "curve_draws",
    "fit_size_law",
    "fit_step_law",
    "gate_warnings",
    "mixture_design",
    "nested_fit",
    "pipeline_record",
    "predict_curves",
    "shock_sd",
    "size_data",
    "step_data",
]
