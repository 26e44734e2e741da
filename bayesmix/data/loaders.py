"""Read proxy-run results from files into a validated :class:`~bayesmix.data.table.RunTable`.

Three formats, detected from the files' contents or named with ``format=``:

* ``"tidy"``: one CSV or Parquet file in the layout documented in :mod:`bayesmix.data.table`
  (``run, [n_params], [step], [tokens], mix.<domain>..., loss.<domain>...``).
* ``"regmix"``: a RegMix pair (Liu et al. 2024) of a mixture CSV (``index``, ``train_*``) and a
  loss CSV (``index``, ``metric/*_val_loss``), joined on ``index``.
* ``"mixinglaws"``: tab-separated logs of Ye et al. (``checkpoint_path<TAB>validation_file<TAB>
  loss``); model size, mixture and step are parsed from the checkpoint path.

This module finds the files (directories expanded), detects their format, reads tidy files and
combines several files into one table; :mod:`bayesmix.data.regmix` and
:mod:`bayesmix.data.ye_logs` read the other two formats.

Every problem raises a named :class:`~bayesmix.errors.BayesmixError` that says which file, row
(CSV: line number, header on line 1; Parquet: row index + 1; TSV: line number) and column, and
what to do. Loading never writes anything; notes (renormalised rows, skipped files, duplicate log
lines) go to the ``report`` list only when the load succeeds.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from bayesmix import errors
from bayesmix.data.file_reading import (
    is_parquet,
    read_csv_table,
    read_parquet,
    read_text,
    written_missing,
)
from bayesmix.data.regmix import load_regmix_pair, pair_regmix
from bayesmix.data.table import RunTable, check_known_domains, check_never_together
from bayesmix.data.validation import (
    LOSS_PREFIX,
    MAX_LOSS,
    MAX_LOSS_LIMIT,
    MIX_PREFIX,
    SUM_TOLERANCE,
    check_max_loss,
    check_tolerance,
)
from bayesmix.data.ye_logs import TOKENS_PER_STEP, load_ye

FORMATS = ("tidy", "regmix", "mixinglaws")

PathLike = str | os.PathLike
_SNIFF_BYTES = 65536


# ---------------------------------------------------------------------------------- public API
def load(
    paths: PathLike | Sequence[PathLike],
    format: str | None = None,
    *,
    renormalize: bool = False,
    tolerance: float = SUM_TOLERANCE,
    report: list[str] | None = None,
    expected_domains: Sequence[str] | Mapping[str, Sequence[str]] | None = None,
    tokens_per_step: float = TOKENS_PER_STEP,
    start_checkpoint: bool = True,
    max_loss: float = MAX_LOSS,
) -> RunTable:
    """Load run results from files or directories into one validated RunTable.

    Parameters
    ----------
    paths : path, sequence of paths or pandas.DataFrame
        A file, a directory (its files in a known format are used, others skipped with a
        note), a list of them, or a DataFrame in the tidy layout (validated the same way).
    format : {"tidy", "regmix", "mixinglaws"}, optional
        One of :data:`FORMATS`; detected from the content when None.
    renormalize : bool, default False
        Rescale proportions to sum to 1 instead of rejecting sums off by more than
        ``tolerance``.
    report : list, optional
        Receives one line per note.
    expected_domains : sequence or mapping, optional
        Allowed domain names, a list for both kinds or ``{"train": [...], "eval": [...]}``;
        an unknown name raises DomainNameError with the closest allowed name.
    tokens_per_step, start_checkpoint
        Ye et al. logs: ``tokens = step * tokens_per_step``; the continual pre-training logs
        (``ct/``) start every run from one checkpoint (``pythia_70m_step20000``), loaded as
        each run's record at step 0 (tokens 0) unless ``start_checkpoint=False``.
    max_loss : float
        The plausibility bound on losses, nats per token (the rule, including empty/nan =
        missing and inf = error, is in :mod:`bayesmix.data.table`).

    Returns
    -------
    RunTable
        The validated runs; bad input is a BayesmixError naming the file, row and column.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> import bayesmix as bm
    >>> runs, _ = bm.simulate(["web", "code"], n_runs=4, random_seed=0)
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "runs.csv"
    >>> runs.to_tidy().to_csv(path, index=False)
    >>> bm.load(path).n_runs
    4
    """
    tolerance = check_tolerance(tolerance)
    max_loss = check_max_loss(max_loss)
    _check_load_options(format, tokens_per_step)
    if isinstance(paths, pd.DataFrame):  # the tidy layout, in memory
        return from_dataframe(
            paths,
            renormalize=renormalize,
            tolerance=tolerance,
            report=report,
            expected_domains=expected_domains,
            max_loss=max_loss,
        )
    if not isinstance(paths, (str, os.PathLike, list, tuple)):
        raise TypeError(
            "load takes a path, a list of paths or a pandas DataFrame in the tidy layout, got "
            f"{type(paths).__name__}"
        )
    notes: list[str] = []
    files = _collect(paths, format, notes)
    fmt = format or files[0][1]
    paths_only = [p for p, _ in files]
    if fmt == "tidy":
        parts = [_load_tidy(p, renormalize, tolerance, notes, max_loss) for p in paths_only]
    elif fmt == "regmix":
        parts = [
            load_regmix_pair(mix, loss, renormalize, tolerance, notes, max_loss)
            for mix, loss in pair_regmix(paths_only)
        ]
    else:
        parts = [
            load_ye(p, renormalize, tolerance, notes, tokens_per_step, start_checkpoint, max_loss)
            for p in paths_only
        ]
        parts.sort(key=_smallest_size)
    table = _combine(parts)
    _check_expected(table, expected_domains)
    if report is not None:
        report.extend(notes)
    return table


def _check_load_options(format: str | None, tokens_per_step) -> None:
    """A known ``format`` (or None) and a positive, finite ``tokens_per_step``."""
    if not (
        isinstance(tokens_per_step, (int, float))
        and math.isfinite(tokens_per_step)
        and tokens_per_step > 0
    ):
        raise errors.OptionError(
            f"tokens_per_step={tokens_per_step!r} is not a positive number",
            param="tokens_per_step",
        )
    if format is not None and format not in FORMATS:
        raise errors.FormatError(
            f"unknown format {format!r}", hint=f"use one of: {', '.join(FORMATS)}"
        )


def from_dataframe(
    frame: pd.DataFrame,
    *,
    source: str = "DataFrame",
    renormalize: bool = False,
    tolerance: float = SUM_TOLERANCE,
    report: list[str] | None = None,
    expected_domains: Sequence[str] | Mapping[str, Sequence[str]] | None = None,
    max_loss: float = MAX_LOSS,
) -> RunTable:
    """Validate a DataFrame in the tidy layout; errors name ``row`` = position + 1."""
    notes: list[str] = []
    tolerance = check_tolerance(tolerance)
    table = RunTable.from_frame(
        frame,
        source=source,
        row_numbers=range(1, len(frame) + 1),
        renormalize=renormalize,
        tolerance=tolerance,
        report=notes,
        max_loss=max_loss,
    )
    check_never_together(table.to_tidy(), source, list(range(1, len(frame) + 1)))
    _check_expected(table, expected_domains)
    if report is not None:
        report.extend(notes)
    return table


def _smallest_size(table: RunTable) -> float:
    """The smallest model size of a Ye et al. table (its loader always sets n_params)."""
    sizes = table.column("n_params")
    assert sizes is not None
    return float(sizes.min())


def detect_format(path: PathLike) -> str | None:
    """The format of one file (``"tidy"``, ``"regmix"``, ``"mixinglaws"``) or None if unknown.

    Raises UnreadableFileError / EmptyInputError for a missing, unreadable or empty file.
    """
    kind = _sniff(Path(path))
    if kind == "empty":
        raise errors.EmptyInputError(
            "file is empty", source=str(path), hint="export the run results into it again"
        )
    if kind == "binary":
        raise errors.UnreadableFileError(
            "not a UTF-8 text file or a Parquet file",
            source=str(path),
            hint="export it as CSV or Parquet",
        )
    return kind


# ---------------------------------------------------------------------------------- files
def _collect(paths, format, notes) -> list[tuple[Path, str]]:
    """Expand directories, check every file exists, detect formats; one format per load."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = [Path(p) for p in paths]
    if not paths:
        raise errors.EmptyInputError("no input files given", hint="name at least one file")
    out: list[tuple[Path, str]] = []
    for path in paths:
        if path.is_dir():
            found = []
            for child in sorted(path.iterdir()):
                if child.name.startswith(".") or not child.is_file():
                    continue
                kind = _sniff(child)
                if kind in FORMATS and (format is None or kind == format):
                    found.append((child, kind))
                else:
                    notes.append(
                        f"skipped {child} (not a run file"
                        + (f" in format {format!r})" if format else ")")
                    )
            if not found:
                raise errors.FormatError(
                    "no run files in this directory",
                    source=str(path),
                    hint=f"tried formats: {', '.join([format] if format else FORMATS)}",
                )
            out.extend(found)
        elif not path.exists():
            raise errors.UnreadableFileError(
                "file not found", source=str(path), hint="check the path"
            )
        else:
            kind = detect_format(path)
            if format is not None:
                kind = format
            elif kind is None:
                raise errors.FormatError(
                    "not a run file in any known format",
                    source=str(path),
                    hint="tried tidy (run, mix.*, loss.* columns), regmix (index, train_* or "
                    "metric/*_val_loss columns), mixinglaws (checkpoint<TAB>file<TAB>loss)",
                )
            out.append((path, kind))
    kinds = sorted({k for _, k in out})
    if len(kinds) > 1:
        raise errors.FormatError(
            f"files in different formats ({', '.join(kinds)})",
            source=str(out[0][0]),
            hint="load each format separately",
        )
    return out


