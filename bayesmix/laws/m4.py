"""Data mixing law M4 of Ye et al. (2024/2025): ``L_i(r) = c_i + k_i * exp(sum_j t_ij r_j)``.

Source: Ye et al., "Data Mixing Laws", ICLR 2025, their candidate M4. Olmix's log-linear law
``c_i + exp(b_i + t_i . r)`` is the same law: because the shares sum to 1,
``k exp(t . r) = exp((t + log k) . r)``, so it is not shipped separately.

Identifiable parameterisation used everywhere in bayesmix:

* each row ``t_i.`` sums to zero over training domains (otherwise a constant added to the row and
  a factor e^-a on ``k_i`` leave L unchanged);
* ``m_i = c_i + k_i`` is then the loss at the uniform mixture, pinned by data;
* ``rho_i = k_i / m_i`` in (0, 1) is the reducible fraction of that loss.

So ``L_i(r) = m_i * (1 - rho_i + rho_i * exp(t_i . r))``, with ``c = m (1 - rho)`` and
``k = m rho``. Shapes: ``r`` (..., n, M); ``m``, ``rho`` (..., K); ``t`` (..., K, M); result
(..., n, K) in the loss's units (nats per token). For ``k > 0`` the weighted sum over domains is
convex in r, so every draw's optimum is one convex problem (solved exactly by
:func:`bayesmix.laws.solvers.solve_exp_sum`). Use it when every run has some of every domain
(lattices, Ye et al.'s designs); with many zero shares prefer ``m4log`` or ``powershare``.

The model samples the same law from the runs' mean shares ``r_bar`` instead of the uniform
mixture (:meth:`M4.build`): ``L_i(r) = m_mean_i (1 - rho_mean_i + rho_mean_i exp(t_i . (r -
r_bar)))``; ``m``, ``rho``, ``c``, ``k`` above are derived from it.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pymc as pm
import pytensor.tensor as pt

from bayesmix.laws.base import Law, Param
from bayesmix.laws.solvers import solve_exp_sum

PARAMS = ("m", "rho", "t")


def exponent(r, t, xp=np):
    """``t_i . r`` for every mixture and validation domain: (..., n, K)."""
    return xp.matmul(r, xp.swapaxes(t, -1, -2))


def mean_loss(r, params, xp=np):
    """Expected loss (..., n, K) of mixtures ``r`` (..., n, M) under M4 ``params``."""
    m = params["m"][..., None, :]
    rho = params["rho"][..., None, :]
    return m * (1.0 - rho + rho * xp.exp(exponent(r, params["t"], xp)))


def to_ck(params):
    """Paper coefficients ``(c, k, t)`` from the identifiable ones (NumPy arrays)."""
    m, rho = np.asarray(params["m"]), np.asarray(params["rho"])
    return m * (1.0 - rho), m * rho, np.asarray(params["t"])


def from_ck(c, k, t):
    """Identifiable ``{m, rho, t}`` from paper coefficients; rows of ``t`` are centred to sum 0.

    Centring shifts ``t_i.`` by its mean a_i and rescales ``k_i`` by e^{a_i}: the law is unchanged
    on the simplex.
    """
    c, k, t = np.asarray(c, float), np.asarray(k, float), np.asarray(t, float)
    a = t.mean(axis=-1)
    k = k * np.exp(a)
    t = t - a[..., None]
    m = c + k
    return {"m": m, "rho": k / m, "t": t}


#: Ye et al.'s coefficients ``c = m (1 - rho)`` and ``k = m rho``, stored by every law built
#: on :func:`level_block` that also stores ``k``.
PAPER_COEFFICIENTS = (
    Param("c", ("eval_domain",), "nats/token", "irreducible part m (1 - rho)", role="derived"),
    Param("k", ("eval_domain",), "nats/token", "reducible part m rho", role="derived"),
)


#: Priors of the M4 block (a specification overrides any of them by name).
M4_PRIORS: dict[str, dict] = {
    # m_i ~ Normal(mean loss of domain i, 2 x its spread across runs); M4 puts it on the loss
    # at the runs' mean shares (``m_mean``), where that mean loss is
    "m": {"dist": "Normal", "mu": "data", "sigma": "data"},
    # logit(rho_i) ~ Normal(rho_logit_mu, rho_logit_sigma): partial pooling of the reducible
    # fraction. Gamma(3, 6) for the scale: mean 0.5, little mass near 0. Learned from a handful
    # of domains, this scale often heads to 0 when the domains' fractions are alike, where the
    # centred hierarchy funnels (measured with HalfNormal(0.5): R-hat 1.19 and 9% divergences
    # on a 5 x 5, 32-run problem).
    "rho_logit_mu": {"dist": "Normal", "mu": -1.0, "sigma": 1.0},
    "rho_logit_sigma": {"dist": "Gamma", "alpha": 3.0, "beta": 6.0},
    # b_ij ~ Normal(b_mu_j + diag_mu [i matches j], b_sigma): slopes pooled per training domain
    "b_mu": {"dist": "ZeroSumNormal", "sigma": 0.5},
    "b_sigma": {"dist": "HalfNormal", "sigma": 0.3},
    "diag_mu": {"dist": "Normal", "mu": -0.3, "sigma": 0.5},
}


#: With fewer validation domains than this, a spread pooled over validation domains (the
#: curvature's ``rho_logit_sigma``, powershare's ``alpha_logit_sigma``) is fixed at its prior's
#: mean instead of learned (:func:`pooling_scale`).
MIN_DOMAINS_TO_LEARN_SPREAD = 4


def pooling_scale(ctx, name: str):
    """The spread ``name`` of a quantity pooled over validation domains: sampled from its
    prior, or, with fewer than :data:`MIN_DOMAINS_TO_LEARN_SPREAD` validation domains, the
    prior's mean (a number; no model variable).

    Why: 3 values say almost nothing about their spread, and when the data pin them close
    together the posterior of a learned spread is a funnel towards 0 that a centred pooling
    diverges in (README's 24 runs over 3 domains, M4: divergences at seeds 1, 4, 5, 7-10 of 10
    at ``rho_logit_sigma`` near 0.03 against a median of 0.3) while the non-centred one mixes
    the spread slowly (bulk ESS 122-486 / 4000)."""
    if len(ctx.eval_domains) < MIN_DOMAINS_TO_LEARN_SPREAD:
        return ctx.priors[name].mean()
    return ctx.prior(name)


def curvature_logit(ctx):
    """``rho_logit`` (K,): the reducible fraction on the logit scale, pooled over validation
    domains: centred or not as the specification's ``hierarchy.curvature`` says, else as its
    ``parameterization``.

    Why a key of its own: where an absence term explains the jump at zero shares, most
    domains' curvature is weakly identified, and the centred pooling funnels at
    ``rho_logit_sigma`` while the slopes still want their data-weighted centring (5Mix
    pipeline, stage 3 on an imputed 1B table, ``m4+absent``: bulk ESS 33 at
    ``rho_logit_sigma`` centred, gate passed at the 2nd attempt non-centred)."""
    mu = ctx.prior("rho_logit_mu")
    sd = pooling_scale(ctx, "rho_logit_sigma")
    form = ctx.hierarchy.get("curvature", ctx.hierarchy.get("parameterization", "centered"))
    if form == "centered":
        return pm.Normal("rho_logit", mu, sd, dims="eval_domain")
    rho_z = pm.Normal("rho_z", 0.0, 1.0, dims="eval_domain")
    return pm.Deterministic("rho_logit", mu + sd * rho_z, dims="eval_domain")


def level_block(ctx):
    """``m`` (loss at the uniform mixture) and ``rho`` (reducible fraction), pooled on the logit
    scale: shared by every law written as ``m_i (1 - rho_i + rho_i h_i(r))`` with h = 1 at the
    uniform mixture."""
    m = ctx.prior("m", dims="eval_domain", mu=ctx.loss_mean, sigma=ctx.loss_scale)
    rho = pm.Deterministic("rho", pm.math.sigmoid(curvature_logit(ctx)), dims="eval_domain")
    pm.Deterministic("c", m * (1.0 - rho), dims="eval_domain")
    return m, rho


def pooled_matrix(ctx, name: str, loc, scale, *, centered: bool, weight=None):
    """A (eval_domain, train_domain) matrix ``name`` ~ Normal(loc, scale): centred, non-centred
    (``name_z``), or, given ``weight`` w (same shape, in [0, 1]), partially centred: ``name``
    ~ Normal(w loc, scale^w) and the matrix is ``loc + scale^(1 - w) (name - w loc)``, the same
    Normal(loc, scale) for every w (w = 1 centred, 0 non-centred)."""
    dims = ("eval_domain", "train_domain")
    if centered and weight is not None:
        raw = pm.Normal(name, weight * loc, scale**weight, dims=dims)
        return loc + scale ** (1.0 - weight) * (raw - weight * loc)
    if centered:
        return pm.Normal(name, loc, scale, dims=dims)
    z = pm.Normal(f"{name}_z", 0.0, 1.0, dims=dims)
    return pm.Deterministic(name, loc + scale * z, dims=dims)


#: ``pm.Data`` name of the slopes' centring weight [eval_domain, train_domain]
#: (:func:`slope_centering`).
SLOPE_CENTERING = "slope_centering"
#: ``pm.Data`` name of the runs' mean shares [train_domain], where M4 is parameterised.
SHARE_CENTER = "m4_share_center"


def slope_centering(r, losses, loss_mean) -> np.ndarray:
    """Centring weight w (K, M) of M4's pooled relative slopes, from a least-squares fit of each
    domain's losses on the shares: w = s^2 / (s^2 + se^2), s the slopes' spread across entries
    beyond their standard errors, se an entry's standard error (both relative to the domain's
    mean loss). Near 1 where the data pin a slope (the centred form mixes well), near 0 where
    the prior does (the non-centred form), as for the noise scales
    (:func:`bayesmix.model.model.noise_centering`); zeros when the runs cannot separate the
    slopes (fewer runs than training domains + 2).

    Why: on RegMix's first 64 runs (17 sparse shares) the centred slopes made the pooled
    spread ``b_sigma`` carry the energy (E-BFMI 0.18, R-hat 1.02, bulk ESS 211 at seed 1) and
    the non-centred ones had E-BFMI 0.6; on the README's 24 runs over 3 domains the centred
    slopes mix well and the non-centred ones do not (bulk ESS 163-331 at ``b_sigma``)."""
    r, losses = np.asarray(r, float), np.asarray(losses, float)
    n_train = r.shape[1]
    out = np.zeros((losses.shape[1], n_train))
    for i in range(losses.shape[1]):
        seen = np.isfinite(losses[:, i])
        x, y = r[seen], losses[seen, i] / loss_mean[i]
        if len(y) < n_train + 2 or np.linalg.matrix_rank(x) < n_train:
            continue
        coef, *_ = np.linalg.lstsq(x, y, rcond=None)  # shares sum to 1: no intercept
        resid = y - x @ coef
        noise = resid @ resid / (len(y) - n_train)
        se2 = noise * np.diag(np.linalg.inv(x.T @ x))  # (M,)
        slopes = coef - coef.mean()
        spread2 = max(slopes @ slopes / max(n_train - 1, 1) - se2.mean(), 1e-12)
        out[i] = spread2 / (spread2 + se2)
    return out


def slope_block(ctx, rho):
    """M4's zero-sum relative slopes ``b`` (pooled per training domain, diagonal effect) and
    ``t = b / rho``: shared by every law whose mixture term is M4's ``exp(t_i . r)``. Their
    pooling is partially centred by :data:`SLOPE_CENTERING` when the law provides it
    (:func:`slope_centering`), else centred or not as the specification says."""
    loc = ctx.prior("b_mu", dims="train_domain")[None, :]
    if ctx.diagonal is not None:
        loc = loc + ctx.prior("diag_mu") * ctx.diagonal
    b_raw = pooled_matrix(
        ctx,
        "b_raw",
        loc,
        ctx.prior("b_sigma"),
        centered=ctx.centered,
        weight=ctx.inputs.get(SLOPE_CENTERING),
    )
    b = pm.Deterministic(
        "b", b_raw - b_raw.mean(axis=1, keepdims=True), dims=("eval_domain", "train_domain")
    )
    return pm.Deterministic("t", b / rho[:, None], dims=("eval_domain", "train_domain"))


def centred_block(ctx, slopes) -> dict:
    """M4's parameters sampled at the runs' mean shares r_bar: level ``m_mean``, reducible
    fraction and relative slopes there (``slopes(ctx, rho_mean)`` -> t, (K, M)), then ``c``,
    ``k``, ``m``, ``rho`` at the uniform mixture (the same law: k exp(t . r) = k_mean
    exp(t . (r - r_bar))). Shared by M4 and the laws that only change its slopes' pooling."""
    m_mean = ctx.priors["m"].create(
        "m_mean", dims="eval_domain", data={"mu": ctx.loss_mean, "sigma": ctx.loss_scale}
    )
    rho_mean = pm.math.sigmoid(curvature_logit(ctx))
    t = slopes(ctx, rho_mean)
    c = pm.Deterministic("c", m_mean * (1.0 - rho_mean), dims="eval_domain")
    # without the runs' mean shares (data prepared for no law): the uniform mixture, t . r_bar = 0
    center = ctx.inputs.get(SHARE_CENTER)
    scale = 1.0 if center is None else pt.exp(-pt.dot(t, center))
    k = pm.Deterministic("k", m_mean * rho_mean * scale, dims="eval_domain")
    m = pm.Deterministic("m", c + k, dims="eval_domain")
    rho = pm.Deterministic("rho", k / m, dims="eval_domain")
    return {"m": m, "rho": rho, "t": t}


