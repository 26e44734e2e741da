"""Stages 1 and 2 of the nested pipeline: the step law and the size law fitted with MCMC.

Each stage fit builds the curve model of its law (:mod:`bayesmix.scaling.curve_model`) and
fits it along :func:`bayesmix.fit`'s path (:func:`bayesmix.inference.fitting.fit_compiled`):
compiled once per structure in the compile cache (refits swap the ``pm.Data``), sampled with
nutpie until the diagnostics gate passes or the time budget ends.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from dataclasses import dataclass

import numpy as np
import xarray as xr

from bayesmix._compat import PROGRESS, SEED, renamed_kwargs
from bayesmix.data.table import RunTable
from bayesmix.inference.fitting import fit_compiled
from bayesmix.inference.gate_retry import PIPELINE_DRAWS, PIPELINE_TUNE, attempts_note
from bayesmix.inference.nutpie_adapter import import_nutpie
from bayesmix.laws.curve import PowerCurve
from bayesmix.posterior.diagnostics import ConvergenceWarning, Diagnostics
from bayesmix.scaling.curve_model import (
    build_curve_model,
    curve_law,
    model_values,
    structure_key,
)
from bayesmix.scaling.curves import CurveData, size_data, step_data
from bayesmix.scaling.design import Design, proxy_records

#: Sampler settings of stages 1 and 2 (stage 3 uses bayesmix.inference.fitting's own).
TARGET_ACCEPT = 0.9
ADAPTATION = "low_rank"


@dataclass
class StageFit:
    """One MCMC fit of stage 1 or 2: its draws, the curves it fitted, gate report, timings.

    ``posterior``: the sampler's posterior group (xarray Dataset, dims chain x draw x ...);
    ``data``: the :class:`CurveData` it was fitted to; ``settings``: draws, tune, chains,
    seed, sampler.
    """

    posterior: xr.Dataset
    data: CurveData
    diagnostics: Diagnostics
    settings: dict
    compile_s: float
    sample_s: float

    @property
    def n_samples(self) -> int:
        return int(self.posterior.sizes["chain"] * self.posterior.sizes["draw"])

    def flat(self, name: str) -> np.ndarray:
        """Draws of ``name`` as (sample, ...) NumPy, chain and draw merged."""
        da = self.posterior[name]
        da = da.transpose("chain", "draw", *[d for d in da.dims if d not in ("chain", "draw")])
        return da.values.reshape((-1,) + da.shape[2:])

    def report(self) -> dict:
        """JSON-friendly summary: settings, timings, the gate's figures and failures."""
        return {
            "settings": self.settings,
            "compile_s": round(self.compile_s, 3),
            "sample_s": round(self.sample_s, 3),
            "diagnostics": json.loads(self.diagnostics.to_json()),
        }

    @property
    def law(self) -> PowerCurve:
        """The curve law fitted (step law in stage 1, size law in stage 2)."""
        return curve_law(self.data)


@renamed_kwargs(**SEED, **PROGRESS)
def fit_step_law(
    runs: RunTable,
    *,
    max_step: float | None = None,
    draws: int = PIPELINE_DRAWS,
    tune: int = PIPELINE_TUNE,
    chains: int = 2,
    random_seed: int | None = None,
    progressbar: bool = False,
    warn: bool = True,
    max_time: float | None = None,
) -> StageFit:
    """Stage 1: the step law ``L(S) = E + (B / S)^beta`` for every (run, validation domain).

    Every checkpoint with 0 < step <= ``max_step`` enters. Per curve (run r of model size g,
    domain k), with x = log(S_ref[g] / S) and S_ref[g] the geometric mean step of size g:

    * ``loss = level[r,k] + R[r,k] (exp(beta[g,k] x) - 1) + e``, e ~ N(0, sigma[k]);
    * ``log beta[g,k] ~ Normal(a_k + b_g, sd)`` with ``a_k ~ Normal(mu, sd_k)`` (centred: 26
      curves inform each) and size effects ``b_g`` (non-centred): measured on Ye et al.'s 5Mix
      curves (free 3-parameter fits), beta falls from about 0.9 (70M) to 0.5 (410M), so it is
      not shared across sizes;
    * ``R[r,k] ~ Normal(Rm[g,k], cv_k Rm[g,k])``, ``log Rm[g,k] = c_k + d_g``: the reducible
      loss at S_ref, pooled per domain and size; ``level[r,k]`` has a wide data-scaled prior;
    * level and R enter linearly, so they are integrated out exactly per curve (Gaussian, 2 x 2
      algebra on per-curve sums) and NUTS samples only exponents, hyperparameters and noise
      scales (about 100 numbers); :func:`curve_draws` draws them afterwards from their exact
      conditional. Sampling them (2 x 2288 more parameters, Student-t noise) needed 64-128
      leapfrog steps per draw on the 70M curves alone and hit the maximum depth once a shock
      term was added. The price: Normal noise (per-domain scales absorb the noisier domains);
    * checkpoints of one run are correlated. Measured on free fits of Ye et al.'s curves: the
      residuals of one checkpoint correlate 0.6 (mean) across the 22 validation domains, while
      the lag-1 autocorrelation along a curve is negative (-0.24), so an AR(1) term would
      estimate phi <= 0 and is left out; a persistent run-level offset is each curve's own
      level. The shared checkpoint shock is not in the likelihood (every latent or
      integrated-out form of it sent NUTS to its maximum tree depth: shocks trade off against
      the levels and R of all of a run's curves); it enters the predictive
      (:func:`predict_curves`), its scale estimated from each draw's residuals, so an imputed
      checkpoint varies jointly across domains as a real one does. Treating the domains of a
      checkpoint as independent slightly overstates what the data say about the shared
      hyperparameters.

    ``max_time`` (seconds; None: ``BAYESMIX_MAX_TIME`` or 600; 0: one attempt): budget for
    sampling again when the gate fails (:func:`bayesmix.inference.gate_retry.sample_to_gate`); the
    attempts are in ``settings["attempts"]`` and :meth:`StageFit.report`.

    Returns a :class:`StageFit`; :func:`predict_curves` draws its losses at any step.
    """
    table, _ = proxy_records(runs, max_step)
    return run_stage(
        step_data(table),
        draws=draws,
        tune=tune,
        chains=chains,
        random_seed=random_seed,
        progressbar=progressbar,
        warn=warn,
        max_time=max_time,
    )