def _sniff(path: Path) -> str | None:
    """Cheap format guess from the first bytes: a format name, None, 'empty' or 'binary'."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(_SNIFF_BYTES)
    except FileNotFoundError:
        raise errors.UnreadableFileError(
            "file not found", source=str(path), hint="check the path"
        ) from None
    except OSError as err:
        raise errors.UnreadableFileError(
            f"cannot read the file ({err.strerror or err})",
            source=str(path),
            hint="check its permissions",
        ) from None
    if head.startswith(b"PAR1"):
        return "tidy"
    if not head.strip():
        return "empty"
    try:
        text = head.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        if len(head) == _SNIFF_BYTES and err.start > _SNIFF_BYTES - 4:
            text = head[: err.start].decode("utf-8-sig")  # a character cut by the sniff window
        else:
            return "binary"
    first = next((ln for ln in text.splitlines() if ln.strip()), "")
    fields = first.split("\t")
    if len(fields) == 3:
        try:
            float(fields[2])
            return "mixinglaws"
        except ValueError:
            pass
    try:
        header = next(csv.reader([first]))
    except csv.Error:
        return None
    cols = {c.strip() for c in header}
    if "run" in cols and any(c.startswith((MIX_PREFIX, LOSS_PREFIX)) for c in cols):
        return "tidy"
    if "index" in cols and any(c.startswith(("train_", "metric/")) for c in cols):
        return "regmix"
    return None


# ---------------------------------------------------------------------------------- tidy
def _load_tidy(path: Path, renormalize, tolerance, notes, max_loss) -> RunTable:
    """One tidy CSV or Parquet file as a validated RunTable."""
    if is_parquet(path):
        frame = read_parquet(path)
        rows = list(range(1, len(frame) + 1))
    else:
        text = read_text(path)
        frame, lines = read_csv_table(path, "run", text)
        rows = [int(x) for x in lines]
        notes.extend(written_missing(text, path))
    if "run" not in frame.columns:
        raise errors.FormatError(
            "no 'run' column",
            source=str(path),
            hint="the tidy layout is run, [n_params], [step], [tokens], mix.<domain>..., "
            "loss.<domain>...",
        )
    table = RunTable.from_frame(
        frame,
        source=str(path),
        row_numbers=rows,
        renormalize=renormalize,
        tolerance=tolerance,
        report=notes,
        max_loss=max_loss,
    )
    check_never_together(table.to_tidy(), str(path), rows)
    return table


def _check_expected(table: RunTable, expected) -> None:
    """Every domain of ``table`` among ``expected_domains`` (see :func:`load`)."""
    if expected is None:
        return
    if isinstance(expected, Mapping):
        unknown_keys = set(expected) - {"train", "eval"}
        if unknown_keys:
            raise errors.FormatError(
                f"expected_domains key {sorted(unknown_keys)[0]!r}",
                hint="use the keys 'train' and 'eval'",
            )
        train, evals = expected.get("train"), expected.get("eval")
    else:
        train = evals = list(expected)
    if train is not None:
        check_known_domains(table.train_domains, list(train), "training", source=table.source)
    if evals is not None:
        check_known_domains(table.eval_domains, list(evals), "validation", source=table.source)


def _combine(parts: list[RunTable]) -> RunTable:
    """One table from several files: same domains, no run/step twice, one mixture per run."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    where: dict[tuple, str | None] = {}
    mixture_of: dict[str, tuple[tuple, str | None]] = {}
    for part in parts:
        for kind, a, b in (
            ("training", first.train_domains, part.train_domains),
            ("validation", first.eval_domains, part.eval_domains),
        ):
            if set(a) != set(b):
                diff = sorted(set(a) ^ set(b))
                raise errors.DomainNameError(
                    f"{kind} domains differ from those of {first.source}: {', '.join(diff)}",
                    source=part.source,
                    hint="load files with the same domains together",
                )
        tidy = part.to_tidy()
        has_step = "step" in tidy.columns
        mix = tidy[[MIX_PREFIX + d for d in first.train_domains]].to_numpy()
        for i, run in enumerate(tidy["run"]):
            key: tuple = (run, tidy["step"].iloc[i]) if has_step else (run,)
            if key in where:
                at = f" at step {key[1]:g}" if has_step else ""
                raise errors.DuplicateRunError(
                    f"run {run!r}{at} is also in {where[key]}",
                    source=part.source,
                    run=run,
                    hint="load each run once; give runs in different files different ids",
                )
            where[key] = part.source
            prev = mixture_of.get(run)
            if prev is None:
                mixture_of[run] = (tuple(mix[i]), part.source)
            elif not np.allclose(prev[0], mix[i], atol=1e-9):
                raise errors.InconsistentMixtureError(
                    f"run {run!r} has another mixture in {prev[1]}",
                    source=part.source,
                    run=run,
                    hint="one run id, one mixture",
                )
    columns = list(first.to_tidy().columns)
    frames = [p.to_tidy() for p in parts]
    extra = [c for f in frames for c in f.columns if c not in columns]
    tidy = pd.concat(
        [f.reindex(columns=columns + list(dict.fromkeys(extra))) for f in frames], ignore_index=True
    )
    source = ", ".join(str(p.source) for p in parts)
    # every part passed its own checks (sum tolerance, loss bound) already
    return RunTable.from_frame(tidy, source=source, tolerance=math.inf, max_loss=MAX_LOSS_LIMIT)
