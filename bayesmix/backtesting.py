"""Backtests within the proxies: how well does extrapolating to a larger size or more tokens work?

Before paying for the big run, refit with part of the proxies held out and predict it with the
same predictor that will predict the target:

* **size** splits: the largest proxy model size is held out and its runs' last checkpoints are
  predicted from every smaller size (``size``) and, with 4 or more sizes, from all but the two
  largest (``size2``, a longer extrapolation); distance ``log(N / N_max fitted)``;
* **steps** split: checkpoints after ``S_max / step_ratio`` are held out; the runs of the
  largest size are predicted at their last checkpoint (distance ``log(D / D_max fitted)``).

The predictor is the nested pipeline (:func:`bayesmix.pipeline.nested_fit`, ``method="nested"``)
or one law over model size and tokens (``method="joint"``, e.g. ``scaling``). The residuals,
by split and distance, give coverage, bias and MAE (:meth:`Backtest.summary`) and the learned
extrapolation error (:mod:`bayesmix.extrapolation`) that calibrates target-scale intervals.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bayesmix import errors, extrapolation
from bayesmix.data import LOSS_PREFIX, RunTable
from bayesmix.io import atomic_write_text
from bayesmix.loaders import size_label

METHODS = ("nested", "joint")
#: Root attribute of a posterior file holding the backtest it was calibrated with (JSON).
ATTR = "bayesmix_backtest"


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
    if not isinstance(runs, RunTable):
        raise errors.BayesmixError("runs must be a RunTable (load it with bayesmix.load)")
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
        if len(held):
            notes.append(
                "assumed: one learning-rate schedule for every checkpoint of a run (the run "
                "table says nothing of schedules); under a decaying schedule a checkpoint "
                "before its end sits above the final loss of a run that ends there, and the "
                "steps split's bias shows how much that moves the extrapolation here"
            )
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


@dataclass
class Backtest:
    """Held-out predictions of every split and what they say.

    ``records``: one row per held-out (run, validation domain): split, kind, run,
    eval_domain, n_params, step, tokens, size_ratio, token_ratio (target over the largest
    fitted), distance (log-distance beyond the fitted range), observed, mean, sd, lower,
    upper (``ci_prob`` predictive interval), inside, error (observed - mean); nats per token.
    ``overall``: the same per run for the weighted aggregate (when weights were given).
    ``splits``: per split its name, sizes, timings and diagnostics gate.
    ``calibration``: the extrapolation error learned from ``records``.
    """

    records: pd.DataFrame
    overall: pd.DataFrame | None
    splits: list[dict]
    notes: list[str]
    ci_prob: float
    method: str
    calibration: extrapolation.Calibration | None = None
    wall_s: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def gates_ok(self) -> bool:
        return all(s["gate_ok"] for s in self.splits)

    def summary(self) -> pd.DataFrame:
        """Per split and for all: n, size_ratio, token_ratio, distance, coverage (of the
        predictor's own intervals), calibrated_coverage (with the learned extrapolation error,
        learned without the split when there are 2 or more), bias (mean predicted - observed),
        mae, width (mean interval width); nats per token."""
        rec = self.records.copy()
        rec["calibrated_inside"] = calibrated_inside(rec, self.ci_prob)
        rows = []
        for name, g in [*rec.groupby("split", sort=False), ("all", rec)]:
            rows.append(
                {
                    "split": name,
                    "n": int(len(g)),
                    "size_ratio": float(g["size_ratio"].max()),
                    "token_ratio": float(g["token_ratio"].max()),
                    "distance": float(g["distance"].mean()),
                    "coverage": float(g["inside"].mean()),
                    "calibrated_coverage": float(g["calibrated_inside"].mean()),
                    "bias": float((g["mean"] - g["observed"]).mean()),
                    "mae": float((g["mean"] - g["observed"]).abs().mean()),
                    "width": float((g["upper"] - g["lower"]).mean()),
                }
            )
        return pd.DataFrame(rows)

    def verdict(self) -> str:
        """One line a team reads before the big run."""
        if self.records.empty:
            return "no backtest could be made: " + "; ".join(self.notes)
        s = self.summary().set_index("split")
        a = s.loc["all"]
        parts = [
            f"{r.Index}: coverage {r.coverage:.2f}, bias {r.bias:+.3f}, MAE {r.mae:.3f}"
            for r in s.drop(index="all").itertuples()
        ]
        pct = round(100 * self.ci_prob)
        text = (
            f"backtests ({self.method}): {pct}% intervals covered {a['coverage']:.2f} of "
            f"{int(a['n'])} held-out losses ({'; '.join(parts)}); with the learned "
            f"extrapolation error {a['calibrated_coverage']:.2f}"
        )
        if not self.gates_ok:
            text += "; WARNING: some backtest fits failed their diagnostics gate"
        return text

    def to_text(self) -> str:
        lines = [self.verdict(), ""]
        with pd.option_context("display.width", 120, "display.float_format", "{:.4f}".format):
            lines.append(self.summary().to_string(index=False))
            if self.overall is not None and not self.overall.empty:
                lines += ["", "overall loss of each held-out run:"]
                cols = ["split", "run", "observed", "mean", "lower", "upper", "inside"]
                lines.append(self.overall[cols].to_string(index=False))
        for s in self.splits:
            gate = "passed" if s["gate_ok"] else "FAILED: " + "; ".join(s["failed"][:3])
            lines.append(f"split {s['name']}: {s['seconds']:.0f} s, gate {gate}")
        if self.calibration is not None:
            lines.append(self.calibration.describe())
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()

    def to_dict(self, records: bool = True) -> dict:
        out = {
            "format": "bayesmix-backtest/1",
            "method": self.method,
            "ci_prob": self.ci_prob,
            "verdict": self.verdict(),
            "summary": self.summary().to_dict(orient="list"),
            "splits": self.splits,
            "notes": self.notes,
            "wall_s": round(self.wall_s, 3),
            "calibration": (
                json.loads(self.calibration.to_json()) if self.calibration is not None else None
            ),
        }
        if records:
            out["records"] = self.records.to_dict(orient="list")
            if self.overall is not None:
                out["overall"] = self.overall.to_dict(orient="list")
        return out

    def save(self, path: str | Path) -> Path:
        """``.csv``: the records table; anything else: JSON with summary, splits, calibration
        and records. Written atomically."""
        path = Path(path)
        if path.suffix.lower() == ".csv":
            return atomic_write_text(path, self.records.to_csv(index=False))
        return atomic_write_text(path, json.dumps(_json_safe(self.to_dict()), indent=1))


def calibrated_inside(records: pd.DataFrame, ci_prob: float, n: int = 400) -> np.ndarray:
    """Whether each residual lies inside the ``ci_prob`` interval of the calibrated predictive
    (Normal approximation of the predictor's spread), with the calibration learned without the
    residual's split when there are other splits (else from all)."""
    out = np.zeros(len(records), bool)
    if records.empty:
        return out
    rng = np.random.default_rng(0)
    splits = records["split"].unique()
    for name in splits:
        mask = (records["split"] == name).to_numpy()
        train = records[~mask] if len(splits) > 1 else records
        cal = extrapolation.learn(train)
        g = records[mask]
        pick = rng.integers(len(cal.kappa), size=n)
        k, t, m = cal.kappa[pick], cal.tau[pick], cal.tau_mix[pick]
        s = g["sd"].to_numpy(float)[:, None]
        u = g["distance"].to_numpy(float)[:, None]
        z = rng.standard_normal((3, len(g), n))
        draws = k * s * z[0] + t * u * z[1] + m * u * z[2]
        lo, hi = np.quantile(draws, [(1 - ci_prob) / 2, (1 + ci_prob) / 2], axis=1)
        e = g["error"].to_numpy(float)
        out[mask] = (lo <= e) & (e <= hi)
    return out


def _json_safe(obj):
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer, np.bool_)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


