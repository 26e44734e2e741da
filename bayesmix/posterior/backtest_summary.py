"""The result of a backtest (:mod:`bayesmix.scaling.backtesting`): held-out predictions by split and
distance, their summary and verdict, and how it is saved.

Kept apart from the refits so that readers of a stored backtest (the HTML report, decisions)
need none of the fitting machinery.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from bayesmix.io import atomic_write_text, json_safe
from bayesmix.posterior import extrapolation


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

    @cached_property
    def calibrated(self) -> np.ndarray:
        """:func:`calibrated_inside` of the records, computed once (a grid posterior per
        split; summary, verdict, text and save all read it)."""
        return calibrated_inside(self.records, self.ci_prob)

    def summary(self) -> pd.DataFrame:
        """Per split and for all: n, size_ratio, token_ratio, distance, coverage (of the
        predictor's own intervals), calibrated_coverage (with the learned extrapolation error,
        learned without the split when there are 2 or more), bias (mean predicted - observed),
        mae, width (mean interval width); nats per token."""
        rec = self.records.copy()
        rec["calibrated_inside"] = self.calibrated
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
        return atomic_write_text(path, json.dumps(json_safe(self.to_dict()), indent=1))


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
        k, m = cal.kappa[pick], cal.tau_mix[pick]
        s = g["sd"].to_numpy(float)[:, None]
        u = g["distance"].to_numpy(float)[:, None]
        if {"distance_size", "distance_tokens"} <= set(g.columns):
            u_n = g["distance_size"].to_numpy(float)[:, None]
            u_d = g["distance_tokens"].to_numpy(float)[:, None]
        else:  # one distance: both taus are one (Calibration.learned_axes ["joint"])
            u_n, u_d = u, 0.0 * u
        z = rng.standard_normal((4, len(g), n))
        shared = cal.tau_size[pick] * u_n * z[1] + cal.tau_tokens[pick] * u_d * z[3]
        draws = k * s * z[0] + shared + m * u * z[2]
        lo, hi = np.quantile(draws, [(1 - ci_prob) / 2, (1 + ci_prob) / 2], axis=1)
        e = g["error"].to_numpy(float)
        out[mask] = (lo <= e) & (e <= hi)
    return out


def empty_records() -> pd.DataFrame:
    cols = ["split", "run", "eval_domain", "distance", "observed", "mean", "sd", "lower"]
    cols += ["upper", "inside", "error", "size_ratio", "token_ratio", "n_params", "step", "tokens"]
    return pd.DataFrame({c: [] for c in cols})


__all__ = ["Backtest", "calibrated_inside", "empty_records"]
