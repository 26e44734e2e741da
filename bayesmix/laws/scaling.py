"""Joint law over model size N, training tokens D and the mixture r (M4 times Chinchilla).

Per validation domain i:

    L_i(N, D, r) = E_i + exp(t_i . r) * (A_i (N / n_ref)^-alpha_i + B_i (D / d_ref)^-beta_i)

Source: Chinchilla's ``E + A / N^alpha + B / D^beta`` (Hoffmann et al. 2022; Epoch AI's
replication) with the reducible part scaled by Ye et al.'s M4 mixing term. At one (N, D) it is
exactly M4 with ``c_i = E_i`` and ``k_i = A_i (N/n_ref)^-alpha_i + B_i (D/d_ref)^-beta_i``: the
mixture changes how much of the reducible loss is left, and because each domain's reducible part
shrinks at its own rate, the best mixture may move with scale. One posterior over all
checkpoints of all model sizes (Ye et al. fitted step, size and mixing laws separately because a
joint point fit was unstable; priors and pooling make it stable here).

Sampled parameterisation (measured on simulated curves: sampling E, A, B and the exponents
directly hit NUTS's maximum tree depth on every draw, and E = m - A - B with a positivity
barrier diverged on every draw; the curvature of a power law over less than a decade of N or D
is barely pinned, its value and slope are). Rows of t sum to zero; at the uniform mixture and the
reference scale (n_ref, d_ref = geometric means of the fitted N and D) the loss is ``m_i``, its
slopes in log N and log D are ``-g_size_i = -A_i alpha_i`` and ``-g_data_i = -B_i beta_i``. The
sampler works on m, the two slopes (relative to m, log scale), the irreducible fraction
``e_i = E_i / m_i`` and the size share ``phi_i = A_i / (A_i + B_i)`` (both logit scale), all
pooled across domains; then ``E = e m``, ``A = (1 - e) m phi``, ``B = (1 - e) m (1 - phi)``,
``alpha = g_size / A``, ``beta = g_data / B`` (so E > 0 by construction). The mixture slopes are
M4's relative slopes ``b`` with ``t = b / rho``, ``rho = 1 - e``.

Priors (for the shipped ``scaling`` spec): Epoch AI's replication of Chinchilla's fit for the
total loss of dense transformers (E 1.82, A 482, B 2085, alpha 0.348, beta 0.366, N in
parameters, D in tokens), evaluated at the fit's own reference scale, centres the population
means of the relative slopes ``g / m`` (log scale, sd 1), of ``e`` and ``phi`` (logit scale,
sd 1): per-domain losses and other data than Chinchilla's, so only the orders of magnitude are
taken. The exponents get a soft prior on top, log alpha ~ Normal(log 0.348, 0.5) and log beta ~
Normal(log 0.366, 0.5) (a potential on the derived values: it keeps draws from the implausible
corners where a tiny curvature fakes a huge irreducible loss). n_ref and d_ref are stored in the
posterior as constant "parameters", so the formula needs nothing else. Shapes: ``r`` (..., n, M);
``n_params``/``tokens`` (..., n); E, A, B, alpha, beta (..., K); t (..., K, M); n_ref, d_ref
(...). Convex in r at every (N, D) (it is M4 there).
"""

from __future__ import annotations

import numpy as np
import pymc as pm
import pytensor.tensor as pt

from bayesmix.laws.base import Law, Param
from bayesmix.laws.m4 import M4_PRIORS, exponent, slope_block
from bayesmix.laws.solvers import solve_exp_sum

#: Epoch AI's replication of Chinchilla (total loss): centres of the priors below.
CHINCHILLA = {"E": 1.82, "A": 482.0, "B": 2085.0, "alpha": 0.348, "beta": 0.366}