class M4(Law):
    """Ye et al.'s M4 (see the module docstring)."""

    name = "m4"
    description = "M4 (Ye et al.): L_i = c_i + k_i exp(t_i . r), zero-sum rows of t"
    params: ClassVar[tuple[Param, ...]] = (
        Param("m", ("eval_domain",), "nats/token", "loss at the uniform mixture (c + k)"),
        Param("rho", ("eval_domain",), "", "reducible fraction k / m, in (0, 1)"),
        Param(
            "t",
            ("eval_domain", "train_domain"),
            "per unit share",
            "effect of training share j on validation loss i (rows sum to 0; < 0 helps)",
            signed=True,
        ),
    )
    derived = PAPER_COEFFICIENTS
    priors = M4_PRIORS
    model = "default"
    convex = True
    uniform_loss_param = "m"  # rows of t sum to zero: t . r = 0 at the uniform mixture
    min_runs = 4
    has_noncentered = True

    def mean(self, inputs, params, xp=np):
        return mean_loss(inputs["r"], params, xp)

    def build(self, ctx):
        """The law at the runs' mean shares r_bar (:data:`SHARE_CENTER`): the level
        ``m_mean`` (the ``m`` prior), the reducible fraction ``rho_mean`` there (pooled on the
        logit scale, :func:`curvature_logit`) and relative slopes b (:func:`slope_block`: pooled
        per training domain with a diagonal effect, rows centred, t = b / rho_mean); ``m``,
        ``rho``, ``c``, ``k`` at the uniform mixture derived.

        b is the relative slope of the loss at r_bar (dL_i/dr_j = m_mean_i b_ij there), which
        the data pin even when the curvature is uncertain: sampling (rho, t) directly made a
        curved ridge. Why r_bar and not the uniform mixture: where the runs' shares lie far from
        uniform (5Mix's designs, the pipeline's stage 3) the level and curvature at the uniform
        mixture are an extrapolation, and a slope there moves with the curvature by
        exp(t . r_bar); the level, slopes and curvature at r_bar are what the data see
        (docs/performance.md). The diagonal effect shifts the prior mean of matching entries and
        shares b_sigma (a separately learned diagonal scale funnelled).
        """
        pr = ctx.priors
        if pr["b_mu"].dist != "ZeroSumNormal":
            from bayesmix.errors import SpecError

            raise SpecError(
                "prior b_mu must be a ZeroSumNormal (rows of t sum to zero for identifiability)",
                hint='keep dist = "ZeroSumNormal"',
            )
        return centred_block(ctx, slope_block)

    def data_arrays(self, r, losses, loss_mean, loss_scale) -> dict:
        """The slopes' centring weight (:func:`slope_centering`) and the runs' mean shares
        (:data:`SHARE_CENTER`), refreshed with every refit."""
        return {
            SLOPE_CENTERING: slope_centering(r, losses, loss_mean),
            SHARE_CENTER: np.asarray(r, float).mean(axis=0),
        }

    def value_grad(self, r, params, weights, *, n_params=None, tokens=None):
        """Analytic: ``f = sum_i w_i L_i``, ``df/dr_j = sum_i w_i m_i rho_i e^{t_i . r} t_ij``."""
        r = np.asarray(r, float)
        m, rho, t = (np.asarray(params[p], float) for p in PARAMS)
        w = np.asarray(weights, float)
        e = (w * m * rho)[..., None, :] * np.exp(exponent(r, t))  # (S, n, K)
        f = (w * m * (1.0 - rho)).sum(-1)[..., None] + e.sum(-1)  # (S, n)
        return f, np.matmul(e, t)  # (S, n, M)

    def draw_optima(self, params, weights, lower, upper, x0=None):
        """Exact per-draw optima: the weighted loss is a constant plus a sum of exponentials
        (:func:`bayesmix.laws.solvers.solve_exp_sum`)."""
        _, k, t = to_ck(params)
        return solve_exp_sum(k * np.asarray(weights, float), t, lower, upper, x0=x0)


def build_naive_model(train_domains, eval_domains, data) -> pm.Model:
    """The plain, unconstrained M4 model (independent c, k, t; Normal noise) of ``data`` (a
    :class:`bayesmix.model.model.ModelData`: r, y, run_idx, eval_idx, loss_mean, loss_scale).

    Only for benchmarks: it shows what the identifiable, hierarchical parameterisation buys.
    """
    coords = {"train_domain": list(train_domains), "eval_domain": list(eval_domains)}
    with pm.Model(coords=coords) as model:
        r = pm.Data("r", data.r)
        y = pm.Data("y", data.y)
        c = pm.HalfNormal("c", sigma=2.0 * data.loss_mean, dims="eval_domain")
        k = pm.HalfNormal("k", sigma=data.loss_mean, dims="eval_domain")
        t = pm.Normal("t", 0.0, 2.0, dims=("eval_domain", "train_domain"))
        sigma = pm.HalfNormal("sigma", sigma=data.loss_scale, dims="eval_domain")
        mean = c[None, :] + k[None, :] * pt.exp(r @ t.T)
        pm.Normal(
            "loss", mu=mean[data.run_idx, data.eval_idx], sigma=sigma[data.eval_idx], observed=y
        )
    return model
