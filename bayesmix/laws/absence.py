"""Exact absence as its own effect: any law plus ``a_ij`` when training domain j is left out.

``L_i(r) = base_i(r) + sum_j a_ij [r_j = 0]``: a training domain that a run does not contain at
all (share exactly 0, e.g. a domain that did not exist when the run was trained, or a design that
leaves it out) moves validation loss i by ``a_ij`` nats per token on top of what the base law says
its share-0 limit is. No shipped law has such a term, and a smooth law cannot bend far enough at
r_j = 0: on Ye et al.'s 3-domain runs a run with no GitHub at all has 2-3x the GitHub loss of a
run with any. ``a`` (eval_domain, train_domain) is pooled: ``a_ij = s_i (loc + scale z_ij)``
with ``s_i`` the data's loss scale of validation domain i, ``loc ~ absent_loc``,
``scale ~ absent_scale`` and ``z_ij ~ Normal(0, 1)`` (non-centred: a pair whose domain is never
absent in the runs keeps its prior, pooled through ``loc``).

A specification switches it on by naming the law ``"<base>+absent"`` (e.g.
``law = "m4log+absent"``, ``models/logshare_absent.toml``): :func:`bayesmix.laws.get_law` builds
the wrapped law on demand, so fitting, prediction, ``evaluate``, ``decide``, ``propose`` and
``compare`` use the term wherever they evaluate a law's mean (they all go through
:meth:`Law.mean`, :meth:`Law.predict`, :meth:`Law.value_grad` and :meth:`Law.draw_optima`).

Decisions. The indicator is discontinuous on the faces ``r_j = 0`` of the feasible set. The rule:
a share is absent only when it is exactly 0 (:data:`ABSENT_AT`). :meth:`AbsentLaw.value_grad`
returns the value with the term and the base law's gradient (the indicator's derivative is 0
wherever it exists); after any optimiser (:meth:`AbsentLaw.settle_faces`), a zero share of an
optimum is kept at 0 when leaving the domain out lowers the weighted loss (``w . a_.j <= 0``)
and raised to :data:`PRESENT_SHARE` (taken from the largest share) when it raises it and the
domain's upper bound allows: the base law barely moves between 0 and 1e-6, so this is the
infimum the optimiser was approaching, now attained.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import numpy as np
import pymc as pm
import pytensor.tensor as pt

from bayesmix.laws.base import DOMAIN_DIMS, BuildContext, Law, Param, component_law

#: Suffix of a law name that adds the absence term (``"m4log+absent"``).
SUFFIX = "+absent"
#: A share is absent when it is at most this (exactly zero: shares are stored as given).
ABSENT_AT = 0.0
#: The share an optimum gives a domain whose absence would cost loss, instead of 0.
PRESENT_SHARE = 1e-6
#: The absence coefficients as stored in the posterior.
ABSENCE_PARAM = Param(
    "a",
    DOMAIN_DIMS,
    "nats/token",
    "change of validation loss i when training domain j is exactly absent (share 0), beyond "
    "the base law's limit at share 0",
    signed=True,
)
#: Default priors of the term, in units of the data's loss scale per validation domain.
ABSENCE_PRIORS = {
    "absent_loc": {"dist": "Normal", "mu": 0.0, "sigma": 0.5},
    "absent_scale": {"dist": "HalfNormal", "sigma": 1.0},
}


def absent(r, xp=np):
    """1.0 where a share is absent (:data:`ABSENT_AT`), else 0.0: (..., n, M)."""
    return xp.where(r <= ABSENT_AT, 1.0, 0.0)


def absence_term(r, a, xp=np):
    """``sum_j a_ij [r_j = 0]`` (..., n, K) of mixtures ``r`` (..., n, M), ``a`` (..., K, M)."""
    return xp.matmul(absent(r, xp), xp.swapaxes(a, -1, -2))


class AbsentLaw(Law):
    """A base law plus :func:`absence_term` (see the module docstring). Made by
    :func:`with_absence`; never registered by itself."""

    base: Law

    def mean(self, inputs: Mapping, params: Mapping, xp=np):
        return self.base.mean(inputs, params, xp) + absence_term(inputs["r"], params["a"], xp)

    def build(self, ctx: BuildContext) -> dict:
        params = dict(self.base.build(ctx))
        loc = ctx.prior("absent_loc")
        scale = ctx.prior("absent_scale")
        z = pm.Normal("absent_z", 0.0, 1.0, dims=DOMAIN_DIMS)
        s = pt.as_tensor_variable(cast(Any, ctx.loss_scale))[:, None]
        params["a"] = pm.Deterministic("a", s * (loc + scale * z), dims=DOMAIN_DIMS)
        return params

    def data_arrays(self, r, losses, loss_mean, loss_scale):
        return self.base.data_arrays(r, losses, loss_mean, loss_scale)

    def table_arrays(self, runs):
        return self.base.table_arrays(runs)

    def epochs(self, r, params, inputs):
        return self.base.epochs(r, params, inputs)

    def value_grad(self, r, params, weights, *, n_params=None, tokens=None):
        """The base law's weighted loss and gradient, plus the absence term's value (its
        gradient is zero wherever it exists)."""
        f, g = self.base.value_grad(r, params, weights, n_params=n_params, tokens=tokens)
        r = np.asarray(r, float)
        a = np.asarray(params["a"], float)  # (S, K, M)
        if r.ndim == 2:
            r = np.broadcast_to(r, (a.shape[0],) + r.shape)
        return f + absence_term(r, a) @ np.asarray(weights, float), g

    def draw_optima(self, params, weights, lower, upper, x0=None, **inputs):
        out = self.base.draw_optima(params, weights, lower, upper, x0=x0, **inputs)
        if out is None:
            return None
        r, ok = out
        return self.settle_faces(r, params, weights, upper), ok

    @staticmethod
    def settle_faces(r, params, weights, upper):
        """Optima ``r`` (S, M) with every zero share whose absence raises the weighted loss
        (``w . a_.j > 0`` for draw s) raised to :data:`PRESENT_SHARE` where ``upper`` allows,
        taken from the draw's largest share."""
        r = np.array(r, float)
        cost = np.einsum("k,skm->sm", np.asarray(weights, float), np.asarray(params["a"], float))
        lift = (r <= ABSENT_AT) & (cost > 0) & (np.broadcast_to(upper, r.shape) >= PRESENT_SHARE)
        for s in np.flatnonzero(lift.any(axis=1)):
            top = int(np.argmax(r[s]))
            need = PRESENT_SHARE * lift[s].sum()
            if r[s, top] - need > 0:
                r[s, lift[s]] = PRESENT_SHARE
                r[s, top] -= need
        return r

    def __reduce__(self):
        return with_absence, (self.base,)


#: Wrapped laws made so far, by name: one instance per base law (unpickling finds it again).


def with_absence(base: Law) -> AbsentLaw:
    """``base`` with the absence term: a law named ``base.name + "+absent"`` with the base's
    parameters, inputs and dims, plus ``a`` (eval_domain, train_domain) and its priors."""
    if isinstance(base, AbsentLaw):
        return base
    return component_law(
        AbsentLaw,
        base,
        SUFFIX,
        description=f"{base.description}; plus an effect of exact absence per domain pair",
        params=(*base.params, ABSENCE_PARAM),
        priors={**base.priors, **ABSENCE_PRIORS},
        convex=False,
    )
