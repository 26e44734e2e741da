"""Extrapolation error learned from backtests: the discrepancy term of target-scale predictions.

A posterior fitted on small, short proxies and asked about a large, long run is only as good as
its extrapolation. Its own intervals say how sure the *law* is, not how well the law's form
carries to a larger model size or more tokens. :mod:`bayesmix.backtest` measures that within
the proxies: it refits with the largest size or the latest checkpoints held out and predicts
them with the same predictor. This module turns the backtest's residuals into a calibration and
applies it to predictions.

Model, per held-out (record, validation domain), with ``e`` the observed minus the predicted
mean loss, ``s`` the predictor's own predictive standard deviation and ``u`` the log-distance
beyond the fitted range::

    e ~ Normal(0, kappa^2 s^2 + tau^2 u^2),   u = sqrt(log(N / N_max)^2 + log(D / D_max)^2)

where N (parameters) and D (tokens) count only beyond the largest fitted ones. ``kappa``
rescales the predictor's own spread (< 1: intervals wider than the errors, > 1: narrower);
``tau`` (nats per token, per unit of log-distance) is the discrepancy that grows with the
distance. Their posterior is computed on a grid with priors ``log kappa ~ Normal(0, 0.5)`` and
``tau ~ HalfNormal(0.05)``. The held-out records of one backtest split come from one fit and
share its extrapolation error: within a (split, domain) the residuals are jointly Normal with
that shared term (:func:`grid_posterior`; treating them as independent would make the
posterior of ``tau`` far too narrow). ``rho``, the correlation of that error across domains,
is estimated by moments and discounts the domains of one split accordingly.

At the target (:func:`apply_calibration`), for posterior sample i: ``predictive = mean + kappa_i
(predictive - mean) + delta_i`` and ``mean = mean + delta_i``, with ``delta_i ~ Normal(0,
(tau_i u)^2)`` per domain, correlated ``rho`` across domains and, as in the backtests (one
refit, one extrapolation error for all its held-out runs), shared by every mixture.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from bayesmix import errors

#: Root attribute of a posterior file holding its calibration (JSON).
ATTR = "bayesmix_extrapolation"
#: Prior scales: log kappa ~ Normal(0, KAPPA_SD); tau ~ HalfNormal(TAU_SCALE) (nats per token
#: per unit of log-distance: at u = 1.2, e.g. 30k -> 100k steps, 0.05 is a 0.06-nat error).
KAPPA_SD = 0.5
TAU_SCALE = 0.05
#: Grid of the posterior: kappa log-spaced, tau linear.
KAPPA_GRID = np.exp(np.linspace(math.log(0.1), math.log(5.0), 70))
TAU_GRID = np.linspace(0.0, 0.3, 121)
#: Posterior samples of (kappa, tau) kept with a calibration.
N_SAMPLES = 1000
#: Seed of the discrepancy directions of :func:`apply_calibration` (one per posterior draw).
DELTA_SEED = 20261206


@dataclass
class Calibration:
    """The learned extrapolation error: posterior samples of ``kappa`` (spread factor) and
    ``tau`` (discrepancy per unit of log-distance, nats per token), ``rho`` (correlation across
    domains), the figures it was learned from, and the distance of the posterior's own target
    (``target_distance``; None: computed from the inputs of each prediction)."""

    kappa: np.ndarray
    tau: np.ndarray
    rho: float
    n_residuals: int
    n_splits: int
    max_distance: float
    target_distance: float | None = None
    target_ranges: dict = field(default_factory=dict)
    source: str = "backtest"

    @property
    def kappa_mean(self) -> float:
        return float(np.mean(self.kappa))

    @property
    def tau_mean(self) -> float:
        return float(np.mean(self.tau))

    def interval(self, name: str, prob: float = 0.9) -> tuple[float, float]:
        """Equal-tailed interval of ``kappa`` or ``tau``."""
        x = getattr(self, name)
        lo, hi = np.quantile(x, [(1 - prob) / 2, (1 + prob) / 2])
        return float(lo), float(hi)

    def describe(self) -> str:
        """One line: what was learned and from what."""
        k_lo, k_hi = self.interval("kappa")
        t_lo, t_hi = self.interval("tau")
        text = (
            f"extrapolation error learned from {self.n_splits} backtest split(s) "
            f"({self.n_residuals} held-out losses, up to distance {self.max_distance:.2f}): "
            f"spread factor {self.kappa_mean:.2f} [{k_lo:.2f}, {k_hi:.2f}], discrepancy "
            f"{self.tau_mean:.3f} [{t_lo:.3f}, {t_hi:.3f}] nats per unit log-distance, "
            f"correlation across domains {self.rho:.2f}"
        )
        if self.target_distance is not None:
            text += f"; target at distance {self.target_distance:.2f}"
        return text

    def with_target(self, distance: float, ranges: dict | None = None) -> Calibration:
        """The same calibration for a posterior whose target lies at ``distance``."""
        out = Calibration(**{**asdict(self), "kappa": self.kappa, "tau": self.tau})
        out.target_distance = float(distance)
        out.target_ranges = dict(ranges or {})
        return out

    def to_json(self) -> str:
        d = asdict(self)
        d["kappa"] = [round(float(v), 6) for v in self.kappa]
        d["tau"] = [round(float(v), 6) for v in self.tau]
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Calibration:
        d = json.loads(text)
        d["kappa"] = np.asarray(d["kappa"], float)
        d["tau"] = np.asarray(d["tau"], float)
        return cls(**d)


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


def _group_sums(frame: pd.DataFrame) -> pd.DataFrame:
    """Per (split, domain) group: n, sum log s^2, A = sum e^2/s^2, B = sum u e/s^2,
    C = sum u^2/s^2 (the sufficient statistics of the likelihood in :func:`grid_posterior`)."""
    s2 = frame["sd"].to_numpy(float) ** 2
    e = frame["error"].to_numpy(float)
    u = frame["distance"].to_numpy(float)
    parts = pd.DataFrame(
        {
            "split": frame["split"].to_numpy(),
            "domain": frame["eval_domain"].to_numpy() if "eval_domain" in frame else "all",
            "n": 1.0,
            "logs2": np.log(s2),
            "A": e**2 / s2,
            "B": u * e / s2,
            "C": u**2 / s2,
            "mean_e": e,
            "mean_s2": s2,
            "u": u,
        }
    )
    agg = {c: "sum" for c in ("n", "logs2", "A", "B", "C")}
    agg.update({"mean_e": "mean", "mean_s2": "mean", "u": "mean"})
    return parts.groupby(["split", "domain"], sort=False).agg(agg).reset_index()


def _loglik(groups: pd.DataFrame, kappa: np.ndarray, tau: np.ndarray, weight) -> np.ndarray:
    """Log-likelihood on the grid (kappa (a, 1, 1), tau (1, b, 1)) summed over groups."""
    n, logs2, a, b, c = (groups[k].to_numpy(float) for k in ("n", "logs2", "A", "B", "C"))
    k2 = kappa**2
    t2 = tau**2
    q = 1.0 + t2 * c / k2
    ll = -0.5 * (n * np.log(k2) + logs2 + np.log(q) + a / k2 - (t2 * b**2 / k2**2) / q)
    return (weight * ll).sum(-1)


def grid_posterior(
    frame: pd.DataFrame, rho: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(kappa grid, tau grid, normalised posterior (kappa, tau)) from residuals ``frame``
    (columns split, error, sd, distance [, eval_domain]; one row per held-out (record, domain)).

    Within a (split, domain) group the residuals share the split's discrepancy: e ~ N(0,
    kappa^2 diag(s^2) + tau^2 u u'), a rank-one update whose likelihood is exact by
    Sherman-Morrison. Groups of one split are correlated ``rho`` across domains; each counts
    (1 / (1 + (K - 1) rho)) so that a split's K domains weigh as K effective ones."""
    frame = _check_residuals(frame)
    groups = _group_sums(frame)
    per_split = groups.groupby("split")["domain"].transform("size").to_numpy(float)
    weight = 1.0 / (1.0 + (per_split - 1.0) * rho)
    kappa = KAPPA_GRID[:, None, None]
    tau = TAU_GRID[None, :, None]
    logpost = _loglik(groups, kappa, tau, weight)
    logpost = logpost - 0.5 * (np.log(KAPPA_GRID[:, None]) / KAPPA_SD) ** 2
    logpost = logpost - 0.5 * (TAU_GRID[None, :] / TAU_SCALE) ** 2
    post = np.exp(logpost - logpost.max())
    return KAPPA_GRID, TAU_GRID, post / post.sum()


