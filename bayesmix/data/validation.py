"""The rules a run table's records obey, and the checks :meth:`RunTable.from_frame` runs in turn.

The layout's column names (``run``, :data:`META_COLUMNS`, ``mix.<domain>``, ``loss.<domain>``
and the schedule columns of :mod:`bayesmix.data.schedules`); proportions that sum to 1 within
:data:`SUM_TOLERANCE` (or are rescaled); positive model sizes and non-negative steps/tokens; one
record per (run, step), one mixture and size per run.

One plausibility rule for losses, in every loader and in ``validate`` (:func:`check_loss`):

* an empty cell or ``nan`` (any spelling pandas reads as missing: ``NaN``, ``NA``, ``null``...)
  is a **missing** loss: kept as NaN, left out of the likelihood;
* ``inf`` / ``-inf`` is an **error** (a diverged or broken evaluation, not an unknown value);
* a loss must be ``> 0`` (cross-entropy) and ``<= max_loss`` (default :data:`MAX_LOSS`, 100
  nats per token; raise it with ``max_loss=``, up to :data:`MAX_LOSS_LIMIT`). A uniform guess
  over a 50k-token vocabulary costs ln(50257) = 10.8 nats per token and untrained models start
  near it, so a loss above 100 is a unit mistake (a sum over tokens, bits times a factor, a
  perplexity) or a corrupt cell.

Every check raises the named :class:`~bayesmix.errors.BayesmixError` of the first bad cell, at
its row (:class:`Places`) and column.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bayesmix import errors
from bayesmix.data import phases, schedules

MIX_PREFIX = "mix."
LOSS_PREFIX = "loss."
#: Prefix of the optional columns of each training domain's unique tokens available (the same
#: number in every row), read by the repetition component (:mod:`bayesmix.laws.repetition`).
UNIQUE_PREFIX = "unique."
META_COLUMNS = ("n_params", "step", "tokens")
#: Largest allowed |sum(proportions) - 1| before a record is rejected (RegMix rounds to 3 decimals,
#: so its rows are off by up to about 0.004). Pass ``renormalize=True`` to accept and rescale.
SUM_TOLERANCE = 0.01
#: Default plausibility bound on a loss, nats per token (see the module docstring).
MAX_LOSS = 100.0
#: Largest bound a user may set: beyond it the likelihood's arithmetic is no longer sound.
MAX_LOSS_LIMIT = 1e6
#: Largest |sum - 1| that ``renormalize=True`` rescales; further off, the cells are not shares.
RENORMALIZE_LIMIT = 0.5


def check_max_loss(value) -> float:
    """``value`` as a float when it is a usable loss bound (finite, > 0, <= MAX_LOSS_LIMIT);
    OptionError naming ``max_loss=`` otherwise."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = math.nan
    if not (math.isfinite(v) and 0 < v <= MAX_LOSS_LIMIT):
        raise errors.OptionError(
            f"max_loss={value!r} is not a number in (0, {MAX_LOSS_LIMIT:g}] nats per token",
            hint=f"the default is {MAX_LOSS:g}",
            param="max_loss",
        )
    return v


def check_tolerance(value) -> float:
    """``value`` as a float when it is a usable proportion-sum tolerance (finite, >= 0);
    OptionError naming ``tolerance=`` otherwise."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = math.nan
    if not (math.isfinite(v) and v >= 0):
        raise errors.OptionError(
            f"tolerance={value!r} is not a finite number >= 0",
            hint=f"the default is {SUM_TOLERANCE:g}; a NaN or infinite "
            "tolerance would switch the check off",
            param="tolerance",
        )
    return v


def check_loss(
    value,
    *,
    max_loss: float = MAX_LOSS,
    source: str | None = None,
    row: int | None = None,
    run: str | None = None,
    column: str | None = None,
) -> float:
    """One loss cell under the plausibility rule: a float, NaN for a missing loss (None, empty
    text, NaN); NonFiniteLossError / NonPositiveLossError / ImplausibleLossError otherwise.
    Text that is not a number is a NonNumericError. Used by loaders and the ledger's ingest."""
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return math.nan
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise errors.NonNumericError(
            f"{value!r} is not a number",
            source=source,
            row=row,
            run=run,
            column=column,
            hint="write the loss in nats per token, or leave it empty when unknown",
        ) from None
    if math.isnan(v):
        return v
    _raise_for_loss(v, max_loss, source, row, run, column)
    return v


