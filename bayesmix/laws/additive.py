"""Additive mixing law (after Shukor et al. 2025): ``L_i(r) = m_i (1 - rho_i + rho_i / S_i(r))``

    S_i(r) = sum_j w_ij q_j(r)^gamma_j,    q_j(r) = (M r_j + EPS) / (1 + EPS),   EPS = 0.1

Source: Shukor et al. 2025, "Scaling laws for optimal data mixtures", whose additive law per
validation domain is ``L = E + 1 / (sum_j C_j r_j^gamma_j) + A / N^alpha + B / D^beta``. This file
is its mixing part at one scale (one model size N, one amount of training D): the
``A / N^alpha + B / D^beta`` terms are constant there and fold into ``m_i (1 - rho_i)``; a law
over (r, N, D) will declare ``n_params``/``tokens`` in :attr:`Law.inputs` (a later issue).

Identifiable form: ``C_ij`` is written as a simplex row ``w_i.`` times a scale, and the shares
as ``q_j`` (the share relative to the uniform one, ``M r_j``, shifted by EPS, exactly as in
:mod:`bayesmix.laws.powershare`). At the uniform mixture q = 1, S = 1 and L = m: the scale of C
becomes ``m_i rho_i``, i.e. ``E_i = m_i (1 - rho_i)`` and ``C_ij = w_ij / (m_i rho_i)`` in q units.

Parameters (shapes for K validation, M training domains; leading draw dims broadcast):

* ``m`` (K,) nats/token: the loss at the uniform mixture;
* ``rho`` (K,) in (0, 1): the reducible fraction of that loss (``1 - rho`` is E / m);
* ``gamma`` (M,) in (0, 1): the power of training domain j's relative share (one per training
  domain, as in Shukor et al.);
* ``w`` (K, M), rows on the simplex: how much training domain j contributes to validation
  domain i's "effective data" S_i (softmax of logits pooled per training domain, plus a
  diagonal effect where validation and training domain match).

Convexity: with gamma in (0, 1) each ``q_j^gamma_j`` is concave in r, so S_i is concave and
positive; ``1/x`` is convex and decreasing, so ``1 / S_i`` is convex and ``sum_i v_i L_i(r)`` is
convex for validation weights v >= 0.

Bound at zero shares: ``q_j >= EPS / (1 + EPS) = 1/11`` and, since gamma < 1 and q may be < 1,
``q_j^gamma_j >= min(q_j, 1) >= 1/11``; S_i is a weighted mean of such terms, so ``1 / S_i <= 11``
and ``L_i < m_i (1 - rho_i + 11 rho_i) < 11 m_i`` for any mixture and any parameters, reached
only when all of w_i. sits on absent domains with gamma near 1.

Use it for any design, dense or sparse: each domain's contribution has diminishing returns of
its own (the first few percent of a domain help most, through gamma_j), and the contributions
add up, so domains substitute for one another. ``powershare`` instead raises a weighted mean of
the shares to one power per validation domain. Measured on RegMix's first 64 runs (2 x 300
draws, held-out 256 test runs): Pile-CC Spearman 0.986 (powershare 0.949, M4 + log shares
0.965, M4 0.927). Sampling: where gamma_j is small a domain's term is nearly constant and its
weight trades with rho, so those weights mix slowly (bulk ESS 19-126 / 600 on simulated truths).
"""

from __future__ import annotations

import numpy as np
import pymc as pm

from bayesmix.laws import m4
from bayesmix.laws.base import Law, Param
from bayesmix.laws.powershare import WEIGHT_PRIORS, relative_share, share_eps, simplex_weights

PARAMS = ("m", "rho", "gamma", "w")


def effective_data(r, gamma, w, xp=np):
    """``S_i = sum_j w_ij q_j^gamma_j`` (..., n, K) for ``gamma`` (..., M), ``w`` (..., K, M):
    1 at the uniform mixture, >= 1/11 always."""
    qg = relative_share(r, xp) ** gamma[..., None, :]  # (..., n, M)
    return xp.matmul(qg, xp.swapaxes(w, -1, -2))  # (..., n, K)


