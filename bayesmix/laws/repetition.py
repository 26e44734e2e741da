"""Repeated data is worth less: any law plus the cost of repetition (``law = "<law>+repeat"``).

A run of ``D`` training tokens with share ``r_j`` of training domain j reads ``r_j D`` tokens of
it; a domain with ``U_j`` unique tokens is then seen for ``e_j = r_j D / U_j`` epochs. Muennighoff
et al. (2023, "Scaling Data-Constrained Language Models") fit the value of repeated tokens as an
effective amount of data: with ``R_j = e_j - 1`` repetitions beyond the first pass,

    D'_j = U_j + U_j R* (1 - exp(-R_j / R*))        (e_j > 1; D'_j = r_j D otherwise)

so the k-th repetition is worth ``exp(-(k - 1) / R*)`` of a fresh pass: about 4 epochs are
nearly as good as fresh data and beyond ``R*`` (their fit: 15.4) almost nothing is gained; at
most ``U_j (1 + R*)`` effective tokens come out of a domain. With the effective shares
``r'_j = D'_j / D`` (:func:`effective_shares`), their sum ``s = sum_j r'_j`` (the effective
fraction of the budget, 1 without repetition) and the effective composition ``r'' = r' / s``:

    L_i(r; D) = base_i(r'') + B ((s D)^-beta - D^-beta)

the base law at the mixture the model effectively learns from, plus Chinchilla's data term for
the tokens repetition wastes (:func:`data_cost`; Hoffmann et al. 2022: ``B D^-beta``, here
``B D^-beta = data_term (D / 1e11)^-beta``). A base law that takes ``tokens`` itself (e.g.
``scaling``) gets ``r''`` and ``s D`` tokens instead and no extra term. Both parts are written on
the simplex, so no law's gauge (e.g. M4's zero-sum slopes) enters.

Where no domain repeats (every ``e_j <= 1``: proxy runs at small ``D``) ``r'' = r`` and
``s = 1`` exactly: a fit on such runs is the base law's, and the component's parameters keep
their priors (:data:`REPEAT_PRIORS`, :data:`DATA_PRIORS`: ``R*`` LogNormal around the published
15.4, ``data_term`` around Chinchilla's 0.34 nats at 1e11 tokens, ``data_exponent`` around its
0.28); runs that do repeat a domain update them. A target budget at which a small domain would be
repeated many times then pays twice: the domain's effective share stops growing near
``U_j (1 + R*)`` tokens, and every token beyond that is lost from the budget.

Inputs and parameters. The wrapped law takes ``tokens`` (each run's training tokens ``D``, the
run table's ``tokens`` column; a decision's target budget, ``inputs={"tokens": D}``) as the
run's budget only (:attr:`Law.budget_inputs`: one record per run, as for the base law, and no
scale it extrapolates in). Unique tokens ``U`` come from the run table's ``unique.<domain>``
columns (:meth:`RepeatLaw.table_arrays`) and are stored with the draws as ``unique_tokens``
(train_domain; the same in every draw), so every prediction and decision reads the numbers the
fit was given.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pymc as pm

from bayesmix.laws.base import BuildContext, Law, Param, component_law

#: Suffix of a law name that adds the repetition component (``"m4+repeat"``).
SUFFIX = "+repeat"
#: Muennighoff et al. (2023)'s fitted decay constant of repeated data, in repetitions.
PUBLISHED_R_STAR = 15.4
#: The component's parameters as stored in the posterior.
REPEAT_PARAMS = (
    Param(
        "r_star",
        (),
        "epochs",
        "decay constant R* of repeated data: the k-th repetition of a domain is worth "
        "exp(-(k - 1) / R*) of a fresh pass (Muennighoff et al. 2023)",
    ),
    Param(
        "unique_tokens",
        ("train_domain",),
        "tokens",
        "unique tokens available of training domain j (from the run table's unique.<domain> "
        "columns; the same in every draw)",
    ),
)
#: Default prior of ``R*``: LogNormal around the published fit (median 15.4, 90% in 6.8-35).
REPEAT_PRIORS = {
    "r_star": {"dist": "LogNormal", "mu": float(np.log(PUBLISHED_R_STAR)), "sigma": 0.5},
}
#: Parameters of the data term (for a base law without a tokens input).
DATA_PARAMS = (
    Param(
        "data_term",
        (),
        "nats/token",
        "Chinchilla's data term B D^-beta at 1e11 training tokens: the loss still due to "
        "finite data there",
    ),
    Param("data_exponent", (), "", "exponent beta of the data term B D^-beta"),
)
#: Training tokens at which ``data_term`` is the data term's value.
REFERENCE_TOKENS = 1e11
#: Default priors of the data term: Hoffmann et al. (2022) fit B = 410.7, beta = 0.28, so
#: ``B 1e11^-0.28`` = 0.34 nats; LogNormal around both (90% in 0.15-0.78 nats and 0.19-0.42).
DATA_PRIORS = {
    "data_term": {"dist": "LogNormal", "mu": float(np.log(0.34)), "sigma": 0.5},
    "data_exponent": {"dist": "LogNormal", "mu": float(np.log(0.28)), "sigma": 0.25},
}
#: ``pm.Data`` name of the unique tokens per training domain in the model.
UNIQUE_DATA = "unique_tokens_data"


def epochs(r, tokens, unique, xp=np):
    """Passes over each domain's unique data: ``e_j = r_j D / U_j``, shape of ``r`` (..., n, M);
    ``tokens`` D (..., n) (or a number), ``unique`` U (..., M) (tokens)."""
    return r * _as_array(tokens, xp)[..., None] / unique[..., None, :]


def wasted_shares(r, tokens, unique, r_star, xp=np):
    """``r_j - r'_j`` (..., n, M): the share of the budget repetition wastes per domain, with
    the effective shares ``r'_j = D'_j / D`` of the module docstring; ``r`` (..., n, M),
    ``tokens`` D (..., n) or a number, ``unique`` U (..., M), ``r_star`` (...). Exactly 0 where
    a domain is not repeated (``e_j <= 1``)."""
    per_epoch = unique[..., None, :] / _as_array(tokens, xp)[..., None]  # U / D: 1 epoch
    excess = xp.maximum(r / per_epoch - 1.0, 0.0)  # repetitions R = e - 1 beyond the first pass
    rs = r_star[..., None, None]
    return per_epoch * (excess - rs * (1.0 - xp.exp(-excess / rs)))  # 0 at R = 0


def effective_shares(r, tokens, unique, r_star, xp=np):
    """Effective shares ``r'_j = D'_j / D`` (..., n, M) (:func:`wasted_shares`); exactly ``r``
    where a domain is not repeated."""
    return r - wasted_shares(r, tokens, unique, r_star, xp)


def effective_mixture(r, tokens, unique, r_star, xp=np):
    """(``r''`` (..., n, M), ``s`` (..., n)): the effective composition and the effective
    fraction of the budget, ``s = 1 - sum_j (r_j - r'_j)``; exactly (r, 1) without
    repetition."""
    waste = wasted_shares(r, tokens, unique, r_star, xp)
    kept = 1.0 - waste.sum(axis=-1)
    return (r - waste) / kept[..., None], kept


def _as_array(x, xp):
    return xp.as_tensor_variable(x) if hasattr(xp, "as_tensor_variable") else np.asarray(x)


def data_cost(kept, tokens, data_term, data_exponent, xp=np):
    """Loss (..., n) of training on ``s D`` effective tokens instead of ``D``: Chinchilla's data
    term ``B D^-beta`` at ``s D`` minus at ``D``, where ``B D^-beta = data_term (D / 1e11)^-beta``
    (:data:`REFERENCE_TOKENS`); exactly 0 where ``s = 1``. ``kept`` s (..., n), ``tokens`` D
    (..., n) or a number, ``data_term`` and ``data_exponent`` (...)."""
    beta = data_exponent[..., None]
    at_budget = data_term[..., None] * (_as_array(tokens, xp) / REFERENCE_TOKENS) ** (-beta)
    return at_budget * (kept ** (-beta) - 1.0)


class RepeatLaw(Law):
    """A base law on the effective composition, plus the cost of the tokens repetition wastes
    (module docstring). Made by :func:`with_repetition`; never registered by itself."""

    base: Law

    def mean(self, inputs: Mapping, params: Mapping, xp=np):
        composition, kept = effective_mixture(
            inputs["r"], inputs["tokens"], params["unique_tokens"], params["r_star"], xp
        )  # r'' (..., n, M) and s (..., n): (r, 1) exactly without repetition
        if "tokens" in self.base.inputs:  # the base law has its own data term: D' = s D
            budget = _as_array(inputs["tokens"], xp) * kept
            return self.base.mean({**inputs, "r": composition, "tokens": budget}, params, xp)
        lost = data_cost(
            kept, inputs["tokens"], params["data_term"], params["data_exponent"], xp
        )  # (..., n)
        return self.base.mean({**inputs, "r": composition}, params, xp) + lost[..., None]

    def build(self, ctx: BuildContext) -> dict:
        params = dict(self.base.build(ctx))
        params["r_star"] = ctx.prior("r_star")
        params["unique_tokens"] = pm.Deterministic(
            "unique_tokens", ctx.inputs[UNIQUE_DATA], dims="train_domain"
        )
        if "tokens" not in self.base.inputs:
            params["data_term"] = ctx.prior("data_term")
            params["data_exponent"] = ctx.prior("data_exponent")
        return params

    def data_arrays(self, r, losses, loss_mean, loss_scale):
        return self.base.data_arrays(r, losses, loss_mean, loss_scale)

    def table_arrays(self, runs) -> dict:
        """``{UNIQUE_DATA: U (M,)}`` from the run table's ``unique.<domain>`` columns
        (FormatError naming the first missing column), with the base law's own."""
        from bayesmix.errors import FormatError

        unique = runs.unique_tokens()
        missing = [d for d in runs.train_domains if d not in (unique or {})]
        if missing:
            raise FormatError(
                f"law {self.name!r} needs the unique tokens of every training domain; "
                f"column 'unique.{missing[0]}' is missing",
                source=runs.source,
                column=f"unique.{missing[0]}",
                hint="add a column unique.<domain> with the domain's unique tokens available "
                "(the same number in every row), or fit the law without +repeat",
            )
        u = np.array([unique[d] for d in runs.train_domains], float)
        return {**self.base.table_arrays(runs), UNIQUE_DATA: u}

    def epochs(self, r, params: Mapping, inputs: Mapping):
        """Epochs (n, M) of mixtures ``r`` (n, M) at ``inputs["tokens"]`` (None without it)."""
        if inputs.get("tokens") is None:
            return None
        u = np.asarray(params["unique_tokens"], float)
        u = u[0] if u.ndim > 1 else u  # the same in every draw
        return epochs(np.atleast_2d(np.asarray(r, float)), inputs["tokens"], u)

    def __reduce__(self):
        return with_repetition, (self.base,)


#: Wrapped laws made so far, by name: one instance per base law (unpickling finds it again).


def with_repetition(base: Law) -> RepeatLaw:
    """``base`` with the cost of repetition: a law named ``base.name + "+repeat"`` with the
    base's parameters plus ``r_star``, ``unique_tokens`` (and ``data_term``, ``data_exponent``
    unless the base takes ``tokens``), its inputs plus ``tokens`` (a budget only,
    :attr:`Law.budget_inputs`); not convex, no exact per-draw solver (decisions use the
    gradient PyTensor derives from :meth:`RepeatLaw.mean`)."""
    if isinstance(base, RepeatLaw):
        return base
    takes_tokens = "tokens" in base.inputs
    return component_law(
        RepeatLaw,
        base,
        SUFFIX,
        description=f"{base.description}; plus the cost of repeated data",
        inputs=base.inputs if takes_tokens else (*base.inputs, "tokens"),
        budget_inputs=base.budget_inputs if takes_tokens else (*base.budget_inputs, "tokens"),
        params=(*base.params, *REPEAT_PARAMS, *(() if takes_tokens else DATA_PARAMS)),
        priors={**base.priors, **REPEAT_PRIORS, **({} if takes_tokens else DATA_PRIORS)},
        convex=False,
        uniform_loss_param=None,
    )
