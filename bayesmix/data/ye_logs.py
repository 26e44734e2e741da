"""Ye et al.'s logs ("mixinglaws"): tab-separated ``checkpoint_path<TAB>validation_file<TAB>loss``
lines; model size, mixture and step are parsed from the checkpoint path.

A path ends in ``.../<group>/<size>_<id>-<p1>-<p2>.../<step>``: the group names the training
domains (:data:`YE_GROUPS` or ``A-B-C``), the run part the proportions; the size may instead be
the file's name (``410M.txt``). The continual pre-training logs (``ct/``) also hold the one
checkpoint every run starts from (``pythia_70m_step20000``), loaded as each run's step 0.
Repeated identical lines are dropped with a note; contradicting ones are errors. Model sizes
are written ``70M``/``1.4B`` here and in run ids (:func:`parse_size`, :func:`size_label`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bayesmix import errors
from bayesmix.data.file_reading import strip_affixes
from bayesmix.data.table import RunTable, check_never_together
from bayesmix.data.validation import LOSS_PREFIX, MIX_PREFIX, check_loss

#: Ye et al. train with 1,048,576 tokens per optimiser step (batch 512 x 2048 tokens).
TOKENS_PER_STEP = 1_048_576
#: Training domains of the checkpoint-path groups in Ye et al.'s logs, in proportion order.
YE_GROUPS = {
    "Pile100B": ("academic", "prose", "dialogue", "symbolic", "internet"),
    "base2": ("Github", "Pile-CC"),
    "ct": ("Pile", "Python"),
}
#: Spellings mapped to one name so that training and validation domains match.
YE_ALIASES = {
    "PileCC": "Pile-CC",
    "Pile_CC": "Pile-CC",
    "GitHub": "Github",
    "starcoder.python": "Python",
}

_SIZE = r"\d+(?:\.\d+)?[KMBT]"
_RUN_RE = re.compile(
    rf"^(?:(?P<size>{_SIZE})_)?(?P<tag>(?:[A-Za-z][A-Za-z0-9]*_)*\d+)"
    r"-(?P<props>\d[\d.]*(?:-\d[\d.]*)+)$"
)
_START_RE = re.compile(r"^pythia_(?P<size>\d+(?:\.\d+)?[kmbt])_step(?P<step>\d+)$", re.I)
_FILE_SIZE_RE = re.compile(rf"^(?P<size>{_SIZE})$", re.I)


def parse_size(text: str) -> float:
    """``"70M"`` -> 7e7, ``"1B"`` -> 1e9, ``"1.4b"`` -> 1.4e9 (parameters)."""
    scale = {"K": 1e3, "M": 1e6, "B": 1e9, "T": 1e12}[text[-1].upper()]
    return float(text[:-1]) * scale


def ye_validation_domain(path: str) -> str:
    """``.../pythia-pile.valid.Github.bin`` -> ``Github``; ``starcoder.python.valid.bin`` ->
    ``Python``."""
    name = path.rstrip("/").rsplit("/", 1)[-1]
    name = strip_affixes(name, ("pythia-pile.valid.",), (".bin",))
    name = strip_affixes(name, (), (".valid",))
    return YE_ALIASES.get(name, name)


def _ye_train_domains(group: str, n: int, source: str, line: int) -> tuple[str, ...]:
    """The training domains of a checkpoint group, in proportion order."""
    names = YE_GROUPS.get(group)
    if names is None:
        parts = group.split("-")
        if len(parts) == n and all(parts):
            names = tuple(YE_ALIASES.get(p, p) for p in parts)
    if names is None or len(names) != n:
        raise errors.FormatError(
            f"cannot tell the {n} training domains of checkpoint group {group!r}",
            source=source,
            row=line,
            column="checkpoint_path",
            hint=f"known groups: {', '.join(YE_GROUPS)} or a group named A-B-C",
        )
    return names


def _natural(text: str) -> tuple:
    """Sort key that orders 'ct_10' after 'ct_9'."""
    return tuple(int(p) if i % 2 else p for i, p in enumerate(re.split(r"(\d+)", text)))


def size_label(n_params: float) -> str:
    """7e7 -> '70M', 1e9 -> '1B', 1.4e9 -> '1.4B'."""
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n_params >= scale:
            return f"{n_params / scale:g}{unit}"
    return f"{n_params:g}"


@dataclass
class _Checkpoint:
    """One (run, step) of a log: its first line, mixture, size, id and losses by domain."""

    line: int
    props: tuple[float, ...]
    size: float
    tag: str
    losses: dict[str, tuple[float, int]] = field(default_factory=dict)  # domain -> (loss, line)


@dataclass
class _Log:
    """What the lines of one log say, before the run table checks them."""

    source: str
    file_size: float | None  # from a file named like 410M.txt
    records: dict[tuple[str, int], _Checkpoint] = field(default_factory=dict)  # (run, step)
    start: dict[str, tuple[float, int]] = field(default_factory=dict)  # starting checkpoint
    start_size: float | None = None
    train_names: tuple[str, ...] | None = None
    train_line: int = 0
    n_last: int = 0  # 'last' checkpoints (no step number), skipped
    n_dup: int = 0  # lines repeating an identical earlier line
    n_missing: int = 0  # lines with a nan loss


def load_ye(
    path: Path, renormalize, tolerance, notes, tokens_per_step, start_checkpoint, max_loss
) -> RunTable:
    """One log as a validated RunTable (run, n_params, step, tokens, mix.*, loss.*), records
    ordered by size, run id and step; notes (skipped and repeated lines) go to ``notes``."""
    source = str(path)
    m = _FILE_SIZE_RE.match(path.stem)
    log = _Log(source, parse_size(m["size"]) if m else None)
    for line_no, raw in enumerate(_read_log(path).splitlines(), start=1):
        if raw.strip():
            _read_line(log, raw, line_no, max_loss)
    if log.start and start_checkpoint:
        _start_as_step_zero(log, notes)
    elif log.start:
        notes.append(f"{source}: skipped the starting checkpoint ({len(log.start)} lines)")
    if not log.records:
        raise errors.EmptyInputError(
            "no run checkpoints in this file",
            source=source,
            hint="lines are checkpoint_path<TAB>validation_file<TAB>loss",
        )
    if log.n_last:
        notes.append(f"{source}: skipped {log.n_last} lines of 'last' checkpoints (no step number)")
    if log.n_dup:
        notes.append(f"{source}: dropped {log.n_dup} repeated lines with identical losses")
    if log.n_missing:
        notes.append(f"{source}: {log.n_missing} lines with a nan loss read as missing losses")
    frame, lines = _tidy_frame(log, tokens_per_step)
    table = RunTable.from_frame(
        frame,
        source=source,
        row_numbers=lines,
        renormalize=renormalize,
        tolerance=tolerance,
        report=notes,
        max_loss=max_loss,
    )
    check_never_together(table.to_tidy(), source, lines)
    return table


def _read_log(path: Path) -> str:
    """The log's text; UnreadableFileError for a missing, unreadable or non-UTF-8 file."""
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except UnicodeDecodeError as err:
        raise errors.UnreadableFileError(
            f"not UTF-8 text (byte {err.start})",
            source=str(path),
            hint="Ye et al. logs are plain text",
        ) from None
    except OSError as err:
        raise errors.UnreadableFileError(
            f"cannot read the file ({err.strerror or err})",
            source=str(path),
            hint="check the path",
        ) from None


