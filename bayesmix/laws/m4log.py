"""M4 with a log-share term: ``L_i(r) = c_i + k_i exp(sum_j t_ij r_j + sum_j u_ij g(r_j))``.

``g(r_j) = log(r_j + EPS) - log(1/M + EPS)`` is the log share, centred so that it vanishes at the
uniform mixture (then, as in :mod:`bayesmix.laws.m4`, ``m_i = c_i + k_i`` is the loss there).
M4 is linear in the shares inside the exponential and so underfits the jump of a domain's loss
when its share goes to zero; the log term captures that jump with one
coefficient per pair of domains. EPS = 1e-3 is below the smallest share RegMix records (shares
are rounded to 3 decimals). Measured on RegMix (least squares, 512 runs, Pile-CC): Spearman
0.964 for M4 and 0.993 with the log term on the 256 held-out runs. Source: bayesmix's own
extension of Ye et al.'s M4. Use it for designs where many runs leave domains out (RegMix's
Dirichlet mixtures). Not convex in r in general (a positive u makes the term concave).

Same identifiable parameters as M4: rows of ``t`` sum to zero; ``m``, ``rho`` as there;
``u = v / rho`` (shapes: ``t``, ``u`` (..., K, M)). The PyMC block samples them in another,
equivalent form that NUTS handles fast on hundreds of runs (:meth:`M4Log.build`).
"""

from __future__ import annotations

import numpy as np
import pymc as pm
import pytensor.tensor as pt

from bayesmix.laws import m4
from bayesmix.laws.base import Param
from bayesmix.laws.solvers import NONCONVEX_DRAW_STARTS, project, solve_projected_gradient

EPS = 1e-3
#: Dim of the sampled slope coefficients: M-1 zero-sum contrasts of b, then the M entries of v.
COEF_DIM = "m4log_coef"
#: Name of the ``pm.Data`` whitening matrix (2M-1, 2M-1).
WHITEN = "m4log_whiten"
#: Name of the ``pm.Data`` centre of the features (2M-1,): where m_center, rho_logit and the
#: pooled slopes of the centred block are defined.
CENTER = "m4log_center"
#: Name of the ``pm.Data`` features of the runs minus their centre (n, 2M-1).
FEATURES = "m4log_features"
#: Name of the ``pm.Data`` start (K, 2M-1) of the whitened slopes (see :func:`start`).
START = "m4log_start"
#: Name of the ``pm.Data`` shear (K, 2M-1) of the slopes by the curvature (see :func:`shear`).
SHEAR = "m4log_shear"
#: Name of the ``pm.Data`` start (K,) of ``rho_logit`` and the start (2,) of ``b_sigma``,
#: ``v_sigma`` (see :func:`hyper_start`).
RHO_START, SCALE_START = "m4log_rho_start", "m4log_scale_start"
#: Prior scales of b and v used only to precondition (see :func:`whitening`).
_B_SCALE, _V_SCALE = 0.3, 0.1


def log_share(r, xp=np):
    """Centred log shares g(r) (..., n, M): zero at the uniform mixture."""
    n_train = r.shape[-1]
    return xp.log(r + EPS) - np.log(1.0 / n_train + EPS)


def exponent(r, t, u, xp=np):
    """``t_i . r + u_i . g(r)`` for every mixture and validation domain: (..., n, K)."""
    return m4.exponent(r, t, xp) + xp.matmul(log_share(r, xp), xp.swapaxes(u, -1, -2))


def mean_loss(r, params, xp=np):
    """Expected loss (..., n, K) of mixtures ``r`` (..., n, M)."""
    m = params["m"][..., None, :]
    rho = params["rho"][..., None, :]
    return m * (1.0 - rho + rho * xp.exp(exponent(r, params["t"], params["u"], xp)))