@renamed_kwargs(**SEED, **PROGRESS)
def fit_size_law(
    losses: xr.DataArray,
    design: Design,
    *,
    noise_floor: np.ndarray | None = None,
    draws: int = PIPELINE_DRAWS,
    tune: int = PIPELINE_TUNE,
    chains: int = 2,
    random_seed: int | None = None,
    progressbar: bool = False,
    warn: bool = True,
    max_time: float | None = None,
) -> StageFit:
    """Stage 2: ``L(N) = E + (A / N)^alpha`` per (mixture, validation domain) across sizes.

    ``losses``: one stage-1 draw (run, eval_domain) at the target step. The model of
    :func:`fit_step_law` with x = log(N_ref / N) (N_ref the geometric mean size), one group:
    ``log alpha[k] ~ Normal(mu, sd)`` per domain for every mixture (2-4 sizes per curve cannot
    tell mixtures' exponents apart), ``R[m,k] ~ Normal(Rm_k, cv_k Rm_k)``, level and R
    integrated out. The run-level shock shared by the domains of one proxy run enters the
    predictive the same way. Compiled once per structure (mixtures, sizes, domains, missing
    pattern); refits swap the data. ``max_time`` as in :func:`fit_step_law`. ``noise_floor``
    (K,): the noise sd stage 1 put into ``losses`` (its draw's ``sigma``), nats per token: the
    size law's noise never goes below it (:class:`~bayesmix.laws.curve.PowerCurve`).
    """
    data = size_data(losses, design)
    if noise_floor is not None:
        data = dataclasses.replace(data, noise_floor=np.asarray(noise_floor, float))
    return run_stage(
        data,
        draws=draws,
        tune=tune,
        chains=chains,
        random_seed=random_seed,
        progressbar=progressbar,
        warn=warn,
        max_time=max_time,
    )


def run_stage(
    data: CurveData, *, draws, tune, chains, random_seed, progressbar, warn, max_time=None
) -> StageFit:
    """The curve law of ``data`` fitted towards the gate along :func:`bayesmix.fit`'s path
    (:func:`bayesmix.inference.fitting.fit_compiled`: the compile cache, nutpie through the
    adapter, the gate driver): a :class:`StageFit`. ``max_time``: the sampling budget
    (:func:`~bayesmix.inference.gate_retry.check_max_time`); ``warn``: a ConvergenceWarning
    naming the stage when the gate still fails."""
    import_nutpie()  # the curve models are sampled with nutpie only
    result, settings = fit_compiled(
        f"curves:{structure_key(data)}",
        lambda: build_curve_model(data),
        model_values(data),
        draws=draws,
        tune=tune,
        chains=chains,
        target_accept=TARGET_ACCEPT,
        adaptation=ADAPTATION,
        random_seed=random_seed,
        progressbar=progressbar,
        max_time=max_time,
    )
    report = result.diagnostics
    fit = StageFit(
        posterior=result.tree["posterior"].to_dataset(),
        data=data,
        diagnostics=report,
        settings=settings,
        compile_s=settings.pop("compile_s"),
        sample_s=settings.pop("sample_s"),
    )
    if warn and not report.ok:
        stage = "stage 1 (step law)" if data.kind == "step" else "stage 2 (size law)"
        note = attempts_note(len(result.attempts), settings["max_time"])
        # stacklevel 4: past fit_step_law/fit_size_law and their renamed_kwargs wrapper
        warnings.warn(f"{stage}: {report.warning()} ({note})", ConvergenceWarning, stacklevel=4)
    return fit
