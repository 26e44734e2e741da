"""Extrapolation error learned from backtests: the discrepancy term of target-scale predictions.

A posterior fitted on small, short proxies and asked about a large, long run is only as good as
its extrapolation. Its own intervals say how sure the *law* is, not how well the law's form
carries to a larger model size or more tokens. :mod:`bayesmix.scaling.backtesting` measures that
within the proxies: it refits with the largest size or the latest checkpoints held out and predicts
them with the same predictor. This module turns the backtest's residuals into a calibration and
applies it to predictions.

Model, per held-out (run r, validation domain k) of one backtest split, with ``e`` the observed
minus the predicted mean loss, ``s`` the predictor's own predictive standard deviation and ``u``
the log-distance beyond the fitted range::

    e[r,k] = kappa s[r,k] z[r,k] + delta[k] u + eta[r,k] u
    delta[k] ~ Normal(0, tau^2),  eta[r,k] ~ Normal(0, tau_mix^2),  z ~ Normal(0, 1)
    u = sqrt(log(N / N_max)^2 + log(D / D_max)^2)

with N (parameters) and D (tokens) counted only beyond the largest fitted ones. ``kappa``
rescales the predictor's own spread (< 1: its intervals are wider than its errors, > 1:
narrower); ``tau`` (nats per token per unit of log-distance) is the error a refit shares with
all its held-out runs (a wrong exponent moves every mixture), ``tau_mix`` the part that differs
between mixtures (it is what widens a predicted *difference* between mixtures). Within a
(split, domain) the residuals are jointly Normal with a rank-one shared part, so the likelihood
is exact by Sherman-Morrison; the posterior of (kappa, tau, tau_mix) is computed on a grid with
priors ``log kappa ~ Normal(0, 0.5)``, ``tau ~ HalfNormal(0.05)``, ``tau_mix ~
HalfNormal(0.03)``. ``rho`` and ``rho_mix``, the correlations of the two errors across
domains, are estimated by moments; ``rho`` discounts the domains of one split accordingly.

At the target (:func:`apply_calibration`), for posterior sample j and mixture i:
``predictive = mean + kappa_j (predictive - mean) + (delta_j + eta_ji) u`` and ``mean = mean +
(delta_j + eta_ji) u``; ``delta_j`` is shared by every mixture (a fixed stream: like a law
parameter, it cancels in differences), ``eta_ji`` is drawn from mixture i's own stream.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import pandas as pd

from bayesmix import errors

#: Root attribute of a posterior file holding its calibration (JSON).
ATTR = "bayesmix_extrapolation"
#: Root attribute holding the backtest the calibration was learned from (JSON; written by
#: :func:`bayesmix.scaling.backtesting.attach`).
BACKTEST_ATTR = "bayesmix_backtest"
#: Prior scales: log kappa ~ Normal(0, KAPPA_SD); tau ~ HalfNormal(TAU_SCALE), tau_mix ~
#: HalfNormal(TAU_MIX_SCALE) (nats per token per unit of log-distance: at u = 1.2, e.g. 30k ->
#: 100k steps, 0.05 is a 0.06-nat error).
KAPPA_SD = 0.5
TAU_SCALE = 0.05
TAU_MIX_SCALE = 0.03
#: Grid of the posterior: kappa log-spaced, tau and tau_mix linear.
KAPPA_GRID = np.exp(np.linspace(math.log(0.1), math.log(5.0), 160))
TAU_GRID = np.linspace(0.0, 0.3, 76)
TAU_MIX_GRID = np.linspace(0.0, 0.15, 31)
#: Posterior samples of (kappa, tau) kept with a calibration.
N_SAMPLES = 1000
#: Seed of the discrepancy directions of :func:`apply_calibration` (one per posterior draw).
DELTA_SEED = 20261206


@dataclass
class Calibration:
    """The learned extrapolation error: posterior samples (N_SAMPLES,) of ``kappa`` (spread
    factor), ``tau`` (error shared by a refit's mixtures) and ``tau_mix`` (error of each
    mixture), both in nats per token per unit of log-distance; ``rho``, ``rho_mix`` their
    correlations across domains; the figures they were learned from; and the distance of the
    posterior's own target (``target_distance``; None: computed from each prediction's
    inputs)."""

    kappa: np.ndarray
    tau: np.ndarray
    rho: float
    n_residuals: int
    n_splits: int
    max_distance: float
    tau_mix: np.ndarray = field(default_factory=lambda: np.zeros(N_SAMPLES))
    rho_mix: float = 0.0
    target_distance: float | None = None
    target_ranges: dict = field(default_factory=dict)
    source: str = "backtest"

    @property
    def kappa_mean(self) -> float:
        return float(np.mean(self.kappa))

    @property
    def tau_mean(self) -> float:
        return float(np.mean(self.tau))

    @property
    def tau_mix_mean(self) -> float:
        return float(np.mean(self.tau_mix))

    def interval(self, name: str, prob: float = 0.9) -> tuple[float, float]:
        """Equal-tailed interval of ``kappa``, ``tau`` or ``tau_mix``."""
        x = getattr(self, name)
        lo, hi = np.quantile(x, [(1 - prob) / 2, (1 + prob) / 2])
        return float(lo), float(hi)

    def describe(self) -> str:
        """One line: what was learned and from what."""
        k_lo, k_hi = self.interval("kappa")
        t_lo, t_hi = self.interval("tau")
        m_lo, m_hi = self.interval("tau_mix")
        text = (
            f"extrapolation error learned from {self.n_splits} backtest split(s) "
            f"({self.n_residuals} held-out losses, up to distance {self.max_distance:.2f}): "
            f"spread factor {self.kappa_mean:.2f} [{k_lo:.2f}, {k_hi:.2f}]; per unit "
            f"log-distance, shared error {self.tau_mean:.3f} [{t_lo:.3f}, {t_hi:.3f}] and "
            f"per-mixture error {self.tau_mix_mean:.3f} [{m_lo:.3f}, {m_hi:.3f}] nats, "
            f"correlated {self.rho:.2f} / {self.rho_mix:.2f} across domains"
        )
        if self.target_distance is not None:
            text += f"; target at distance {self.target_distance:.2f}"
        return text

    def with_target(self, distance: float, ranges: dict | None = None) -> Calibration:
        """The same calibration for a posterior whose target lies at ``distance``."""
        return replace(self, target_distance=float(distance), target_ranges=dict(ranges or {}))

    def to_json(self) -> str:
        d = asdict(self)
        for name in _ARRAYS:
            d[name] = [round(float(v), 6) for v in getattr(self, name)]
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Calibration:
        d = json.loads(text)
        for name in _ARRAYS:
            if name in d:
                d[name] = np.asarray(d[name], float)
        return cls(**d)


_ARRAYS = ("kappa", "tau", "tau_mix")


def log_distance(n_params=None, tokens=None, ranges: dict | None = None) -> np.ndarray | float:
    """u = sqrt(log(N / N_max)^2 + log(D / D_max)^2), each term only beyond the fitted maximum
    (``ranges``: ``{"n_params": (lo, hi), "tokens": (lo, hi)}``); 0 inside the range."""
    ranges = ranges or {}
    total: np.ndarray | float = 0.0
    for key, value in (("n_params", n_params), ("tokens", tokens)):
        if value is None or key not in ranges:
            continue
        hi = float(ranges[key][1])
        v = np.asarray(value, float)
        total = total + np.log(np.maximum(v / hi, 1.0)) ** 2
    return np.sqrt(total)


def _check_residuals(frame: pd.DataFrame) -> pd.DataFrame:
    need = ("split", "error", "sd", "distance")
    missing = [c for c in need if c not in frame.columns]
    if missing:
        raise errors.BayesmixError(
            f"backtest residuals lack column {missing[0]!r}",
            hint="pass Backtest.records (bayesmix.backtest)",
        )
    keep = frame[list(need) + [c for c in ("run", "eval_domain") if c in frame.columns]]
    keep = keep[np.isfinite(keep["error"]) & np.isfinite(keep["sd"]) & (keep["sd"] > 0)]
    if keep.empty:
        raise errors.BayesmixError(
            "no finite backtest residual to learn from", hint="check the held-out losses"
        )
    return keep


def _grouped(frame: pd.DataFrame) -> tuple[np.ndarray, ...]:
    """Residuals sorted by (split, domain): e, s^2, u, group index, group starts, the split of
    each group, and the number of groups per split."""
    dom = frame["eval_domain"] if "eval_domain" in frame.columns else pd.Series("all", frame.index)
    key = frame["split"].astype(str) + "\x00" + dom.astype(str)
    codes, uniques = pd.factorize(key, sort=True)
    order = np.argsort(codes, kind="stable")
    codes = codes[order]
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    split_of = np.array([k.split("\x00")[0] for k in uniques])
    per_split = pd.Series(split_of).map(pd.Series(split_of).value_counts()).to_numpy(float)
    e = frame["error"].to_numpy(float)[order]
    s2 = frame["sd"].to_numpy(float)[order] ** 2
    u = frame["distance"].to_numpy(float)[order]
    return e, s2, u, codes, starts, split_of, per_split


def grid_posterior(frame: pd.DataFrame, rho: float = 0.0) -> np.ndarray:
    """Normalised posterior on (KAPPA_GRID, TAU_GRID, TAU_MIX_GRID) from residuals ``frame``
    (columns split, error, sd, distance [, eval_domain]; one row per held-out (run, domain)).

    Per (split, domain) group, e ~ N(0, diag(kappa^2 s^2 + tau_mix^2 u^2) + tau^2 u u'): the
    rank-one term is the error the split's runs share, so by Sherman-Morrison the group's
    log-likelihood needs the sums over its residuals of log D, e^2 / D, u^2 / D and u e / D
    (D the diagonal). The groups of one split count 1 / (1 + (K - 1) rho) each."""
    frame = _check_residuals(frame)
    e, s2, u, _, starts, _, per_split = _grouped(frame)
    weight = 1.0 / (1.0 + (per_split - 1.0) * rho)
    k2 = KAPPA_GRID[:, None, None] ** 2
    m2 = TAU_MIX_GRID[None, :, None] ** 2
    d = k2 * s2 + m2 * u**2 + 1e-12  # (kappa, tau_mix, residual)

    def sums(x):
        return np.add.reduceat(x, starts, axis=-1)  # (kappa, tau_mix, group)

    s_log, s_ee, s_uu, s_ue = sums(np.log(d)), sums(e**2 / d), sums(u**2 / d), sums(u * e / d)
    t2 = TAU_GRID[:, None, None, None] ** 2  # (tau, kappa, tau_mix, group)
    q = 1.0 + t2 * s_uu
    ll = -0.5 * (s_log + np.log(q) + s_ee - t2 * s_ue**2 / q)
    logpost = (ll * weight).sum(-1).transpose(1, 0, 2)  # (kappa, tau, tau_mix)
    logpost = logpost - 0.5 * (np.log(KAPPA_GRID)[:, None, None] / KAPPA_SD) ** 2
    logpost = logpost - 0.5 * (TAU_GRID[None, :, None] / TAU_SCALE) ** 2
    logpost = logpost - 0.5 * (TAU_MIX_GRID[None, None, :] / TAU_MIX_SCALE) ** 2
    post = np.exp(logpost - logpost.max())
    return post / post.sum()


def learn(frame: pd.DataFrame, *, random_seed: int | None = 0) -> Calibration:
    """The :class:`Calibration` of backtest residuals ``frame`` (columns split, error, sd,
    distance [, run, eval_domain]; :attr:`bayesmix.scaling.backtesting.Backtest.records`).

    Two passes: the posterior with domains independent, the correlations across domains at
    its mean, then the posterior with that correlation."""
    frame = _check_residuals(frame)
    rng = np.random.default_rng(random_seed)
    post = grid_posterior(frame)
    rho, rho_mix = _domain_correlations(frame, *_means(post))
    if rho > 0:
        post = grid_posterior(frame, rho)
        rho, rho_mix = _domain_correlations(frame, *_means(post))
    flat = rng.choice(post.size, size=N_SAMPLES, p=post.ravel())
    ik, it, im = np.unravel_index(flat, post.shape)

    def jitter(grid, i, log=False):  # spread samples within their grid cell
        g = np.log(grid) if log else grid
        x = g[i] + rng.uniform(-0.5, 0.5, len(i)) * np.diff(g).mean()
        return np.exp(x) if log else np.clip(x, 0.0, None)

    return Calibration(
        kappa=jitter(KAPPA_GRID, ik, log=True),
        tau=jitter(TAU_GRID, it),
        tau_mix=jitter(TAU_MIX_GRID, im),
        rho=rho,
        rho_mix=rho_mix,
        n_residuals=int(len(frame)),
        n_splits=int(frame["split"].nunique()),
        max_distance=float(frame["distance"].max()),
    )


def _means(post: np.ndarray) -> tuple[float, float, float]:
    """Posterior means of kappa, tau, tau_mix."""
    return (
        float((post.sum((1, 2)) * KAPPA_GRID).sum()),
        float((post.sum((0, 2)) * TAU_GRID).sum()),
        float((post.sum((0, 1)) * TAU_MIX_GRID).sum()),
    )


def _moment_correlation(z: pd.Series, by) -> float:
    """Correlation across the members of each group of unit-variance z: var(mean z) = (1 +
    (K - 1) rho) / K, by moments per group, averaged, clipped to [0, 1]."""
    out = []
    for _, zs in z.groupby(by):
        k = len(zs)
        m2 = float((zs**2).mean())
        if k > 1 and m2 > 0:
            out.append((k * float(zs.mean()) ** 2 - m2) / ((k - 1) * m2))
    return float(np.clip(np.mean(out), 0.0, 1.0)) if out else 0.0


def _domain_correlations(
    frame: pd.DataFrame, kappa: float, tau: float, tau_mix: float
) -> tuple[float, float]:
    """(rho, rho_mix): across domains, of the split-domain mean residuals (the shared error)
    and of the runs' deviations from them (own spread and per-mixture error)."""
    if "eval_domain" not in frame.columns:
        return 0.0, 0.0
    s2 = frame["sd"] ** 2
    u2 = frame["distance"] ** 2
    g = frame.groupby(["split", "eval_domain"], sort=False)
    n = g["error"].transform("size")
    mean_e = g["error"].transform("mean")
    own = kappa**2 * s2 + tau_mix**2 * u2
    z_shared = mean_e / np.sqrt(tau**2 * u2 + own / n)
    first = ~frame.duplicated(["split", "eval_domain"])
    rho = _moment_correlation(z_shared[first], frame.loc[first, "split"])
    if "run" not in frame.columns:
        return rho, 0.0
    z_run = (frame["error"] - mean_e) / np.sqrt(own * np.clip(1 - 1 / n, 1e-9, None))
    return rho, _moment_correlation(z_run, [frame["split"], frame["run"]])


def apply_calibration(
    mean: np.ndarray,
    predictive: np.ndarray,
    calibration: Calibration,
    distance,
    rngs: list[np.random.Generator] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated (mean, predictive) draws, arrays (chain, draw, n, K) in nats per token.

    ``distance``: the log-distance of the prediction (a number, or one per mixture (n,)).
    Posterior sample j takes calibration sample j modulo its size. The shared error of sample
    j comes from a fixed stream (:data:`DELTA_SEED`): like a law parameter it is the same for
    every mixture and call. Mixture i's own error comes from ``rngs[i]`` (None: left out), so
    a chunk of mixtures gets the same numbers as the whole set.
    """
    chains, draws, n, k = mean.shape
    idx = np.arange(chains * draws) % len(calibration.kappa)
    kappa = calibration.kappa[idx].reshape(chains, draws, 1, 1)
    tau = calibration.tau[idx].reshape(chains, draws, 1, 1)
    u = np.broadcast_to(np.asarray(distance, float), (n,)).reshape(1, 1, n, 1)
    rng = np.random.default_rng(DELTA_SEED)
    z = _correlated(rng, (chains, draws), k, calibration.rho)[:, :, None, :]
    error = tau * u * z
    if rngs is not None and np.any(calibration.tau_mix > 0):
        tau_mix = calibration.tau_mix[idx].reshape(chains, draws, 1)
        own = np.empty_like(mean)
        for i, r in enumerate(rngs):
            own[:, :, i] = tau_mix * _correlated(r, (chains, draws), k, calibration.rho_mix)
        error = error + own * u
    return mean + error, mean + kappa * (predictive - mean) + error


def _correlated(rng: np.random.Generator, shape: tuple, k: int, rho: float) -> np.ndarray:
    """Standard Normal draws (*shape, k), correlated rho across the last axis."""
    shared = rng.standard_normal((*shape, 1))
    return math.sqrt(rho) * shared + math.sqrt(1.0 - rho) * rng.standard_normal((*shape, k))


def width_share(
    calibration: Calibration, own_sd: np.ndarray | float, distance: float
) -> np.ndarray | float:
    """Share of the calibrated predictive variance that comes from extrapolation (shared and
    per-mixture error), for a prediction with own predictive sd ``own_sd`` at ``distance``."""
    k2 = float(np.mean(calibration.kappa**2))
    t2 = float(np.mean(calibration.tau**2 + calibration.tau_mix**2)) * float(distance) ** 2
    own = k2 * np.asarray(own_sd, float) ** 2
    return t2 / (own + t2)


def stored_backtest(post) -> dict | None:
    """The backtest stored with a posterior (verdict, summary, splits, records), or None."""
    text = post.tree.attrs.get(BACKTEST_ATTR)
    return json.loads(text) if text else None


__all__ = [
    "ATTR",
    "BACKTEST_ATTR",
    "stored_backtest",
    "Calibration",
    "apply_calibration",
    "grid_posterior",
    "learn",
    "log_distance",
    "width_share",
]
