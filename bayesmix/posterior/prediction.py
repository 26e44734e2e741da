"""Predictions of new mixtures from posterior draws: the mean and predictive loss per draw
(:func:`draw_losses`, one random stream per mixture), their interval tables
(:class:`Prediction`, :func:`summary_frame`) and the check of a target scale against the fitted
one (:func:`scale_messages`). :class:`~bayesmix.posterior.posterior.Posterior`'s ``predict``
and ``intervals`` call these; losses are in nats per token.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import xarray as xr

from bayesmix import errors
from bayesmix._compat import CI_PROB, renamed_kwargs
from bayesmix.posterior.extrapolation import Calibration, apply_calibration
from bayesmix.posterior.intervals import check_ci_kind, credible_interval

#: Predictions more than this factor beyond the fitted model sizes / tokens are refused.
MAX_EXTRAPOLATION = 10.0
#: Said whenever a joint law (inputs n_params/tokens) predicts beyond its fitted range: it is
#: retired as a target-scale predictor (docs/scale.md).
JOINT_RETIRED = (
    "extrapolating with a joint law, retired for targets beyond the proxies (on 5Mix its 1B "
    "predictions missed by 0.053 nats on average against 0.028 for the nested pipeline, and "
    "its fit failed the gate); use bayesmix pipeline, whose backtests calibrate the intervals"
)


@dataclass
class Prediction:
    """Posterior of the mean loss and posterior predictive loss of some mixtures.

    Both are DataArrays with dims (chain, draw, mixture, eval_domain), in nats per token.
    """

    mean: xr.DataArray
    predictive: xr.DataArray
    mixtures: pd.DataFrame

    def aggregate(self, weights: np.ndarray, kind: str = "predictive") -> xr.DataArray:
        """Weighted sum over eval_domain with normalised weights (K,): dims (chain, draw, mixture).

        Draws with a missing domain propagate NaN; the predictive aggregate adds each domain's
        noise draw, weighted.
        """
        da = self.predictive if kind == "predictive" else self.mean
        w = xr.DataArray(
            np.asarray(weights, float), dims="eval_domain", coords={"eval_domain": da.eval_domain}
        )
        return (da * w).sum("eval_domain")

    @renamed_kwargs(**CI_PROB)
    def intervals(
        self,
        ci_prob: float = 0.9,
        *,
        weights: np.ndarray | None = None,
        kind: str = "predictive",
        ci_kind: str = "eti",
    ) -> pd.DataFrame:
        """Tidy table of the predicted losses' intervals over draws.

        Parameters
        ----------
        ci_prob : float, default 0.9
            Probability mass of the intervals, in (0, 1) (``prob`` is its deprecated name).
        weights : array_like, optional
            Normalised weights (K,) over the validation domains: adds rows with
            ``eval_domain == "overall"`` for the aggregate loss.
        kind : {"predictive", "mean"}, default "predictive"
            One run's measured loss, or the law's expected loss.
        ci_kind : {"eti", "hdi"}, default "eti"
            Equal-tailed or highest density intervals
            (:func:`bayesmix.posterior.intervals.credible_interval`).

        Returns
        -------
        pandas.DataFrame
            Columns mixture, eval_domain, mean, median, lower, upper (nats per token).
        """
        check_interval_options(ci_prob, kind, ci_kind)
        da = self.predictive if kind == "predictive" else self.mean
        frames = [_interval_table(da, ci_prob, ci_kind)]
        if weights is not None:
            agg = self.aggregate(weights, kind).expand_dims(eval_domain=["overall"], axis=-1)
            frames.append(_interval_table(agg, ci_prob, ci_kind))
        out = pd.concat(frames, ignore_index=True)
        # Input order of mixtures, then of domains; one order per column, because a mixture
        # may be named like a domain (e.g. "web" for a web-heavy mixture).
        order = {
            "mixture": {m: i for i, m in enumerate(self.mixtures.index)},
            "eval_domain": {d: i for i, d in enumerate([*da.eval_domain.values, "overall"])},
        }
        out = out.sort_values(
            ["mixture", "eval_domain"], kind="stable", key=lambda s: s.map(order[s.name])
        )
        return out.reset_index(drop=True)


def check_interval_options(ci_prob: float, kind: str, ci_kind: str) -> None:
    """Refuse an interval mass outside (0, 1), a ``kind`` other than "predictive" or "mean"
    and an unknown ``ci_kind`` (BayesmixError)."""
    if not 0 < ci_prob < 1:
        raise errors.BayesmixError(f"interval probability must be in (0, 1), got {ci_prob}")
    if kind not in ("predictive", "mean"):
        raise errors.BayesmixError(f"kind must be 'predictive' or 'mean', got {kind!r}")
    check_ci_kind(ci_kind)


def _interval_table(da: xr.DataArray, ci_prob: float, ci_kind: str = "eti") -> pd.DataFrame:
    """Rows (mixture, eval_domain) of mean, median and bounds over the draws (NaN left out)."""
    stacked = da.stack(sample=("chain", "draw")).transpose("mixture", "eval_domain", "sample")
    v = stacked.values
    lo, hi = credible_interval(v, ci_prob, axis=-1, ci_kind=ci_kind, skipna=True)
    mix, dom = np.meshgrid(da.mixture.values, da.eval_domain.values, indexing="ij")
    return pd.DataFrame(
        {
            "mixture": mix.ravel(),
            "eval_domain": dom.ravel(),
            "mean": np.nanmean(v, axis=-1).ravel(),
            "median": np.nanquantile(v, 0.5, axis=-1).ravel(),
            "lower": lo.ravel(),
            "upper": hi.ravel(),
        }
    )


def summary_frame(
    v: np.ndarray, mixtures: list, domains: list, ci_prob: float, ci_kind: str = "eti"
) -> pd.DataFrame:
    """Rows (mixture, domain) of mean, median and interval bounds over the sample axis of
    ``v`` (sample, mixture, domain); NaN draws are left out as in :meth:`Prediction.intervals`."""
    nan = bool(np.isnan(v).any())  # without NaN: the same numbers, without nan-loops
    lo, hi = credible_interval(v, ci_prob, axis=0, ci_kind=ci_kind, skipna=nan)
    med = np.nanquantile(v, 0.5, axis=0) if nan else np.quantile(v, 0.5, axis=0)
    avg = np.nanmean(v, axis=0) if nan else v.mean(axis=0)
    mix, dom = np.meshgrid(
        np.asarray(mixtures, dtype=object), np.asarray(domains, dtype=object), indexing="ij"
    )
    return pd.DataFrame(
        {
            "mixture": mix.ravel(),
            "eval_domain": dom.ravel(),
            "mean": avg.ravel(),
            "median": med.ravel(),
            "lower": lo.ravel(),
            "upper": hi.ravel(),
        }
    )


def mixture_streams(seed: int | None, n: int) -> list[np.random.Generator]:
    """One independent random stream per mixture, all from ``seed`` (None: fresh entropy)."""
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(n)]


def mixture_rows(value, start: int, stop: int, n: int):
    """Rows ``start:stop`` of a per-mixture input (n values); a single value as it is."""
    if value is None:
        return None
    arr = np.asarray(value)
    return arr[start:stop] if arr.ndim >= 1 and arr.shape[0] == n and n > 1 else value


#: Group of a posterior holding shifts every prediction adds (variable ``shift``, dims
#: ``imputation``, ``eval_domain``; nats per token): the nested pipeline's imputation shifts
#: (:mod:`bayesmix.scaling.pooling`). Posterior draw j takes shift j modulo their number.
SHIFT_GROUP = "imputation_shift"


def add_shift(mean: np.ndarray, shift: np.ndarray | None) -> np.ndarray:
    """``mean`` (*samples, n, K), samples (chain, draw) or flattened chain by chain, plus
    ``shift[j % J]`` (J, K) for posterior draw j; ``mean`` itself when there is no shift."""
    if shift is None:
        return mean
    samples = mean.shape[:-2]
    idx = np.arange(int(np.prod(samples))) % len(shift)
    return mean + shift[idx].reshape(*samples, 1, shift.shape[-1])


def draw_losses(
    law,
    likelihood: dict,
    r: np.ndarray,
    p: dict,
    n_params,
    tokens,
    streams: list[np.random.Generator],
    *,
    calibration: Calibration | None = None,
    distance=None,
    with_noise: bool = True,
    shift: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and predictive loss (chain, draw, n, K) of mixtures ``r`` (n, M) under the law's
    draws ``p`` (chain, draw, ...) and the specification's ``likelihood``; mixture i's noise
    comes from ``streams[i]`` alone, so a chunk of mixtures gets the same numbers as the whole
    set. ``with_noise=False``: the mean only (returned twice, no noise drawn). A ``shift``
    (J, K) per posterior draw (:func:`add_shift`) and a learned extrapolation error
    (``calibration``, at log-distance ``distance``) enter both."""
    mean = law.predict(r, p, n_params=n_params, tokens=tokens)  # (chain, draw, n, K)
    mean = add_shift(mean, shift)
    cal = calibration
    if not with_noise:
        if cal is not None:
            mean, _ = apply_calibration(mean, mean, cal, distance, streams)
        return mean, mean
    lik = likelihood
    shape = mean.shape[:2] + mean.shape[3:]  # (chain, draw, K)
    noise = np.empty((len(streams),) + shape)  # one mixture's draws contiguous
    for i, rng in enumerate(streams):
        if lik["family"] == "student_t":
            noise[i] = rng.standard_t(float(lik["nu"]), size=shape)
        else:
            noise[i] = rng.standard_normal(size=shape)
        noise[i] *= p["sigma"]
        if "run_sigma" in p:
            noise[i] += rng.standard_normal(size=shape) * p["run_sigma"]
    pred = mean + noise.transpose(1, 2, 0, 3)
    if cal is not None:
        mean, pred = apply_calibration(mean, pred, cal, distance, streams)
    return mean, pred


