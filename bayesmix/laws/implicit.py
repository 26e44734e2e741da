"""Implicit domain aggregation (Ye et al.): an aggregate loss as a mixture of latent domains.

Source: Ye et al., "Data Mixing Laws", ICLR 2025, section "implicit domain aggregation". A
validation loss whose composition is unknown (typically the overall loss of a validation set,
one column ``overall``) is modelled as K latent domains, each following M4:

    L(r) = sum_k s_k (c_k + k_k exp(t_k . r)),    s on the simplex, c_k, k_k > 0.

Only ``C = sum_k s_k c_k`` and ``a_k = s_k k_k`` enter the loss (and each ``t_k`` only up to a
constant absorbed by ``a_k``), so the paper's (s, c, k) are not identified separately. bayesmix
samples the identified quantities, in M4's form (:mod:`bayesmix.laws.m4`), per aggregate column:

    L(r) = m (1 - rho + rho sum_k s_k exp(t_k . r)),    rows t_k. sum to zero over training domains

* ``m`` (..., E) nats/token: the loss at the uniform mixture (every ``t_k . r`` is 0 there);
* ``rho`` (..., E) in (0, 1): the reducible fraction of that loss;
* ``s`` (..., E, K) on the simplex: the share of the reducible loss carried by latent domain k;
* ``t`` (..., E, K, M) per unit share: latent domain k's slopes (< 0: training domain j helps).

In the paper's terms this is ``s_k`` = ``s``, ``c_k = m (1 - rho)`` (stored as ``c``) and
``k_k = m rho`` (stored as ``k``) for every k: one representative of the paper's law, which
has exactly the same losses. With K = 1 the law is M4 fitted to the aggregate column.

Label switching: latent domains are exchangeable, so every stored draw is ordered by weight,
s_0 >= s_1 >= ... (latent domain 0 carries the most reducible loss). The order is imposed by a
sorting transform (:class:`SortedRows`), not by a constraint the sampler must respect: the
sampler moves in the unordered space, where the posterior is exchangeable and has no boundary,
and every value it stores (s, t and the raw ``latent_z``) is the draw with its latent domains
sorted by s. This is the posterior under the ordering constraint s_0 >= s_1 >= ... (each ordered
draw has K! equally likely unordered preimages), so chains that settled in different labellings
agree. A hard constraint (s built on the ordered simplex) was tried first and measured worse: on
two latent domains with s = (0.64, 0.36) (30 simulated runs, 12 fits of 2 chains), 11 of 24
chains started with the labels the wrong way round and stuck at the boundary s_0 = s_1 (R-hat
1.9-2.2; held-out error 0.0031 against 0.0014 nats); with the sorting transform every chain
agreed (R-hat of s and t at most 1.011 with 2 x 300 draws). Per-draw predictions do not
depend on labels at all.

Slopes as M4's: relative slopes ``b_k = rho t_k`` (dL/dr = m sum_k s_k b_k at the uniform
mixture) around a zero-sum centre ``b_mu`` (E, M): ``b_k = b_mu + b_sigma z_k`` with z iid
Normal(0, 1) centred over training domains and over latent domains (so b_mu is their mean;
``b_sigma`` near 0 merges the latent domains into one). The weights are a softmax of
``S_LOGIT_SD x`` with x iid Normal(0, 1) (logistic-normal, symmetric in the latent domains).

The number of latent domains K is the specification's ``hierarchy.latent`` (default
:data:`DEFAULT_LATENT`); the model gets a ``latent`` dim with coordinates 0..K-1. Convex in r
(a constant plus a positive sum of exponentials), and every draw's optimum is solved exactly
by :func:`bayesmix.laws.solvers.solve_exp_sum`. Several aggregate columns each get their own
latent domains. The diagonal effect does not apply (latent domains have no names).
"""

from __future__ import annotations

import numpy as np
import pymc as pm
import pytensor.tensor as pt
from pymc.logprob.transforms import Transform

from bayesmix.laws import m4
from bayesmix.laws.base import Law, Param
from bayesmix.laws.solvers import solve_exp_sum

PARAMS = ("m", "rho", "s", "t")
#: K when a specification does not set ``hierarchy.latent`` (the paper's best K on the Pile).
DEFAULT_LATENT = 5
#: Prior sd of the weights' logits (s = softmax of S_LOGIT_SD x, x iid Normal(0, 1)): with 1, two
#: latent domains' weights differ by a factor e^1.4 = 4 at one prior sd of their logit gap.
S_LOGIT_SD = 1.0


