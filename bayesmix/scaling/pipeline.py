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
default
   ``"default"``) on a run table of the stage-2 draws at (N*, S*), one record per mixture.

:func:`nested_fit` takes J draws of the stage-1 output, fits stage 2 once per draw (one compiled
model, data swapped), takes one stage-2 posterior draw per fit to make J stage-3 data sets, fits
stage 3 on each (compiled once by bayesmix.inference.fitting) and pools the J stage-3 posteriors by
concatenating their chains into one :class:`~bayesmix.posterior.posterior.Posterior`: an ordinary
mixing-law posterior at the target scale, so ``predict``/``intervals``/``optimize``/``decide``
work on it unchanged. The imputations are posterior *predictive* draws (fitted noise included):
they stand for the losses the proxy mixtures would have if run at the target scale, so the
stage-3 noise scale learns the run-to-run and checkpoint scatter a target run has (and each
mixture's imputation error, which makes predictive intervals conservative), and errors shared
by all mixtures (an exponent, a level) show up as differences between imputations.
Pooling draws of J posteriors treats the between-imputation spread with J samples only (no
Rubin (1 + 1/J) inflation): J = 4 is cheap, larger J describes the tails of the extrapolation
better.

Both scaling laws are written ``L(x) = level + R ((x_ref / x)^e - 1)`` with ``x`` the step
(stage 1) or model size (stage 2), ``level`` the loss at the reference ``x_ref`` (geometric
mean of the fitted steps / sizes), ``R = (B / x_ref)^e`` the reducible loss there, so ``E =
level - R`` and ``B = x_ref R^(1/e)``. Given the exponent the loss is linear in (level, R): they
are integrated out exactly per curve (Normal noise, Normal priors) and NUTS samples only the
exponents, the pooled hyperparameters and the noise scales, on log scales; (level, R) are drawn
afterwards from their exact conditional posterior (:func:`curve_draws`). Priors of the
exponents and of R are centred on Chinchilla (Epoch AI's replication, Besiroglu et al. 2024:
``L = 1.82 + 482 / N^0.35 + 2085 / D^0.37``, D in tokens), rewritten in this form: ``B /
D^beta = (B^(1/beta) / D)^beta``, so B = 2085^(1/0.37) = 9.4e8 tokens (about 900 steps of
1,048,576 tokens) and A = 482^(1/0.35) = 4.6e7 parameters; log-scale sds of 0.5 (exponents)
and 1 (R) leave the data in charge (Pile domains differ by more than a factor 2 in R). The
level gets a wide data-scaled prior (the data pin it). E is not constrained (targets are finite
steps and sizes) and gets no Chinchilla prior: per domain and per model size it is not the
total loss's 1.82.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pymc as pm
import pytensor.tensor as pt
import xarray as xr

from bayesmix import errors
from bayesmix._compat import PROGRESS, SEED, renamed_kwargs
from bayesmix.data.schedules import Schedule, features, resolve_target
from bayesmix.data.table import LOSS_PREFIX, MIX_PREFIX, RunTable, as_run_table
from bayesmix.data.ye_logs import TOKENS_PER_STEP, size_label
from bayesmix.inference import compile_cache
from bayesmix.inference.gate_retry import (
    SamplerSettings,
    attempts_note,
    check_max_time,
    sample_to_gate,
    say_progress,
    stage_max_time,
)
from bayesmix.inference.nutpie_adapter import import_nutpie
from bayesmix.io import json_safe
from bayesmix.posterior.diagnostics import ConvergenceWarning, Diagnostics
from bayesmix.posterior.posterior import Posterior

#: Chinchilla, Epoch AI's replication (Besiroglu et al. 2024): L = E + A / N^alpha + B / D^beta
#: with N in parameters and D in tokens (total loss, nats per token).
CHINCHILLA = {"E": 1.82, "A": 482.0, "alpha": 0.35, "B": 2085.0, "beta": 0.37}
#: Sampler settings of stages 1 and 2 (stage 3 uses bayesmix.inference.fitting's own).
TARGET_ACCEPT = 0.9
#: Prior median (log) of the annealing coefficient C per reference length of S2: a cosine
#: decay to 0.1 x peak gains about 0.1 nats at its end (S2 about 1.3 reference lengths there).
ANNEAL_LOC = math.log(0.1)
ADAPTATION = "low_rank"

# structure key -> nutpie compiled model (one per model structure for the process)
_COMPILED: dict[str, Any] = {}  # Any: nutpie's compiled model


class PipelineError(errors.BayesmixError):
    """Input the nested pipeline cannot use (no steps or sizes, one size, a target step below
    the fitted checkpoints, ...)."""


# ---------------------------------------------------------------------------------- results
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


@dataclass(frozen=True)
class CurveData:
    """Learning curves (stage 1) or size curves (stage 2), one per (series, validation domain).

    A *series* is a proxy run (stage 1) or a mixture (stage 2); a curve's points are its
    checkpoints (stage 1, as the forward area S1 of their learning-rate schedule: the step at
    a constant rate) or its proxy sizes (stage 2). Curves of one *group* and domain share
    an exponent: stage 1 groups runs by model size, stage 2 has one group. ``refs`` (G,): the
    reference step / size of each group (geometric mean of its points), so x = log(ref / point)
    per observation (``log_ratio``). Per curve (C): ``curve_series``, ``curve_eval``,
    ``curve_group``, ``curve_offset`` (mean observed loss: losses are centred on it, for
    numerical precision), ``curve_n``, ``curve_sy``, ``curve_syy`` (count, sum and sum of
    squares of centred losses). Per observation: ``y`` (nats per token), ``obs_curve``,
    ``log_ratio``, ``record_idx`` (the proxy checkpoint / run it belongs to: one record shares
    a shock across domains). ``observed`` (series, K). ``series_size`` (series,): model size of
    each run (stage 1) or NaN.
    """

    kind: str
    series: tuple[str, ...]
    groups: tuple[float, ...]
    eval_domains: tuple[str, ...]
    refs: np.ndarray
    curve_series: np.ndarray
    curve_eval: np.ndarray
    curve_group: np.ndarray
    curve_offset: np.ndarray
    curve_n: np.ndarray
    curve_sy: np.ndarray
    curve_syy: np.ndarray
    y: np.ndarray
    obs_curve: np.ndarray
    log_ratio: np.ndarray
    record_idx: np.ndarray
    n_records: int
    observed: np.ndarray
    level_loc: np.ndarray
    level_scale: np.ndarray
    log_exponent_loc: float
    log_reducible_loc: float
    series_size: np.ndarray
    tokens_per_step: float = float(TOKENS_PER_STEP)
    anneal: np.ndarray | None = None
    notes: tuple[str, ...] = ()

    @property
    def point_range(self) -> tuple[float, float]:
        """Smallest and largest step (stage 1: in peak-LR steps S1) or size fitted."""
        pts = self.refs[self.curve_group[self.obs_curve]] / np.exp(self.log_ratio)
        return float(pts.min()), float(pts.max())

    @property
    def annealed(self) -> bool:
        """Whether some fitted checkpoint comes after its learning rate decayed (stage 1 then
        has the annealing term ``- C S2``, :mod:`bayesmix.data.schedules`)."""
        return self.anneal is not None


@dataclass(frozen=True)
class Design:
    """The proxy runs grouped into mixtures: ``run_mixture`` (run -> mixture label),
    ``run_size`` (run -> n_params), ``mixtures`` (DataFrame, index mixture label, columns
    training domains) of the mixtures present at >= 2 sizes, their ``sizes``, and ``dropped``
    (labels present at one size only)."""

    run_mixture: dict
    run_size: dict
    mixtures: pd.DataFrame
    sizes: tuple[float, ...]
    dropped: tuple[str, ...]


# ---------------------------------------------------------------------------------- curves
def _curves(
    kind: str,
    series: Sequence[str],
    groups: Sequence[float] | np.ndarray,
    refs: np.ndarray,
    eval_domains: Sequence[str],
    values: np.ndarray,
    obs_series: np.ndarray,
    obs_group: np.ndarray,
    obs_point: np.ndarray,
    obs_record: np.ndarray,
    n_records: int,
    log_exponent_loc: float,
    log_reducible_loc: float,
    series_size: np.ndarray,
    tokens_per_step: float,
    obs_anneal: np.ndarray | None = None,
    notes: Sequence[str] = (),
) -> CurveData:
    """CurveData from a (point, K) loss matrix whose row i is series ``obs_series[i]`` at step /
    size ``obs_point[i]`` (group ``obs_group[i]``, record ``obs_record[i]``); ``obs_anneal``:
    the annealing area S2 of each row (stage 1, None when no rate decayed), stored relative
    to its group's reference."""
    n_series, n_dom = len(series), len(eval_domains)
    row, col = np.nonzero(~np.isnan(values))
    pair = obs_series[row] * n_dom + col  # curve key
    keys, obs_curve = np.unique(pair, return_inverse=True)
    y = values[row, col]
    n = np.bincount(obs_curve, minlength=len(keys)).astype(float)
    offset = np.bincount(obs_curve, y, len(keys)) / n
    yc = y - offset[obs_curve]
    curve_series, curve_eval = keys // n_dom, keys % n_dom
    curve_group = np.zeros(len(keys), np.int64)
    curve_group[obs_curve] = obs_group[row]
    observed = np.zeros((n_series, n_dom), bool)
    observed[curve_series, curve_eval] = True
    loc, scale = _level_prior(values)
    return CurveData(
        kind=kind,
        series=tuple(series),
        groups=tuple(float(g) for g in groups),
        eval_domains=tuple(eval_domains),
        refs=np.asarray(refs, float),
        curve_series=curve_series.astype(np.int64),
        curve_eval=curve_eval.astype(np.int64),
        curve_group=curve_group,
        curve_offset=offset,
        curve_n=n,
        curve_sy=np.bincount(obs_curve, yc, len(keys)),
        curve_syy=np.bincount(obs_curve, yc**2, len(keys)),
        y=y,
        obs_curve=obs_curve.astype(np.int64),
        log_ratio=np.log(np.asarray(refs, float)[obs_group[row]] / obs_point[row]),
        record_idx=obs_record[row].astype(np.int64),
        n_records=int(n_records),
        observed=observed,
        level_loc=loc,
        level_scale=scale,
        log_exponent_loc=float(log_exponent_loc),
        log_reducible_loc=float(log_reducible_loc),
        series_size=np.asarray(series_size, float),
        tokens_per_step=float(tokens_per_step),
        anneal=(
            None
            if obs_anneal is None
            else np.asarray(obs_anneal, float)[row] / np.asarray(refs, float)[obs_group[row]]
        ),
        notes=tuple(notes),
    )


def _level_prior(losses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Wide data-scaled prior of the level (K,): mean observed loss, 2 x its spread + 0.5."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(losses, axis=0)
        spread = np.nanstd(losses, axis=0)
    mean = np.where(np.isfinite(mean), mean, np.nanmean(losses))
    spread = np.where(np.isfinite(spread), spread, 0.0)
    return mean, 2.0 * spread + 0.5


def _geomean(x) -> float:
    return float(np.exp(np.mean(np.log(np.asarray(x, float)))))


def _values(d: CurveData) -> dict:
    """What changes between refits of one structure (``pm.Data``)."""
    sums = {} if d.annealed else {"curve_sy": d.curve_sy, "curve_syy": d.curve_syy}
    return {
        "y_centred": d.y - d.curve_offset[d.obs_curve],
        "log_ratio": d.log_ratio,
        **sums,
        "level_mean": d.level_loc[d.curve_eval] - d.curve_offset,
        "level_sd": d.level_scale[d.curve_eval],
        "log_reducible_loc": np.asarray(d.log_reducible_loc),
        "log_exponent_loc": np.asarray(d.log_exponent_loc),
        **({"anneal": d.anneal} if d.anneal is not None else {}),
    }


def build_curve_model(d: CurveData) -> pm.Model:
    """The collapsed curve model of :func:`fit_step_law` / :func:`fit_size_law`."""
    n_groups = len(d.groups)
    label = size_label if d.kind == "step" else (lambda g: f"{g:g}")
    coords = {
        "eval_domain": list(d.eval_domains),
        "group": [label(g) for g in d.groups],
        "curve": np.arange(len(d.curve_n)),
        "obs": np.arange(len(d.y)),
    }
    v = _values(d)
    ce, cg, oc = d.curve_eval, d.curve_group, d.obs_curve
    with pm.Model(coords=coords) as model:
        yc = pm.Data("y_centred", v["y_centred"], dims="obs")
        x = pm.Data("log_ratio", v["log_ratio"], dims="obs")
        if not d.annealed:  # with annealing the sums depend on C: computed below
            sy = pm.Data("curve_sy", v["curve_sy"], dims="curve")
            syy = pm.Data("curve_syy", v["curve_syy"], dims="curve")
        m_level = pm.Data("level_mean", v["level_mean"], dims="curve")
        s_level = pm.Data("level_sd", v["level_sd"], dims="curve")
        red_loc = pm.Data("log_reducible_loc", v["log_reducible_loc"])
        exp_loc = pm.Data("log_exponent_loc", v["log_exponent_loc"])

        # Exponent per (group, domain), centred (many curves inform each). Pooling scales are
        # fixed, not learnt: learnt scales near 0 (domains' exponents are similar) made funnels
        # (divergences, R-hat 1.06-2 on the scale parameters), and 2-22 groups inform little.
        e_mu = pm.Normal("log_exponent_mu", exp_loc, 0.5)
        e_dom = pm.Normal("log_exponent_domain", e_mu, 0.3, dims="eval_domain")
        if n_groups > 1:
            log_e = pm.Normal(
                "log_exponent",
                e_dom[None, :] + _group_effect("log_exponent", n_groups, 0.5),
                0.2,
                dims=("group", "eval_domain"),
            )
        else:
            log_e = e_dom[None, :]
        exponent = pm.Deterministic("exponent", pt.exp(log_e), dims=("group", "eval_domain"))
        # reducible loss at the reference: mean per (group, domain), spread across curves
        r_mu = pm.Normal("log_R_mu", red_loc, 1.0)
        r_dom = pm.Normal("log_R_domain", r_mu, 0.7, dims="eval_domain")
        log_rm = r_dom[None, :]
        if n_groups > 1:
            log_rm = log_rm + _group_effect("log_R", n_groups, 1.0)
        r_mean = pm.Deterministic(
            "R_mean", pt.exp(log_rm) * pt.ones((n_groups, 1)), dims=("group", "eval_domain")
        )
        # spread of R across the curves of a (group, domain), relative to its mean; log-normal
        # (a HalfNormal let a chain wander to cv -> 0, where the curves' R are pinned to the
        # mean and NUTS hit its maximum depth on every draw)
        r_cv = pm.Deterministic(
            "R_cv",
            pt.exp(pm.Normal("log_R_cv", math.log(0.25), 0.75, dims="eval_domain")),
            dims="eval_domain",
        )
        log_sigma = pm.Normal(
            "log_sigma", pm.Normal("log_sigma_mu", math.log(0.02), 1.0), 1.0, dims="eval_domain"
        )
        sigma = pm.Deterministic("sigma", pt.exp(log_sigma), dims="eval_domain")

        n_curve = len(d.curve_n)
        if d.annealed:
            # - C S2 (Tissue et al. 2024): C per (group, domain) on the scale of the loss at a
            # decay of one reference length; y + C S2 then follows the power law in S1
            c_mu = pm.Normal("log_C_mu", ANNEAL_LOC, 1.0)
            log_c = pm.Normal("log_C_domain", c_mu, 0.5, dims="eval_domain")[None, :]
            if n_groups > 1:
                log_c = log_c + _group_effect("log_C", n_groups, 0.5)
            c_gain = pm.Deterministic(
                "C", pt.exp(log_c) * pt.ones((n_groups, 1)), dims=("group", "eval_domain")
            )
            s2 = pm.Data("anneal", v["anneal"], dims="obs")
            yc = yc + c_gain[cg[oc], ce[oc]] * s2
            sy = pt.zeros(n_curve)[oc].inc(yc)
            syy = pt.zeros(n_curve)[oc].inc(yc**2)
        xo = pt.expm1(exponent[cg[oc], ce[oc]] * x)
        sx = pt.zeros(n_curve)[oc].inc(xo)
        sxx = pt.zeros(n_curve)[oc].inc(xo**2)
        sxy = pt.zeros(n_curve)[oc].inc(xo * yc)
        m_r = r_mean[cg, ce]
        s_r = r_cv[ce] * m_r
        pm.Potential(
            "loss",
            pt.sum(
                _collapsed_loglik(
                    pt, d.curve_n, sx, sxx, sy, sxy, syy, sigma[ce], m_level, s_level, m_r, s_r
                )
            ),
        )
    return model


def _group_effect(name: str, n_groups: int, scale: float) -> pt.TensorVariable:
    """(G, 1) offsets of groups 2..G from group 1 (which is 0), each ~ Normal(0, scale).

    Group 1 as the reference keeps the domain effects identified (sum-free offsets would trade
    off against them) and needs no hyper-sd, which 2-4 groups could not inform.
    """
    rest = pm.Normal(f"{name}_group", 0.0, scale, shape=n_groups - 1)
    return pt.concatenate([pt.zeros(1), rest])[:, None]


def _posterior_2x2(xp, n, sx, sxx, sy, sxy, sigma, m1, s1, m2, s2):
    """Posterior precision (a11, a12, a22) and precision-weighted mean (b1, b2) of the two
    linear parameters (level, R) of each curve: Normal priors N(m, s^2), Normal noise sigma."""
    w = 1.0 / sigma**2
    a11 = 1.0 / s1**2 + n * w
    a12 = sx * w
    a22 = 1.0 / s2**2 + sxx * w
    b1 = m1 / s1**2 + sy * w
    b2 = m2 / s2**2 + sxy * w
    return a11, a12, a22, b1, b2


def _collapsed_loglik(xp, n, sx, sxx, sy, sxy, syy, sigma, m1, s1, m2, s2):
    """log p(y_curve | exponent, sigma, priors) per curve with level and R integrated out.

    y = level + R x + e, e ~ N(0, sigma^2), level ~ N(m1, s1^2), R ~ N(m2, s2^2): the Gaussian
    marginal written with the 2 x 2 posterior precision A and b (Woodbury), from per-curve sums.
    """
    a11, a12, a22, b1, b2 = _posterior_2x2(xp, n, sx, sxx, sy, sxy, sigma, m1, s1, m2, s2)
    det = a11 * a22 - a12**2
    quad = (a22 * b1**2 - 2.0 * a12 * b1 * b2 + a11 * b2**2) / det
    return (
        -0.5 * n * xp.log(2.0 * np.pi * sigma**2)
        - xp.log(s1)
        - xp.log(s2)
        - 0.5 * xp.log(det)
        - 0.5 * (syy / sigma**2 + m1**2 / s1**2 + m2**2 / s2**2 - quad)
    )


def curve_draws(
    fit: StageFit, samples: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(level, R) of every curve for posterior samples (sample, curve): drawn from their exact
    conditional Normal given each sample's exponents, noise and priors; level in nats per token
    (offset added back)."""
    d = fit.data
    v = _values(d)
    ex = fit.flat("exponent")[samples]  # (S, G, K)
    sigma = fit.flat("sigma")[samples][:, d.curve_eval]  # (S, C)
    m_r = fit.flat("R_mean")[samples][:, d.curve_group, d.curve_eval]
    s_r = fit.flat("R_cv")[samples][:, d.curve_eval] * m_r
    xo = np.expm1(ex[:, d.curve_group[d.obs_curve], d.curve_eval[d.obs_curve]] * d.log_ratio)
    yc = v["y_centred"] + annealing_gain(fit, samples)  # (S, obs)
    n_curve = len(d.curve_n)
    sums = np.zeros((4, len(samples), n_curve))
    for i in range(len(samples)):
        sums[0, i] = np.bincount(d.obs_curve, xo[i], n_curve)
        sums[1, i] = np.bincount(d.obs_curve, xo[i] ** 2, n_curve)
        sums[2, i] = np.bincount(d.obs_curve, xo[i] * yc[i], n_curve)
        sums[3, i] = np.bincount(d.obs_curve, yc[i], n_curve)
    a11, a12, a22, b1, b2 = _posterior_2x2(
        np,
        d.curve_n,
        sums[0],
        sums[1],
        sums[3],
        sums[2],
        sigma,
        v["level_mean"],
        v["level_sd"],
        m_r,
        s_r,
    )
    det = a11 * a22 - a12**2
    c11, c12, c22 = a22 / det, -a12 / det, a11 / det  # covariance = A^-1
    mean1 = c11 * b1 + c12 * b2
    mean2 = c12 * b1 + c22 * b2
    l11 = np.sqrt(c11)
    l21 = c12 / l11
    l22 = np.sqrt(np.clip(c22 - l21**2, 0.0, None))
    z1, z2 = rng.standard_normal((2,) + mean1.shape)
    return d.curve_offset + mean1 + l11 * z1, mean2 + l21 * z1 + l22 * z2


def annealing_gain(fit: StageFit, samples: np.ndarray, anneal=None) -> np.ndarray:
    """``C S2`` per sample and observation (S, obs), nats per token: what the annealing of the
    learning rate took off each fitted checkpoint (0 without the term). ``anneal``: other S2
    values (relative to the group references) of shape (obs,) or (curve,) to evaluate instead,
    with ``obs`` replaced by ``curve``."""
    d = fit.data
    per_curve = anneal is not None
    s2 = d.anneal if anneal is None else np.asarray(anneal, float)
    n_out = len(d.curve_n) if per_curve else len(d.y)
    if not d.annealed or s2 is None:
        return np.zeros((len(samples), n_out))
    c = fit.flat("C")[samples]  # (S, G, K)
    group = d.curve_group if per_curve else d.curve_group[d.obs_curve]
    domain = d.curve_eval if per_curve else d.curve_eval[d.obs_curve]
    return c[:, group, domain] * s2


def shock_sd(d: CurveData, residuals: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Scale of the shock shared by the domains of one record, per sample (S,).

    Method of moments on each sample's residuals (S, obs): the precision-weighted mean
    residual of a record has variance tau^2 + 1 / sum_k sigma_k^-2; tau^2 is the excess
    over the second term, averaged over records (0 when there is none).
    """
    w = 1.0 / sigma[:, d.curve_eval[d.obs_curve]] ** 2  # (S, obs)
    sw = np.zeros((len(w), d.n_records))
    swe = np.zeros((len(w), d.n_records))
    for i in range(len(w)):
        sw[i] = np.bincount(d.record_idx, w[i], d.n_records)
        swe[i] = np.bincount(d.record_idx, w[i] * residuals[i], d.n_records)
    ok = sw > 0
    safe = np.where(ok, sw, 1.0)
    excess = np.where(ok, (swe / safe) ** 2 - 1.0 / safe, 0.0).sum(1) / ok.sum(1)
    return np.sqrt(np.clip(excess, 0.0, None))


def predict_curves(
    fit: StageFit,
    point: float,
    samples: np.ndarray,
    rng: np.random.Generator,
    kind: str = "predictive",
    schedule: Schedule | None = None,
) -> xr.DataArray:
    """Losses of every series at step / size ``point`` for posterior ``samples`` (indices into
    the flattened chain x draw): DataArray (draw, series, eval_domain), nats per token; the
    series dim is ``run`` (stage 1) or ``mixture`` (stage 2).

    Stage 1: ``schedule`` is the learning-rate schedule of the run being predicted (None: a
    constant rate): the curve is read at its forward area S1 and, when the fit has the
    annealing term, lowered by ``C S2`` (:mod:`bayesmix.data.schedules`).

    ``"mean"``: the curve ``level + R (exp(e x*) - 1)``, x* = log(ref / point), with (level, R)
    drawn from their conditional posterior. ``"predictive"`` adds the noise of a new record:
    Normal noise per domain and a shock shared by the series' domains, with the scale
    :func:`shock_sd` finds in the same sample's residuals (a new checkpoint in stage 1, a new
    run in stage 2). Pairs with no observed loss are NaN.
    """
    if kind not in ("predictive", "mean"):
        raise PipelineError(f"kind must be 'predictive' or 'mean', got {kind!r}")
    d = fit.data
    level, r = curve_draws(fit, samples, rng)  # (S, C)
    ex = fit.flat("exponent")[samples][:, d.curve_group, d.curve_eval]  # (S, C)
    s1_star, s2_star = float(point), 0.0
    if d.kind == "step" and schedule is not None:
        s1, s2 = schedule.areas([point])
        s1_star, s2_star = float(s1[0]), float(s2[0])
    x_star = np.log(d.refs[d.curve_group] / s1_star)
    curve_val = level + r * np.expm1(ex * x_star)
    if s2_star > 0:
        curve_val -= annealing_gain(fit, samples, s2_star / d.refs[d.curve_group])
    n_s, n_series, n_dom = len(samples), len(d.series), len(d.eval_domains)
    if kind == "predictive":
        sigma = fit.flat("sigma")[samples]  # (S, K)
        xo = np.expm1(
            fit.flat("exponent")[samples][:, d.curve_group[d.obs_curve], d.curve_eval[d.obs_curve]]
            * d.log_ratio
        )
        resid = (
            d.y + annealing_gain(fit, samples) - (level[:, d.obs_curve] + r[:, d.obs_curve] * xo)
        )
        tau = shock_sd(d, resid, sigma)
        shock = tau[:, None] * rng.standard_normal((n_s, n_series))
        curve_val = (
            curve_val
            + shock[:, d.curve_series]
            + sigma[:, d.curve_eval] * rng.standard_normal(curve_val.shape)
        )
    out = np.full((n_s, n_series, n_dom), np.nan)
    out[:, d.curve_series, d.curve_eval] = curve_val
    dim = "run" if d.kind == "step" else "mixture"
    coords: dict[str, Any] = {dim: list(d.series), "eval_domain": list(d.eval_domains)}
    if d.kind == "step":
        coords["n_params"] = (dim, d.series_size)
    return xr.DataArray(
        out,
        dims=("draw", dim, "eval_domain"),
        coords=coords,
        attrs={
            "units": "nats per token",
            ("step" if d.kind == "step" else "n_params"): float(point),
        },
    )


# ---------------------------------------------------------------------------------- stage 1
def step_data(table: RunTable) -> CurveData:
    """Stage-1 curves from a table of checkpoints (steps > 0, model sizes present): one curve
    per (run, validation domain); one exponent per (model size, domain)."""
    tidy = table.to_tidy()
    runs = tuple(table.runs)
    order = {r: i for i, r in enumerate(runs)}
    tidy = tidy.assign(_r=tidy["run"].map(order)).sort_values(["_r", "step"], kind="stable")
    n_params = (
        tidy.drop_duplicates("run")
        .set_index("run")["n_params"]
        .loc[list(runs)]
        .to_numpy(dtype=float)
    )
    sizes = np.unique(n_params)
    run_size = np.searchsorted(sizes, n_params)
    record_run = tidy["_r"].to_numpy(dtype=np.int64)
    step = tidy["step"].to_numpy(dtype=float)
    s1, s2, notes = features(tidy)
    record_size = run_size[record_run]
    refs = np.array([_geomean(s1[record_size == g]) for g in range(len(sizes))])
    tokens = tidy["tokens"].to_numpy(dtype=float) if "tokens" in tidy.columns else None
    tps = (
        float(np.median(tokens / step))
        if tokens is not None and np.all(np.isfinite(tokens))
        else float(TOKENS_PER_STEP)
    )
    b_tokens = CHINCHILLA["B"] ** (1.0 / CHINCHILLA["beta"])
    reducible = CHINCHILLA["beta"] * (math.log(b_tokens) - math.log(_geomean(step) * tps))
    values = tidy[[LOSS_PREFIX + d for d in table.eval_domains]].to_numpy(dtype=float)
    return _curves(
        "step",
        runs,
        sizes,
        refs,
        table.eval_domains,
        values,
        record_run,
        record_size,
        s1,
        np.arange(len(step)),
        len(step),
        math.log(CHINCHILLA["beta"]),
        reducible,
        n_params,
        tps,
        s2 if np.any(s2 > 0) else None,
        notes,
    )


@renamed_kwargs(**SEED, **PROGRESS)
def fit_step_law(
    runs: RunTable,
    *,
    max_step: float | None = None,
    draws: int = 500,
    tune: int = 500,
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
    table, _ = _proxy_records(runs, max_step)
    return _run_stage(
        step_data(table),
        draws=draws,
        tune=tune,
        chains=chains,
        random_seed=random_seed,
        progressbar=progressbar,
        warn=warn,
        max_time=max_time,
    )


# ---------------------------------------------------------------------------------- stage 2
def size_data(losses: xr.DataArray, design: Design) -> CurveData:
    """Stage-2 curves from stage-1 losses (run, eval_domain) of the runs in ``design``: one
    curve per (mixture, validation domain) over the model sizes; one exponent per domain."""
    mixtures = tuple(design.mixtures.index)
    mix_of = {m: i for i, m in enumerate(mixtures)}
    runs = [str(r) for r in losses["run"].values if design.run_mixture.get(str(r)) in mix_of]
    vals = losses.sel(run=runs).transpose("run", "eval_domain").values
    size = np.array([design.run_size[r] for r in runs])
    size_ref = _geomean(design.sizes)
    a_params = CHINCHILLA["A"] ** (1.0 / CHINCHILLA["alpha"])
    reducible = CHINCHILLA["alpha"] * (math.log(a_params) - math.log(size_ref))
    return _curves(
        "size",
        mixtures,
        (size_ref,),
        np.array([size_ref]),
        [str(v) for v in losses["eval_domain"].values],
        vals,
        np.array([mix_of[design.run_mixture[r]] for r in runs]),
        np.zeros(len(runs), np.int64),
        size,
        np.arange(len(runs)),
        len(runs),
        math.log(CHINCHILLA["alpha"]),
        reducible,
        np.full(len(mixtures), np.nan),
        TOKENS_PER_STEP,
    )


@renamed_kwargs(**SEED, **PROGRESS)
def fit_size_law(
    losses: xr.DataArray,
    design: Design,
    *,
    draws: int = 500,
    tune: int = 500,
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
    pattern); refits swap the data. ``max_time`` as in :func:`fit_step_law`.
    """
    return _run_stage(
        size_data(losses, design),
        draws=draws,
        tune=tune,
        chains=chains,
        random_seed=random_seed,
        progressbar=progressbar,
        warn=warn,
        max_time=max_time,
    )


# ---------------------------------------------------------------------------------- sampling
_STRUCTURE = (
    "kind",
    "series",
    "groups",
    "eval_domains",
    "curve_series",
    "curve_eval",
    "curve_group",
    "curve_n",
    "obs_curve",
    "record_idx",
    "n_records",
    "annealed",
)


def _structure_key(d: CurveData) -> str:
    """Equal keys share one compiled model: everything that is not ``pm.Data``."""
    h = hashlib.sha256()
    for name in _STRUCTURE:
        value = getattr(d, name)
        h.update(name.encode())
        h.update(
            np.ascontiguousarray(value).tobytes() + str(value.shape).encode()
            if isinstance(value, np.ndarray)
            else repr(value).encode()
        )
    return h.hexdigest()[:16]


def _run_stage(
    data: CurveData, *, draws, tune, chains, random_seed, progressbar, warn, max_time=None
) -> StageFit:
    nutpie = import_nutpie()

    for name, value in (("draws", draws), ("tune", tune), ("chains", chains)):
        if int(value) < 1:
            raise PipelineError(f"{name} must be >= 1, got {value}")
    budget = check_max_time(max_time)
    key = _structure_key(data)
    start = time.perf_counter()
    compiled = _COMPILED.get(key)
    if compiled is None:
        compiled = compile_cache.compile_model(build_curve_model(data), structure=key)
        _COMPILED[key] = compiled
    compiled = compiled.with_data(**_values(data))
    compile_s = time.perf_counter() - start

    def sample_once(attempt: SamplerSettings, seed: int | None):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=RuntimeWarning)
            tree = nutpie.sample(
                compiled,
                draws=attempt.draws,
                tune=attempt.tune,
                chains=attempt.chains,
                seed=seed,
                progress_bar=progressbar,
                save_warmup=False,
                adaptation=ADAPTATION,
                target_accept=attempt.target_accept,
            )
        return tree, None

    result = sample_to_gate(
        sample_once,
        SamplerSettings(int(draws), int(tune), TARGET_ACCEPT, int(chains)),
        max_time=budget,
        seed=random_seed,
        progress=say_progress if progressbar else None,
    )
    report = result.diagnostics
    settings = {**result.settings(budget), "sampler": "nutpie", "adaptation": ADAPTATION}
    fit = StageFit(
        posterior=result.tree["posterior"].to_dataset(),
        data=data,
        diagnostics=report,
        settings=settings,
        compile_s=compile_s,
        sample_s=result.sample_s,
    )
    if warn and not report.ok:
        stage = "stage 1 (step law)" if data.kind == "step" else "stage 2 (size law)"
        note = attempts_note(len(result.attempts), budget)
        # stacklevel 4: past fit_step_law/fit_size_law and their renamed_kwargs wrapper
        warnings.warn(f"{stage}: {report.warning()} ({note})", ConvergenceWarning, stacklevel=4)
    return fit


def compiled_count() -> int:
    """How many stage-1/2 model structures are compiled in this process."""
    return len(_COMPILED)


# ---------------------------------------------------------------------------------- inputs
def _proxy_records(runs: RunTable, max_step: float | None) -> tuple[RunTable, list[str]]:
    """The checkpoints stage 1 fits: step > 0 (and <= ``max_step``), model size present."""
    notes: list[str] = []
    runs = as_run_table(runs)
    if not runs.has_steps:
        raise PipelineError(
            "the runs have no 'step' column: the step law needs checkpoints",
            source=runs.source,
            column="step",
            hint="add the training step of every record",
        )
    if runs.column("n_params") is None:
        raise PipelineError(
            "the runs have no 'n_params' column: the size law needs model sizes",
            source=runs.source,
            column="n_params",
            hint="add the model size of every run",
        )
    tidy = runs.to_tidy()
    keep = tidy["step"].to_numpy() > 0
    if (~keep).any():
        notes.append(
            f"left out {int((~keep).sum())} records at step 0 (a power law in steps "
            "is undefined there)"
        )
    if max_step is not None:
        if not max_step > 0:
            raise PipelineError(f"max_step must be positive, got {max_step:g}")
        late = keep & (tidy["step"].to_numpy() > max_step)
        if late.any():
            notes.append(f"left out {int(late.sum())} records after step {max_step:g}")
        keep &= tidy["step"].to_numpy() <= max_step
    if not keep.any():
        raise PipelineError(
            "no checkpoint left to fit"
            + (f" at steps <= {max_step:g}" if max_step is not None else ""),
            source=runs.source,
            column="step",
            hint="raise --max-step" if max_step is not None else None,
        )
    sel = tidy[keep]
    table = RunTable(sel, runs.train_domains, runs.eval_domains, source=runs.source)
    return table, notes


def mixture_design(table: RunTable) -> Design:
    """Group runs into mixtures by identical proportions (to 1e-6) across model sizes.

    A mixture's label is the part of its run ids after the first ``_`` when its runs agree on
    it and it is unique (Ye et al.'s ``70M_3`` -> ``3``), else ``mix<i>``. Mixtures present at
    fewer than 2 sizes cannot inform a size law: they are listed in ``dropped``.
    """
    mix = table.mixtures
    sizes_by_run = table.to_tidy().drop_duplicates("run").set_index("run")["n_params"].astype(float)
    keys = [tuple(np.round(row, 6)) for row in mix.to_numpy(dtype=float)]
    groups: dict[tuple, list[str]] = {}
    for run, key in zip(mix.index, keys):
        groups.setdefault(key, []).append(str(run))
    suffixes = []
    for members in groups.values():
        tails = {r.split("_", 1)[1] if "_" in r else None for r in members}
        suffixes.append(tails.pop() if len(tails) == 1 else None)
    if None in suffixes or len(set(suffixes)) != len(suffixes):
        labels = [f"mix{i}" for i in range(len(groups))]
    else:
        labels = [str(s) for s in suffixes]  # no None here
    run_mixture: dict = {}
    run_size: dict = {}
    kept: list = []
    dropped: list = []
    for label, members in zip(labels, groups.values()):
        for r in members:
            run_mixture[r] = label
            run_size[r] = float(sizes_by_run[r])
        n_sizes = len({run_size[r] for r in members})
        (kept if n_sizes >= 2 else dropped).append((label, members[0]))
    frame = mix.loc[[first for _, first in kept]]
    frame.index = pd.Index([label for label, _ in kept], name="mixture")
    sizes = tuple(
        sorted({run_size[r] for label, _ in kept for r in run_mixture if run_mixture[r] == label})
    )
    return Design(
        run_mixture=run_mixture,
        run_size=run_size,
        mixtures=frame,
        sizes=sizes,
        dropped=tuple(label for label, _ in dropped),
    )


def _check_target(name: str, value) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise PipelineError(f"{name} must be a number, got {value!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise PipelineError(f"{name} must be a positive number, got {value:g}")
    return value


# ---------------------------------------------------------------------------------- the pipeline
@renamed_kwargs(**SEED, **PROGRESS)
def nested_fit(
    runs: RunTable,
    *,
    target_n_params: float,
    target_steps: float,
    imputations: int = 4,
    spec="default",
    draws: int = 500,
    tune: int = 500,
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

    Returns one :class:`Posterior` with J x ``chains`` chains (coordinate ``imputation`` along
    ``chain``); its diagnostics are the union of the J stage-3 reports (worst figures, every
    failure prefixed with its imputation). ``tree.attrs["bayesmix_pipeline"]`` (JSON) holds the
    target, J, notes and each stage's settings, timings and gate report; stage-1/2 failures
    are warned about (``ConvergenceWarning``) there. ``fit_data``/``observed_data`` hold the
    mean of the J imputed target-scale tables (and ``log_likelihood`` scores it); group
    ``imputed_data`` holds every imputation.

    The predictive intervals are conservative when the pipeline is right: each mixture's
    imputation error enters stage 3's noise scale along with the run noise (simulated in
    tests/scaling/test_pipeline.py: coverage 1.0 of nominal 0.9, widths 0.17-0.19 nats where the law
    fitted to the true target-scale runs gives 0.05). Intervals of ``kind="mean"`` are
    narrower.
    """
    from bayesmix.inference.fitting import fit as fit_mixing_law
    from bayesmix.model.spec import load_spec

    wall = time.perf_counter()
    n_star = _check_target("target_n_params", target_n_params)
    s_star = _check_target("target_steps", target_steps)
    if (
        isinstance(imputations, bool)
        or not isinstance(imputations, (int, np.integer))
        or imputations < 1
    ):
        raise PipelineError(f"imputations must be a whole number >= 1, got {imputations!r}")
    for name, value in (("draws", draws), ("tune", tune), ("chains", chains)):
        if int(value) < 1:
            raise PipelineError(f"{name} must be >= 1, got {value}")
    spec = load_spec(spec)  # a bad specification fails before any sampling
    table, notes = _proxy_records(runs, max_step)
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

    ss = np.random.SeedSequence(random_seed)
    seeds = iter(int(s) for s in ss.generate_state(2 + 2 * imputations))
    rng = np.random.default_rng(ss.spawn(1)[0])
    stage_kw: dict[str, Any] = {
        "draws": draws,
        "tune": tune,
        "chains": chains,
        "progressbar": progressbar,
        "max_time": stage_max_time(max_time),  # a bad budget fails before any sampling
    }

    # stage 1: one fit of every learning curve (or the one given)
    seed1 = next(seeds)
    step_fit_given = step_fit is not None
    if step_fit is None:
        step_fit = _run_stage(step_data(table), random_seed=seed1, warn=False, **stage_kw)
    else:
        if set(step_fit.data.series) != set(design.run_mixture) or step_fit.data.n_records != len(
            table
        ):
            raise PipelineError(
                "step_fit was fitted to other checkpoints than these runs",
                hint="fit stage 1 on the same runs and max_step",
            )
    notes += [n for n in step_fit.data.notes if n not in notes]
    try:
        target_sched, sched_notes = resolve_target(
            target_schedule, table.to_tidy(), s_star, learned=step_fit.data.annealed
        )
    except TypeError as err:
        raise PipelineError(str(err)) from None
    notes += sched_notes
    picks1 = _pick(step_fit.n_samples, imputations, rng)
    stage1_losses = predict_curves(
        step_fit, s_star, picks1, rng, schedule=target_sched
    )  # (J, run, K)

    # stage 2: one size-law fit per imputation (compiled once, data swapped)
    size_fits, target_losses = [], []
    for j in range(imputations):
        sf = fit_size_law(
            stage1_losses.isel(draw=j), design, random_seed=next(seeds), warn=False, **stage_kw
        )
        size_fits.append(sf)
        pick = _pick(sf.n_samples, 1, rng)
        target_losses.append(predict_curves(sf, n_star, pick, rng).isel(draw=0))

    # stage 3: the mixing law on each imputed table at (N*, S*)
    tps = step_fit.data.tokens_per_step
    tables = [
        _target_table(loss, design.mixtures, n_star, s_star, tps, j, notes)
        for j, loss in enumerate(target_losses)
    ]
    posts = []
    for tab in tables:
        posts.append(
            fit_mixing_law(
                tab,
                spec,
                draws=draws,
                tune=tune,
                chains=chains,
                random_seed=next(seeds),
                progressbar=progressbar,
                warn=False,
                max_time=stage_kw["max_time"],
            )
        )

    # pool
    imputed = xr.concat(target_losses, dim="imputation").assign_coords(
        imputation=np.arange(1, imputations + 1)
    )
    mean_table = _target_table(
        imputed.mean("imputation"), design.mixtures, n_star, s_star, tps, None, []
    )
    record = {
        "target": {
            "n_params": n_star,
            "steps": s_star,
            "tokens": s_star * tps,
            "tokens_per_step": tps,
            "schedule": None if target_sched is None else target_sched.describe(),
        },
        "imputations": int(imputations),
        "seed": random_seed,
        "entropy": str(ss.entropy),
        "spec": spec.name,
        "proxies": {
            "runs": len(step_fit.data.series),
            "records": step_fit.data.n_records,
            "sizes": list(step_fit.data.groups),
            "mixtures": list(design.mixtures.index),
            "dropped_mixtures": list(design.dropped),
            "max_step": max_step,
            "step_range": [min_step, float(steps.max())],
            "step_refs": list(step_fit.data.refs),
            "size_ref": float(size_fits[0].data.refs[0]),
        },
        "stage1": {**step_fit.report(), "reused": step_fit_given},
        "stage2": [sf.report() for sf in size_fits],
        "stage3": [
            {
                "settings": p.settings,
                "compile_s": p.settings.get("compile_s"),
                "sample_s": p.settings.get("sample_s"),
                "diagnostics": json.loads(p.diagnostics.to_json()),
            }
            for p in posts
        ],
        "notes": notes,
    }
    record["timings"] = {
        "stage1_s": round(step_fit.compile_s + step_fit.sample_s, 3),
        "stage2_s": round(sum(sf.compile_s + sf.sample_s for sf in size_fits), 3),
        "stage3_s": round(sum(p.settings["compile_s"] + p.settings["sample_s"] for p in posts), 3),
        "wall_s": round(time.perf_counter() - wall, 3),
    }
    record["gate"] = {
        "stage1_ok": step_fit.diagnostics.ok,
        "stage2_ok": [sf.diagnostics.ok for sf in size_fits],
        "stage3_ok": [p.diagnostics.ok for p in posts],
    }
    post = _pool(posts, spec, mean_table, imputed, record)
    if warn:
        for line in gate_warnings(post):
            # stacklevel 3: past the renamed_kwargs wrapper
            warnings.warn(line, ConvergenceWarning, stacklevel=3)
    return post


def _pick(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """k sample indices out of n, without replacement when possible."""
    return rng.choice(n, size=k, replace=k > n)


def _target_table(
    losses: xr.DataArray,
    mixtures: pd.DataFrame,
    n_star: float,
    s_star: float,
    tps: float,
    j: int | None,
    notes: list[str],
) -> RunTable:
    """A run table of one record per mixture at (n_star, s_star) with the given losses."""
    vals = losses.sel(mixture=list(mixtures.index)).transpose("mixture", "eval_domain").values
    bad = vals <= 0
    if bad.any():  # a non-positive loss is not a loss; cannot happen with sane fits
        notes.append(
            f"imputation {j + 1 if j is not None else '?'}: {int(bad.sum())} imputed "
            "losses <= 0 raised to 1e-3"
        )
        vals = np.where(bad, 1e-3, vals)
    frame = {
        "run": list(mixtures.index),
        "n_params": n_star,
        "step": s_star,
        "tokens": s_star * tps,
    }
    for d in mixtures.columns:
        frame[MIX_PREFIX + d] = mixtures[d].to_numpy(dtype=float)
    for i, d in enumerate(losses["eval_domain"].values):
        frame[LOSS_PREFIX + str(d)] = vals[:, i]
    source = (
        "nested pipeline, imputation mean" if j is None else f"nested pipeline, imputation {j + 1}"
    )
    return RunTable.from_frame(pd.DataFrame(frame), source=source)


def _pool(
    posts: list[Posterior], spec, mean_table: RunTable, imputed: xr.DataArray, record: dict
) -> Posterior:
    """One Posterior from the J stage-3 posteriors: chains concatenated and renumbered. Fits
    that retried towards their gate (:mod:`bayesmix.inference.gate_retry`) may hold more draws: each
    imputation keeps the fewest number of draws, evenly spaced, so that all weigh the same."""
    n_chain = posts[0].tree["posterior"].sizes["chain"]
    n_draw = min(p.tree["posterior"].sizes["draw"] for p in posts)
    groups = {}
    for name in ("posterior", "sample_stats"):
        parts = [_thin(p.tree[name].to_dataset(), n_draw) for p in posts]
        ds = xr.concat(parts, dim="chain", combine_attrs="drop_conflicts")
        n = ds.sizes["chain"]
        groups[name] = ds.assign_coords(
            chain=np.arange(n),
            imputation=("chain", np.repeat(np.arange(1, len(posts) + 1), n_chain)),
        )
    diag = dataclasses.replace(union_diagnostics([p.diagnostics for p in posts]), draws=n_draw)
    settings = dict(posts[0].settings)
    settings.pop("attempts", None)  # each imputation's attempts: in the record's stage3
    settings.update(
        {
            "chains": int(groups["posterior"].sizes["chain"]),
            "draws": n_draw,
            "seed": record["seed"],
            "compile_s": round(sum(p.settings["compile_s"] for p in posts), 3),
            "sample_s": round(sum(p.settings["sample_s"] for p in posts), 3),
            "pipeline": "nested",
            "imputations": record["imputations"],
            "target_n_params": record["target"]["n_params"],
            "target_steps": record["target"]["steps"],
            "target_tokens": record["target"]["tokens"],
        }
    )
    post = Posterior.from_fit(xr.DataTree.from_dict(groups), spec, mean_table, diag, settings)
    post.tree["imputed_data"] = xr.DataTree(
        xr.Dataset(
            {
                "loss": imputed.rename(mixture="run").assign_attrs(
                    units="nats per token",
                    description="stage-3 data of each imputation: stage-2 predictive draws at the "
                    "target size and step",
                )
            }
        )
    )
    post.tree.attrs["bayesmix_pipeline"] = json.dumps(json_safe(record), sort_keys=True)
    return post


def _thin(ds: xr.Dataset, n_draw: int) -> xr.Dataset:
    """``n_draw`` evenly spaced draws of ``ds`` (all when it has that many), renumbered 0..n-1
    so that datasets of several fits align along ``draw``."""
    keep = np.linspace(0, ds.sizes["draw"] - 1, n_draw).round().astype(int)
    return ds.isel(draw=keep).assign_coords(draw=np.arange(n_draw))


def union_diagnostics(reports: Sequence[Diagnostics]) -> Diagnostics:
    """The worst figures of several fits' gate reports and all their failures (prefixed with
    ``imputation j``); chains add up."""

    def key_max(r):
        return r.max_rhat if math.isfinite(r.max_rhat) else -math.inf

    jr = max(range(len(reports)), key=lambda j: key_max(reports[j]))
    je = min(range(len(reports)), key=lambda j: reports[j].min_ess_bulk)
    bfmi = [r.min_bfmi for r in reports if math.isfinite(r.min_bfmi)]
    return Diagnostics(
        chains=sum(r.chains for r in reports),
        draws=reports[0].draws,
        divergences=sum(r.divergences for r in reports),
        treedepth_hits=sum(r.treedepth_hits for r in reports),
        min_bfmi=min(bfmi) if bfmi else float("nan"),
        max_rhat=reports[jr].max_rhat,
        min_ess_bulk=reports[je].min_ess_bulk,
        min_ess_tail=min(r.min_ess_tail for r in reports),
        worst_rhat=f"imputation {jr + 1}: {reports[jr].worst_rhat}",
        worst_ess=f"imputation {je + 1}: {reports[je].worst_ess}",
        failed=[f"imputation {j + 1}: {f}" for j, r in enumerate(reports) for f in r.failed],
    )


def pipeline_record(post: Posterior) -> dict | None:
    """The nested pipeline's record (target, J, notes, per-stage reports) of a posterior, or
    None for a posterior that did not come from :func:`nested_fit`."""
    text = post.tree.attrs.get("bayesmix_pipeline")
    return json.loads(text) if text else None


def gate_warnings(post: Posterior) -> list[str]:
    """One line per pipeline stage that failed its diagnostics gate (empty when all passed)."""
    rec = pipeline_record(post)
    if rec is None:
        return [post.diagnostics_warning] if post.diagnostics_warning else []
    lines = []
    s1 = rec["stage1"]["diagnostics"]
    if s1["failed"]:
        lines.append(
            "nested pipeline stage 1 (step law) did not pass its diagnostics: "
            + "; ".join(s1["failed"])
        )
    for name, reports in (("2 (size law)", rec["stage2"]), ("3 (mixing law)", rec["stage3"])):
        bad = [
            (j, r["diagnostics"]["failed"])
            for j, r in enumerate(reports)
            if r["diagnostics"]["failed"]
        ]
        if bad:
            lines.append(
                f"nested pipeline stage {name} did not pass its diagnostics in "
                f"{len(bad)} of {len(reports)} imputations: "
                + "; ".join(f"imputation {j + 1}: {f[0]}" for j, f in bad)
            )
    return lines


__all__ = [
    "CHINCHILLA",
    "CurveData",
    "Design",
    "PipelineError",
    "StageFit",
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
    "union_diagnostics",
]