def zero_sum_basis(n: int) -> np.ndarray:
    """Orthonormal basis (n, n-1) of the vectors that sum to zero (Helmert contrasts)."""
    h = np.zeros((n, n - 1))
    for j in range(1, n):
        h[:j, j - 1] = 1.0 / j
        h[j, j - 1] = -1.0
        h[:, j - 1] /= np.linalg.norm(h[:, j - 1])
    return h


def coef_names(train_domains) -> list[str]:
    """Labels of the sampled coefficients: zero-sum contrasts, then log-share slopes."""
    return [f"contrast{j}" for j in range(1, len(train_domains))] + [
        f"log_share:{d}" for d in train_domains
    ]


def features(r) -> np.ndarray:
    """The exponent's features (n, 2M-1): shares in the zero-sum basis, then log shares; both
    vanish at the uniform mixture."""
    r = np.asarray(r, float)
    return np.hstack([r @ zero_sum_basis(r.shape[-1]), log_share(r)])


def _precision(f, loss_mean, loss_scale) -> tuple[np.ndarray, float]:
    """(G (P, P), (m0 / sigma0)^2) of :func:`whitening` for features ``f`` (n, P)."""
    n_train = (f.shape[-1] + 1) // 2
    fc = f - f.mean(axis=0)
    m0 = float(np.median(np.asarray(loss_mean, float)))
    sigma0 = float(np.median(np.asarray(loss_scale, float))) / 8.0
    prior = np.r_[np.full(n_train - 1, _B_SCALE), np.full(n_train, _V_SCALE)] ** -2.0
    scale = (m0 / sigma0) ** 2
    return scale * (fc.T @ fc) + np.diag(prior), scale


def whitening(r, loss_mean, loss_scale) -> np.ndarray:
    """W (P, P), P = 2M-1, such that coefficients ``beta = W gamma`` of the exponent's features
    ``F = [r H, g(r)]`` (n, P) have about unit, uncorrelated posterior scale in ``gamma``:
    ``W = chol(G)^-T`` with ``G = (m0 / sigma0)^2 Fc' Fc + S^-1`` the approximate posterior
    precision of one row's coefficients (Fc: centred features; m0: the typical loss, which is
    dL/d exponent at the uniform mixture; sigma0 = median(loss_scale) / 8: a noise guess; S:
    prior variances of b and v). Only a preconditioner: any W gives the same model, so a W
    left from other data (a refit) is still correct. Unit scale matters because the sampler
    starts each chain within +-1 of its start in ``gamma``."""
    gram, _ = _precision(features(r), loss_mean, loss_scale)
    return np.linalg.inv(np.linalg.cholesky(gram)).T


def start(r, losses, loss_mean, loss_scale) -> np.ndarray:
    """Start (K, P) of the whitened slopes: the ridge fit of the linearised law, ``L_ik / m_i
    - 1 ~ (F_k - f0) . beta_i`` (first order in the exponent, whatever rho), per validation
    domain over its observed losses, with the precision of :func:`whitening`; ``gamma_i =
    chol(G)' beta_i``.

    Why: from zero slopes the first tuning draws fit the data badly, inflate the noise scales
    (sigma ~ 1 nat), and on RegMix 512 one chain in four then settled in a poor local mode of
    ``dm_mathematics`` (rho at the centre 0.04 against 0.37, noise 0.14 against 0.088). Only a
    start: any value gives the same model."""
    f = features(r)
    fc = f - f.mean(axis=0)
    gram, scale = _precision(f, loss_mean, loss_scale)
    chol = np.linalg.cholesky(gram)
    losses = np.asarray(losses, float)
    out = np.zeros((losses.shape[1], f.shape[1]))
    for i, mean in enumerate(np.asarray(loss_mean, float)):
        seen = np.isfinite(losses[:, i])
        x, y = fc[seen], losses[seen, i] / mean - 1.0
        g = gram - scale * (fc.T @ fc) + scale * (x.T @ x)  # this row's observed runs
        out[i] = chol.T @ np.linalg.solve(g, scale * (x.T @ y))
    return out