class SortedRows(Transform):
    """Many-to-one "transform": a (..., K, F) value with its K rows sorted by column 0, largest
    first. ``backward`` sorts, ``forward`` is the identity (a sorted value is one of its own
    preimages) and the Jacobian is 1 (a permutation). The sampler's density on the unsorted
    space is the model's density of the sorted value, exchangeable in the rows; the values it
    stores are sorted."""

    name = "sorted_rows"

    def forward(self, value, *inputs):
        return value

    def backward(self, value, *inputs):
        order = pt.argsort(-value[..., 0], axis=-1)
        return pt.take_along_axis(value, order[..., None], axis=-2)

    def log_jac_det(self, value, *inputs):
        return pt.zeros_like(value[..., 0, 0])


def exponent(r, t, xp=np):
    """``t_k . r`` for every mixture, aggregate column and latent domain: (..., n, E, K) for
    ``r`` (..., n, M) and ``t`` (..., E, K, M)."""
    x = xp.matmul(xp.expand_dims(r, -3), xp.swapaxes(t, -1, -2))  # (..., E, n, K)
    return xp.swapaxes(x, -3, -2)


def mean_loss(r, params, xp=np):
    """Expected aggregate loss (..., n, E) of mixtures ``r`` (..., n, M)."""
    m = params["m"][..., None, :]
    rho = params["rho"][..., None, :]
    mixed = (params["s"][..., None, :, :] * xp.exp(exponent(r, params["t"], xp))).sum(axis=-1)
    return m * (1.0 - rho + rho * mixed)


def to_paper(params) -> dict:
    """The paper's coefficients (NumPy): ``s`` (..., E, K), ``c``, ``k`` (..., E, K) (equal
    over k: one representative of the identified law), ``t`` (..., E, K, M)."""
    m, rho, s = (np.asarray(params[p], float) for p in ("m", "rho", "s"))
    ones = np.ones_like(s)
    return {
        "s": s,
        "c": (m * (1.0 - rho))[..., None] * ones,
        "k": (m * rho)[..., None] * ones,
        "t": np.asarray(params["t"], float),
    }


def from_paper(s, c, k, t) -> dict:
    """Identified ``{m, rho, s, t}`` from the paper's (s (E, K), c, k (E, K), t (E, K, M)).

    ``C = sum_k s_k c_k``; each row t_k. is centred (its mean a_k moves into k_k as e^{a_k});
    then ``a_k = s_k k_k``, ``m = C + sum_k a_k``, ``rho = sum_k a_k / m``, ``s = a / sum a``.
    Latent domains are sorted by the new s, largest first (the ordering the model uses).
    """
    s, c, k, t = (np.asarray(v, float) for v in (s, c, k, t))
    shift = t.mean(axis=-1)
    t = t - shift[..., None]
    a = s * k * np.exp(shift)
    total = a.sum(axis=-1)
    m = (s * c).sum(axis=-1) + total
    weights = a / total[..., None]
    order = np.argsort(-weights, axis=-1, kind="stable")
    return {
        "m": m,
        "rho": total / m,
        "s": np.take_along_axis(weights, order, axis=-1),
        "t": np.take_along_axis(t, order[..., None], axis=-2),
    }


#: Priors of the implicit block (a specification overrides any of them by name).
IMPLICIT_PRIORS: dict[str, dict] = {
    # level and reducible fraction exactly as M4's (data-scaled m, rho pooled on the logit)
    "m": m4.M4_PRIORS["m"],
    "rho_logit_mu": m4.M4_PRIORS["rho_logit_mu"],
    "rho_logit_sigma": m4.M4_PRIORS["rho_logit_sigma"],
    # centre of the latent domains' relative slopes, per aggregate column (zero-sum rows)
    "b_mu": {"dist": "ZeroSumNormal", "sigma": 0.5},
    # spread of the latent domains around it. Latent domains of a mixed validation set differ
    # much more than M4's pooled validation domains of one family: a Pile domain's relative
    # slope in its own training group is of order -1 (M4 on 5Mix), others near 0.
    "b_sigma": {"dist": "HalfNormal", "sigma": 1.0},
}