def mean_loss(r, params, xp=np):
    """Expected loss (..., n, K) of mixtures ``r`` (..., n, M) under additive ``params``."""
    m = params["m"][..., None, :]
    rho = params["rho"][..., None, :]
    s = effective_data(r, params["gamma"], params["w"], xp)
    return m * (1.0 - rho + rho / s)


def share_powers(ctx):
    """``gamma`` (train_domain,) in (0, 1): ``sigmoid(gamma_logit_j)``, the logits independent
    under the prior ``gamma_logit`` (measured: pooling them over the few training domains with
    a learned scale left that scale at a bulk ESS of 24 / 600 draws on simulated data)."""
    logit = ctx.prior("gamma_logit", dims="train_domain")
    return pm.Deterministic("gamma", pm.math.sigmoid(logit), dims="train_domain")


class Additive(Law):
    """Shukor et al.'s additive law at one scale (see the module docstring)."""

    name = "additive"
    description = (
        "additive law (Shukor et al.): L_i = m_i (1 - rho_i + rho_i / "
        "sum_j w_ij q_j^gamma_j), q_j = (M r_j + 0.1) / 1.1"
    )
    params = (
        Param("m", ("eval_domain",), "nats/token", "loss at the uniform mixture"),
        Param("rho", ("eval_domain",), "", "reducible fraction of m, in (0, 1)"),
        Param(
            "gamma", ("train_domain",), "", "power of training domain j's relative share, in (0, 1)"
        ),
        Param(
            "w",
            ("eval_domain", "train_domain"),
            "",
            "weight of training domain j in validation domain i's effective data (rows sum to 1)",
        ),
    )
    priors = {
        **{k: v for k, v in m4.M4_PRIORS.items() if k in ("m", "rho_logit_mu", "rho_logit_sigma")},
        **WEIGHT_PRIORS,
        # gamma_j = sigmoid(gamma_logit_j): median 0.5, 95 % of the prior within 0.12-0.88.
        "gamma_logit": {"dist": "Normal", "mu": 0.0, "sigma": 1.0},
    }
    derived = (
        Param(
            "c",
            ("eval_domain",),
            "nats/token",
            "irreducible part m (1 - rho) (Shukor et al.'s E)",
            role="derived",
        ),
    )
    model = "additive"
    convex = True
    min_runs = 4
    has_noncentered = True  # the curvature's pooling (m4.level_block)
    #: ``m`` is the loss at the uniform mixture (checked by the tests).
    uniform_loss_param = "m"

    def mean(self, inputs, params, xp=np):
        return mean_loss(inputs["r"], params, xp)

    def build(self, ctx):
        """m, rho (:func:`bayesmix.laws.m4.level_block`), w
        (:func:`bayesmix.laws.powershare.simplex_weights`), gamma (:func:`share_powers`)."""
        m, rho = m4.level_block(ctx)
        w = simplex_weights(ctx)
        gamma = share_powers(ctx)
        return {"m": m, "rho": rho, "gamma": gamma, "w": w}

    def value_grad(self, r, params, weights, *, n_params=None, tokens=None):
        """Analytic: ``f = sum_i v_i L_i`` and, with ``a_i = v_i m_i rho_i``,
        ``df/dr_j = -gamma_j q_j^gamma_j / (r_j + EPS / M) * sum_i a_i w_ij / S_i^2``."""
        r = np.asarray(r, float)
        m, rho, gamma, w = (np.asarray(params[p], float) for p in PARAMS)
        v = np.asarray(weights, float)
        a = (v * m * rho)[..., None, :]  # (S, 1, K)
        qg = relative_share(r) ** gamma[..., None, :]  # (S, n, M)
        s = np.matmul(qg, np.swapaxes(w, -1, -2))  # (S, n, K)
        f = (v * m * (1.0 - rho)).sum(-1)[..., None] + (a / s).sum(-1)  # (S, n)
        g = -gamma[..., None, :] * qg / (r + share_eps(r.shape[-1])) * np.matmul(a / s**2, w)
        return f, g
