"""Power law in the shares (after BiMix): ``L_i(r) = m_i x_i(r)^(-alpha_i)``

    x_i(r) = sum_j w_ij q_j(r),    q_j(r) = (M r_j + EPS) / (1 + EPS),   EPS = 0.1

Source: Ge et al. 2024, "BiMix: a bivariate data mixing law for language model pretraining",
whose mixing part is ``L_i = A_i / r_i^alpha_i``: the loss of a domain falls as a power of that
domain's share. Here the share is an effective one, ``x_i``: a weighted mean of the relative
shares of all training domains (weights w_i. on the simplex), so related domains may stand in
for one another. With ``w_ij = [i == j]`` it is BiMix's law (``A_i`` = ``m_i`` in relative-share
units).

Parameters (shapes for K validation, M training domains; leading draw dims broadcast):

* ``m`` (K,) nats/token: the loss at the uniform mixture (q = 1 there, so x = 1 and L = m);
* ``alpha`` (K,) in (0, ALPHA_MAX = 1): the power of validation domain i's effective share,
  pooled over validation domains on the logit scale;
* ``w`` (K, M), rows on the simplex: how much training domain j counts in validation domain i's
  effective share (a softmax of logits pooled per training domain, plus a diagonal effect where
  validation and training domain match).

``q_j`` is the share relative to the uniform one, ``M r_j``, shifted by EPS. Bound at zero shares:
``q_j >= EPS / (1 + EPS) = 1/11`` for every M, so ``x_i >= 1/11`` and
``L_i <= m_i 11^alpha_i < 11 m_i`` for any mixture and any parameters; the bound is approached
only when all of w_i. sits on absent domains and alpha_i nears 1. Under the default priors
(alpha about 0.18) a validation domain whose training domains are all absent has 1.5 x its
uniform-mixture loss (RegMix 1M: a Pile domain's loss is about 1.5 x higher without its own
domain; fitted alphas 0.04 to 0.7). The bound is the design brief's lesson from the log-share
law: an unbounded log term diverged on a sparse swarm (24 domains, most shares zero). In
absolute shares EPS / M is 0.006 for M = 17: RegMix's smallest recorded share (0.001) counts as
nearly absent, and a share of 0.01 already raises q from 0.09 to 0.24.

Choices, measured (least squares on data simulated from M4, 4 domains, 40 runs, noise-free;
MCMC on RegMix's first 64 runs, 2 x 300 draws):

* an effective share rather than a sum of per-domain powers ``sum_j w_ij q_j^(-alpha_j)`` (the
  literal generalisation of BiMix): the sum penalises the absence of every weighted domain
  separately and cannot say "domain A or domain B helps"; on one law simulated from M4 its
  held-out RMSE was 0.26 nats against 0.045 for the effective share (0.045-0.10 over three
  simulated laws). The effective share is also a matrix
  product (``q @ w.T``), so prediction over draws x mixtures never builds an (n, K, M) array;
* no irreducible part (``m_i (1 - rho_i + rho_i x^-alpha)`` is the form M4 and the additive law
  use): BiMix has none, and here it made a ridge (rho, alpha and the contrast of w all scale the
  slope at the uniform mixture; only the curvature separates them): on two M4-simulated data
  sets alpha's hyper-mean had a bulk ESS of 17-63 / 600 and R-hat up to 1.1 with it, 380-520
  and R-hat <= 1.04 without; held-out RegMix Pile-CC Spearman 0.954 with it, 0.949 without
  (RegMix MAE 0.14 against 0.18 nats: the floor helps the absolute level of the large-loss
  domains). The mixture range is bounded, so the loss never needs a floor.

Convexity: ``x_i`` is affine in r and positive, and ``x^(-alpha)`` is convex and decreasing for
``alpha > 0``, so each L_i is convex (``m > 0``) and so is ``sum_i v_i L_i(r)`` for validation
weights v >= 0.

Use it for designs with many zero or tiny shares (RegMix's Dirichlet swarms): the loss rises
steeply but boundedly as a domain's effective share goes to zero, and flattens as a power (not
an exponential, as in M4) for large shares. The additive law (:mod:`bayesmix.laws.additive`)
is the alternative with per-domain concave powers inside a reciprocal.
"""