SCALING_PRIORS: dict[str, dict] = {
    "m": M4_PRIORS["m"],
    "b_mu": M4_PRIORS["b_mu"],
    "b_sigma": M4_PRIORS["b_sigma"],
    "diag_mu": M4_PRIORS["diag_mu"],
    # log(g_i / m_i) ~ Normal(log_g_*_mu, log_g_*_sigma) for the size and data slopes; the
    # means are centred ("data") on Chinchilla's relative slopes at the fit's reference scale
    "log_g_size_mu": {"dist": "Normal", "mu": "data", "sigma": 1.0},
    "log_g_size_sigma": {"dist": "HalfNormal", "sigma": 0.5},
    "log_g_data_mu": {"dist": "Normal", "mu": "data", "sigma": 1.0},
    "log_g_data_sigma": {"dist": "HalfNormal", "sigma": 0.5},
    # logit(E_i / m_i) and logit(phi_i), centred on Chinchilla's at the reference scale
    "e_logit_mu": {"dist": "Normal", "mu": "data", "sigma": 1.0},
    "e_logit_sigma": {"dist": "HalfNormal", "sigma": 0.5},
    "phi_logit_mu": {"dist": "Normal", "mu": "data", "sigma": 1.0},
    "phi_logit_sigma": {"dist": "HalfNormal", "sigma": 0.5},
}
#: Soft prior on the derived exponents: log alpha ~ Normal(log 0.348, sd), same for beta.
EXPONENT_PRIOR_SD = 0.5


def chinchilla(n_params, tokens, xp=np):
    """Chinchilla's total loss and its slopes in log N and log D at (n_params, tokens):
    (loss, g_size, g_data), nats per token."""
    c = CHINCHILLA
    size = c["A"] * n_params ** -c["alpha"]
    data = c["B"] * tokens ** -c["beta"]
    return c["E"] + size + data, c["alpha"] * size, c["beta"] * data


def mean_loss(inputs, params, xp=np):
    """Expected loss (..., n, K) at mixtures ``r`` (..., n, M), sizes and tokens (..., n)."""
    size = (inputs["n_params"] / params["n_ref"][..., None])[..., None]  # (..., n, 1)
    data = (inputs["tokens"] / params["d_ref"][..., None])[..., None]
    reducible = (
        params["A"][..., None, :] * size ** -params["alpha"][..., None, :]
        + params["B"][..., None, :] * data ** -params["beta"][..., None, :]
    )
    return params["E"][..., None, :] + xp.exp(exponent(inputs["r"], params["t"], xp)) * reducible


