"""Learning-rate schedules: what a run table may say about them, and the step law's inputs.

A checkpoint in the middle of a run whose learning rate decays is not the final loss of a
shorter run: the loss drops as the learning rate anneals, so a run that ends at step S sits
below the step-S checkpoint of a longer run. A power law in steps fitted to intermediate
checkpoints and read at the target's last step then misses the annealing gain (or counts it
twice). The step law of :mod:`bayesmix.pipeline` therefore reads the schedule where the run
table gives it, in the form of Tissue et al. (2024, "Scaling Law with Learning Rate
Annealing"):

    L(s) = L0 + A S1(s)^-alpha - C S2(s)

* ``S1(s) = sum_{i<=s} eta_i`` (the *forward area*; learning rates relative to the peak, so S1
  is in peak-LR steps and equals s at a constant rate);
* ``S2(s) = sum_{i<=s} m_i`` with ``m_i = lam m_{i-1} + (eta_{i-1} - eta_i)`` (the *annealing
  area*, learning-rate decreases after warm-up accumulated with momentum ``lam`` =
  :data:`MOMENTUM`, 0.999 as in the paper); 0 at a constant rate.

With a constant rate this is the ordinary power law in steps. The coefficient C is fitted per
validation domain and model size from the proxies' curves (only when some proxy decays its
rate: otherwise nothing informs it).

Optional run-table columns (one value per run, the same on each of its checkpoints):

=================  ================================================================
``schedule``       ``constant``, ``cosine``, ``linear`` or ``wsd`` (warm-up, stable, decay);
                   empty: unknown (a constant rate is assumed, and the output says so)
``total_steps``    the steps the schedule was planned for (cosine, linear, wsd)
``warmup_steps``   linear warm-up from 0 to the peak (default 0)
``decay_steps``    wsd: length of the final linear decay (required for wsd)
``min_lr_ratio``   final learning rate over the peak (default 0.1 for cosine, 0 otherwise)
=================  ================================================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from bayesmix import errors

KINDS = ("constant", "cosine", "linear", "wsd")
#: Optional run-table columns describing a run's schedule (see the module docstring).
SCHEDULE_COLUMNS = ("schedule", "total_steps", "warmup_steps", "decay_steps", "min_lr_ratio")
#: Momentum of the annealing area (Tissue et al. 2024 use 0.999 throughout).
MOMENTUM = 0.999
#: Longest schedule evaluated step by step (a longer one is evaluated on a coarser grid).
_MAX_GRID = 2_000_000


class ScheduleError(errors.BayesmixError):
    """A schedule that cannot be used (unknown kind, missing or inconsistent lengths)."""


@dataclass(frozen=True)
class Schedule:
    """One run's learning-rate schedule, relative to its peak rate.

    ``kind`` one of :data:`KINDS`; ``total_steps`` the planned length (None for ``constant``);
    ``warmup_steps`` linear warm-up; ``decay_steps`` the final decay of ``wsd``;
    ``min_lr_ratio`` the final rate over the peak (None: 0.1 for cosine, 0 otherwise).
    """

    kind: str = "constant"
    total_steps: float | None = None
    warmup_steps: float = 0.0
    decay_steps: float | None = None
    min_lr_ratio: float | None = None

    def __post_init__(self):
        kind = str(self.kind).strip().lower()
        if kind not in KINDS:
            raise ScheduleError(
                f"unknown learning-rate schedule {self.kind!r}",
                hint=f"use one of {', '.join(KINDS)}",
            )
        object.__setattr__(self, "kind", kind)
        for name in ("total_steps", "warmup_steps", "decay_steps", "min_lr_ratio"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(float(value)) and float(value) >= 0):
                raise ScheduleError(f"schedule {name} must be a non-negative number, got {value}")
        if kind != "constant" and not (self.total_steps and self.total_steps > 0):
            raise ScheduleError(
                f"a {kind} schedule needs total_steps (the steps it was planned for)"
            )
        if self.total_steps and self.warmup_steps >= self.total_steps:
            raise ScheduleError(
                f"warmup_steps {self.warmup_steps:g} must be below total_steps {self.total_steps:g}"
            )
        if kind == "wsd":
            if not self.decay_steps:
                raise ScheduleError(
                    "a wsd schedule needs decay_steps (the length of its final decay)"
                )
            assert self.total_steps is not None
            if self.decay_steps > self.total_steps - self.warmup_steps:
                raise ScheduleError(
                    f"decay_steps {self.decay_steps:g} is longer than the steps after warm-up "
                    f"({self.total_steps - self.warmup_steps:g})"
                )
        if self.min_lr_ratio is not None and self.min_lr_ratio > 1:
            raise ScheduleError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio:g}")

    @classmethod
    def parse(cls, text: str, total_steps: float | None = None) -> Schedule:
        """``"cosine,total=100000,warmup=2000,min_lr=0.1"`` (CLI form); ``total_steps`` fills
        a missing ``total`` (e.g. the target's steps)."""
        parts = [p.strip() for p in str(text).split(",") if p.strip()]
        if not parts:
            raise ScheduleError("empty schedule", hint="e.g. cosine,total=100000,warmup=2000")
        keys = {"total": "total_steps", "warmup": "warmup_steps", "decay": "decay_steps"}
        keys["min_lr"] = "min_lr_ratio"
        kw: dict[str, float] = {}
        for part in parts[1:]:
            name, sep, value = part.partition("=")
            if not sep or name.strip() not in keys:
                raise ScheduleError(
                    f"cannot read {part!r} in schedule {text!r}",
                    hint="write KIND[,total=N][,warmup=N][,decay=N][,min_lr=X]",
                )
            try:
                kw[keys[name.strip()]] = float(value)
            except ValueError:
                raise ScheduleError(
                    f"{name.strip()} in schedule {text!r} is not a number"
                ) from None
        if "total_steps" not in kw and total_steps is not None and parts[0] != "constant":
            kw["total_steps"] = float(total_steps)
        return cls(parts[0], **kw)

    @property
    def final_ratio(self) -> float:
        if self.min_lr_ratio is not None:
            return float(self.min_lr_ratio)
        return 0.1 if self.kind == "cosine" else 0.0

    @property
    def decays(self) -> bool:
        return self.kind != "constant"

    def ending_at(self, steps: float) -> Schedule:
        """The same kind of schedule planned for ``steps`` (a target run that ends there);
        warm-up and decay keep their lengths, clipped to fit."""
        if not self.decays:
            return self
        warm = min(self.warmup_steps, 0.5 * steps)
        decay = None if self.decay_steps is None else min(self.decay_steps, steps - warm)
        return replace(self, total_steps=float(steps), warmup_steps=warm, decay_steps=decay)

    def describe(self) -> str:
        if not self.decays:
            return "constant" + (f", warm-up {self.warmup_steps:g}" if self.warmup_steps else "")
        text = f"{self.kind} over {self.total_steps:g} steps"
        if self.warmup_steps:
            text += f", warm-up {self.warmup_steps:g}"
        if self.kind == "wsd":
            text += f", decay {self.decay_steps:g}"
        return text + f", final rate {self.final_ratio:g} x peak"

    def rates(self, steps: np.ndarray) -> np.ndarray:
        """Learning rate over the peak at each step (array of steps >= 1)."""
        s = np.asarray(steps, float)
        warm = float(self.warmup_steps)
        low = self.final_ratio
        if self.kind == "constant":
            base = np.ones_like(s)
        else:
            total = float(self.total_steps or 0.0)
            start = total - float(self.decay_steps or 0.0) if self.kind == "wsd" else warm
            frac = np.clip((s - start) / max(total - start, 1.0), 0.0, 1.0)
            if self.kind == "cosine":
                base = low + (1.0 - low) * 0.5 * (1.0 + np.cos(np.pi * frac))
            else:  # linear, and wsd's decay
                base = 1.0 - (1.0 - low) * frac
        return np.where(s <= warm, s / max(warm, 1.0), base) if warm > 0 else base

    def areas(self, at) -> tuple[np.ndarray, np.ndarray]:
        """``(S1, S2)`` at the given steps (peak-LR steps; see the module docstring)."""
        at = np.atleast_1d(np.asarray(at, float))
        if at.size == 0:
            return at.copy(), at.copy()
        if not self.decays and not self.warmup_steps:
            return at.copy(), np.zeros_like(at)
        end = float(np.max(at))
        stride = max(1.0, math.ceil(end / _MAX_GRID))
        grid = np.arange(stride, end + stride, stride)
        eta = self.rates(grid)
        s1 = np.cumsum(eta) * stride
        drop = np.zeros_like(eta)
        drop[1:] = eta[:-1] - eta[1:]
        drop[grid <= self.warmup_steps] = 0.0  # the warm-up's rise is not annealing
        lam = MOMENTUM**stride
        momentum = _exp_filter(drop, lam)
        s2 = np.cumsum(momentum) * stride
        s1i = np.interp(at, np.concatenate([[0.0], grid]), np.concatenate([[0.0], s1]))
        s2i = np.interp(at, np.concatenate([[0.0], grid]), np.concatenate([[0.0], s2]))
        return s1i, s2i


def _exp_filter(x: np.ndarray, lam: float) -> np.ndarray:
    """m_i = lam m_{i-1} + x_i (scipy's lfilter: a C loop, 1e6 steps in a few ms)."""
    from scipy.signal import lfilter

    return np.asarray(lfilter([1.0], [1.0, -lam], x))


# ------------------------------------------------------------------------ run-table columns
def check_columns(frame: pd.DataFrame, source, rows, run_ids) -> pd.DataFrame:
    """Validate the optional schedule columns of a tidy frame (in place of a copy): kinds
    lower-cased, lengths numeric, one schedule per run. Errors name row and column."""
    present = [c for c in SCHEDULE_COLUMNS if c in frame.columns]
    if not present:
        return frame
    if "schedule" not in frame.columns:
        raise errors.FormatError(
            f"column {present[0]!r} without a 'schedule' column",
            source=source,
            column=present[0],
            hint=f"add a schedule column ({', '.join(KINDS)}) or drop {present[0]!r}",
        )
    kinds: list[str | None] = []
    for i, v in enumerate(frame["schedule"].tolist()):
        if v is None or (isinstance(v, float) and math.isnan(v)) or str(v).strip() == "":
            kinds.append(None)
            continue
        kind = str(v).strip().lower()
        if kind not in KINDS:
            raise errors.FormatError(
                f"unknown learning-rate schedule {v!r}",
                source=source,
                row=rows[i],
                run=run_ids[i],
                column="schedule",
                hint=f"use one of {', '.join(KINDS)}, or leave it empty when unknown",
            )
        kinds.append(kind)
    frame["schedule"] = pd.array(kinds, dtype="object")
    for col in present[1:]:
        values = pd.to_numeric(frame[col], errors="coerce")
        bad = values.isna() & frame[col].notna() & (frame[col].astype(str).str.strip() != "")
        for j in np.flatnonzero(bad.to_numpy()):
            raise errors.NonNumericError(
                f"{col} must be a number, got {frame[col].iloc[j]!r}",
                source=source,
                row=rows[j],
                run=run_ids[j],
                column=col,
            )
        frame[col] = values.astype(float)
    for i in range(len(frame)):
        if kinds[i] is None:
            continue
        try:
            schedule_of(frame.iloc[i])
        except ScheduleError as err:
            raise errors.FormatError(
                err.problem,
                source=source,
                row=rows[i],
                run=run_ids[i],
                column="schedule",
                hint=err.hint,
            ) from None
    if "step" in frame.columns:
        for col in present:
            n = frame.groupby("run", sort=False)[col].nunique(dropna=False)
            bad_runs = n[n > 1]
            if len(bad_runs):
                first = run_ids.index(bad_runs.index[0])
                raise errors.InconsistentMixtureError(
                    f"{col} differs between checkpoints of the same run",
                    source=source,
                    row=rows[first],
                    run=bad_runs.index[0],
                    column=col,
                    hint="a run has one learning-rate schedule",
                )
    return frame


def schedule_of(record) -> Schedule | None:
    """The schedule a tidy record (a row: Series or dict) gives, or None when unknown."""
    kind = record.get("schedule") if hasattr(record, "get") else None
    if kind is None or (isinstance(kind, float) and math.isnan(kind)):
        return None

    def num(name):
        v = record.get(name)
        return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)

    return Schedule(
        str(kind),
        total_steps=num("total_steps"),
        warmup_steps=num("warmup_steps") or 0.0,
        decay_steps=num("decay_steps"),
        min_lr_ratio=num("min_lr_ratio"),
    )


