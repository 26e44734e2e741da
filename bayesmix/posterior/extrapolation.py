"""Extrapolation error learned from backtests: the discrepancy term of target-scale predictions.

A posterior fitted on small, short proxies and asked about a large, long run is only as good as
its extrapolation. Its own intervals say how sure the *law* is, not how well the law's form
carries to a larger model size or more tokens. :mod:`bayesmix.scaling.backtesting` measures that
within the proxies: it refits with the largest size or the latest checkpoints held out and predicts
them with the same predictor. This module turns the backtest's residuals into a calibration and
applies it to predictions.

Model, per held-out (run r, validation domain k) of one backtest split, with ``e`` the observed
minus the predicted mean loss, ``s`` the predictor's own predictive standard deviation, and
``u_N = log(N / N_max)``, ``u_D = log(D / D_max)`` the log-distances beyond the fitted model size
N (parameters) and tokens D, each counted only beyond the largest fitted one::

    e[r,k] = kappa s[r,k] z[r,k] + delta_N[k] u_N + delta_D[k] u_D + eta[r,k] u
    delta_N[k] ~ Normal(0, tau_size^2),  delta_D[k] ~ Normal(0, tau_tokens^2),
    eta[r,k] ~ Normal(0, tau_mix^2),  z ~ Normal(0, 1),  u = sqrt(u_N^2 + u_D^2)

``kappa`` rescales the predictor's own spread (< 1: its intervals are wider than its errors, > 1:
narrower); ``tau_size`` and ``tau_tokens`` (nats per token per unit of log-ratio) are the error a
refit shares with all its held-out runs (a wrong exponent moves every mixture), learned apart
because extrapolating in size and in steps fail differently (a step law misses a learning-rate
schedule's annealing; a size law does not see it); ``tau_mix`` is the part that differs between
mixtures (it is what widens a predicted *difference* between mixtures). An axis no split
extrapolated along keeps its prior. Within a (split, domain) the residuals are jointly Normal
with a rank-one shared part along the split's axis (a split that moves both is counted on its
longer one, at distance u), so the likelihood is exact by Sherman-Morrison; the posterior of
(kappa, tau_size, tau_tokens, tau_mix) is computed on a grid, the two taus given (kappa,
tau_mix) independent, with priors ``log kappa ~ Normal(0, 0.5)``, ``tau_* ~ HalfNormal(0.05)``,
``tau_mix ~ HalfNormal(0.03)``. Residuals without the columns ``distance_size`` and
``distance_tokens`` learn one tau for both axes. ``rho`` and ``rho_mix``, the correlations of
the two errors across domains, are estimated by moments; ``rho`` discounts the domains of one
split accordingly.

At the target (:func:`apply_calibration`), for posterior sample j and mixture i:
``predictive = mean + kappa_j (predictive - mean) + d_j + eta_ji u`` and ``mean = mean + d_j +
eta_ji u``, with ``d_j = delta_Nj u_N + delta_Dj u_D`` shared by every mixture (a fixed stream:
like a law parameter, it cancels in differences) and ``eta_ji`` drawn from mixture i's own
stream.
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
#: Grid of the posterior: kappa log-spaced, tau quadratically (cells of 0.00002 nats at 0,
#: 0.0009 at 0.01, 0.005 at 0.3: a small error is resolved as finely as a large one in
#: relative terms), tau_mix linear.
KAPPA_GRID = np.exp(np.linspace(math.log(0.1), math.log(5.0), 160))
TAU_GRID = 0.3 * np.linspace(0.0, 1.0, 121) ** 2
TAU_MIX_GRID = np.linspace(0.0, 0.15, 31)
#: Posterior samples of (kappa, tau) kept with a calibration.
N_SAMPLES = 1000
#: Seed of the discrepancy directions of :func:`apply_calibration` (one per posterior draw).
DELTA_SEED = 20261206


#: The two directions of extrapolation: model size (parameters) and tokens (steps).
AXES = ("size", "tokens")


@dataclass
class Calibration:
    """The learned extrapolation error: posterior samples (N_SAMPLES,) of ``kappa`` (spread
    factor), ``tau_size`` and ``tau_tokens`` (error shared by a refit's mixtures, per unit of
    log-ratio in model size and in tokens) and ``tau_mix`` (error of each mixture, per unit of
    log-distance), all in nats per token; ``rho``, ``rho_mix`` the correlations of the shared
    and per-mixture errors across domains; the figures they were learned from, the axes the
    backtests extrapolated along (``learned_axes``: the others keep their prior; ``["joint"]``:
    one tau for both); and the log-distances (size, tokens) of the posterior's own target
    (``target_axes``; None: computed from each prediction's inputs)."""

    kappa: np.ndarray
    tau_size: np.ndarray
    tau_tokens: np.ndarray
    rho: float
    n_residuals: int
    n_splits: int
    max_distance: float
    tau_mix: np.ndarray = field(default_factory=lambda: np.zeros(N_SAMPLES))
    rho_mix: float = 0.0
    target_axes: list[float] | None = None
    target_ranges: dict = field(default_factory=dict)
    source: str = "backtest"
    learned_axes: list[str] = field(default_factory=lambda: list(AXES))

    @property
    def kappa_mean(self) -> float:
        return float(np.mean(self.kappa))

    @property
    def tau_mix_mean(self) -> float:
        return float(np.mean(self.tau_mix))

    def tau_mean(self, axis: str) -> float:
        """Posterior mean of ``tau_size`` or ``tau_tokens`` (``axis``: "size" or "tokens")."""
        return float(np.mean(getattr(self, f"tau_{axis}")))

    @property
    def target_distance(self) -> float | None:
        """The target's log-distance sqrt(u_N^2 + u_D^2), or None."""
        if self.target_axes is None:
            return None
        u_n, u_d = self.target_axes
        return math.hypot(u_n, u_d)

    def interval(self, name: str, prob: float = 0.9) -> tuple[float, float]:
        """Equal-tailed interval of ``kappa``, ``tau_size``, ``tau_tokens`` or ``tau_mix``."""
        x = getattr(self, name)
        lo, hi = np.quantile(x, [(1 - prob) / 2, (1 + prob) / 2])
        return float(lo), float(hi)

    def describe(self) -> str:
        """One line: what was learned and from what."""

        def figure(name: str) -> str:
            lo, hi = self.interval(name)
            return f"{float(np.mean(getattr(self, name))):.3f} [{lo:.3f}, {hi:.3f}]"

        k_lo, k_hi = self.interval("kappa")
        if self.learned_axes == ["joint"]:
            shared = f"per unit log-distance, shared error {figure('tau_size')}"
        else:
            parts = [
                f"per unit log-{'size' if a == 'size' else 'token'} ratio "
                f"{figure('tau_' + a)}"
                + ("" if a in self.learned_axes else " (prior only: no split extrapolated so)")
                for a in AXES
            ]
            shared = "shared error " + ", ".join(parts)
        text = (
            f"extrapolation error learned from {self.n_splits} backtest split(s) "
            f"({self.n_residuals} held-out losses, up to distance {self.max_distance:.2f}): "
            f"spread factor {self.kappa_mean:.2f} [{k_lo:.2f}, {k_hi:.2f}]; {shared}; "
            f"per-mixture error {figure('tau_mix')} nats per unit log-distance, "
            f"correlated {self.rho:.2f} / {self.rho_mix:.2f} across domains"
        )
        if self.target_axes is not None:
            u_n, u_d = self.target_axes
            text += (
                f"; target at distance {self.target_distance:.2f} (size {u_n:.2f}, "
                f"tokens {u_d:.2f})"
            )
        return text

    def with_target(self, axes, ranges: dict | None = None) -> Calibration:
        """The same calibration for a posterior whose target lies at log-distances ``axes``
        (size, tokens) beyond the proxies (:func:`axis_distances`)."""
        u = [float(v) for v in np.asarray(axes, float).reshape(2)]
        return replace(self, target_axes=u, target_ranges=dict(ranges or {}))

    def to_json(self) -> str:
        d = asdict(self)
        for name in _ARRAYS:
            d[name] = [round(float(v), 6) for v in getattr(self, name)]
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Calibration:
        """A stored calibration; one of a single ``tau`` (and a scalar ``target_distance``)
        reads as equal taus with the whole distance on the size axis: the same errors."""
        d = json.loads(text)
        if "tau" in d:
            d["tau_size"] = d["tau_tokens"] = d.pop("tau")
            d.setdefault("learned_axes", ["joint"])
        if "target_distance" in d:
            dist = d.pop("target_distance")
            d.setdefault("target_axes", None if dist is None else [float(dist), 0.0])
        for name in _ARRAYS:
            if name in d:
                d[name] = np.asarray(d[name], float)
        return cls(**d)


_ARRAYS = ("kappa", "tau_size", "tau_tokens", "tau_mix")


def axis_distances(n_params=None, tokens=None, ranges: dict | None = None) -> np.ndarray:
    """(..., 2) log-distances (u_N, u_D) = (log(N / N_max), log(D / D_max)), each only beyond
    the fitted maximum (``ranges``: ``{"n_params": (lo, hi), "tokens": (lo, hi)}``) and 0
    inside the range or for an input the posterior was not fitted over."""
    ranges = ranges or {}
    parts = []
    for key, value in (("n_params", n_params), ("tokens", tokens)):
        if value is None or key not in ranges:
            parts.append(np.zeros(()))
            continue
        v = np.asarray(value, float)
        parts.append(np.log(np.maximum(v / float(ranges[key][1]), 1.0)))
    return np.stack(np.broadcast_arrays(*parts), axis=-1)


def log_distance(n_params=None, tokens=None, ranges: dict | None = None) -> np.ndarray | float:
    """u = sqrt(u_N^2 + u_D^2) (:func:`axis_distances`); 0 inside the range."""
    u = np.sqrt((axis_distances(n_params, tokens, ranges) ** 2).sum(-1))
    return float(u) if u.ndim == 0 else u


def _check_residuals(frame: pd.DataFrame) -> pd.DataFrame:
    """The usable residuals, with the column ``axis`` of each (split, domain) group: "size" or
    "tokens" (the longer of its distances), or "joint" without per-axis distance columns."""
    need = ("split", "error", "sd", "distance")
    missing = [c for c in need if c not in frame.columns]
    if missing:
        raise errors.BayesmixError(
            f"backtest residuals lack column {missing[0]!r}",
            hint="pass Backtest.records (bayesmix.backtest)",
        )
    axes = [c for c in ("distance_size", "distance_tokens") if c in frame.columns]
    extra = [c for c in ("run", "eval_domain") if c in frame.columns]
    keep = frame[list(need) + (axes if len(axes) == 2 else []) + extra]
    keep = keep[np.isfinite(keep["error"]) & np.isfinite(keep["sd"]) & (keep["sd"] > 0)].copy()
    if keep.empty:
        raise errors.BayesmixError(
            "no finite backtest residual to learn from", hint="check the held-out losses"
        )
    if len(axes) < 2:
        keep["axis"] = "joint"
        return keep
    by = [keep["split"], keep["eval_domain"]] if "eval_domain" in keep else keep["split"]
    size = (keep["distance_size"] ** 2).groupby(by).transform("sum")
    tokens = (keep["distance_tokens"] ** 2).groupby(by).transform("sum")
    keep["axis"] = np.where(size >= tokens, "size", "tokens")
    return keep


def _grouped(frame: pd.DataFrame) -> tuple[np.ndarray, ...]:
    """Residuals sorted by (split, domain): e, s^2, u, group starts, the number of groups of
    each group's split, and each group's axis."""
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
    axis_of = frame["axis"].to_numpy(str)[order][starts]
    return e, s2, u, starts, per_split, axis_of


def _log_likelihoods(frame: pd.DataFrame, rho: float) -> dict[str, np.ndarray]:
    """Per axis, the log-likelihood on (TAU_GRID, KAPPA_GRID, TAU_MIX_GRID) of the (split,
    domain) groups counted on it.

    Per group, e ~ N(0, diag(kappa^2 s^2 + tau_mix^2 u^2) + tau^2 u u'): the rank-one term is
    the error the split's runs share, so by Sherman-Morrison the group's log-likelihood needs
    the sums over its residuals of log D, e^2 / D, u^2 / D and u e / D (D the diagonal). The
    groups of one split count 1 / (1 + (K - 1) rho) each."""
    e, s2, u, starts, per_split, axis_of = _grouped(frame)
    weight = 1.0 / (1.0 + (per_split - 1.0) * rho)
    k2 = KAPPA_GRID[:, None, None] ** 2
    m2 = TAU_MIX_GRID[None, :, None] ** 2
    d = k2 * s2 + m2 * u**2 + 1e-12  # (kappa, tau_mix, residual)

    def sums(x):
        return np.add.reduceat(x, starts, axis=-1)  # (kappa, tau_mix, group)

    s_log, s_ee, s_uu, s_ue = sums(np.log(d)), sums(e**2 / d), sums(u**2 / d), sums(u * e / d)
    out = {}
    for axis in np.unique(axis_of):
        g = axis_of == axis
        w, uu, ue2 = weight[g], s_uu[..., g], s_ue[..., g] ** 2
        fixed = -0.5 * ((s_log[..., g] + s_ee[..., g]) * w).sum(-1)  # the part without tau
        lls = []
        for t2 in TAU_GRID**2:  # one tau at a time: (kappa, tau_mix, group) arrays stay small
            q = 1.0 + t2 * uu
            lls.append(fixed - 0.5 * ((np.log(q) - t2 * ue2 / q) * w).sum(-1))
        out[str(axis)] = np.stack(lls)
    return out


def _cell_widths(grid: np.ndarray) -> np.ndarray:
    """Width of each grid point's cell (edges halfway to its neighbours, the ends closed)."""
    edges = np.r_[grid[0], (grid[1:] + grid[:-1]) / 2, grid[-1]]
    return np.diff(edges)


def _logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    top = x.max(axis=axis, keepdims=True)
    return np.squeeze(top, axis) + np.log(np.exp(x - top).sum(axis=axis))


def _sample(frame: pd.DataFrame, rho: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """N_SAMPLES grid-posterior samples of kappa, tau_size, tau_tokens, tau_mix: (kappa,
    tau_mix) from their marginal (each axis's tau summed out), then each tau given them."""
    lls = _log_likelihoods(frame, rho)
    prior_tau = -0.5 * (TAU_GRID / TAU_SCALE) ** 2 + np.log(_cell_widths(TAU_GRID))
    prior_tau = prior_tau - _logsumexp(prior_tau, 0)
    joint = {a: ll + prior_tau[:, None, None] for a, ll in lls.items()}  # (tau, kappa, mix)
    log_km = sum(_logsumexp(x, 0) for x in joint.values())
    log_km = log_km - 0.5 * (np.log(KAPPA_GRID)[:, None] / KAPPA_SD) ** 2
    log_km = log_km - 0.5 * (TAU_MIX_GRID[None, :] / TAU_MIX_SCALE) ** 2
    p = np.exp(log_km - log_km.max())
    ik, im = np.unravel_index(rng.choice(p.size, size=N_SAMPLES, p=(p / p.sum()).ravel()), p.shape)

    def jitter(grid, i, log=False):  # spread samples within their grid cell
        g = np.log(grid) if log else grid
        edges = np.r_[g[0], (g[1:] + g[:-1]) / 2, g[-1]]
        x = edges[i] + rng.uniform(0.0, 1.0, len(i)) * (edges[i + 1] - edges[i])
        return np.exp(x) if log else np.clip(x, 0.0, None)

    def tau_given(axis: str) -> np.ndarray:
        if axis not in joint:  # no split extrapolated along it: its prior
            w = np.broadcast_to(np.exp(prior_tau)[:, None], (len(TAU_GRID), N_SAMPLES))
        else:
            x = joint[axis][:, ik, im]
            w = np.exp(x - x.max(0))
        cdf = np.cumsum(w, 0) / w.sum(0)
        it = np.minimum((cdf < rng.uniform(size=N_SAMPLES)).sum(0), len(TAU_GRID) - 1)
        return jitter(TAU_GRID, it)

    out = {"kappa": jitter(KAPPA_GRID, ik, log=True), "tau_mix": jitter(TAU_MIX_GRID, im)}
    if "joint" in joint:
        out["tau_size"] = out["tau_tokens"] = tau_given("joint")
    else:
        out["tau_size"], out["tau_tokens"] = tau_given("size"), tau_given("tokens")
    return out


def learn(frame: pd.DataFrame, *, random_seed: int | None = 0) -> Calibration:
    """The :class:`Calibration` of backtest residuals ``frame`` (columns split, error, sd,
    distance [, distance_size, distance_tokens, run, eval_domain];
    :attr:`bayesmix.scaling.backtesting.Backtest.records`).

    Two passes: the posterior with domains independent, the correlations across domains at
    its means, then the posterior with that correlation."""
    frame = _check_residuals(frame)
    rng = np.random.default_rng(random_seed)
    draws = _sample(frame, 0.0, rng)
    rho, rho_mix = _domain_correlations(frame, draws)
    if rho > 0:
        draws = _sample(frame, rho, rng)
        rho, rho_mix = _domain_correlations(frame, draws)
    moved = frame.groupby("axis")["distance"].max()
    learned = [a for a in ("joint", *AXES) if moved.get(a, 0.0) > 0]
    return Calibration(
        kappa=draws["kappa"],
        tau_size=draws["tau_size"],
        tau_tokens=draws["tau_tokens"],
        tau_mix=draws["tau_mix"],
        rho=rho,
        rho_mix=rho_mix,
        n_residuals=int(len(frame)),
        n_splits=int(frame["split"].nunique()),
        max_distance=float(frame["distance"].max()),
        learned_axes=["joint"] if "joint" in set(frame["axis"]) else learned,
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


def _domain_correlations(frame: pd.DataFrame, draws: dict[str, np.ndarray]) -> tuple[float, float]:
    """(rho, rho_mix): across domains, of the split-domain mean residuals (the shared error)
    and of the runs' deviations from them (own spread and per-mixture error), at the
    posterior means of ``draws``."""
    if "eval_domain" not in frame.columns:
        return 0.0, 0.0
    mean = {name: float(np.mean(x)) for name, x in draws.items()}
    tau = frame["axis"].map(
        {"size": mean["tau_size"], "tokens": mean["tau_tokens"], "joint": mean["tau_size"]}
    )
    s2 = frame["sd"] ** 2
    u2 = frame["distance"] ** 2
    g = frame.groupby(["split", "eval_domain"], sort=False)
    n = g["error"].transform("size")
    mean_e = g["error"].transform("mean")
    own = mean["kappa"] ** 2 * s2 + mean["tau_mix"] ** 2 * u2
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

    ``distance``: the log-distances (size, tokens) of the prediction, shape (2,) or one pair
    per mixture (n, 2) (:func:`axis_distances`). Posterior sample j takes calibration sample j
    modulo its size. The shared error of sample j comes from a fixed stream
    (:data:`DELTA_SEED`): like a law parameter it is the same for every mixture and call.
    Mixture i's own error comes from ``rngs[i]`` (None: left out), so a chunk of mixtures gets
    the same numbers as the whole set.
    """
    chains, draws, n, k = mean.shape
    idx = np.arange(chains * draws) % len(calibration.kappa)

    def per_draw(x: np.ndarray) -> np.ndarray:
        return x[idx].reshape(chains, draws, 1, 1)

    axes = np.broadcast_to(np.asarray(distance, float), (n, 2))
    u_n, u_d = (axes[:, a].reshape(1, 1, n, 1) for a in (0, 1))
    rng = np.random.default_rng(DELTA_SEED)
    z_n = _correlated(rng, (chains, draws), k, calibration.rho)[:, :, None, :]
    z_d = _correlated(rng, (chains, draws), k, calibration.rho)[:, :, None, :]
    error = per_draw(calibration.tau_size) * u_n * z_n
    error = error + per_draw(calibration.tau_tokens) * u_d * z_d
    if rngs is not None and np.any(calibration.tau_mix > 0):
        tau_mix = calibration.tau_mix[idx].reshape(chains, draws, 1)
        own = np.empty_like(mean)
        for i, r in enumerate(rngs):
            own[:, :, i] = tau_mix * _correlated(r, (chains, draws), k, calibration.rho_mix)
        error = error + own * np.hypot(u_n, u_d)
    kappa = per_draw(calibration.kappa)
    return mean + error, mean + kappa * (predictive - mean) + error


def _correlated(rng: np.random.Generator, shape: tuple, k: int, rho: float) -> np.ndarray:
    """Standard Normal draws (*shape, k), correlated rho across the last axis."""
    shared = rng.standard_normal((*shape, 1))
    return math.sqrt(rho) * shared + math.sqrt(1.0 - rho) * rng.standard_normal((*shape, k))


def width_share(
    calibration: Calibration, own_sd: np.ndarray | float, distance
) -> np.ndarray | float:
    """Share of the calibrated predictive variance that comes from extrapolation (shared and
    per-mixture error), for a prediction with own predictive sd ``own_sd`` at log-distances
    ``distance`` (size, tokens)."""
    u_n, u_d = (float(v) for v in np.asarray(distance, float).reshape(2))
    k2 = float(np.mean(calibration.kappa**2))
    t2 = (
        float(np.mean(calibration.tau_size**2)) * u_n**2
        + float(np.mean(calibration.tau_tokens**2)) * u_d**2
        + float(np.mean(calibration.tau_mix**2)) * (u_n**2 + u_d**2)
    )
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
    "AXES",
    "Calibration",
    "apply_calibration",
    "axis_distances",
    "learn",
    "log_distance",
    "width_share",
]