class Scaling(Law):
    """M4 mixing term on Chinchilla's reducible loss (see the module docstring)."""

    name = "scaling"
    description = (
        "joint law over size, tokens and mixture: "
        "E_i + exp(t_i . r) (A_i (N/n_ref)^-alpha_i + B_i (D/d_ref)^-beta_i)"
    )
    inputs = ("r", "n_params", "tokens")
    params = (
        Param("E", ("eval_domain",), "nats/token", "irreducible loss (infinite N and D)"),
        Param("A", ("eval_domain",), "nats/token", "size term at n_ref and the uniform mixture"),
        Param("alpha", ("eval_domain",), "", "model-size exponent"),
        Param("B", ("eval_domain",), "nats/token", "data term at d_ref and the uniform mixture"),
        Param("beta", ("eval_domain",), "", "training-tokens exponent"),
        Param(
            "t",
            ("eval_domain", "train_domain"),
            "per unit share",
            "effect of training share j on the reducible loss of domain i (rows sum to 0)",
            signed=True,
        ),
        Param("n_ref", (), "parameters", "reference model size (geometric mean of the fit's)"),
        Param("d_ref", (), "tokens", "reference training tokens (geometric mean of the fit's)"),
    )
    derived = (
        Param(
            "m",
            ("eval_domain",),
            "nats/token",
            "loss at the uniform mixture and the reference scale",
            role="derived",
        ),
        Param(
            "rho",
            ("eval_domain",),
            "",
            "reducible fraction at the reference scale, 1 - E / m",
            role="derived",
        ),
    )
    priors = SCALING_PRIORS
    model = "scaling"
    convex = True
    min_runs = 6
    has_noncentered = True

    def mean(self, inputs, params, xp=np):
        return mean_loss(inputs, params, xp)

    def build(self, ctx):
        """m, the relative slopes g / m, the irreducible fraction e and the size share phi,
        each pooled across domains (centred unless the spec says noncentered), M4's relative
        mixture slopes b; E, A, B, alpha, beta, t follow (see the
        module docstring)."""
        n, d = ctx.inputs["n_params"], ctx.inputs["tokens"]
        n_ref = pm.Deterministic("n_ref", pt.exp(pt.mean(pt.log(n))))
        d_ref = pm.Deterministic("d_ref", pt.exp(pt.mean(pt.log(d))))
        ref_loss, ref_g_size, ref_g_data = chinchilla(n_ref, d_ref, pt)
        ref_e = CHINCHILLA["E"] / ref_loss
        ref_phi = ref_g_size / CHINCHILLA["alpha"] / (ref_loss - CHINCHILLA["E"])
        m = ctx.prior("m", dims="eval_domain", mu=ctx.loss_mean, sigma=ctx.loss_scale)
        dom = "eval_domain"

        def pooled(name, loc):
            # centred by default: each domain's curve is pinned by many checkpoints, where a
            # non-centred z and its scale form a ridge (measured: R-hat 1.57 at the scale)
            mu, sd = ctx.prior(f"{name}_mu", mu=loc), ctx.prior(f"{name}_sigma")
            if ctx.centered:
                return pm.Normal(name, mu, sd, dims=dom)
            return mu + sd * pm.Normal(f"{name}_z", 0.0, 1.0, dims=dom)

        g_size = pm.Deterministic(
            "g_size", m * pt.exp(pooled("log_g_size", pt.log(ref_g_size / ref_loss))), dims=dom
        )
        g_data = pm.Deterministic(
            "g_data", m * pt.exp(pooled("log_g_data", pt.log(ref_g_data / ref_loss))), dims=dom
        )
        e = pm.math.sigmoid(pooled("e_logit", pt.log(ref_e / (1.0 - ref_e))))
        phi = pm.Deterministic(
            "phi", pm.math.sigmoid(pooled("phi_logit", pt.log(ref_phi / (1.0 - ref_phi)))), dims=dom
        )
        e_ = pm.Deterministic("E", e * m, dims=dom)
        rho = pm.Deterministic("rho", 1.0 - e, dims=dom)
        a = pm.Deterministic("A", rho * m * phi, dims=dom)
        b_ = pm.Deterministic("B", rho * m * (1.0 - phi), dims=dom)
        alpha = pm.Deterministic("alpha", g_size / a, dims=dom)
        beta = pm.Deterministic("beta", g_data / b_, dims=dom)
        pm.Potential(
            "exponent_prior",
            -0.5
            * (
                pt.sum(((pt.log(alpha) - np.log(CHINCHILLA["alpha"])) / EXPONENT_PRIOR_SD) ** 2)
                + pt.sum(((pt.log(beta) - np.log(CHINCHILLA["beta"])) / EXPONENT_PRIOR_SD) ** 2)
            ),
        )
        t = slope_block(ctx, rho)
        return {
            "E": e_,
            "A": a,
            "alpha": alpha,
            "B": b_,
            "beta": beta,
            "t": t,
            "n_ref": n_ref,
            "d_ref": d_ref,
        }

    def draw_optima(self, params, weights, lower, upper, x0=None, *, n_params=None, tokens=None):
        """Exact per-draw optima at one scale: M4 with ``k_i`` the reducible loss there."""
        if n_params is None or tokens is None:
            return None
        size = float(n_params) / np.asarray(params["n_ref"], float)[..., None]
        data = float(tokens) / np.asarray(params["d_ref"], float)[..., None]
        k = np.asarray(params["A"]) * size ** -np.asarray(params["alpha"]) + np.asarray(
            params["B"]
        ) * data ** -np.asarray(params["beta"])
        return solve_exp_sum(
            k * np.asarray(weights, float), np.asarray(params["t"], float), lower, upper, x0=x0
        )