class Implicit(Law):
    """Implicit domain aggregation (see the module docstring)."""

    name = "implicit"
    description = (
        "implicit aggregation (Ye et al.): L = sum_k s_k (c_k + k_k exp(t_k . r)), "
        "K latent M4 domains"
    )
    params = (
        Param("m", ("eval_domain",), "nats/token", "aggregate loss at the uniform mixture"),
        Param("rho", ("eval_domain",), "", "reducible fraction of that loss, in (0, 1)"),
        Param(
            "s",
            ("eval_domain", "latent"),
            "",
            "share of the reducible loss carried by latent domain k (on the simplex, "
            "ordered: s_0 >= s_1 >= ...)",
        ),
        Param(
            "t",
            ("eval_domain", "latent", "train_domain"),
            "per unit share",
            "effect of training share j on latent domain k (rows sum to 0; < 0 helps)",
            signed=True,
        ),
    )
    derived = m4.PAPER_COEFFICIENTS
    extra_dims = ("latent",)
    extra_dim_defaults = {"latent": DEFAULT_LATENT}
    priors = IMPLICIT_PRIORS
    model = "implicit"
    convex = True
    uniform_loss_param = "m"
    min_runs = 4
    has_noncentered = True

    def mean(self, inputs, params, xp=np):
        return mean_loss(inputs["r"], params, xp)

    def build(self, ctx):
        """m, rho (:func:`bayesmix.laws.m4.level_block`); per latent domain a raw row
        ``latent_z`` = (weight logit, slope deviations) sorted by :class:`SortedRows`; s its
        softmax; t = b / rho with b = b_mu + b_sigma z (z centred over training and latent
        domains). Adds the coordinates ``latent`` (0..K-1) and ``latent_coef`` to the model.
        """
        from bayesmix.errors import SpecError

        if ctx.priors["b_mu"].dist != "ZeroSumNormal":
            raise SpecError(
                "prior b_mu must be a ZeroSumNormal (rows of t sum to zero for identifiability)",
                hint='keep dist = "ZeroSumNormal"',
            )
        k = self.dim_sizes(ctx.hierarchy)["latent"]
        model = pm.modelcontext(None)
        model.add_coord("latent", list(range(k)))
        n_eval = len(ctx.eval_domains)
        m, rho = m4.level_block(ctx)
        pm.Deterministic("k", m * rho, dims="eval_domain")
        dims2 = ("eval_domain", "latent")
        dims3 = ("eval_domain", "latent", "train_domain")
        b_mu = ctx.prior("b_mu", dims=("eval_domain", "train_domain"))
        if k == 1:
            s = pm.Deterministic("s", pt.ones((n_eval, 1)), dims=dims2)
            b = pm.Deterministic("b", b_mu[:, None, :], dims=dims3)
        else:
            model.add_coord("latent_coef", ["s_logit", *(f"z_{d}" for d in ctx.train_domains)])
            # Centred: the raw slopes have sd b_sigma; non-centred: sd 1, times b_sigma (the
            # shipped implicit specs; see models/implicit.toml for the measurements).
            b_sigma = ctx.prior("b_sigma")
            slope_sd = b_sigma if ctx.centered else 1.0
            scale = pt.concatenate(
                [pt.ones(1) * S_LOGIT_SD, pt.ones(len(ctx.train_domains)) * slope_sd]
            )
            raw = pm.Normal(
                "latent_z",
                0.0,
                scale,
                dims=("eval_domain", "latent", "latent_coef"),
                transform=SortedRows(),
            )
            s = pm.Deterministic("s", pm.math.softmax(raw[..., 0], axis=-1), dims=dims2)
            z = raw[..., 1:]
            z = z - z.mean(axis=-1, keepdims=True)
            z = z - z.mean(axis=-2, keepdims=True)
            b = pm.Deterministic(
                "b", b_mu[:, None, :] + (1.0 if ctx.centered else b_sigma) * z, dims=dims3
            )
        t = pm.Deterministic("t", b / rho[:, None, None], dims=dims3)
        return {"m": m, "rho": rho, "s": s, "t": t}

    def value_grad(self, r, params, weights, *, n_params=None, tokens=None):
        """Analytic: ``f = sum_e w_e L_e``,
        ``df/dr_j = sum_e w_e m_e rho_e sum_k s_ek e^{t_ek . r} t_ekj``."""
        r = np.asarray(r, float)
        m, rho, s, t = (np.asarray(params[p], float) for p in PARAMS)
        w = np.asarray(weights, float)
        a = ((w * m * rho)[..., None] * s)[..., None, :, :] * np.exp(exponent(r, t))
        f = (w * m * (1.0 - rho)).sum(-1)[..., None] + a.sum((-1, -2))  # (S, n)
        g = np.einsum("...nek,...ekj->...nj", a, t)  # (S, n, M)
        return f, g

    def draw_optima(self, params, weights, lower, upper, x0=None, **inputs):
        """Exact per-draw optima: the weighted loss is a constant plus ``sum_{e,k}
        w_e m_e rho_e s_ek exp(t_ek . r)``, one exponential per (column, latent domain)
        (:func:`bayesmix.laws.solvers.solve_exp_sum`)."""
        m, rho, s, t = (np.asarray(params[p], float) for p in PARAMS)
        a = (np.asarray(weights, float) * m * rho)[..., None] * s  # (S, E, K)
        n = a.shape[0]
        return solve_exp_sum(a.reshape(n, -1), t.reshape(n, -1, t.shape[-1]), lower, upper, x0=x0)