from __future__ import annotations

import numpy as np
import pymc as pm

from bayesmix.laws import m4
from bayesmix.laws.base import Law, Param

#: Shift of the relative share M r_j: q >= EPS / (1 + EPS), so a power -alpha of it is at most
#: (1 + 1/EPS)^ALPHA_MAX = 11.
EPS = 0.1
#: Upper bound of every exponent alpha_i (a bound through the form, not only the prior).
ALPHA_MAX = 1.0

PARAMS = ("m", "alpha", "w")


def relative_share(r, xp=np):
    """``q = (M r + EPS) / (1 + EPS)`` (..., n, M): 1 at the uniform mixture, >= 1/11 always."""
    n_train = r.shape[-1]
    return (r * n_train + EPS) / (1.0 + EPS)


def share_eps(n_train: int) -> float:
    """EPS in absolute share units: ``q_j = (r_j + e) / (1/M + e)`` with ``e = EPS / M``."""
    return EPS / n_train


def effective_share(r, w, xp=np):
    """``x_i = sum_j w_ij q_j`` (..., n, K) for ``w`` (..., K, M): 1 at the uniform mixture."""
    return xp.matmul(relative_share(r, xp), xp.swapaxes(w, -1, -2))


def mean_loss(r, params, xp=np):
    """Expected loss (..., n, K) of mixtures ``r`` (..., n, M) under powershare ``params``."""
    m = params["m"][..., None, :]
    alpha = params["alpha"][..., None, :]
    return m * effective_share(r, params["w"], xp) ** -alpha


#: Priors of the simplex weights w (shared with :mod:`bayesmix.laws.additive`).
WEIGHT_PRIORS: dict[str, dict] = {
    # logit_ij ~ Normal(w_mu_j + diag_w_mu [i matches j], w_sigma), w_i. = softmax_j(logit_i.).
    # w_mu is zero-sum: a constant added to every logit leaves the softmax unchanged.
    # A logit spread of 1 lets weights differ by a factor of about e within a row.
    "w_mu": {"dist": "ZeroSumNormal", "sigma": 1.0},
    # Gamma(3, 3): mean 1, little mass near 0, where a centred hierarchy funnels (measured with
    # HalfNormal(1), additive law: centred logits, E-BFMI 0.39 and bulk ESS 69 / 600 at
    # w_sigma on RegMix's first 64 runs; non-centred, ESS 14 at w_sigma on simulated runs).
    "w_sigma": {"dist": "Gamma", "alpha": 3.0, "beta": 3.0},
    # A matching training domain carries more of its validation domain's loss: +1 on the logit
    # is e times the weight of an average domain (RegMix: a domain's own share moves its loss
    # most).
    "diag_w_mu": {"dist": "Normal", "mu": 1.0, "sigma": 1.0},
}


def simplex_weights(ctx):
    """``w`` (eval_domain, train_domain), rows on the simplex: ``softmax_j(w_logit_i.)``.

    The prior is the iid Normal of :data:`WEIGHT_PRIORS` projected onto rows that sum to zero
    (``pm.ZeroSumNormal`` over the training axis): the softmax ignores a row's mean, and
    leaving that mean free gave the sampler one direction per row that only the prior pins
    (measured on RegMix, 64 runs: bulk ESS 20 / 600 and R-hat 1.13 along the row means). The
    weights' distribution is unchanged. Centred or non-centred as the specification says.
    """
    dims = ("eval_domain", "train_domain")
    loc = ctx.prior("w_mu", dims="train_domain")[None, :]
    if ctx.diagonal is not None:
        loc = loc + ctx.prior("diag_w_mu") * ctx.diagonal
    loc = loc - loc.mean(axis=1, keepdims=True)
    sd = ctx.prior("w_sigma")
    if ctx.centered:
        dev = pm.ZeroSumNormal("w_logit_dev", sigma=sd, dims=dims)
    else:
        dev = sd * pm.ZeroSumNormal("w_logit_z", sigma=1.0, dims=dims)
    logit = pm.Deterministic("w_logit", loc + dev, dims=dims)
    return pm.Deterministic("w", pm.math.softmax(logit, axis=1), dims=dims)


