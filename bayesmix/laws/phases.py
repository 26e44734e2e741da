"""Multi-phase runs: any law at the mixture a phased run effectively learns from
(``law = "<law>+phases"``).

A run trained in phases ``k = 1..P`` (in training order; phase k takes the share ``f_k`` of the
steps and has the mixture ``r^(k)``; the run table's ``phase_frac.<k>`` and ``mix<k>.<domain>``
columns, :mod:`bayesmix.data.phases`) is modelled as the base law at an effective mixture

    r_eff = sum_k w_k r^(k),    w_k = f_k exp(gamma c_k) / sum_l f_l exp(gamma c_l)

with ``c_k`` the midpoint of phase k in the run's training fraction (``c_1 = f_1 / 2``,
``c_k = f_1 + ... + f_(k-1) + f_k / 2``) and ``gamma`` (``late_emphasis``) the log of how much a
token at the end of training counts against one at its start: the midpoint rule of a per-token
weight ``exp(gamma t)`` over the training fraction ``t``. ``gamma > 0``: the last (annealing)
phase's mixture counts more than its share of the tokens; ``gamma = 0``: only the tokens count,
and the run is the static law at its whole-run mixture; earlier phases always carry over with
their weight ``w_k``, never vanish. A static run (every phase the same mixture, or one phase)
has ``r_eff = r`` for every ``gamma``: the base law exactly, and ``gamma`` is learned only from
runs whose phases differ.

Why this form. The 2024-2026 work on annealing and multi-phase mixtures (Llama 3's annealing on
small high-quality sets; Blakeney et al. 2024, domain upsampling at the end of training; OLMo 2's
mid-training; Marin's two-phase experiments) reports that a late, short phase of a different
mixture moves the final loss more per token than the same tokens early, while the earlier
mixture still matters. One exponential emphasis on the training fraction is the smallest law
with both properties; it is this package's own form, not a published fit, and nothing here has
been checked on real phased runs (the run tables shipped and in ``../shared/data`` have none):
``docs/phases.md`` says what is validated (simulated runs from this law only).

The default prior of ``gamma`` (:data:`PHASE_PRIORS`) is Normal(1, 1.5): mildly for late
emphasis, wide enough for none or the reverse. Predictions of a mixture (``Posterior.predict``)
are of a static run; a schedule's loss and its choice are :mod:`bayesmix.decisions.schedule`'s.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from bayesmix.laws.base import BuildContext, Law, Param, component_law

#: Suffix of a law name that reads phased runs (``"m4+phases"``).
SUFFIX = "+phases"
#: ``pm.Data`` (and input) names of each record's phase shares (record, P) and mixtures
#: (record, P, M).
FRAC_DATA = "phase_frac_data"
MIX_DATA = "phase_mix_data"
PHASE_PARAMS = (
    Param(
        "late_emphasis",
        (),
        "",
        "log weight of a token at the end of training against one at its start (gamma): "
        "phase k's mixture enters the effective mixture with weight prop. to "
        "f_k exp(gamma c_k), c_k its midpoint",
    ),
)
#: Default prior of ``gamma``: mildly for late emphasis (module docstring).
PHASE_PRIORS = {"late_emphasis": {"dist": "Normal", "mu": 1.0, "sigma": 1.5}}


def midpoints(frac, xp=np):
    """Midpoint ``c_k`` (..., P) of each phase in the training fraction; ``frac`` (..., P)."""
    return xp.cumsum(frac, axis=-1) - 0.5 * frac


def phase_weights(frac, gamma, xp=np):
    """Weights ``w_k`` (..., n, P) of the phases in the effective mixture: ``frac`` (n, P)
    (or (..., n, P)), ``gamma`` (...) draws or a number. Sums to 1 over phases."""
    g = gamma[..., None, None] if getattr(gamma, "ndim", 0) else gamma
    raw = frac * xp.exp(g * (midpoints(frac, xp) - 1.0))  # - 1: no overflow for gamma > 0
    return raw / raw.sum(axis=-1, keepdims=True)


def effective_mixture(frac, mixes, gamma, xp=np):
    """``r_eff`` (..., n, M) of phased runs: ``frac`` (n, P), ``mixes`` (n, P, M) (or with
    leading draw dims), ``gamma`` (...) or a number (module docstring)."""
    w = phase_weights(frac, gamma, xp)  # (..., n, P)
    return (w[..., None] * mixes).sum(axis=-2)


class PhasesLaw(Law):
    """A base law at the effective mixture of phased runs (module docstring). Made by
    :func:`with_phases`; never registered by itself."""

    base: Law

    def mean(self, inputs: Mapping, params: Mapping, xp=np):
        """The base law at ``r_eff`` when ``inputs`` holds the phases (:data:`FRAC_DATA`,
        :data:`MIX_DATA`: the fit and its data groups), else at ``r`` (a static run)."""
        if MIX_DATA in inputs:
            r = effective_mixture(inputs[FRAC_DATA], inputs[MIX_DATA], params["late_emphasis"], xp)
            inputs = {**inputs, "r": r}
        return self.base.mean(inputs, params, xp)

    def build(self, ctx: BuildContext) -> dict:
        params = dict(self.base.build(ctx))
        params["late_emphasis"] = ctx.prior("late_emphasis")
        return params

    def data_arrays(self, r, losses, loss_mean, loss_scale):
        return self.base.data_arrays(r, losses, loss_mean, loss_scale)

    def table_arrays(self, runs) -> dict:
        """Each record's phases (:meth:`bayesmix.RunTable.phases`; a table without phase
        columns: one phase per run), with the base law's own arrays."""
        found = runs.phases()
        if found is None:
            r = runs.to_tidy()[[f"mix.{d}" for d in runs.train_domains]].to_numpy(float)
            found = (np.ones((len(r), 1)), r[:, None, :])
        return {**self.base.table_arrays(runs), FRAC_DATA: found[0], MIX_DATA: found[1]}

    def value_grad(self, r, params, weights, *, n_params=None, tokens=None):
        return self.base.value_grad(r, params, weights, n_params=n_params, tokens=tokens)

    def draw_optima(self, params, weights, lower, upper, x0=None, **inputs):
        """A static mixture's optima: the base law's (``r_eff = r`` for a static run)."""
        return self.base.draw_optima(params, weights, lower, upper, x0=x0, **inputs)

    def epochs(self, r, params: Mapping, inputs: Mapping):
        return self.base.epochs(r, params, inputs)

    def __reduce__(self):
        return with_phases, (self.base,)


#: Wrapped laws made so far, by name (unpickling finds them again).


def with_phases(base: Law) -> PhasesLaw:
    """``base`` on phased runs: a law named ``base.name + "+phases"`` with the base's
    parameters plus ``late_emphasis`` and its inputs; as convex as the base for a static
    mixture (its decisions of one mixture are the base law's)."""
    if isinstance(base, PhasesLaw):
        return base
    return component_law(
        PhasesLaw,
        base,
        SUFFIX,
        description=f"{base.description}; on phased runs (late-phase emphasis)",
        params=(*base.params, *PHASE_PARAMS),
        priors={**base.priors, **PHASE_PRIORS},
    )