def _read_line(log: _Log, raw: str, line_no: int, max_loss: float) -> None:
    """Add one non-blank line to ``log``: a loss of the starting checkpoint or of a run's
    checkpoint; a 'last' checkpoint is counted and skipped."""
    source = log.source
    fields = raw.rstrip("\r").split("\t")
    if len(fields) != 3:
        raise errors.FormatError(
            f"expected 3 tab-separated fields, found {len(fields)}",
            source=source,
            row=line_no,
            hint="lines are checkpoint_path<TAB>validation_file<TAB>loss",
        )
    ckpt, valid, loss_text = (f.strip() for f in fields)
    # the one rule of bayesmix.data.validation: nan = missing (the line is skipped), inf = error
    loss = check_loss(loss_text, max_loss=max_loss, source=source, row=line_no, column="loss")
    missing = math.isnan(loss)
    log.n_missing += missing
    domain = ye_validation_domain(valid)
    if not domain or "/" in domain:
        raise errors.FormatError(
            f"cannot read a validation domain from {valid!r}",
            source=source,
            row=line_no,
            column="validation_file",
            hint="expected .../pythia-pile.valid.<Domain>.bin",
        )
    parts = [p for p in ckpt.split("/") if p]
    if not parts:
        raise errors.FormatError(
            "empty checkpoint path", source=source, row=line_no, column="checkpoint_path"
        )
    sm = _START_RE.match(parts[-1])
    if sm:
        size = parse_size(sm["size"])
        if log.start_size is not None and size != log.start_size:
            raise errors.InconsistentMixtureError(
                "two different starting checkpoints in one file",
                source=source,
                row=line_no,
                column="checkpoint_path",
                hint="split the file",
            )
        log.start_size = size
        if not missing:
            _put_loss(log.start, domain, loss, line_no, source, "the starting checkpoint")
        return
    if parts[-1] == "last":
        log.n_last += 1
        return
    run, step, rec = _checkpoint(log, parts, line_no)
    if not missing and _put_loss(
        rec.losses, domain, loss, line_no, source, f"run {run!r} step {step}"
    ):
        log.n_dup += 1


