"""The curve model of stages 1 and 2: a curve law's block, the noise and the likelihood.

As :func:`bayesmix.model.model.build_model` does for a mixing law, :func:`build_curve_model`
asks the curve law (:class:`~bayesmix.laws.step.StepLaw` for stage 1,
:class:`~bayesmix.laws.size.SizeLaw` for stage 2) for its parameter block and adds the
likelihood: each curve's two linear parameters (level, R) are integrated out exactly
(Normal noise, Normal priors; 2 x 2 algebra on per-curve sums, :func:`collapsed_loglik`), so
NUTS samples only the law's block. Everything that changes between refits of one structure is
``pm.Data`` (:func:`bayesmix.scaling.curves.curve_values`); :func:`structure_key` names the rest,
so :func:`bayesmix.inference.fitting.compiled_model` compiles each structure once.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pymc as pm
import pytensor.tensor as pt

from bayesmix.data.ye_logs import size_label
from bayesmix.laws.base import BuildContext
from bayesmix.laws.curve import PowerCurve
from bayesmix.laws.size import SizeLaw
from bayesmix.laws.step import StepLaw
from bayesmix.model.priors import Prior
from bayesmix.scaling.curves import CurveData, curve_values

#: The law of each kind of curves: stage 1 ("step") and stage 2 ("size").
CURVE_LAWS: dict[str, PowerCurve] = {"step": StepLaw(), "size": SizeLaw()}


def curve_law(d: CurveData) -> PowerCurve:
    """The law the curves ``d`` are fitted with."""
    return CURVE_LAWS[d.kind]


def build_curve_model(d: CurveData) -> pm.Model:
    """The collapsed curve model of :func:`~bayesmix.scaling.stages.fit_step_law` /
    :func:`~bayesmix.scaling.stages.fit_size_law`."""
    law = curve_law(d)
    label = size_label if d.kind == "step" else (lambda g: f"{g:g}")
    coords = {
        "eval_domain": list(d.eval_domains),
        "group": [label(g) for g in d.groups],
        "curve": np.arange(len(d.curve_n)),
        "obs": np.arange(len(d.y)),
    }
    v = curve_values(d)
    ce, cg, oc = d.curve_eval, d.curve_group, d.obs_curve
    with pm.Model(coords=coords) as model:
        yc = pm.Data("y_centred", v["y_centred"], dims="obs")
        x = pm.Data("log_ratio", v["log_ratio"], dims="obs")
        if not d.annealed:  # with annealing the sums depend on C: computed below
            sy = pm.Data("curve_sy", v["curve_sy"], dims="curve")
            syy = pm.Data("curve_syy", v["curve_syy"], dims="curve")
        m_level = pm.Data("level_mean", v["level_mean"], dims="curve")
        s_level = pm.Data("level_sd", v["level_sd"], dims="curve")
        inputs = {
            "log_ratio": x,
            "log_reducible_loc": pm.Data("log_reducible_loc", v["log_reducible_loc"]),
            "log_exponent_loc": pm.Data("log_exponent_loc", v["log_exponent_loc"]),
        }
        if d.annealed:
            inputs["anneal"] = pm.Data("anneal", v["anneal"], dims="obs")
        ctx = BuildContext(
            priors={k: Prior.from_dict(p, k) for k, p in law.priors.items()},
            hierarchy={},
            train_domains=(),
            eval_domains=tuple(d.eval_domains),
            diagonal=None,
            loss_mean=None,
            loss_scale=None,
            inputs=inputs,
        )
        params = law.build(ctx)
        point = {k: params[k][cg[oc], ce[oc]] for k in ("exponent", "C") if k in params}
        n_curve = len(d.curve_n)
        if d.annealed:
            # y minus the law's known shift (- C S2) follows the power law in S1
            yc = yc - law.shift(inputs, point, pt)
            sy = pt.zeros(n_curve)[oc].inc(yc)
            syy = pt.zeros(n_curve)[oc].inc(yc**2)
        xo = law.basis(inputs, point, pt)
        sx = pt.zeros(n_curve)[oc].inc(xo)
        sxx = pt.zeros(n_curve)[oc].inc(xo**2)
        sxy = pt.zeros(n_curve)[oc].inc(xo * yc)
        m_r = params["R_mean"][cg, ce]
        s_r = params["R_cv"][ce] * m_r
        pm.Potential(
            "loss",
            pt.sum(
                collapsed_loglik(
                    pt,
                    d.curve_n,
                    sx,
                    sxx,
                    sy,
                    sxy,
                    syy,
                    params["sigma"][ce],
                    m_level,
                    s_level,
                    m_r,
                    s_r,
                )
            ),
        )
    return model


def posterior_2x2(xp, n, sx, sxx, sy, sxy, sigma, m1, s1, m2, s2):
    """Posterior precision (a11, a12, a22) and precision-weighted mean (b1, b2) of the two
    linear parameters (level, R) of each curve: Normal priors N(m, s^2), Normal noise sigma."""
    w = 1.0 / sigma**2
    a11 = 1.0 / s1**2 + n * w
    a12 = sx * w
    a22 = 1.0 / s2**2 + sxx * w
    b1 = m1 / s1**2 + sy * w
    b2 = m2 / s2**2 + sxy * w
    return a11, a12, a22, b1, b2


def collapsed_loglik(xp, n, sx, sxx, sy, sxy, syy, sigma, m1, s1, m2, s2):
    """log p(y_curve | exponent, sigma, priors) per curve with level and R integrated out.

    y = level + R x + e, e ~ N(0, sigma^2), level ~ N(m1, s1^2), R ~ N(m2, s2^2): the Gaussian
    marginal written with the 2 x 2 posterior precision A and b (Woodbury), from per-curve sums.
    """
    a11, a12, a22, b1, b2 = posterior_2x2(xp, n, sx, sxx, sy, sxy, sigma, m1, s1, m2, s2)
    det = a11 * a22 - a12**2
    quad = (a22 * b1**2 - 2.0 * a12 * b1 * b2 + a11 * b2**2) / det
    return (
        -0.5 * n * xp.log(2.0 * np.pi * sigma**2)
        - xp.log(s1)
        - xp.log(s2)
        - 0.5 * xp.log(det)
        - 0.5 * (syy / sigma**2 + m1**2 / s1**2 + m2**2 / s2**2 - quad)
    )


#: What a compiled curve model depends on besides its pm.Data.
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


def structure_key(d: CurveData) -> str:
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
