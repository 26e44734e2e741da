"""Multi-phase runs: the optional run-table columns that describe a run as phases.

A run trained on one mixture early and another late (an annealing or mid-training phase) is
described by phases ``k = 1..P``, in training order, each with its share of the training steps
and its mixture::

    phase_frac.<k>        share of the run's steps spent in phase k (>= 0; a run's shares sum to 1)
    mix<k>.<domain>       phase k's mixture over the training domains (one column per mix.<domain>)

``mix.<domain>`` stays required and holds the whole run's mixture, the share of its tokens each
domain got: ``mix.<d> = sum_k phase_frac.<k> mix<k>.<d>`` (checked within ``SUM_TOLERANCE``), so
every tool that reads one mixture per run (mixture range, static laws) sees the tokens the run
consumed. A row whose phase cells are all empty is a static run: one phase, its ``mix.*``. The
phases of one run are the same in every record (checkpoint) of it.

:func:`check_columns` validates them (one-line errors naming the row and column);
:func:`phase_arrays` returns each record's phase shares (record, P) and mixtures (record, P, M),
a static run as P equal phases of its ``mix.*`` with shares (1, 0, ...).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

from bayesmix import errors

#: Prefix of the phase shares of the training steps: ``phase_frac.1``, ``phase_frac.2``, ...
FRAC_PREFIX = "phase_frac."
#: A phase mixture column: ``mix<k>.<domain>``.
PHASE_MIX = re.compile(r"^mix(\d+)\.(.+)$")
#: Largest |sum - 1| of a run's phase shares or of a phase mixture, and largest difference
#: between ``mix.<d>`` and the phase-weighted mixture (the run table's ``SUM_TOLERANCE``).
TOLERANCE = 0.01


def is_phase_column(name: str) -> bool:
    """True for ``phase_frac.<k>`` and ``mix<k>.<domain>`` (k a positive integer)."""
    if name.startswith(FRAC_PREFIX):
        return True
    return PHASE_MIX.match(name) is not None


def n_phases(columns: Sequence[str]) -> int:
    """Number of phases P the columns describe (0 when there are no phase columns)."""
    ks = [int(c[len(FRAC_PREFIX) :]) for c in columns if _frac_index(c) is not None]
    return max(ks, default=0)


def frac_columns(p: int) -> list[str]:
    return [f"{FRAC_PREFIX}{k}" for k in range(1, p + 1)]


def mix_columns(p: int, train: Sequence[str]) -> list[list[str]]:
    """``[[mix1.<d> for d in train], ..., [mixP.<d> ...]]``."""
    return [[f"mix{k}.{d}" for d in train] for k in range(1, p + 1)]


def _frac_index(name: str) -> int | None:
    if not name.startswith(FRAC_PREFIX):
        return None
    rest = name[len(FRAC_PREFIX) :]
    return int(rest) if rest.isdigit() and int(rest) > 0 else None


def check_columns(frame: pd.DataFrame, train: Sequence[str], at) -> list[str]:
    """Validate the phase columns of ``frame`` (numbers converted in place) against its
    training domains ``train`` and each record's ``mix.*``; ``at``: a
    :class:`bayesmix.data.validation.Places`. Returns the phase columns in their order
    (``phase_frac.1..P``, then ``mix1.*``, ..., ``mixP.*``), [] when there are none."""
    cols = [c for c in frame.columns if is_phase_column(c)]
    if not cols:
        return []
    for c in cols:
        if c.startswith(FRAC_PREFIX) and _frac_index(c) is None:
            raise errors.FormatError(
                f"phase column {c!r} has no phase number",
                source=at.source,
                column=c,
                hint="name phase shares phase_frac.1, phase_frac.2, ... in training order",
            )
        m = PHASE_MIX.match(c)
        if m and m.group(2) not in train:
            raise errors.FormatError(
                f"column {c!r} names no training domain",
                source=at.source,
                column=c,
                hint=f"a phase mixture column is mix<k>.<domain> for a domain with a "
                f"mix.<domain> column ({', '.join(train)})",
            )
    p = n_phases(cols)
    wanted = frac_columns(p) + [c for row in mix_columns(p, train) for c in row]
    missing = [c for c in wanted if c not in frame.columns]
    if p == 0 or missing:
        name = missing[0] if missing else frac_columns(1)[0]
        raise errors.FormatError(
            f"phase column {name!r} is missing",
            source=at.source,
            column=name,
            hint="a table with phases has phase_frac.<k> and mix<k>.<domain> for every phase "
            "k = 1..P and every training domain",
        )
    extra = [c for c in cols if c not in wanted]
    if extra:
        raise errors.FormatError(
            f"phase column {extra[0]!r} is beyond the phases 1..{p}",
            source=at.source,
            column=extra[0],
            hint=f"add phase_frac.{p + 1}, or drop the column",
        )
    for c in wanted:
        vals = pd.to_numeric(frame[c], errors="coerce")
        bad = vals.isna() & frame[c].notna() & (frame[c].astype(str).str.strip() != "")
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise errors.NonNumericError(
                f"{frame[c].iloc[i]!r} is not a number",
                source=at.source,
                row=at.rows[i],
                run=at.runs[i],
                column=c,
                hint="write phase shares and mixtures as numbers, or leave a static run's "
                "phase cells all empty",
            )
        frame[c] = vals.astype(float)
    _check_values(frame, train, p, at)
    return wanted


def _check_values(frame: pd.DataFrame, train: Sequence[str], p: int, at) -> None:
    fr = frame[frac_columns(p)].to_numpy(dtype=float)  # (record, P)
    mixes = np.stack(
        [frame[cs].to_numpy(dtype=float) for cs in mix_columns(p, train)], axis=1
    )  # (record, P, M)
    whole = frame[[f"mix.{d}" for d in train]].to_numpy(dtype=float)
    wanted = frac_columns(p) + [c for row in mix_columns(p, train) for c in row]
    empty = np.concatenate([np.isnan(fr), np.isnan(mixes).reshape(len(fr), -1)], axis=1)
    for i in range(len(fr)):
        if empty[i].all():
            continue  # a static run
        if empty[i].any():
            raise errors.MissingValueError(
                "phase cell is empty while others of the row are filled",
                source=at.source,
                row=at.rows[i],
                run=at.runs[i],
                column=wanted[int(np.flatnonzero(empty[i])[0])],
                hint="fill every phase cell of a phased run (0 for a domain a phase lacks), "
                "or leave all of them empty for a static run",
            )

        def fail(problem: str, column: str, hint: str, i=i):
            raise errors.FormatError(
                problem, source=at.source, row=at.rows[i], run=at.runs[i], column=column, hint=hint
            )

        neg = np.flatnonzero(np.concatenate([fr[i], mixes[i].ravel()]) < 0)
        if neg.size:
            fail("a phase share or proportion is negative", wanted[neg[0]], "must be >= 0")
        if abs(fr[i].sum() - 1.0) > TOLERANCE:
            fail(
                f"phase shares sum to {fr[i].sum():.6g}, not 1",
                frac_columns(p)[0],
                "give each phase's share of the run's training steps",
            )
        for k in range(p):
            if abs(mixes[i, k].sum() - 1.0) > TOLERANCE:
                fail(
                    f"phase {k + 1}'s proportions sum to {mixes[i, k].sum():.6g}, not 1",
                    mix_columns(p, train)[k][0],
                    "each phase mixture sums to 1",
                )
        avg = fr[i] @ mixes[i]
        off = np.abs(avg - whole[i])
        if off.max() > TOLERANCE:
            j = int(off.argmax())
            fail(
                f"mix.{train[j]} = {whole[i, j]:.6g} but the phases give {avg[j]:.6g}",
                f"mix.{train[j]}",
                "mix.<domain> is the whole run's mixture: sum_k phase_frac.<k> mix<k>.<domain>",
            )
    runs = np.asarray(at.runs)
    both = np.concatenate([fr, mixes.reshape(len(fr), -1)], axis=1)
    for run in pd.unique(runs):
        idx = np.flatnonzero(runs == run)
        first = both[idx[0]]
        for i in idx[1:]:
            same = np.isclose(both[i], first) | (np.isnan(both[i]) & np.isnan(first))
            if not same.all():
                raise errors.FormatError(
                    "phases differ between checkpoints of one run",
                    source=at.source,
                    row=at.rows[i],
                    run=at.runs[i],
                    column=wanted[int(np.flatnonzero(~same)[0])],
                    hint="a run's phases are one schedule: the same in every record",
                )


def phase_arrays(
    records: pd.DataFrame, train: Sequence[str]
) -> tuple[np.ndarray, np.ndarray] | None:
    """Each record's phase shares (record, P) and phase mixtures (record, P, M), or None when
    the table has no phase columns. A static record is P phases of its ``mix.*`` with shares
    (1, 0, ..., 0): every phase law reduces to the static law on it."""
    p = n_phases(list(records.columns))
    if p == 0:
        return None
    fr = records[frac_columns(p)].to_numpy(dtype=float, copy=True)
    mixes = np.stack(
        [records[cs].to_numpy(dtype=float) for cs in mix_columns(p, train)], axis=1
    ).copy()
    whole = records[[f"mix.{d}" for d in train]].to_numpy(dtype=float)
    static = np.isnan(fr).all(axis=1)
    fr[static] = np.eye(p)[0]
    mixes[static] = whole[static, None, :]
    return fr, mixes