def _raise_for_loss(v: float, max_loss: float, source, row, run, column) -> None:
    """Raise the named error for a non-NaN loss ``v`` that breaks the rule."""
    if math.isinf(v):
        raise errors.NonFiniteLossError(
            f"loss {v} is not finite",
            source=source,
            row=row,
            run=run,
            column=column,
            hint="leave the cell empty (or nan) if the loss is unknown",
        )
    if v <= 0:
        raise errors.NonPositiveLossError(
            f"loss {v:g} is not positive",
            source=source,
            row=row,
            run=run,
            column=column,
            hint="losses are cross-entropies in nats per token, always > 0",
        )
    if v > max_loss:
        raise errors.ImplausibleLossError(
            f"loss {v:g} is above the plausible maximum of {max_loss:g} nats per token",
            source=source,
            row=row,
            run=run,
            column=column,
            hint="losses are mean nats per token (not sums, bits or perplexities); raise the "
            "bound (max_loss=<nats per token>) if the value is real",
            param="max_loss",
        )


@dataclass(frozen=True)
class Places:
    """Where each record of a frame came from, for errors: the source, each record's row
    number in it and its run id (both in frame order)."""

    source: str | None
    rows: list[int]
    runs: list[str]


# ---------------------------------------------------------------------------- the checks
def check_columns(frame: pd.DataFrame, source: str | None) -> tuple[list[str], list[str]]:
    """The ``mix.*`` and ``loss.*`` columns (at least one of each) of a frame with a ``run``
    column and no unknown column (FormatError suggesting the closest allowed name)."""
    if "run" not in frame.columns:
        raise errors.FormatError(
            "no 'run' column",
            source=source,
            hint="the tidy layout is run, [n_params], [step], [tokens], mix.<domain>..., "
            "loss.<domain>...",
        )
    mix_cols = [c for c in frame.columns if c.startswith(MIX_PREFIX)]
    loss_cols = [c for c in frame.columns if c.startswith(LOSS_PREFIX)]
    unique_cols = [c for c in frame.columns if c.startswith(UNIQUE_PREFIX)]
    known = {"run", *META_COLUMNS, *schedules.SCHEDULE_COLUMNS, *mix_cols, *loss_cols}
    known |= set(unique_cols) | {c for c in frame.columns if phases.is_phase_column(c)}
    extra = [c for c in frame.columns if c not in known]
    if extra:
        # candidates: known columns, and the name with a corrected prefix (los.x -> loss.x)
        rest = extra[0].split(".", 1)[-1]
        candidates = sorted((known - {"run"}) | {MIX_PREFIX + rest, LOSS_PREFIX + rest})
        close = difflib.get_close_matches(extra[0], candidates, n=1, cutoff=0.6)
        hint = (
            f"did you mean {close[0]!r}?"
            if close
            else (
                "allowed: run, n_params, step, tokens, mix.<domain>, loss.<domain>, "
                "unique.<domain>, the phase columns phase_frac.<k> and mix<k>.<domain>, and "
                "the schedule columns " + ", ".join(schedules.SCHEDULE_COLUMNS)
            )
        )
        raise errors.FormatError(
            f"unknown column {extra[0]!r}", source=source, column=extra[0], hint=hint
        )
    if not mix_cols:
        raise errors.FormatError(
            "no 'mix.<domain>' proportion columns",
            source=source,
            hint="name each proportion column mix.<training domain>",
        )
    if not loss_cols:
        raise errors.FormatError(
            "no 'loss.<domain>' columns",
            source=source,
            hint="name each loss column loss.<validation domain>",
        )
    return mix_cols, loss_cols


def run_ids(frame: pd.DataFrame, source: str | None, rows: Sequence[int]) -> list[str]:
    """Each record's run id as text (``3.0`` read from a CSV is ``"3"``); MissingValueError
    for an empty one."""
    ids = []
    for k, v in enumerate(frame["run"].tolist()):
        if v is None or (isinstance(v, float) and math.isnan(v)) or str(v).strip() == "":
            raise errors.MissingValueError(
                "run id is empty",
                source=source,
                row=rows[k],
                column="run",
                hint="give every record a run id",
            )
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        ids.append(str(v).strip())
    return ids


def to_numbers(frame: pd.DataFrame, columns: Sequence[str], at: Places) -> None:
    """Convert ``columns`` of ``frame`` to float in place; NonNumericError at the first text
    cell (an empty cell is NaN)."""
    for col in columns:
        series = frame[col]
        out = pd.to_numeric(series, errors="coerce")
        bad = out.isna() & series.notna() & (series.astype(str).str.strip() != "")
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise errors.NonNumericError(
                f"{series.iloc[i]!r} is not a number",
                source=at.source,
                row=at.rows[i],
                run=at.runs[i],
                column=col,
                hint="write numbers with a '.' decimal point, leave unknown cells empty",
            )
        frame[col] = out.astype(float)