def learn(frame: pd.DataFrame, *, random_seed: int | None = 0) -> Calibration:
    """The :class:`Calibration` of backtest residuals ``frame`` (columns split, error, sd,
    distance [, run, eval_domain]; :attr:`bayesmix.backtesting.Backtest.records`).

    Two passes: the posterior with domains independent, the correlation across domains of
    the split means at its mean, then the posterior with that correlation."""
    frame = _check_residuals(frame)
    rng = np.random.default_rng(random_seed)
    kg, tg, post = grid_posterior(frame)
    rho = _domain_correlation(frame, *_means(kg, tg, post))
    if rho > 0:
        kg, tg, post = grid_posterior(frame, rho)
        rho = _domain_correlation(frame, *_means(kg, tg, post))
    flat = rng.choice(post.size, size=N_SAMPLES, p=post.ravel())
    ik, it = np.unravel_index(flat, post.shape)
    # jitter within a grid cell so samples are not tied
    dk = np.diff(np.log(kg)).mean()
    dt = np.diff(tg).mean()
    kappa = np.exp(np.log(kg[ik]) + rng.uniform(-0.5, 0.5, N_SAMPLES) * dk)
    tau = np.clip(tg[it] + rng.uniform(-0.5, 0.5, N_SAMPLES) * dt, 0.0, None)
    return Calibration(
        kappa=kappa,
        tau=tau,
        rho=rho,
        n_residuals=int(len(frame)),
        n_splits=int(frame["split"].nunique()),
        max_distance=float(frame["distance"].max()),
    )


