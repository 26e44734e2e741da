"""The step law: a learning curve in the optimiser step, with the annealing of the rate.

Per curve (run r of model size g, validation domain k), with the checkpoint's forward area S1
and annealing area S2 of its learning-rate schedule (:mod:`bayesmix.data.schedules`; at a
constant rate S1 is the step and S2 is 0), x = log(S_ref[g] / S1) and S_ref[g] the geometric
mean S1 of size g:

    L = level[r,k] + R[r,k] (exp(beta[g,k] x) - 1) - C[g,k] S2 / S_ref[g]

the form of :mod:`bayesmix.laws.curve` with the annealing term ``- C S2`` (Tissue et al. 2024):
C per (group, domain) on the scale of the loss at a decay of one reference length. Groups are
model sizes: measured on Ye et al.'s 5Mix curves (free 3-parameter fits), beta falls from about
0.9 (70M) to 0.5 (410M), so it is not shared across sizes. Inputs ``log_ratio`` (x) and
``anneal`` (S2 / S_ref); parameters gathered per point (shapes (..., n)).
"""

from __future__ import annotations

import math

import numpy as np
import pymc as pm
import pytensor.tensor as pt

from bayesmix.laws.base import BuildContext, Param
from bayesmix.laws.curve import CHINCHILLA, CURVE_PRIORS, PowerCurve, group_effect

#: Prior median (log) of the annealing coefficient C per reference length of S2: a cosine
#: decay to 0.1 x peak gains about 0.1 nats at its end (S2 about 1.3 reference lengths there).
ANNEAL_LOC = math.log(0.1)


class StepLaw(PowerCurve):
    """Loss against the step (S1) with the annealing gain ``- C S2`` (module docstring)."""

    name = "step"
    description = "learning curve: level + R (exp(beta x) - 1) - C S2, x = log(S_ref / S1)"
    inputs = ("log_ratio", "anneal")
    params = (
        *PowerCurve.params,
        Param("C", ("group", "eval_domain"), "nats/token", "annealing gain per reference S2"),
    )
    priors = {
        **CURVE_PRIORS,
        "log_C_mu": {"dist": "Normal", "mu": ANNEAL_LOC, "sigma": 1.0},
        "log_C_domain": {"dist": "Normal", "mu": "data", "sigma": 0.5},
        "log_C_group": {"dist": "Normal", "mu": 0.0, "sigma": 0.5},
    }
    chinchilla_exponent = CHINCHILLA["beta"]
    chinchilla_coefficient = CHINCHILLA["B"]

    def shift(self, inputs, params, xp=np):
        """``- C S2``: what the annealing of the learning rate takes off the loss."""
        return -(params["C"] * inputs["anneal"])

    def build(self, ctx: BuildContext) -> dict:
        """The curve block, and C per (group, domain) when ``ctx.inputs`` has ``anneal``
        (some fitted checkpoint comes after its rate decayed); without it C is not sampled."""
        out = super().build(ctx)
        if "anneal" not in ctx.inputs:
            return out
        n_groups = len(pm.modelcontext(None).coords["group"])
        log_c = ctx.prior("log_C_domain", dims="eval_domain", mu=ctx.prior("log_C_mu"))[None, :]
        if n_groups > 1:
            log_c = log_c + group_effect(ctx, "log_C", n_groups)
        out["C"] = pm.Deterministic(
            "C", pt.exp(log_c) * pt.ones((n_groups, 1)), dims=("group", "eval_domain")
        )
        return out
