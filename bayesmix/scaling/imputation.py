"""The hand-off between stages: draws of every curve's loss at a target step or size.

A stage fit samples only its curve law's block; :func:`curve_draws` adds each curve's (level,
R) from their exact conditional, and :func:`predict_curves` evaluates the law
(:meth:`~bayesmix.laws.curve.PowerCurve.mean`) at the target with the noise of a new record:
these draws are stage 2's data (imputations of the losses at the target step) and stage 3's
(at the target size and step).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from bayesmix.data.schedules import Schedule
from bayesmix.scaling.curve_model import posterior_2x2
from bayesmix.scaling.curves import CurveData, curve_values
from bayesmix.scaling.design import PipelineError
from bayesmix.scaling.stages import StageFit


def curve_draws(
    fit: StageFit, samples: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(level, R) of every curve for posterior samples (sample, curve): drawn from their exact
    conditional Normal given each sample's exponents, noise and priors; level in nats per token
    (offset added back)."""
    d = fit.data
    v = curve_values(d)
    sigma = fit.flat("sigma")[samples][:, d.curve_eval]  # (S, C)
    m_r = fit.flat("R_mean")[samples][:, d.curve_group, d.curve_eval]
    s_r = fit.flat("R_cv")[samples][:, d.curve_eval] * m_r
    xo = fit.law.basis({"log_ratio": d.log_ratio}, _per_point(fit, samples, "exponent"))
    yc = v["y_centred"] + annealing_gain(fit, samples)  # (S, obs)
    n_curve = len(d.curve_n)
    sums = np.zeros((4, len(samples), n_curve))
    for i in range(len(samples)):
        sums[0, i] = np.bincount(d.obs_curve, xo[i], n_curve)
        sums[1, i] = np.bincount(d.obs_curve, xo[i] ** 2, n_curve)
        sums[2, i] = np.bincount(d.obs_curve, xo[i] * yc[i], n_curve)
        sums[3, i] = np.bincount(d.obs_curve, yc[i], n_curve)
    a11, a12, a22, b1, b2 = posterior_2x2(
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


def _per_point(fit: StageFit, samples: np.ndarray, name: str, per_curve: bool = False) -> dict:
    """``{name: draws}`` of a (group, eval_domain) parameter gathered per observation (S, obs)
    or per curve (S, C); a step fit without the annealing term has C = 0."""
    d = fit.data
    group = d.curve_group if per_curve else d.curve_group[d.obs_curve]
    domain = d.curve_eval if per_curve else d.curve_eval[d.obs_curve]
    if name not in fit.posterior:
        return {name: np.zeros((len(samples), len(group)))}
    return {name: fit.flat(name)[samples][:, group, domain]}


def annealing_gain(fit: StageFit, samples: np.ndarray, anneal=None) -> np.ndarray:
    """``C S2`` per sample and observation (S, obs), nats per token: what the annealing of the
    learning rate took off each fitted checkpoint (0 without the term), the step law's
    :meth:`~bayesmix.laws.step.StepLaw.shift` with its sign turned. ``anneal``: other S2
    values (relative to the group references) of shape (obs,) or (curve,) to evaluate instead,
    with ``obs`` replaced by ``curve``."""
    d = fit.data
    per_curve = anneal is not None
    s2 = d.anneal if anneal is None else np.asarray(anneal, float)
    n_out = len(d.curve_n) if per_curve else len(d.y)
    if not d.annealed or s2 is None:
        return np.zeros((len(samples), n_out))
    c = _per_point(fit, samples, "C", per_curve)
    return -fit.law.shift({"anneal": s2}, c)


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

    ``"mean"``: the curve law at x* = log(ref / point), with (level, R) drawn from their
    conditional posterior. ``"predictive"`` adds the noise of a new record: Normal noise per
    domain and a shock shared by the series' domains, with the scale :func:`shock_sd` finds in
    the same sample's residuals (a new checkpoint in stage 1, a new run in stage 2). Pairs with
    no observed loss are NaN.
    """
    if kind not in ("predictive", "mean"):
        raise PipelineError(f"kind={kind!r} is not 'predictive' or 'mean'", param="kind")
    d = fit.data
    level, r = curve_draws(fit, samples, rng)  # (S, C)
    s1_star, s2_star = float(point), 0.0
    if d.kind == "step" and schedule is not None:
        s1, s2 = schedule.areas([point])
        s1_star, s2_star = float(s1[0]), float(s2[0])
    refs = d.refs[d.curve_group]
    inputs = {"log_ratio": np.log(refs / s1_star), "anneal": s2_star / refs}
    params = {"level": level, "R": r, **_per_point(fit, samples, "exponent", per_curve=True)}
    params.update(_per_point(fit, samples, "C", per_curve=True))
    curve_val = fit.law.mean(inputs, params)
    n_s, n_series, n_dom = len(samples), len(d.series), len(d.eval_domains)
    if kind == "predictive":
        sigma = fit.flat("sigma")[samples]  # (S, K)
        xo = fit.law.basis({"log_ratio": d.log_ratio}, _per_point(fit, samples, "exponent"))
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
