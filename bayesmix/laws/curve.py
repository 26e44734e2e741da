"""Power-law curves in one scale variable: the shared form of the step and size laws.

The nested pipeline (:mod:`bayesmix.scaling.pipeline`) fits learning curves (loss against the
step, :mod:`bayesmix.laws.step`) and size curves (loss against the model size,
:mod:`bayesmix.laws.size`), one curve per (series, validation domain). Both are written

    L(x) = level + R (exp(e x) - 1) + shift,    x = log(x_ref / point)

with ``level`` the loss at the reference ``x_ref`` (geometric mean of the fitted points of the
curve's group), ``R = (B / x_ref)^e`` the reducible loss there (so ``E = level - R`` and ``B =
x_ref R^(1/e)``) and ``shift`` a term known given the sampled parameters (the step law's
annealing gain, none for the size law). Given the exponent the loss is linear in (level, R):
the curve model (:mod:`bayesmix.scaling.curve_model`) integrates them out per curve and
samples only this block (exponents, the pooled reducible loss, noise scales, the step law's
annealing coefficient); (level, R) are drawn afterwards from their exact conditional.

Priors of the exponents and of R are centred on Chinchilla (Epoch AI's replication, Besiroglu
et al. 2024: ``L = 1.82 + 482 / N^0.35 + 2085 / D^0.37``, D in tokens), rewritten in this form
(:meth:`PowerCurve.centres`); log-scale sds of 0.5 (exponents) and 1 (R) leave the data in
charge. Shapes: parameters are gathered per point before :meth:`PowerCurve.mean`, so
``level``, ``R``, ``exponent`` and the inputs broadcast elementwise ((..., n) each).
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import pymc as pm
import pytensor.tensor as pt

from bayesmix.laws.base import BuildContext, Law, Param

#: Chinchilla, Epoch AI's replication (Besiroglu et al. 2024): L = E + A / N^alpha + B / D^beta
#: with N in parameters and D in tokens (total loss, nats per token).
CHINCHILLA = {"E": 1.82, "A": 482.0, "alpha": 0.35, "B": 2085.0, "beta": 0.37}

CURVE_PRIORS: dict[str, dict] = {
    # exponent per (group, domain) on log scale: population mean (centred on Chinchilla's),
    # domain effects, offsets of groups 2..G from group 1, and each (group, domain)'s spread
    "log_exponent_mu": {"dist": "Normal", "mu": "data", "sigma": 0.5},
    "log_exponent_domain": {"dist": "Normal", "mu": "data", "sigma": 0.3},
    "log_exponent_group": {"dist": "Normal", "mu": 0.0, "sigma": 0.5},
    "log_exponent": {"dist": "Normal", "mu": "data", "sigma": 0.2},
    # reducible loss at the reference per (group, domain) on log scale, and its spread across
    # the curves of a (group, domain) relative to its mean (log-normal)
    "log_R_mu": {"dist": "Normal", "mu": "data", "sigma": 1.0},
    "log_R_domain": {"dist": "Normal", "mu": "data", "sigma": 0.7},
    "log_R_group": {"dist": "Normal", "mu": 0.0, "sigma": 1.0},
    "log_R_cv": {"dist": "Normal", "mu": math.log(0.25), "sigma": 0.75},
    # Normal noise scale per domain (log scale, pooled)
    "log_sigma_mu": {"dist": "Normal", "mu": math.log(0.02), "sigma": 1.0},
    "log_sigma": {"dist": "Normal", "mu": "data", "sigma": 1.0},
}


def group_effect(ctx: BuildContext, name: str, n_groups: int) -> pt.TensorVariable:
    """(G, 1) offsets of groups 2..G from group 1 (which is 0), prior ``<name>_group``.

    Group 1 as the reference keeps the domain effects identified (sum-free offsets would trade
    off against them) and needs no hyper-sd, which 2-4 groups could not inform.
    """
    rest = ctx.priors[f"{name}_group"].create(f"{name}_group", shape=n_groups - 1)
    return pt.concatenate([pt.zeros(1), rest])[:, None]


class PowerCurve(Law):
    """A power-law curve in ``log_ratio`` x (see the module docstring); subclasses name the
    scale variable and its Chinchilla centres."""

    inputs: ClassVar[tuple[str, ...]] = ("log_ratio",)
    lead_dims = ("curve", "group")
    params: ClassVar[tuple[Param, ...]] = (
        Param("level", ("curve",), "nats/token", "loss of a curve at its group's reference"),
        Param("R", ("curve",), "nats/token", "reducible loss of a curve at the reference"),
        Param("exponent", ("group", "eval_domain"), "", "power-law exponent"),
        Param("R_mean", ("group", "eval_domain"), "nats/token", "mean R of a group's curves"),
        Param("R_cv", ("eval_domain",), "", "spread of R across curves, relative to R_mean"),
        Param("sigma", ("eval_domain",), "nats/token", "noise scale of one point"),
    )
    priors = CURVE_PRIORS
    #: Chinchilla's exponent and scale (``B`` tokens or ``A`` parameters to the power
    #: 1 / exponent) of this curve's variable; set by subclasses.
    chinchilla_exponent: float = 1.0
    chinchilla_coefficient: float = 1.0

    def centres(self, reference: float) -> tuple[float, float]:
        """Prior centres (log exponent, log R) at a reference point (tokens or parameters):
        Chinchilla's ``C / x^e`` written ``(C^(1/e) / x)^e``."""
        e = self.chinchilla_exponent
        scale = self.chinchilla_coefficient ** (1.0 / e)
        return math.log(e), e * (math.log(scale) - math.log(reference))

    def basis(self, inputs, params, xp=np):
        """The curve's shape ``exp(e x) - 1`` at each point: what R multiplies."""
        return xp.expm1(params["exponent"] * inputs["log_ratio"])

    def shift(self, inputs, params, xp=np):
        """The term known given the sampled parameters (none here)."""
        return 0.0

    def mean(self, inputs, params, xp=np):
        return (
            params["level"]
            + params["R"] * self.basis(inputs, params, xp)
            + self.shift(inputs, params, xp)
        )

    def build(self, ctx: BuildContext) -> dict:
        """Exponents per (group, domain) (centred: many curves inform each; pooling scales
        fixed: learnt scales near 0 made funnels, with divergences and R-hat 1.06-2, and 2-22
        groups inform little), R's mean per (group, domain) and its spread per domain
        (log-normal: a HalfNormal let a chain wander to cv -> 0, where NUTS hit its maximum
        depth on every draw), the noise scales. ``ctx.inputs``: ``log_exponent_loc`` and
        ``log_reducible_loc`` (the centres), optional ``noise_floor`` (K,): the noise is
        ``sqrt(floor^2 + exp(log_sigma)^2)``, never below what the data are known to carry
        (stage 2 with 2 sizes per curve cannot tell noise from the curves' spread, and a
        noise free to go to 0 made a funnel: 2-8 divergences and R-hat 1.011-1.020 at
        ``log_sigma`` in 4 of 4 size-law fits on 5Mix's 70M-160M); the model's coords give the
        groups."""
        n_groups = len(pm.modelcontext(None).coords["group"])
        e_mu = ctx.prior("log_exponent_mu", mu=ctx.inputs["log_exponent_loc"])
        e_dom = ctx.prior("log_exponent_domain", dims="eval_domain", mu=e_mu)
        log_e = e_dom[None, :]
        if n_groups > 1:
            loc = e_dom[None, :] + group_effect(ctx, "log_exponent", n_groups)
            log_e = ctx.prior("log_exponent", dims=("group", "eval_domain"), mu=loc)
        exponent = pm.Deterministic("exponent", pt.exp(log_e), dims=("group", "eval_domain"))
        r_mu = ctx.prior("log_R_mu", mu=ctx.inputs["log_reducible_loc"])
        log_rm = ctx.prior("log_R_domain", dims="eval_domain", mu=r_mu)[None, :]
        if n_groups > 1:
            log_rm = log_rm + group_effect(ctx, "log_R", n_groups)
        r_mean = pm.Deterministic(
            "R_mean", pt.exp(log_rm) * pt.ones((n_groups, 1)), dims=("group", "eval_domain")
        )
        r_cv = pm.Deterministic(
            "R_cv", pt.exp(ctx.prior("log_R_cv", dims="eval_domain")), dims="eval_domain"
        )
        log_sigma = ctx.prior("log_sigma", dims="eval_domain", mu=ctx.prior("log_sigma_mu"))
        floor = ctx.inputs.get("noise_floor")
        own = pt.exp(log_sigma)
        sigma = own if floor is None else pt.sqrt(floor**2 + own**2)
        sigma = pm.Deterministic("sigma", sigma, dims="eval_domain")
        return {"exponent": exponent, "R_mean": r_mean, "R_cv": r_cv, "sigma": sigma}