def _means(kg, tg, post) -> tuple[float, float]:
    return float((post.sum(1) * kg).sum()), float((post.sum(0) * tg).sum())


def _domain_correlation(frame: pd.DataFrame, kappa: float, tau: float) -> float:
    """Correlation across domains of the (split, domain) mean residuals, standardised by
    their variance tau^2 u^2 + kappa^2 mean(s^2) / n: for unit-variance z over K domains,
    var(mean z) = (1 + (K - 1) rho) / K (moments per split, averaged, clipped to [0, 1])."""
    groups = _group_sums(_check_residuals(frame))
    var = tau**2 * groups["u"] ** 2 + kappa**2 * groups["mean_s2"] / groups["n"]
    z = groups["mean_e"] / np.sqrt(var)
    out = []
    for _, zs in z.groupby(groups["split"]):
        k = len(zs)
        m2 = float((zs**2).mean())
        if k > 1 and m2 > 0:
            out.append((k * float(zs.mean()) ** 2 - m2) / ((k - 1) * m2))
    return float(np.clip(np.mean(out), 0.0, 1.0)) if out else 0.0


def apply_calibration(
    mean: np.ndarray, predictive: np.ndarray, calibration: Calibration, distance
) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated (mean, predictive) draws, arrays (chain, draw, n, K) in nats per token.

    ``distance``: the log-distance of the prediction (a number, or one per mixture (n,)).
    Posterior sample j has its own discrepancy direction (K,), drawn from a fixed stream
    (:data:`DELTA_SEED`), scaled by calibration sample j's tau and the distance: like a law
    parameter, it is the same for every mixture and every call, so differences between
    mixtures do not carry it and chunked predictions equal whole ones.
    """
    chains, draws, n, k = mean.shape
    idx = np.arange(chains * draws) % len(calibration.kappa)
    kappa = calibration.kappa[idx].reshape(chains, draws, 1, 1)
    tau = calibration.tau[idx].reshape(chains, draws, 1, 1)
    u = np.broadcast_to(np.asarray(distance, float), (n,)).reshape(1, 1, n, 1)
    rng = np.random.default_rng(DELTA_SEED)
    shared = rng.standard_normal((chains * draws, 1))
    own = rng.standard_normal((chains * draws, k))
    rho = calibration.rho
    z = (math.sqrt(rho) * shared + math.sqrt(1.0 - rho) * own).reshape(chains, draws, 1, k)
    delta = tau * u * z
    return mean + delta, mean + kappa * (predictive - mean) + delta


def width_share(
    calibration: Calibration, own_sd: np.ndarray | float, distance: float
) -> np.ndarray | float:
    """Share of the calibrated predictive variance that comes from extrapolation (the
    discrepancy), for a prediction with own predictive sd ``own_sd`` at ``distance``."""
    k2 = float(np.mean(calibration.kappa**2))
    t2 = float(np.mean(calibration.tau**2)) * float(distance) ** 2
    own = k2 * np.asarray(own_sd, float) ** 2
    return t2 / (own + t2)


__all__ = [
    "ATTR",
    "Calibration",
    "apply_calibration",
    "grid_posterior",
    "learn",
    "log_distance",
    "width_share",
]