def pooled_fraction(ctx, name: str, upper: float = 1.0):
    """``name`` (eval_domain,) in (0, upper): ``upper * sigmoid(logit_i)``, the logits pooled
    over validation domains, ``Normal(<name>_logit_mu, <name>_logit_sigma)`` (the spread fixed
    for few validation domains, :func:`bayesmix.laws.m4.pooling_scale`), centred or not
    as the specification's hierarchy says (as rho in :func:`bayesmix.laws.m4.level_block`)."""
    mu = ctx.prior(f"{name}_logit_mu")
    sd = m4.pooling_scale(ctx, f"{name}_logit_sigma")
    if ctx.centered:
        logit = pm.Normal(f"{name}_logit", mu, sd, dims="eval_domain")
    else:
        z = pm.Normal(f"{name}_z", 0.0, 1.0, dims="eval_domain")
        logit = pm.Deterministic(f"{name}_logit", mu + sd * z, dims="eval_domain")
    return pm.Deterministic(name, upper * pm.math.sigmoid(logit), dims="eval_domain")


class PowerShare(Law):
    """Power law in the effective share (see the module docstring)."""

    name = "powershare"
    description = (
        "power law in the shares (BiMix): L_i = m_i (sum_j w_ij q_j)^-alpha_i, "
        "q_j = (M r_j + 0.1) / 1.1"
    )
    params = (
        Param("m", ("eval_domain",), "nats/token", "loss at the uniform mixture"),
        Param(
            "alpha",
            ("eval_domain",),
            "",
            "power of validation domain i's effective relative share, in (0, 1)",
        ),
        Param(
            "w",
            ("eval_domain", "train_domain"),
            "",
            "weight of training domain j in validation domain i's effective share (rows sum to 1)",
        ),
    )
    priors = {
        "m": m4.M4_PRIORS["m"],
        **WEIGHT_PRIORS,
        # alpha_i = sigmoid(alpha_logit_i), pooled over validation domains: median 0.18 under
        # the prior, so a zero effective share multiplies the loss at the uniform mixture by
        # 11^0.18 = 1.5 (RegMix 1M: a Pile domain's loss is about 1.5x higher without its own
        # domain); the hyper-mean's +-1 sd spans alpha 0.08 to 0.38. Gamma(3, 6) scale as for
        # M4's rho (mean 0.5, little mass near 0, where a centred hierarchy funnels).
        "alpha_logit_mu": {"dist": "Normal", "mu": -1.5, "sigma": 1.0},
        "alpha_logit_sigma": {"dist": "Gamma", "alpha": 3.0, "beta": 6.0},
    }
    model = "powershare"
    convex = True
    min_runs = 4
    has_noncentered = True
    #: ``m`` is the loss at the uniform mixture (checked by the tests).
    uniform_loss_param = "m"

    def mean(self, inputs, params, xp=np):
        return mean_loss(inputs["r"], params, xp)

    def build(self, ctx):
        """m (data-scaled, as M4's), w (:func:`simplex_weights`), alpha
        (:func:`pooled_fraction`)."""
        m = ctx.prior("m", dims="eval_domain", mu=ctx.loss_mean, sigma=ctx.loss_scale)
        w = simplex_weights(ctx)
        alpha = pooled_fraction(ctx, "alpha", ALPHA_MAX)
        return {"m": m, "alpha": alpha, "w": w}

    def value_grad(self, r, params, weights, *, n_params=None, tokens=None):
        """Analytic: ``f = sum_i v_i L_i`` and
        ``df/dr_j = M / (1 + EPS) * sum_i -v_i m_i alpha_i x_i^(-alpha_i - 1) w_ij``."""
        r = np.asarray(r, float)
        m, alpha, w = (np.asarray(params[p], float) for p in PARAMS)
        a = (np.asarray(weights, float) * m)[..., None, :]  # (S, 1, K)
        alpha = alpha[..., None, :]
        x = effective_share(r, w)  # (S, n, K)
        f = (a * x**-alpha).sum(-1)  # (S, n)
        dx = -a * alpha * x ** (-alpha - 1.0)  # (S, n, K)
        g = np.matmul(dx, w) * (r.shape[-1] / (1.0 + EPS))  # (S, n, M)
        return f, g