def _checkpoint(log: _Log, parts: list[str], line_no: int) -> tuple[str, int, _Checkpoint]:
    """The run id, step and record of a checkpoint path (``parts``: its '/'-separated names),
    the record created on its first line; one mixture per run and one family of training
    domains per file."""
    source = log.source
    if not parts[-1].isdigit() or len(parts) < 2:
        raise errors.FormatError(
            f"checkpoint path does not end in a step number: {parts[-1]!r}",
            source=source,
            row=line_no,
            column="checkpoint_path",
            hint="expected .../<group>/<size>_<id>-<p1>-<p2>.../<step>",
        )
    step = int(parts[-1])
    rm = _RUN_RE.match(parts[-2])
    if not rm:
        raise errors.FormatError(
            f"cannot parse run {parts[-2]!r} as <size>_<id>-<p1>-<p2>...",
            source=source,
            row=line_no,
            column="checkpoint_path",
            hint="e.g. 70M_3-0.125-0-0-0.125-0.75",
        )
    props = tuple(float(x) for x in rm["props"].split("-"))
    group = parts[-3] if len(parts) >= 3 else ""
    names = _ye_train_domains(group, len(props), source, line_no)
    if log.train_names is None:
        log.train_names, log.train_line = names, line_no
    elif names != log.train_names:
        raise errors.DomainNameError(
            f"training domains {list(names)} differ from {list(log.train_names)} "
            f"(row {log.train_line})",
            source=source,
            row=line_no,
            column="checkpoint_path",
            hint="one file holds one family of mixtures",
        )
    if rm["size"]:
        size = parse_size(rm["size"])
    elif log.file_size is not None:
        size = log.file_size
    else:
        raise errors.FormatError(
            "no model size in the checkpoint path or the file name",
            source=source,
            row=line_no,
            column="checkpoint_path",
            hint="name the file like 410M.txt",
        )
    run = f"{size_label(size)}_{rm['tag']}"
    rec = log.records.get((run, step))
    if rec is None:
        rec = log.records[(run, step)] = _Checkpoint(line_no, props, size, rm["tag"])
    elif rec.props != props:
        raise errors.InconsistentMixtureError(
            f"run {run!r} at step {step} has proportions {rm['props']} here but "
            f"{'-'.join(f'{p:g}' for p in rec.props)} on row {rec.line}",
            source=source,
            row=line_no,
            column="checkpoint_path",
            hint="one run id, one mixture",
        )
    return run, step, rec


def _put_loss(losses: dict, domain, loss, line_no, source, what) -> bool:
    """Store a loss; True if it repeats an identical earlier line, error if it contradicts it."""
    if domain in losses:
        old, old_line = losses[domain]
        if old == loss:
            return True
        raise errors.DuplicateRunError(
            f"{what} has two losses on {domain}: {old:g} (row {old_line}) and {loss:g}",
            source=source,
            row=line_no,
            column="loss",
            hint="keep one line per checkpoint",
        )
    losses[domain] = (loss, line_no)
    return False


def _start_as_step_zero(log: _Log, notes: list[str]) -> None:
    """The starting checkpoint's losses as step 0 of every run that has no step 0."""
    runs: dict[str, _Checkpoint] = {}
    for (run, _), rec in log.records.items():
        runs.setdefault(run, rec)
    first_line = min(line for _, line in log.start.values())
    for run, rec in runs.items():
        if (run, 0) not in log.records:
            log.records[(run, 0)] = _Checkpoint(
                first_line, rec.props, rec.size, rec.tag, dict(log.start)
            )
    notes.append(f"{log.source}: starting checkpoint loaded as step 0 of each of {len(runs)} runs")


def _tidy_frame(log: _Log, tokens_per_step: float) -> tuple[pd.DataFrame, list[int]]:
    """The records in the tidy layout, by size, mixture id (numerically) and step, with the
    line each came from; NoLossesError when every loss is nan."""
    evals = sorted({d for rec in log.records.values() for d in rec.losses}, key=str.lower)
    if not evals:
        raise errors.NoLossesError(
            "every loss in the file is nan (missing)",
            source=log.source,
            row=min(rec.line for rec in log.records.values()),
            column="loss",
            hint="a run file needs at least one loss",
        )
    ordered = sorted(
        log.records.items(), key=lambda kv: (kv[1].size, _natural(kv[1].tag), kv[0][1])
    )
    assert log.train_names is not None  # set by the first record
    rows: dict[str, list] = {"run": [], "n_params": [], "step": [], "tokens": []}
    for name in log.train_names:
        rows[MIX_PREFIX + name] = []
    for name in evals:
        rows[LOSS_PREFIX + name] = []
    lines = []
    for (run, step), rec in ordered:
        rows["run"].append(run)
        rows["n_params"].append(rec.size)
        rows["step"].append(float(step))
        rows["tokens"].append(float(step) * tokens_per_step)
        for name, p in zip(log.train_names, rec.props):
            rows[MIX_PREFIX + name].append(p)
        for name in evals:
            rows[LOSS_PREFIX + name].append(rec.losses.get(name, (np.nan, 0))[0])
        lines.append(rec.line)
    return pd.DataFrame(rows), lines