def shear(r, slopes) -> np.ndarray:
    """Shear ``a`` (K, P) of the slopes by the curvature: the least-squares projection of the
    law's second-order term ``(F_c beta_i)^2 / 2`` onto the centred features ``F_c`` (n, P) of
    mixtures ``r``, at slopes ``beta`` (K, P) (the start's: :func:`start` times W').

    Why: in ``rho (exp(x / rho) - 1) = x + x^2 / (2 rho) + ...`` (x = F_c beta_i) the part of the
    quadratic term that lies in the span of the features moves with 1 / rho just as a change
    of the slopes would, so the sampled slopes and ``rho_logit`` were correlated (|corr| 0.7-0.9
    on RegMix 512). The block samples ``beta + a / rho`` instead of ``beta`` (a shear with unit
    Jacobian): what a linear fit of the data sees, whatever rho. Only a preconditioner: any
    ``a`` gives the same model."""
    f = features(r)
    fc = f - f.mean(axis=0)
    half_square = 0.5 * (fc @ np.asarray(slopes, float).T) ** 2  # (n, K)
    half_square -= half_square.mean(axis=0)
    return np.linalg.lstsq(fc, half_square, rcond=None)[0].T


def hyper_start(r, losses, slopes, a) -> tuple[np.ndarray, np.ndarray]:
    """Starts of ``rho_logit`` (K,) and of ``(b_sigma, v_sigma)`` (2,) from the data.

    ``rho_logit``: per validation domain, the best of a grid over [-4, 4] by the squared error
    of the law on its observed losses, with the sampled slopes at ``slopes`` (K, P; the start's,
    sheared by ``a`` (K, P) as in the block) and the level from the observed mean loss. The
    scales: root mean square of the start's slopes ``b`` (contrasts mapped back to training
    domains; each training domain's largest deviation left out) and log-share slopes ``v``
    around their per-training-domain means.

    Why: from the prior's support point ``rho_logit`` was 17-38 posterior sds away on RegMix
    512 and ``b_sigma``, ``v_sigma`` about 25 (log scale), and tuning spent 32-39k leapfrog
    steps per chain, 26-34k of them in its first 50 draws (8-12k from a start at the
    posterior mean; 11-17k from these starts). Only a start: any value gives the same model."""
    f = features(r)
    fc = f - f.mean(axis=0)
    losses = np.asarray(losses, float)
    n_train = (f.shape[1] + 1) // 2
    grid = np.linspace(-4.0, 4.0, 81)
    rho_logit = np.zeros(losses.shape[1])
    betas = np.zeros_like(np.asarray(slopes, float))
    for i in range(losses.shape[1]):
        seen = np.isfinite(losses[:, i])
        y = losses[seen, i]
        best = np.inf
        for g in grid:
            rho = 1.0 / (1.0 + np.exp(-g))
            beta = slopes[i] - a[i] / rho
            e = np.exp(np.clip(fc @ beta / rho, -50.0, 50.0))
            level = y.mean() / (1.0 - rho + rho * e[seen].mean())
            sse = np.sum((level * (1.0 - rho + rho * e[seen]) - y) ** 2)
            if sse < best:
                best, rho_logit[i], betas[i] = sse, g, beta
    # root mean squares; for b without each column's largest deviation (where a validation
    # domain matches the training domain its own slope is the outlier: RegMix 512 start 0.11
    # against a posterior mean of 0.049, 0.24 with it). Above the posterior is safe, below is
    # the neck of the funnel: median absolute deviations started v_sigma at 0.0013 against
    # 0.017 and one chain took 164k steps to tune; trimmed, v would start at 0.007.
    b = betas[:, : n_train - 1] @ zero_sum_basis(n_train).T
    dev_b = np.sort(np.abs(b - b.mean(axis=0)), axis=0)[:-1]  # (K-1, M)
    v = betas[:, n_train - 1 :]
    scales = [
        np.sqrt(np.mean(dev_b**2)) if dev_b.size else 0.1,
        np.sqrt(np.mean((v - v.mean(axis=0)) ** 2)),
    ]
    return rho_logit, np.maximum(np.asarray(scales), 1e-3)


