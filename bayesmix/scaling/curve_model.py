"""The curve model of stages 1 and 2: a curve law's block, the noise and the likelihood.

As :func:`bayesmix.model.model.build_model` does for a mixing law, :func:`build_curve_model`
asks the curve law (:class:`~bayesmix.laws.step.StepLaw` for stage 1,
:class:`~bayesmix.laws.size.SizeLaw` for stage 2) for its parameter block and adds the
likelihood: each curve's two linear parameters (level, R) are integrated out exactly
(Normal noise, Normal priors; 2 x 2 algebra on per-curve sums, :func:`collapsed_loglik`), so
NUTS samples only the law's block. The curve's shape is evaluated once per (group, domain,
distinct x of the group) and the per-curve sums are weighted sums over these slots
(:func:`model_values`): on 5Mix's stage 1 that is 1,760 shapes (4 sizes x 22 domains x 20
steps) instead of 29,678, and one density-and-gradient evaluation takes a third of the time
of the per-observation form.
Everything that changes between refits of one structure is ``pm.Data``
(:func:`model_values`); :func:`structure_key` names the rest, so
:func:`bayesmix.inference.fitting.fit_compiled` compiles each structure once.
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
    :func:`~bayesmix.scaling.stages.fit_size_law`.

    The curve's shape ``exp(e x) - 1`` is evaluated once per (group, domain, distinct x of the
    group) rather than once per observation (runs of one size share their checkpoints' steps,
    and every domain of a run shares its x): the per-curve sums the collapsed likelihood needs
    are weighted sums over these slots (:func:`model_values`), exactly the per-observation sums.
    """
    law = curve_law(d)
    label = size_label if d.kind == "step" else (lambda g: f"{g:g}")
    v = model_values(d)
    coords = {
        "eval_domain": list(d.eval_domains),
        "group": [label(g) for g in d.groups],
        "curve": np.arange(len(d.curve_n)),
        "slot": np.arange(v["slot_x"].shape[1]),
    }
    ce, cg = d.curve_eval, d.curve_group
    with pm.Model(coords=coords) as model:
        data = {
            name: pm.Data(name, v[name], dims=dims)
            for name, dims in _MODEL_DATA.items()
            if name in v
        }
        inputs = {
            "log_ratio": data["slot_x"][:, None, :],  # (G, 1, U)
            "log_reducible_loc": pm.Data("log_reducible_loc", v["log_reducible_loc"]),
            "log_exponent_loc": pm.Data("log_exponent_loc", v["log_exponent_loc"]),
            "noise_floor": data["noise_floor"],
        }
        if d.annealed:
            inputs["anneal"] = data["slot_a"]
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
        n_dom = len(d.eval_domains)
        # the shape per (group, domain, slot), gathered per curve: (C, U)
        shape = law.basis(inputs, {"exponent": params["exponent"][:, :, None]}, pt)
        xo = shape.reshape((-1, shape.shape[2]))[cg * n_dom + ce]
        n_s, y_s = data["slot_n"], data["slot_y"]
        sy, syy = data["curve_sy"], data["curve_syy"]
        if d.annealed:
            # y minus the law's known shift (linear in S2: - C S2) follows the power law in S1
            gain = -law.shift({"anneal": 1.0}, {"C": params["C"][cg, ce]}, pt)  # (C,)
            y_s = y_s + gain[:, None] * data["slot_a"]
            sy = sy + gain * data["curve_sa"]
            syy = syy + 2.0 * gain * data["curve_say"] + gain**2 * data["curve_saa"]
        m_r = params["R_mean"][cg, ce]
        s_r = params["R_cv"][ce] * m_r
        pm.Potential(
            "loss",
            pt.sum(
                collapsed_loglik(
                    pt,
                    d.curve_n,
                    (n_s * xo).sum(axis=1),
                    (n_s * xo**2).sum(axis=1),
                    sy,
                    (y_s * xo).sum(axis=1),
                    syy,
                    params["sigma"][ce],
                    data["level_mean"],
                    data["level_sd"],
                    m_r,
                    s_r,
                )
            ),
        )
    return model


#: The model's data (pm.Data) and their dims; ``slot_a`` and the ``curve_s*a*`` sums only when
#: the curves are annealed.
_MODEL_DATA = {
    "slot_x": ("group", "slot"),
    "slot_n": ("curve", "slot"),
    "slot_y": ("curve", "slot"),
    "slot_a": ("curve", "slot"),
    "curve_sy": "curve",
    "curve_syy": "curve",
    "curve_sa": "curve",
    "curve_say": "curve",
    "curve_saa": "curve",
    "level_mean": "curve",
    "level_sd": "curve",
    "noise_floor": "eval_domain",
}


def slots(d: CurveData) -> tuple[np.ndarray, np.ndarray]:
    """The distinct x of each group, (G, U) zero-padded, and each observation's slot: the
    index of its x among its group's."""
    obs_group = d.curve_group[d.obs_curve]
    per_group = [np.unique(d.log_ratio[obs_group == g]) for g in range(len(d.groups))]
    width = max(1, max(len(u) for u in per_group))
    slot_x = np.zeros((len(d.groups), width))
    slot = np.zeros(len(d.y), np.int64)
    for g, u in enumerate(per_group):
        slot_x[g, : len(u)] = u
        mine = obs_group == g
        slot[mine] = np.searchsorted(u, d.log_ratio[mine])
    return slot_x, slot


def model_values(d: CurveData) -> dict:
    """The model's ``pm.Data`` (:data:`_MODEL_DATA`): per (curve, slot) the number of points
    ``slot_n``, the sum of centred losses ``slot_y`` and of S2 ``slot_a``; per curve the sums
    of y, y^2 and (annealed) S2, S2 y, S2^2; each curve's level prior; the prior centres; the
    noise floor per domain. Sums over slots with these weights equal sums over the curve's
    observations."""
    v = curve_values(d)
    slot_x, slot = slots(d)
    shape = (len(d.curve_n), slot_x.shape[1])
    yc = v["y_centred"]
    out = {
        "slot_x": slot_x,
        "slot_n": _slot_sum(d, slot, np.ones_like(yc), shape),
        "slot_y": _slot_sum(d, slot, yc, shape),
        "curve_sy": d.curve_sy,
        "curve_syy": d.curve_syy,
        "level_mean": v["level_mean"],
        "level_sd": v["level_sd"],
        "log_reducible_loc": v["log_reducible_loc"],
        "log_exponent_loc": v["log_exponent_loc"],
        "noise_floor": (
            np.zeros(len(d.eval_domains))
            if d.noise_floor is None
            else np.asarray(d.noise_floor, float)
        ),
    }
    if d.anneal is not None:
        n_curve = len(d.curve_n)
        a = d.anneal
        out["slot_a"] = _slot_sum(d, slot, a, shape)
        out["curve_sa"] = np.bincount(d.obs_curve, a, n_curve)
        out["curve_say"] = np.bincount(d.obs_curve, a * yc, n_curve)
        out["curve_saa"] = np.bincount(d.obs_curve, a * a, n_curve)
    return out


def _slot_sum(d: CurveData, slot: np.ndarray, values: np.ndarray, shape) -> np.ndarray:
    """Per-observation ``values`` summed per (curve, slot)."""
    out = np.zeros(shape)
    np.add.at(out, (d.obs_curve, slot), values)
    return out


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
    "log_ratio",
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