def features(tidy: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(S1, S2, notes)`` per record of a tidy frame with ``step``; records of runs without a
    schedule get ``S1 = step``, ``S2 = 0`` (a constant rate, said in the notes)."""
    steps = tidy["step"].to_numpy(float)
    s1, s2 = steps.copy(), np.zeros_like(steps)
    if "schedule" not in tidy.columns:
        return (
            s1,
            s2,
            [
                "learning-rate schedules unknown (no 'schedule' column): a constant rate assumed; "
                "under a decaying schedule an intermediate checkpoint sits above the final loss "
                "of a run that ends there"
            ],
        )
    first = tidy.drop_duplicates("run")
    by_run = {str(r): schedule_of(row) for r, (_, row) in zip(first["run"], first.iterrows())}
    runs = tidy["run"].astype(str).to_numpy()
    cache: dict[Schedule, list[str]] = {}
    for run, sched in by_run.items():
        if sched is not None:
            cache.setdefault(sched, []).append(run)
    for sched, members in cache.items():
        rows = np.flatnonzero(np.isin(runs, members))
        s1[rows], s2[rows] = sched.areas(steps[rows])
    unknown = sorted(r for r, s in by_run.items() if s is None)
    notes = [
        "learning-rate schedules: "
        + "; ".join(f"{len(m)} run(s) {s.describe()}" for s, m in cache.items())
    ]
    if unknown:
        notes.append(
            f"{len(unknown)} run(s) without a schedule ({', '.join(unknown[:3])}"
            + (", ..." if len(unknown) > 3 else "")
            + "): a constant rate assumed"
        )
    return s1, s2, notes


def proxy_schedule(tidy: pd.DataFrame) -> Schedule | None:
    """The schedule the proxies share (kind, warm-up, decay, final rate; the length of the
    longest), or None when they have none or differ in kind."""
    if "schedule" not in tidy.columns:
        return None
    first = tidy.drop_duplicates("run")
    scheds = [schedule_of(row) for _, row in first.iterrows()]
    known = [s for s in scheds if s is not None]
    if not known or len({s.kind for s in known}) != 1:
        return None
    longest = max(known, key=lambda s: s.total_steps or 0.0)
    return longest


def declare(tidy: pd.DataFrame, text: str) -> pd.DataFrame:
    """A copy of a tidy frame whose runs without a schedule get the one ``text`` describes
    (CLI form, :meth:`Schedule.parse`); without ``total=`` each run's schedule ends at its
    last checkpoint. For logs that say nothing of schedules (e.g. Ye et al.'s)."""
    if "step" not in tidy.columns:
        raise ScheduleError("a schedule needs checkpoints: the runs have no 'step' column")
    last = tidy.groupby("run", sort=False)["step"].max()
    probe = Schedule.parse(text, total_steps=float(last.max()))  # checks the text once
    out = tidy.copy()
    for col in SCHEDULE_COLUMNS:
        if col not in out.columns:
            out[col] = None if col == "schedule" else np.nan
    fill = out["schedule"].isna().to_numpy()
    given_total = "total=" in text.replace(" ", "")
    for run in pd.unique(out.loc[fill, "run"]):
        sched = Schedule.parse(text, total_steps=float(last[run])) if not given_total else probe
        rows = fill & (out["run"] == run).to_numpy()
        out.loc[rows, "schedule"] = sched.kind
        out.loc[rows, "total_steps"] = sched.total_steps
        out.loc[rows, "warmup_steps"] = sched.warmup_steps
        out.loc[rows, "decay_steps"] = sched.decay_steps
        out.loc[rows, "min_lr_ratio"] = sched.min_lr_ratio
    for col in SCHEDULE_COLUMNS[1:]:
        out[col] = out[col].astype(float)
    return out


def resolve_target(
    given: Schedule | str | None, proxies: pd.DataFrame, steps: float, *, learned: bool
) -> tuple[Schedule | None, list[str]]:
    """The target run's schedule (None: a constant rate) and notes on what was assumed.

    ``given``: a Schedule, CLI text (its length defaults to ``steps``) or None (the proxies'
    shared kind ending at ``steps``, else a constant rate); ``proxies``: their tidy records;
    ``learned``: whether the step law has the annealing term (some proxy decayed).
    """
    notes: list[str] = []
    if isinstance(given, str):
        sched: Schedule | None = Schedule.parse(given, total_steps=steps)
    elif given is None:
        shared = proxy_schedule(proxies)
        sched = None if shared is None else shared.ending_at(steps)
        if sched is not None:
            notes.append(f"target schedule assumed: the proxies' kind, {sched.describe()}")
    elif isinstance(given, Schedule):
        sched = given
    else:
        raise TypeError(
            "target_schedule must be a Schedule, a text such as 'cosine,warmup=2000' or None, "
            f"got {type(given).__name__}"
        )
    if sched is not None and sched.decays and not learned:
        notes.append(
            f"the target's schedule decays ({sched.describe()}) but no proxy checkpoint comes "
            "after a decay, so the annealing gain cannot be learned: the target is predicted "
            "as at a constant rate (a run that anneals ends lower)"
        )
    return sched, notes