def _start_at(rv, value) -> None:
    """Start the chains of ``rv`` at ``value`` (symbolic) if it is a sampled variable (a prior
    override may have made it a constant)."""
    model = pm.modelcontext(None)
    if rv in model.free_RVs:
        model.set_initval(rv, value)


def _one(w):
    """The (P, P) matrix W (PyMC may give it leading broadcast dims of length 1)."""
    return w[(0,) * (w.ndim - 2)] if w.ndim > 2 else w


#: Degrees of freedom of the log-share slopes' pooling (Student-t; the contrasts are Normal).
#: Why heavy tails: on RegMix's first 64 runs ``dm_mathematics``' loss falls from 5.5 at share 0
#: to 2.0 at 0.05, an own log-share slope v of about -0.1, 25 times the spread ``v_sigma`` of
#: the others; pooled Normally the law left that domain to a noise of 1.15 nats (others 0.03-
#: 0.13) and its curvature and slopes mixed slowly (R-hat 1.087, bulk ESS 42). With t(4):
#: noise 0.089, u -0.77 (ubuntu_irc's noise 0.49 -> 0.10).
V_NU = 4.0


def _white_logp(value, mu, sd, w, heavy):
    """Log density of whitened coefficients ``gamma`` (..., P) whose ``beta = gamma W'`` is
    Normal(mu, sd), or Student-t(:data:`V_NU`, mu, sd) where ``heavy`` is 1: that density of
    beta times |det W| (the change of variables)."""
    w = _one(w)
    beta = pt.matmul(value, w.T)
    z = (beta - mu) / sd
    normal = -0.5 * z**2 - 0.5 * np.log(2.0 * np.pi)
    nu = V_NU
    student = (
        pt.gammaln((nu + 1.0) / 2.0)
        - pt.gammaln(nu / 2.0)
        - 0.5 * np.log(nu * np.pi)
        - (nu + 1.0) / 2.0 * pt.log1p(z**2 / nu)
    )
    logp = pt.where(pt.eq(heavy, 1.0), student, normal) - pt.log(sd)
    return logp.sum(axis=-1) + pt.log(pt.abs(pt.linalg.det(w)))


def _white_random(mu, sd, w, heavy, rng=None, size=None):
    """Prior draws: beta ~ Normal(mu, sd) (Student-t where ``heavy``), gamma = beta W'^-1."""
    w = w.reshape(w.shape[-2:])
    shape = None if size is None else (*size, np.shape(mu)[-1])
    noise = np.where(heavy == 1.0, rng.standard_t(V_NU, size=shape), rng.normal(size=shape))
    beta = mu + sd * noise
    return np.linalg.solve(w, np.swapaxes(beta, -1, -2)).swapaxes(-1, -2)


