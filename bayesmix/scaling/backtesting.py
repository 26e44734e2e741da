"""Backtests within the proxies: how well does extrapolating to a larger size or more tokens work?

Before paying for the big run, refit with part of the proxies held out and predict it with the
same predictor that will predict the target:

* **size** splits: the largest proxy model size is held out and its runs' last checkpoints are
  predicted from every smaller size (``size``) and, with 4 or more sizes, from all but the two
  largest (``size2``, a longer extrapolation); distance ``log(N / N_max fitted)``;
* **steps** split: checkpoints after ``S_max / step_ratio`` are held out; the runs of the
  largest size are predicted at their last checkpoint (distance ``log(D / D_max fitted)``).

The predictor is the nested pipeline (:func:`bayesmix.scaling.pipeline.nested_fit`,
``method="nested"``) or one law over model size and tokens (``method="joint"``, e.g. ``scaling``).
The residuals, by split and distance, give coverage, bias and MAE (:meth:`Backtest.summary`) and the
learned extrapolation error (:mod:`bayesmix.posterior.extrapolation`) that calibrates target-scale
intervals.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bayesmix import errors
from bayesmix.data import schedules
from bayesmix.data.mixtures import domain_weights
from bayesmix.data.table import LOSS_PREFIX, RunTable, as_run_table
from bayesmix.data.ye_logs import size_label
from bayesmix.inference.gate_retry import PIPELINE_DRAWS, PIPELINE_TUNE, stage_max_time
from bayesmix.io import json_safe
from bayesmix.laws import model_with
from bayesmix.posterior import extrapolation
from bayesmix.posterior.backtest_summary import Backtest, empty_records
from bayesmix.posterior.extrapolation import BACKTEST_ATTR

METHODS = ("nested", "joint")


@dataclass(frozen=True)
class Split:
    """One backtest: the records refitted (``fitted``), the records predicted (``heldout``, one
    per held-out run) and the fitted scale range ``{"n_params": (lo, hi), "tokens": (lo, hi)}``
    (tokens: the table's ``tokens``, else steps)."""

    kind: str
    name: str
    fitted: RunTable
    heldout: RunTable
    ranges: dict


def _tokens(frame: pd.DataFrame) -> np.ndarray:
    col = "tokens" if "tokens" in frame.columns else "step"
    return frame[col].to_numpy(dtype=float)


def _ranges(frame: pd.DataFrame) -> dict:
    n = frame["n_params"].to_numpy(dtype=float)
    d = _tokens(frame)
    return {
        "n_params": (float(n.min()), float(n.max())),
        "tokens": (float(d.min()), float(d.max())),
    }


def _table(frame: pd.DataFrame, runs: RunTable) -> RunTable:
    return RunTable(frame, runs.train_domains, runs.eval_domains, source=runs.source)


def plan_splits(
    runs: RunTable,
    *,
    max_step: float | None = None,
    step_ratio: float = 3.0,
    size_splits: int = 2,
) -> tuple[list[Split], list[str]]:
    """The backtest splits these runs allow, and one note per split that could not be made.

    ``max_step``: only checkpoints at or below it are proxies (as in the fit). ``step_ratio``:
    the steps split fits checkpoints up to ``S_max / step_ratio``. ``size_splits``: how many
    size splits at most (1: the largest size from all others; 2: also from all but the two
    largest, when there are 4 or more sizes).
    """
    runs = as_run_table(runs)
    if not (math.isfinite(step_ratio) and step_ratio > 1):
        raise errors.OptionError(f"step_ratio must be a number > 1, got {step_ratio!r}")
    if isinstance(size_splits, bool) or not isinstance(size_splits, int) or size_splits < 0:
        raise errors.OptionError(f"size_splits must be a whole number >= 0, got {size_splits!r}")
    if not runs.has_steps or runs.column("n_params") is None:
        raise errors.BayesmixError(
            "backtests need checkpoints with model sizes: the runs lack a 'step' or "
            "'n_params' column",
            source=runs.source,
            hint="add the training step and model size of every record",
        )
    tidy = runs.to_tidy()
    keep = tidy["step"].to_numpy(dtype=float) > 0
    if max_step is not None:
        keep &= tidy["step"].to_numpy(dtype=float) <= max_step
    tidy = tidy[keep]
    splits, notes = [], []
    sizes = np.unique(tidy["n_params"].to_numpy(dtype=float))
    last = tidy.loc[tidy.groupby("run", sort=False)["step"].idxmax()]

    # size: the largest size held out, fitted on every smaller size (split "size") and, with
    # ``size_splits`` 2 and 4 or more sizes, on all but the two largest (split "size2": a
    # longer extrapolation in size, as the target's usually is)
    if len(sizes) >= 3:
        big = sizes[-1]
        held = last[last["n_params"] == big]
        for n_out in range(1, min(size_splits, len(sizes) - 2) + 1):
            top = sizes[-1 - n_out]
            fitted = tidy[tidy["n_params"] <= top]
            splits.append(
                Split(
                    "size" if n_out == 1 else f"size{n_out}",
                    f"size {size_label(big)} predicted from {size_label(sizes[0])}-"
                    f"{size_label(top)}",
                    _table(fitted, runs),
                    _table(held, runs),
                    _ranges(fitted),
                )
            )
    else:
        notes.append(
            f"no size backtest: {len(sizes)} model size(s), and holding one out needs 3 "
            "(the size law needs 2)"
        )

    # steps: checkpoints after S_max / step_ratio held out, the largest size predicted
    steps = np.unique(tidy["step"].to_numpy(dtype=float))
    s_max = float(steps.max())
    early = steps[steps <= s_max / step_ratio]
    if len(early) >= 3:
        cut = float(early.max())
        fitted = tidy[tidy["step"] <= cut]
        big = sizes[-1]
        held = last[(last["n_params"] == big) & (last["step"] > cut)]
        if len(held) and "schedule" not in tidy.columns:
            notes.append(
                "assumed: a constant learning rate (the run table has no 'schedule' column); "
                "under a decaying schedule a checkpoint before its end sits above the final "
                "loss of a run that ends there, and the steps split's bias shows how much "
                "that moves the extrapolation here"
            )
        if len(held):
            splits.append(
                Split(
                    "steps",
                    f"steps after {cut:g} held out (fitted {steps.min():g}-{cut:g}, "
                    f"{size_label(big)} runs predicted)",
                    _table(fitted, runs),
                    _table(held, runs),
                    _ranges(fitted),
                )
            )
        else:
            notes.append(f"no steps backtest: no {size_label(big)} run goes past step {cut:g}")
    else:
        notes.append(
            f"no steps backtest: fewer than 3 checkpoints at or below {s_max / step_ratio:g} "
            f"(the last, {s_max:g}, over step_ratio {step_ratio:g})"
        )
    return splits, notes


# ------------------------------------------------------------------------- predictors
def _predict_split(split: Split, method: str, spec, fit_kw: dict, imputations: int, seed):
    """Predictive draws (sample, run, K) of the held-out records, and the gate reports."""
    held = split.heldout.to_tidy()
    mix = split.heldout.mixtures
    if method == "joint":
        from bayesmix.inference.fitting import fit

        post = fit(split.fitted, spec, random_seed=seed, warn=False, **fit_kw)
        pred = post.predict(
            mix,
            n_params=held["n_params"].to_numpy(float),
            tokens=_tokens(held),
            random_seed=seed,
            warn=False,
            max_extrapolation=float("inf"),
        )
        reports = [("fit", post.diagnostics.ok, list(post.diagnostics.failed))]
        return _stack(pred), reports

    from bayesmix.scaling.pipeline import fit_step_law, gate_warnings, nested_fit

    step_fit = fit_step_law(split.fitted, random_seed=seed, warn=False, **fit_kw)
    out = np.full((0,), np.nan)
    parts: dict[int, np.ndarray] = {}
    reports = [("stage 1", step_fit.diagnostics.ok, list(step_fit.diagnostics.failed))]
    held = held.assign(_schedule=[schedules.schedule_of(row) for _, row in held.iterrows()])
    keys = ["n_params", "step", "_schedule"]
    for (n_params, step, sched), group in held.groupby(keys, sort=False, dropna=False):
        post = nested_fit(
            split.fitted,
            target_n_params=float(n_params),
            target_steps=float(step),
            imputations=imputations,
            spec=spec,
            random_seed=seed,
            step_fit=step_fit,
            warn=False,
            # the held-out runs' own schedule (a constant rate when unknown: groupby's NaN)
            target_schedule=sched
            if isinstance(sched, schedules.Schedule)
            else schedules.Schedule(),
            **fit_kw,
        )
        lines = gate_warnings(post)
        reports.append((f"target {size_label(n_params)} x {step:g}", not lines, lines))
        idx = [list(mix.index).index(r) for r in group["run"]]
        draws = _stack(post.predict(mix.iloc[idx], random_seed=seed, warn=False))
        for j, i in enumerate(idx):
            parts[i] = draws[:, j]
    n_s = min(len(v) for v in parts.values())
    out = np.stack([parts[i][:n_s] for i in range(len(mix))], axis=1)
    return out, reports


def _stack(pred) -> np.ndarray:
    return (
        pred.predictive.stack(sample=("chain", "draw"))
        .transpose("sample", "mixture", "eval_domain")
        .values
    )


def _split_frames(split: Split, held: pd.DataFrame, draws_: np.ndarray, domains, w, q):
    """The records (one row per held-out (run, domain)) of one split and, with weights ``w``,
    its overall-loss rows; ``draws_`` (sample, run, K) predictive, ``q`` the interval's
    quantiles."""
    observed = held[[LOSS_PREFIX + d for d in domains]].to_numpy(float)
    n_params = held["n_params"].to_numpy(float)
    tokens = _tokens(held)
    axes = extrapolation.axis_distances(n_params, tokens, split.ranges)
    dist = np.hypot(axes[:, 0], axes[:, 1])
    lo, hi = np.nanquantile(draws_, q, axis=0)
    k = len(domains)
    frame = pd.DataFrame(
        {
            "split": split.kind,
            "run": np.repeat(held["run"].astype(str).to_numpy(), k),
            "eval_domain": np.tile(list(domains), len(held)),
            "n_params": np.repeat(n_params, k),
            "step": np.repeat(held["step"].to_numpy(float), k),
            "tokens": np.repeat(tokens, k),
            "size_ratio": np.repeat(n_params / split.ranges["n_params"][1], k),
            "token_ratio": np.repeat(tokens / split.ranges["tokens"][1], k),
            "distance": np.repeat(dist, k),
            "distance_size": np.repeat(axes[:, 0], k),
            "distance_tokens": np.repeat(axes[:, 1], k),
            "observed": observed.ravel(),
            "mean": draws_.mean(0).ravel(),
            "sd": draws_.std(0).ravel(),
            "lower": lo.ravel(),
            "upper": hi.ravel(),
        }
    )
    frame = frame[np.isfinite(frame["observed"])]
    frame["inside"] = (frame["lower"] <= frame["observed"]) & (frame["observed"] <= frame["upper"])
    frame["error"] = frame["observed"] - frame["mean"]
    if w is None:
        return frame, None
    ok = np.isfinite(observed)
    agg = np.nansum(draws_ * w, axis=-1)  # (S, n)
    obs = np.array([observed[i][ok[i]] @ (w[ok[i]] / w[ok[i]].sum()) for i in range(len(held))])
    o_lo, o_hi = np.quantile(agg, q, axis=0)
    overall = pd.DataFrame(
        {
            "split": split.kind,
            "run": held["run"].astype(str).to_numpy(),
            "distance": dist,
            "observed": obs,
            "mean": agg.mean(0),
            "lower": o_lo,
            "upper": o_hi,
            "inside": (o_lo <= obs) & (obs <= o_hi),
        }
    )
    return frame, overall


def _backtest_split(
    split: Split,
    method: str,
    spec,
    fit_kw: dict,
    nested: tuple[int, int | None],
    w,
    ci_prob: float,
    progressbar: bool,
) -> tuple[pd.DataFrame, pd.DataFrame | None, dict]:
    """One split refitted and scored: its records, overall losses (None without weights) and
    summary (sizes, ranges, seconds, gate). ``nested``: (imputations, random_seed)."""
    t0 = time.perf_counter()
    if progressbar:
        import sys

        print(f"backtest: {split.name} ...", file=sys.stderr, flush=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        draws_, reports = _predict_split(split, method, spec, fit_kw, *nested)
    held = split.heldout.to_tidy().reset_index(drop=True)
    q = ((1 - ci_prob) / 2, (1 + ci_prob) / 2)
    frame, agg = _split_frames(split, held, draws_, split.heldout.eval_domains, w, q)
    info = {
        "kind": split.kind,
        "name": split.name,
        "fitted_records": len(split.fitted),
        "heldout_runs": len(held),
        "fitted_ranges": split.ranges,
        "seconds": round(time.perf_counter() - t0, 3),
        "gate_ok": all(ok for _, ok, _ in reports),
        "failed": [f"{where}: {f}" for where, ok, fl in reports for f in fl],
    }
    return frame, agg, info


def _check_options(method: str, model, ci_prob: float):
    """The mixing-law specification of a backtest (``model``, else the method's default),
    after checking ``method`` and ``ci_prob``."""
    if method not in METHODS:
        raise errors.OptionError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if not 0 < ci_prob < 1:
        raise errors.OptionError(f"ci_prob must be in (0, 1), got {ci_prob}")
    default = model_with(takes="tokens") if method == "joint" else "target"  # law over tokens
    return model if model is not None else default


def backtest(
    runs: RunTable,
    *,
    method: str = "nested",
    model=None,
    max_step: float | None = None,
    step_ratio: float = 3.0,
    size_splits: int = 2,
    imputations: int = 4,
    draws: int = PIPELINE_DRAWS,
    tune: int = PIPELINE_TUNE,
    chains: int = 2,
    random_seed: int | None = 1,
    ci_prob: float = 0.9,
    weights=None,
    progressbar: bool = False,
    max_time: float | None = None,
) -> Backtest:
    """Backtest target-scale prediction within the proxies (see the module docstring).

    Parameters
    ----------
    runs : RunTable
        Proxy checkpoints with ``n_params`` and ``step`` (as for ``bayesmix pipeline``).
    method : {"nested", "joint"}
        The predictor: the nested pipeline, or one law over size and tokens.
    model : str or ModelSpec, optional
        Mixing-law specification (nested: stage 3, default ``"target"``; joint: the law,
        default: the shipped law over size and tokens, ``models/scaling.toml``).
    max_step, step_ratio, size_splits
        Proxy checkpoints at or below ``max_step``; the steps split fits up to
        ``S_max / step_ratio``; at most ``size_splits`` size splits (:func:`plan_splits`).
    imputations, draws, tune, chains, random_seed
        Settings of every refit (as :func:`bayesmix.scaling.pipeline.nested_fit` /
        :func:`bayesmix.inference.fitting.fit`).
    ci_prob : float
        Mass of the predictive intervals checked.
    weights : mapping or path, optional
        Validation-domain weights: adds the overall loss per held-out run.
    progressbar : bool
        One line per split on stderr.
    max_time : float, optional
        Seconds each stage fit of a refit may spend sampling again towards its diagnostics
        gate (None: :func:`bayesmix.inference.gate_retry.stage_max_time`).

    Returns
    -------
    Backtest
        Records, summary by split and distance, and the learned extrapolation error.

    Examples
    --------
    Which splits a run table allows (no MCMC), then the backtest itself:

    >>> import bayesmix as bm
    >>> from bayesmix.scaling.backtesting import plan_splits
    >>> runs, _ = bm.simulate(["web", "code"], n_runs=6, random_seed=0,
    ...                       sizes=[2e7, 5e7, 1e8], steps=[1000, 2000, 3000, 6000, 9000])
    >>> for split in plan_splits(runs)[0]:
    ...     print(split.name)
    size 100M predicted from 20M-50M
    steps after 3000 held out (fitted 1000-3000, 100M runs predicted)
    >>> bt = bm.backtest(runs, imputations=2, draws=300, tune=300)  # doctest: +SKIP
    >>> print(bt.verdict())                                          # doctest: +SKIP
    >>> bt.calibration.describe()                                    # doctest: +SKIP
    """
    spec = _check_options(method, model, ci_prob)
    start = time.perf_counter()
    splits, notes = plan_splits(
        runs, max_step=max_step, step_ratio=step_ratio, size_splits=size_splits
    )
    w = None if weights is None else domain_weights(weights, runs.eval_domains, allow_subset=True)
    fit_kw = {"draws": draws, "tune": tune, "chains": chains, "max_time": stage_max_time(max_time)}
    frames, overall, infos = [], [], []
    for split in splits:
        try:
            frame, agg, info = _backtest_split(
                split, method, spec, fit_kw, (imputations, random_seed), w, ci_prob, progressbar
            )
        except errors.BayesmixError as err:
            notes.append(f"{split.kind} backtest skipped: {err.problem}")
            continue
        frames.append(frame)
        overall += [] if agg is None else [agg]
        infos.append(info)
    records = pd.concat(frames, ignore_index=True) if frames else empty_records()
    cal = extrapolation.learn(records) if len(records) else None
    return Backtest(
        records=records,
        overall=pd.concat(overall, ignore_index=True) if overall else None,
        splits=infos,
        notes=notes,
        ci_prob=ci_prob,
        method=method,
        calibration=cal,
        wall_s=time.perf_counter() - start,
    )


def target_axes(
    runs: RunTable, *, n_params: float, steps: float, max_step: float | None = None
) -> np.ndarray:
    """Log-distances (size, tokens) (:func:`bayesmix.posterior.extrapolation.axis_distances`)
    of a target (parameters, optimiser steps) beyond the proxies' checkpoints at or below
    ``max_step``, shape (2,)."""
    tidy = runs.to_tidy()
    step = tidy["step"].to_numpy(dtype=float)
    keep = (step > 0) & (step <= (max_step if max_step is not None else np.inf))
    tidy = tidy[keep]
    per_step = (
        float(np.median(tidy["tokens"].to_numpy(float) / tidy["step"].to_numpy(float)))
        if "tokens" in tidy.columns
        else 1.0
    )
    return extrapolation.axis_distances(n_params, steps * per_step, _ranges(tidy))


def target_distance(
    runs: RunTable, *, n_params: float, steps: float, max_step: float | None = None
) -> float:
    """Log-distance sqrt(u_N^2 + u_D^2) of a target (:func:`target_axes`)."""
    return float(np.hypot(*target_axes(runs, n_params=n_params, steps=steps, max_step=max_step)))


def attach(post, bt: Backtest, *, target_axes=None):
    """Store the backtest's summary and calibration on a posterior (returns it): predictions
    then include the learned extrapolation error; ``target_axes`` (size, tokens) fixes the
    log-distances of a posterior fitted at one target scale (nested pipeline). The stored
    record's ``target`` says how much of the predictive variance at the fitted mixtures is
    extrapolation error."""
    record = bt.to_dict(records=True)
    if bt.calibration is not None:
        cal = bt.calibration
        if target_axes is not None:
            cal = cal.with_target(target_axes)
            u_n, u_d = (float(v) for v in np.asarray(target_axes, float).reshape(2))
            record["target"] = {
                "distance": cal.target_distance,
                "size_distance": u_n,
                "token_distance": u_d,
                "extrapolation_share": extrapolation_share(post, cal),
            }
        post.with_extrapolation(cal)
    post.tree.attrs[BACKTEST_ATTR] = json.dumps(json_safe(record), sort_keys=True)
    return post


def extrapolation_share(post, cal: extrapolation.Calibration) -> float:
    """Median share, over the posterior's fitted mixtures and validation domains, of the
    calibrated predictive variance that is extrapolation error (discrepancy), at the
    calibration's target."""
    from bayesmix.posterior.posterior import Posterior

    plain = Posterior(post.tree.copy()).with_extrapolation(None)
    pred = plain.predict(post.fit_data().mixtures, warn=False)
    own = pred.predictive.std(("chain", "draw")).values
    axes = cal.target_axes if cal.target_axes is not None else (0.0, 0.0)
    return float(np.median(extrapolation.width_share(cal, own, axes)))


__all__ = [
    "METHODS",
    "Backtest",
    "Split",
    "attach",
    "backtest",
    "extrapolation_share",
    "plan_splits",
    "target_axes",
    "target_distance",
]