# ------------------------------------------------------------------------- predictors
def _predict_split(split: Split, method: str, spec, fit_kw: dict, imputations: int, seed):
    """Predictive draws (sample, run, K) of the held-out records, and the gate reports."""
    held = split.heldout.to_tidy()
    mix = split.heldout.mixtures
    if method == "joint":
        from bayesmix.fitting import fit

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

    from bayesmix.pipeline import fit_step_law, gate_warnings, nested_fit

    step_fit = fit_step_law(split.fitted, random_seed=seed, warn=False, **fit_kw)
    out = np.full((0,), np.nan)
    parts: dict[int, np.ndarray] = {}
    reports = [("stage 1", step_fit.diagnostics.ok, list(step_fit.diagnostics.failed))]
    for (n_params, step), group in held.groupby(["n_params", "step"], sort=True):
        post = nested_fit(
            split.fitted,
            target_n_params=float(n_params),
            target_steps=float(step),
            imputations=imputations,
            spec=spec,
            random_seed=seed,
            step_fit=step_fit,
            warn=False,
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


def backtest(
    runs: RunTable,
    *,
    method: str = "nested",
    model=None,
    max_step: float | None = None,
    step_ratio: float = 3.0,
    size_splits: int = 2,
    imputations: int = 4,
    draws: int = 500,
    tune: int = 500,
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
        Mixing-law specification (nested: stage 3, default ``"default"``; joint: the law,
        default ``"scaling"``).
    max_step, step_ratio, size_splits
        Proxy checkpoints at or below ``max_step``; the steps split fits up to
        ``S_max / step_ratio``; at most ``size_splits`` size splits (:func:`plan_splits`).
    imputations, draws, tune, chains, random_seed
        Settings of every refit (as :func:`bayesmix.pipeline.nested_fit` /
        :func:`bayesmix.fitting.fit`).
    ci_prob : float
        Mass of the predictive intervals checked.
    weights : mapping or path, optional
        Validation-domain weights: adds the overall loss per held-out run.
    progressbar : bool
        One line per split on stderr.
    max_time : float, optional
        Seconds each refit may spend sampling again towards its diagnostics gate
        (:mod:`bayesmix.gate_retry`; None: its default).

    Returns
    -------
    Backtest
        Records, summary by split and distance, and the learned extrapolation error.
    """
    from bayesmix.mixtures import domain_weights

    if method not in METHODS:
        raise errors.OptionError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if not 0 < ci_prob < 1:
        raise errors.OptionError(f"ci_prob must be in (0, 1), got {ci_prob}")
    spec = model if model is not None else ("scaling" if method == "joint" else "default")
    start = time.perf_counter()
    splits, notes = plan_splits(
        runs, max_step=max_step, step_ratio=step_ratio, size_splits=size_splits
    )
    w = None if weights is None else domain_weights(weights, runs.eval_domains, allow_subset=True)
    from bayesmix.gate_retry import check_max_time

    fit_kw = {"draws": draws, "tune": tune, "chains": chains, "max_time": check_max_time(max_time)}
    lo_q, hi_q = (1 - ci_prob) / 2, (1 + ci_prob) / 2
    frames, overall, infos = [], [], []
    for split in splits:
        t0 = time.perf_counter()
        if progressbar:
            import sys

            print(f"backtest: {split.name} ...", file=sys.stderr, flush=True)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                draws_, reports = _predict_split(
                    split, method, spec, fit_kw, imputations, random_seed
                )
        except errors.BayesmixError as err:
            notes.append(f"{split.kind} backtest skipped: {err.problem}")
            continue
        held = split.heldout.to_tidy().reset_index(drop=True)
        observed = held[[LOSS_PREFIX + d for d in runs.eval_domains]].to_numpy(float)
        n_params = held["n_params"].to_numpy(float)
        tokens = _tokens(held)
        dist = extrapolation.log_distance(n_params, tokens, split.ranges)
        mean = draws_.mean(0)
        sd = draws_.std(0)
        lo, hi = np.nanquantile(draws_, [lo_q, hi_q], axis=0)
        k = len(runs.eval_domains)
        frame = pd.DataFrame(
            {
                "split": split.kind,
                "run": np.repeat(held["run"].astype(str).to_numpy(), k),
                "eval_domain": np.tile(list(runs.eval_domains), len(held)),
                "n_params": np.repeat(n_params, k),
                "step": np.repeat(held["step"].to_numpy(float), k),
                "tokens": np.repeat(tokens, k),
                "size_ratio": np.repeat(n_params / split.ranges["n_params"][1], k),
                "token_ratio": np.repeat(tokens / split.ranges["tokens"][1], k),
                "distance": np.repeat(dist, k),
                "observed": observed.ravel(),
                "mean": mean.ravel(),
                "sd": sd.ravel(),
                "lower": lo.ravel(),
                "upper": hi.ravel(),
            }
        )
        frame = frame[np.isfinite(frame["observed"])]
        frame["inside"] = (frame["lower"] <= frame["observed"]) & (
            frame["observed"] <= frame["upper"]
        )
        frame["error"] = frame["observed"] - frame["mean"]
        frames.append(frame)
        if w is not None:
            ok = np.isfinite(observed)
            agg = np.nansum(draws_ * w, axis=-1)  # (S, n)
            obs = np.array(
                [observed[i][ok[i]] @ (w[ok[i]] / w[ok[i]].sum()) for i in range(len(held))]
            )
            o_lo, o_hi = np.quantile(agg, [lo_q, hi_q], axis=0)
            overall.append(
                pd.DataFrame(
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
            )
        infos.append(
            {
                "kind": split.kind,
                "name": split.name,
                "fitted_records": len(split.fitted),
                "heldout_runs": len(held),
                "fitted_ranges": split.ranges,
                "seconds": round(time.perf_counter() - t0, 3),
                "gate_ok": all(ok for _, ok, _ in reports),
                "failed": [f"{where}: {f}" for where, ok, fl in reports for f in fl],
            }
        )
    records = pd.concat(frames, ignore_index=True) if frames else _empty_records()
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


def _empty_records() -> pd.DataFrame:
    cols = ["split", "run", "eval_domain", "distance", "observed", "mean", "sd", "lower"]
    cols += ["upper", "inside", "error", "size_ratio", "token_ratio", "n_params", "step", "tokens"]
    return pd.DataFrame({c: [] for c in cols})


def target_distance(
    runs: RunTable, *, n_params: float, steps: float, max_step: float | None = None
) -> float:
    """Log-distance (:func:`bayesmix.extrapolation.log_distance`) of a target (parameters,
    optimiser steps) beyond the proxies' checkpoints at or below ``max_step``."""
    tidy = runs.to_tidy()
    step = tidy["step"].to_numpy(dtype=float)
    keep = (step > 0) & (step <= (max_step if max_step is not None else np.inf))
    tidy = tidy[keep]
    per_step = (
        float(np.median(tidy["tokens"].to_numpy(float) / tidy["step"].to_numpy(float)))
        if "tokens" in tidy.columns
        else 1.0
    )
    return float(extrapolation.log_distance(n_params, steps * per_step, _ranges(tidy)))


def attach(post, bt: Backtest, *, target_distance: float | None = None):
    """Store the backtest's summary and calibration on a posterior (returns it): predictions
    then include the learned extrapolation error; ``target_distance`` fixes the distance of a
    posterior fitted at one target scale (nested pipeline). The stored record's ``target``
    says how much of the predictive variance at the fitted mixtures is extrapolation error."""
    record = bt.to_dict(records=True)
    if bt.calibration is not None:
        cal = bt.calibration
        if target_distance is not None:
            cal = cal.with_target(target_distance)
            record["target"] = {
                "distance": float(target_distance),
                "extrapolation_share": extrapolation_share(post, cal),
            }
        post.with_extrapolation(cal)
    post.tree.attrs[ATTR] = json.dumps(_json_safe(record), sort_keys=True)
    return post


def extrapolation_share(post, cal: extrapolation.Calibration) -> float:
    """Median share, over the posterior's fitted mixtures and validation domains, of the
    calibrated predictive variance that is extrapolation error (discrepancy), at the
    calibration's target distance."""
    from bayesmix.posterior import Posterior

    plain = Posterior(post.tree.copy()).with_extrapolation(None)
    pred = plain.predict(post.fit_data().mixtures, warn=False)
    own = pred.predictive.std(("chain", "draw")).values
    distance = cal.target_distance or 0.0
    return float(np.median(extrapolation.width_share(cal, own, distance)))


def stored(post) -> dict | None:
    """The backtest stored on a posterior (:func:`attach`), or None."""
    text = post.tree.attrs.get(ATTR)
    return json.loads(text) if text else None


__all__ = [
    "ATTR",
    "METHODS",
    "Backtest",
    "Split",
    "attach",
    "backtest",
    "calibrated_inside",
    "extrapolation_share",
    "plan_splits",
    "stored",
    "target_distance",
]