def scale_messages(
    ranges: dict[str, tuple[float, float]], *, n_params, tokens, max_extrapolation: float
) -> list[str]:
    """One message per target ``n_params``/``tokens`` value outside its fitted range
    (``ranges``: ``{input: (min, max)}``); an ExtrapolationError for one more than
    ``max_extrapolation`` times outside (:meth:`Posterior.check_scale`)."""
    messages = []
    names = {"n_params": "model size (parameters)", "tokens": "training tokens"}
    for key, value in (("n_params", n_params), ("tokens", tokens)):
        if value is None or key not in ranges:
            continue
        lo, hi = ranges[key]
        for v in np.atleast_1d(np.asarray(value, float)):
            if not np.isfinite(v) or v <= 0:
                raise errors.OptionError(f"{key} must be a positive number, got {v:g}")
            factor = v / hi if v > hi else (lo / v if v < lo else 1.0)
            if factor <= 1.0:
                continue
            where = "above the largest" if v > hi else "below the smallest"
            text = f"{names[key]} {v:.3g} is {factor:.2g}x {where} fitted ({lo:.3g} to {hi:.3g})"
            if factor > max_extrapolation:
                raise errors.ExtrapolationError(
                    f"{text}: more than {max_extrapolation:g}x outside the fitted range",
                    hint="fit runs closer to the target, or allow it explicitly with "
                    f"max_extrapolation={math.ceil(factor)}",
                    param="max_extrapolation",
                )
            messages.append(text + ": " + JOINT_RETIRED)
    return list(dict.fromkeys(messages))


__all__ = [
    "JOINT_RETIRED",
    "MAX_EXTRAPOLATION",
    "Prediction",
    "check_interval_options",
    "SHIFT_GROUP",
    "add_shift",
    "draw_losses",
    "mixture_rows",
    "mixture_streams",
    "scale_messages",
    "summary_frame",
]