class M4Log(m4.M4):
    """M4 plus a centred log-share term (see the module docstring)."""

    name = "m4log"
    description = "M4 + log shares: L_i = c_i + k_i exp(t_i . r + u_i . g(r))"
    params = m4.M4.params + (
        Param(
            "u",
            ("eval_domain", "train_domain"),
            "per unit log share",
            "effect of the log share of training domain j on validation loss i",
            signed=True,
        ),
    )
    model = "logshare"
    priors = {
        **m4.M4_PRIORS,
        # v_ij = rho_i u_ij ~ Student-t(V_NU, v_mu_j + diag_v_mu [i matches j], v_sigma): heavy
        # tails, so that one domain's own strong log-share effect needs no large v_sigma
        "v_mu": {"dist": "Normal", "mu": 0.0, "sigma": 0.1},
        "v_sigma": {"dist": "HalfNormal", "sigma": 0.05},
        "diag_v_mu": {"dist": "Normal", "mu": -0.05, "sigma": 0.1},
    }
    convex = False
    has_noncentered = False  # whitened slopes of its own; hierarchy.parameterization unused
    # the slopes are sampled whitened: on RegMix 512 (seed 1, 4 chains x 1000 after 1000, 2
    # cores) both adaptations take 31 leapfrog steps per draw, but the low-rank estimate's
    # tuning took 125 s against 60 s (its first 50 tuning draws: 360-550 steps each, diag's 90-220)
    adaptation = "diag"

    def mean(self, inputs, params, xp=np):
        return mean_loss(inputs["r"], params, xp)

    def build(self, ctx):
        """The law's parameters from a block built for fast sampling (docs/performance.md).

        Written at the centre ``f0`` of the data's features ``F = [r H, g(r)]``
        (:func:`features`; H an orthonormal zero-sum basis, so ``b = H c`` has zero-sum rows):
        ``L_i = m0_i (1 - rho0_i + rho0_i exp((F - f0) beta_i / rho0_i))`` with the level
        ``m0 = m_center`` derived from ``m_mean`` (prior ``m``), the mean of ``L_i`` over the
        fitted runs, ``rho0 = sigmoid(rho_logit)`` (pooled, centred) and ``beta_i = (c_i,
        v_i)`` pooled per training domain as in M4 (``b_raw ~ Normal(loc_b, b_sigma)`` centred
        per row is ``c ~ Normal(H' loc_b, b_sigma)``; ``v ~ Student-t(V_NU, loc_v, v_sigma)``). Then
        ``t = H c / rho0``, ``u = v / rho0``, and at the uniform mixture (features 0)
        ``c = m0 (1 - rho0)``, ``k = m0 rho0 exp(-f0 . beta / rho0)``, ``m = c + k``,
        ``rho = k / m``: the same law, its priors set where the data are.

        Why: RegMix's 512 runs left the earlier block (non-centred ``v``, slopes at the uniform
        mixture) at NUTS's maximum tree depth for every draw: shares and log shares are
        collinear (condition number 2.5e4), the non-centred pooling means traded off against
        every pinned slope, and the curvature rho coupled with the slopes because the data lie
        far from the uniform mixture. Here ``beta = slopes_white W'`` is sampled whitened
        (:func:`whitening`), centred, and expanded where the data are: about 31 leapfrog steps
        per draw (15 at target_accept 0.85). The level as the runs' mean loss, not the loss at
        ``f0``: that one traded off against rho (correlation 0.93; 2.5x the bulk ESS per draw
        without it). Chains start at the linearised fit (:func:`start`), with ``rho_logit``,
        ``b_sigma`` and ``v_sigma`` at data-based starts (:func:`hyper_start`); the slopes
        are sampled sheared by the curvature (:func:`shear`).
        ``hierarchy.parameterization`` does not apply to this law.
        """
        n_train, n_eval = len(ctx.train_domains), len(ctx.eval_domains)
        w, center = ctx.inputs[WHITEN], ctx.inputs[CENTER]  # pm.Data from data_arrays
        first = ctx.inputs[START]
        model = pm.modelcontext(None)
        if COEF_DIM not in model.coords:
            model.add_coord(COEF_DIM, coef_names(ctx.train_domains))
        # mean loss over the runs and reducible fraction at the centre of the data's features
        m_mean = ctx.priors["m"].create(
            "m_mean", dims="eval_domain", data={"mu": ctx.loss_mean, "sigma": ctx.loss_scale}
        )
        mu_rho, sd_rho = ctx.prior("rho_logit_mu"), ctx.prior("rho_logit_sigma")
        rho_logit = pm.Normal("rho_logit", mu_rho, sd_rho, dims="eval_domain")
        _start_at(rho_logit, ctx.inputs[RHO_START])  # (:func:`hyper_start`)
        rho_c = pm.math.sigmoid(rho_logit)
        # slopes relative to rho at the centre: beta = (c, v), b = H c, pooled as in M4
        basis = zero_sum_basis(n_train)  # (M, M-1)
        loc_b = ctx.prior("b_mu", dims="train_domain")[None, :]
        loc_v = ctx.prior("v_mu", dims="train_domain")[None, :]
        if ctx.diagonal is not None:
            loc_b = loc_b + ctx.prior("diag_mu") * ctx.diagonal
            loc_v = loc_v + ctx.prior("diag_v_mu") * ctx.diagonal
        loc_b = pt.broadcast_to(loc_b, (n_eval, n_train))
        loc_v = pt.broadcast_to(loc_v, (n_eval, n_train))
        b_sigma, v_sigma = ctx.prior("b_sigma"), ctx.prior("v_sigma")
        _start_at(b_sigma, ctx.inputs[SCALE_START][0])
        _start_at(v_sigma, ctx.inputs[SCALE_START][1])
        # sampled: beta + a / rho (:func:`shear`; unit Jacobian), so its prior mean moves too
        sheared = ctx.inputs[SHEAR] / rho_c[:, None]  # (K, P)
        mu = pt.concatenate([pt.dot(loc_b, basis), loc_v], axis=1) + sheared  # (K, 2M-1)
        sd = pt.concatenate(
            [pt.repeat(b_sigma[None], n_train - 1), pt.repeat(v_sigma[None], n_train)]
        )
        white = pm.CustomDist(
            "slopes_white",
            mu,
            sd,
            w,
            np.r_[np.zeros(n_train - 1), np.ones(n_train)],
            logp=_white_logp,
            random=_white_random,
            # chains start at the linearised fit (:func:`start`), not at the jittered prior
            # mean (that could put exponents near 1e2), whatever the hyperparameters' start
            support_point=lambda rv, size, *params: first + pt.zeros(rv.shape),
            signature="(p),(p),(p,p),(p)->(p)",
            dims=("eval_domain", COEF_DIM),
        )
        beta = pm.Deterministic(
            "slopes", pt.matmul(white, w.T) - sheared, dims=("eval_domain", COEF_DIM)
        )
        slope = beta / rho_c[:, None]  # (K, P): t, u
        # level at the centre from the mean loss over the runs (what the data pin; the level
        # at the centre traded off against the curvature rho: correlation 0.93)
        fc = ctx.inputs[FEATURES]  # (n, P): the runs' features minus the centre
        lift = pt.exp(pt.dot(fc, slope.T)).mean(axis=0)  # (K,)
        m_c = m_mean / (1.0 - rho_c + rho_c * lift)
        pm.Deterministic("m_center", m_c, dims="eval_domain")
        dims = ("eval_domain", "train_domain")
        t = pm.Deterministic("t", pt.dot(slope[:, : n_train - 1], basis.T), dims=dims)
        u = pm.Deterministic("u", slope[:, n_train - 1 :], dims=dims)
        # back to the uniform mixture (features 0): c unchanged, k scaled by exp(-centre . slope)
        c = pm.Deterministic("c", m_c * (1.0 - rho_c), dims="eval_domain")
        k = pm.Deterministic("k", m_c * rho_c * pt.exp(-pt.dot(slope, center)), dims="eval_domain")
        m = pm.Deterministic("m", c + k, dims="eval_domain")
        rho = pm.Deterministic("rho", k / m, dims="eval_domain")
        pm.Deterministic("b", rho[:, None] * t, dims=dims)
        pm.Deterministic("v", rho[:, None] * u, dims=dims)
        return {"m": m, "rho": rho, "t": t, "u": u}

    def data_arrays(self, r, losses, loss_mean, loss_scale) -> dict:
        """``pm.Data`` values the centred block derives from the data (refreshed on refits):
        the whitening matrix, the centre of the features (P,), the slopes' start (K, P), their
        shear by the curvature (K, P), and the starts of ``rho_logit`` (K,) and of the slopes'
        scales (2,)."""
        w, first = whitening(r, loss_mean, loss_scale), start(r, losses, loss_mean, loss_scale)
        a = shear(r, first @ w.T)
        rho_logit, scales = hyper_start(r, losses, first @ w.T, a)
        return {
            WHITEN: w,
            CENTER: features(r).mean(axis=0),
            FEATURES: features(r) - features(r).mean(axis=0),
            START: first,
            SHEAR: a,
            RHO_START: rho_logit,
            SCALE_START: scales,
        }

    def value_grad(self, r, params, weights, *, n_params=None, tokens=None):
        """Analytic: as M4 with ``t_ij + u_ij / (r_j + EPS)`` in place of ``t_ij``."""
        r = np.asarray(r, float)
        m, rho, t, u = (np.asarray(params[p], float) for p in ("m", "rho", "t", "u"))
        w = np.asarray(weights, float)
        e = (w * m * rho)[..., None, :] * np.exp(exponent(r, t, u))  # (S, n, K)
        f = (w * m * (1.0 - rho)).sum(-1)[..., None] + e.sum(-1)
        g = np.matmul(e, t) + np.matmul(e, u) / (r + EPS)
        return f, g

    def draw_optima(self, params, weights, lower, upper, x0=None):
        """Per-draw optima (r (S, M), converged (S,)) by batched projected gradients from the
        generic solver's starts (``x0``, else the feasible centre, and random feasible points)
        plus starts on the faces where a log-share well may sit.

        Why: a positive ``u_ij`` makes ``exp(u_ij g(r_j)) ~ (r_j + EPS)^u_ij`` fall steeply as
        r_j -> 0, so a draw's optimum can sit at a zero share in a well about EPS wide that
        interior starts miss (measured: 3 of 20 prior-like draws of m4log were 0.04-0.5 nats
        above their own lattice optimum). For every training domain j with ``u_ij > 0`` for some
        weighted i, one start has r_j at its lower bound (the centre projected onto that face),
        and one start has all such shares at their lower bounds."""
        u = np.asarray(params["u"], float)
        w = np.asarray(weights, float)
        lo, hi = np.asarray(lower, float), np.asarray(upper, float)
        n_draws, n_train = u.shape[0], u.shape[-1]
        centre = project(np.full(n_train, 1.0 / n_train), lo, hi) if x0 is None else x0
        every = np.arange(n_draws)
        extra = NONCONVEX_DRAW_STARTS - 1
        rng = np.random.default_rng(0)
        draw = [every, np.tile(every, extra)]
        starts = [
            np.broadcast_to(centre, (n_draws, n_train)),
            project(rng.dirichlet(np.ones(n_train), n_draws * extra), lo, hi),
        ]
        wells = ((u > 0) & (w[:, None] > 0)).any(axis=1)  # (S, M): a well may sit at r_j = lo_j
        faces = [wells & np.eye(n_train, dtype=bool)[j] for j in range(n_train)]
        faces.append(np.where((wells.sum(axis=1) > 1)[:, None], wells, False))  # all at once
        for on in faces:  # (S, M): shares held at their lower bounds
            top = np.where(on, lo, hi)
            rows = np.flatnonzero(on.any(axis=1) & (top.sum(axis=1) >= 1.0))  # feasible faces
            draw.append(rows)
            starts.append(project(np.where(on[rows], lo, centre), lo, top[rows]))
        draw_of, x_start = np.concatenate(draw), np.vstack(starts)

        def fun(rows, x):
            sub = {p: np.asarray(v, float)[draw_of[rows]] for p, v in params.items()}
            f, g = self.value_grad(x[:, None, :], sub, w)
            return np.asarray(f)[:, 0], np.asarray(g)[:, 0, :]

        x, ok = solve_projected_gradient(fun, x_start, lo, hi)
        f = fun(np.arange(len(x)), x)[0]
        f = np.where(np.isfinite(f), f, np.inf)
        best = np.full(n_draws, -1)
        for row in np.argsort(f, kind="stable")[::-1]:  # the lowest value wins, per draw
            best[draw_of[row]] = row
        return x[best], ok[best]