def check_unique_tokens(frame: pd.DataFrame, train: Sequence[str], at: Places) -> list[str]:
    """The ``unique.<domain>`` columns (already numbers): each names a training domain and
    holds one finite number > 0 of tokens, the same in every row (FormatError /
    NonNumericError at the first bad cell). Returns their names in training-domain order."""
    cols = [c for c in frame.columns if c.startswith(UNIQUE_PREFIX)]
    for col in cols:
        if col[len(UNIQUE_PREFIX) :] not in train:
            raise errors.FormatError(
                f"column {col!r} names no training domain",
                source=at.source,
                column=col,
                hint=f"unique tokens go in unique.<domain> for a domain with a mix.<domain> "
                f"column ({', '.join(train)})",
            )
        vals = frame[col].to_numpy(dtype=float)
        for i in np.flatnonzero(~(np.isfinite(vals) & (vals > 0))):
            raise errors.NonNumericError(
                f"unique tokens must be a finite number > 0, got {vals[i]:g}",
                source=at.source,
                row=at.rows[i],
                run=at.runs[i],
                column=col,
                hint="give the domain's unique tokens available, the same in every row (a "
                "domain with none is kept out by max_share=0)",
            )
        for i in np.flatnonzero(vals != vals[0]):
            raise errors.FormatError(
                f"unique tokens {vals[i]:g} differ from {vals[0]:g} in the first row",
                source=at.source,
                row=at.rows[i],
                run=at.runs[i],
                column=col,
                hint="a domain's unique tokens are one number: the same in every row",
            )
    return [UNIQUE_PREFIX + d for d in train if UNIQUE_PREFIX + d in cols]


def check_proportions(
    frame: pd.DataFrame,
    mix_cols: Sequence[str],
    at: Places,
    *,
    tolerance: float,
    renormalize: bool,
    report: list[str] | None,
) -> None:
    """Every proportion present and >= 0, and each record's sum within ``tolerance`` of 1;
    with ``renormalize``, sums within :data:`RENORMALIZE_LIMIT` of 1 are rescaled in place
    (one line to ``report`` says by how much)."""
    for col in mix_cols:
        vals = frame[col].to_numpy()
        for i in np.flatnonzero(np.isnan(vals)):
            raise errors.MissingValueError(
                "proportion is missing",
                source=at.source,
                row=at.rows[i],
                run=at.runs[i],
                column=col,
                hint="write 0 for a domain the run did not train on",
            )
        for i in np.flatnonzero(vals < 0):
            raise errors.NegativeProportionError(
                f"proportion {vals[i]:g} is negative",
                source=at.source,
                row=at.rows[i],
                run=at.runs[i],
                column=col,
                hint="proportions must be >= 0",
            )
    mix = frame[list(mix_cols)].to_numpy(dtype=float)
    sums = mix.sum(axis=1)
    dev = np.abs(sums - 1.0)
    if not renormalize:
        for i in np.flatnonzero(dev > tolerance):
            raise errors.ProportionSumError(
                f"proportions sum to {sums[i]:.6g}, not 1 (tolerance {tolerance:g})",
                source=at.source,
                row=at.rows[i],
                run=at.runs[i],
                hint="fix the shares or pass renormalize=True to rescale them",
                param="renormalize",
            )
        return
    for i in np.flatnonzero(dev > RENORMALIZE_LIMIT):
        raise errors.ProportionSumError(
            f"proportions sum to {sums[i]:.6g}, too far from 1 to renormalise",
            source=at.source,
            row=at.rows[i],
            run=at.runs[i],
            hint="check that the mix.* columns hold shares, not token counts",
        )
    frame[list(mix_cols)] = mix / sums[:, None]
    if report is not None:
        report.append(
            f"renormalised {int((dev > 0).sum())} of {len(sums)} records; "
            f"largest change in sum {dev.max():.4g}"
        )


def check_sizes_and_steps(frame: pd.DataFrame, at: Places) -> None:
    """``n_params`` positive, ``step`` and ``tokens`` non-negative (0: the checkpoint a run
    starts from, in continual pre-training), all finite where given."""
    for col in ("n_params", "tokens", "step"):
        if col in frame.columns:
            vals = frame[col].to_numpy()
            too_small = vals <= 0 if col == "n_params" else vals < 0
            kind = "positive" if col == "n_params" else "non-negative"
            for i in np.flatnonzero((~np.isfinite(vals) & ~np.isnan(vals)) | too_small):
                raise errors.NonNumericError(
                    f"{col} must be a {kind} finite number, got {vals[i]:g}",
                    source=at.source,
                    row=at.rows[i],
                    run=at.runs[i],
                    column=col,
                )


def check_step_cells(frame: pd.DataFrame, at: Places) -> None:
    """No record without a step in a run whose other records have steps: such a checkpoint
    cannot be placed on its learning curve, and dropping it silently would hide a lost cell."""
    if "step" not in frame.columns:
        return
    missing = frame["step"].isna().to_numpy()
    if not missing.any():
        return
    with_steps = set(frame.loc[~missing, "run"])
    for i in np.flatnonzero(missing):
        if frame["run"].iloc[i] in with_steps:
            raise errors.MissingValueError(
                "step is empty while this run's other records have steps",
                source=at.source,
                row=at.rows[i],
                run=at.runs[i],
                column="step",
                hint="fill in the checkpoint's step, or drop the record",
            )


def check_tokens_follow_steps(frame: pd.DataFrame, at: Places) -> None:
    """Within a run, training tokens rise with the step where both are given: a record whose
    tokens fall between those of other steps belongs to another run or holds a typo."""
    if "step" not in frame.columns or "tokens" not in frame.columns:
        return
    work = frame.reset_index(drop=True)  # index = position, for the rows of errors
    both = work["step"].notna() & work["tokens"].notna()
    for _, part in work[both].groupby("run", sort=False):
        ordered = part.sort_values("step", kind="stable")
        tokens = ordered["tokens"].to_numpy()
        bad = np.flatnonzero(np.diff(tokens) <= 0)
        if bad.size:
            pos = int(ordered.index[bad[0] + 1])
            raise errors.FormatError(
                f"tokens {tokens[bad[0] + 1]:g} at step {ordered['step'].iloc[bad[0] + 1]:g} "
                f"do not rise from {tokens[bad[0]]:g} at step {ordered['step'].iloc[bad[0]]:g}",
                source=at.source,
                row=at.rows[pos],
                run=at.runs[pos],
                column="tokens",
                hint="a run's tokens grow with its steps; check this record",
            )


def check_losses(
    frame: pd.DataFrame, loss_cols: Sequence[str], max_loss: float, at: Places
) -> None:
    """Every loss under the plausibility rule (NaN: missing, allowed), and at least one loss
    per record."""
    loss = frame[list(loss_cols)].to_numpy(dtype=float)
    for test in (np.isinf(loss), loss <= 0, loss > max_loss):
        for i, j in zip(*np.nonzero(test)):
            _raise_for_loss(
                float(loss[i, j]), max_loss, at.source, at.rows[i], at.runs[i], loss_cols[j]
            )
    for i in np.flatnonzero(np.isnan(loss).all(axis=1)):
        raise errors.NoLossesError(
            "record has no loss on any validation domain",
            source=at.source,
            row=at.rows[i],
            run=at.runs[i],
            hint="drop the record or fill in at least one loss",
        )


def check_records(frame: pd.DataFrame, mix_cols: Sequence[str], at: Places) -> None:
    """One record per run (per run and step with a ``step`` column), and one mixture and
    model size across a run's checkpoints."""
    key = ["run", "step"] if "step" in frame.columns else ["run"]
    dup = frame.duplicated(subset=key, keep="first").to_numpy()
    for i in np.flatnonzero(dup):
        what = f"run {at.runs[i]!r}" + (
            f" at step {frame['step'].iloc[i]:g}" if "step" in frame.columns else ""
        )
        raise errors.DuplicateRunError(
            f"{what} appears twice",
            source=at.source,
            row=at.rows[i],
            column=key[-1],
            hint="give each run a unique id" + (" and step" if len(key) == 2 else ""),
        )
    if len(key) == 1:
        return
    for col in [c for c in ("n_params", *mix_cols) if c in frame.columns]:
        spread = frame.groupby("run", sort=False)[col].agg(lambda s: s.max() - s.min())
        bad_runs = spread[spread > 1e-9]
        if len(bad_runs):
            run = bad_runs.index[0]
            first = at.runs.index(run)
            raise errors.InconsistentMixtureError(
                f"{col} differs between checkpoints of the same run",
                source=at.source,
                row=at.rows[first],
                run=run,
                column=col,
                hint="a run has one mixture and one model size; use another run id",
            )
