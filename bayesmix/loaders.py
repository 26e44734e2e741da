"""Read proxy-run results from files into a validated :class:`~bayesmix.data.RunTable`.

Three formats, detected from the files' contents or named with ``format=``:

* ``"tidy"``: one CSV or Parquet file in the layout documented in :mod:`bayesmix.data`
  (``run, [n_params], [step], [tokens], mix.<domain>..., loss.<domain>...``).
* ``"regmix"``: a RegMix pair (Liu et al. 2024) of a mixture CSV (``index``, ``train_*``) and a
  loss CSV (``index``, ``metric/*_val_loss``), joined on ``index``.
* ``"mixinglaws"``: tab-separated logs of Ye et al. (``checkpoint_path<TAB>validation_file<TAB>
  loss``); model size, mixture and step are parsed from the checkpoint path.

Every problem raises a named :class:`~bayesmix.errors.BayesmixError` that says which file, row
(CSV: line number, header on line 1; Parquet: row index + 1; TSV: line number) and column, and
what to do. Loading never writes anything; notes (renormalised rows, skipped files, duplicate log
lines) go to the ``report`` list only when the load succeeds.
"""

from __future__ import annotations

import csv
import difflib
import io
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from bayesmix import errors
from bayesmix.data import (
    LOSS_PREFIX,
    MAX_LOSS,
    MAX_LOSS_LIMIT,
    MIX_PREFIX,
    SUM_TOLERANCE,
    RunTable,
    check_known_domains,
    check_loss,
    check_max_loss,
    check_tolerance,
)

FORMATS = ("tidy", "regmix", "mixinglaws")
#: Ye et al. train with 1,048,576 tokens per optimiser step (batch 512 x 2048 tokens).
TOKENS_PER_STEP = 1_048_576

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
        missing and inf = error, is in :mod:`bayesmix.data`).

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
    if not (
        isinstance(tokens_per_step, (int, float))
        and math.isfinite(tokens_per_step)
        and tokens_per_step > 0
    ):
        raise errors.OptionError(
            f"tokens_per_step must be a positive number, got {tokens_per_step!r}"
        )
    if format is not None and format not in FORMATS:
        raise errors.FormatError(
            f"unknown format {format!r}", hint=f"use one of: {', '.join(FORMATS)}"
        )
    notes: list[str] = []
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
    files = _collect(paths, format, notes)
    fmt = format or files[0][1]
    paths_only = [p for p, _ in files]
    if fmt == "tidy":
        parts = [_load_tidy(p, renormalize, tolerance, notes, max_loss) for p in paths_only]
    elif fmt == "regmix":
        parts = [
            _load_regmix_pair(mix, loss, renormalize, tolerance, notes, max_loss)
            for mix, loss in _pair_regmix(paths_only)
        ]
    else:
        parts = [
            _load_ye(p, renormalize, tolerance, notes, tokens_per_step, start_checkpoint, max_loss)
            for p in paths_only
        ]
        parts.sort(key=_smallest_size)
    table = _combine(parts)
    _check_expected(table, expected_domains)
    if report is not None:
        report.extend(notes)
    return table


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
    _check_never_together(table.to_tidy(), source, list(range(1, len(frame) + 1)))
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


def _read_text_table(path: Path, id_column: str) -> tuple[pd.DataFrame, np.ndarray]:
    """A CSV as strings-for-ids DataFrame plus the line number of each row (header = line 1)."""
    source = str(path)
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            text = fh.read()
    except FileNotFoundError:
        raise errors.UnreadableFileError(
            "file not found", source=source, hint="check the path"
        ) from None
    except UnicodeDecodeError as err:
        raise errors.UnreadableFileError(
            f"not UTF-8 text (byte {err.start})", source=source, hint="save the file as UTF-8 CSV"
        ) from None
    except OSError as err:
        raise errors.UnreadableFileError(
            f"cannot read the file ({err.strerror or err})",
            source=source,
            hint="check its permissions",
        ) from None
    if not text.strip():
        raise errors.EmptyInputError(
            "file is empty", source=source, hint="export the run results into it again"
        )
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
        seen = set()
        for name in header:
            if name in seen:
                raise errors.FormatError(
                    f"column {name!r} appears twice",
                    source=source,
                    row=1,
                    column=name,
                    hint="give each column one name",
                )
            seen.add(name)
        for fields in reader:  # pandas would silently turn one extra field into an index
            if fields and len(fields) != len(header):
                raise errors.UnreadableFileError(
                    f"row has {len(fields)} fields, the header has {len(header)}",
                    source=source,
                    row=reader.line_num,
                    hint="every line needs as many fields as the header",
                )
    except csv.Error as err:
        raise errors.UnreadableFileError(
            f"not a well-formed CSV file: {err}",
            source=source,
            row=reader.line_num,
            hint="check the quotes on this line",
        ) from None
    try:
        frame = pd.read_csv(
            io.StringIO(text),
            dtype={id_column: str} if id_column in seen else None,
            skip_blank_lines=False,
            index_col=False,
        )
    except (pd.errors.ParserError, ValueError) as err:
        detail = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise errors.UnreadableFileError(
            f"not a well-formed CSV file: {detail}",
            source=source,
            hint="check the quotes and that each line has as many fields as the header",
        ) from None
    lines = np.arange(len(frame)) + 2
    blank = frame.isna().all(axis=1).to_numpy()
    return frame.loc[~blank].reset_index(drop=True), lines[~blank]


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError, ImportError) as err:
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise errors.UnreadableFileError(
            f"not a readable Parquet file: {detail}",
            source=str(path),
            hint="write it again with to_parquet",
        ) from None


# ---------------------------------------------------------------------------------- tidy
def _load_tidy(path: Path, renormalize, tolerance, notes, max_loss) -> RunTable:
    if _is_parquet(path):
        frame = _read_parquet(path)
        rows = list(range(1, len(frame) + 1))
    else:
        frame, lines = _read_text_table(path, "run")
        rows = [int(x) for x in lines]
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
    _check_never_together(table.to_tidy(), str(path), rows)
    return table


def _is_parquet(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(4) == b"PAR1"


# ---------------------------------------------------------------------------------- RegMix
def _regmix_role(path: Path, frame: pd.DataFrame) -> str:
    """'mixtures' or 'losses' from the columns; FormatError for anything else."""
    cols = [str(c) for c in frame.columns]
    if "index" not in cols:
        raise errors.FormatError(
            "no 'index' column",
            source=str(path),
            hint="a RegMix file starts with index, then train_* or metric/*_val_loss columns",
        )
    data = [c for c in cols if c != "index"]
    if data and all(c.startswith("train_") for c in data):
        return "mixtures"
    if data and all(c.startswith("metric/") for c in data):
        return "losses"
    odd = next((c for c in data if not c.startswith(("train_", "metric/"))), None)
    if odd is not None:
        raise errors.FormatError(
            f"unexpected column {odd!r}",
            source=str(path),
            column=odd,
            hint="RegMix mixture files have train_* columns, loss files metric/*_val_loss columns",
        )
    raise errors.FormatError(
        "mixes train_* and metric/* columns",
        source=str(path),
        hint="keep proportions and losses in two files",
    )


def _pair_key(path: Path) -> str:
    words = [
        w
        for w in re.split(r"[_\-. ]+", path.stem.lower())
        if w and w not in {"mixture", "mixtures", "mix", "pile", "loss", "losses"}
    ]
    return "_".join(words)


def _pair_regmix(paths: list[Path]) -> list[tuple[Path, Path]]:
    """Split files into (mixtures, losses) pairs by their columns and names."""
    mixtures: list[Path] = []
    losses: list[Path] = []
    for path in paths:
        header = _csv_header(path)
        role = _regmix_role(path, pd.DataFrame(columns=header))
        (mixtures if role == "mixtures" else losses).append(path)
    if not mixtures or not losses:
        have = "mixture" if mixtures else "loss"
        raise errors.FormatError(
            f"a RegMix load needs a mixture file and a loss file; got only {have} files",
            source=str(paths[0]),
            hint="pass both, e.g. train_mixture_1m.csv train_pile_loss_1m.csv",
        )
    if len(mixtures) == 1 and len(losses) == 1:
        return [(mixtures[0], losses[0])]
    by_key: dict[str, list[Path]] = {}
    for path in losses:
        by_key.setdefault(_pair_key(path), []).append(path)
    pairs = []
    for mix in mixtures:
        partner = by_key.get(_pair_key(mix), [])
        if len(partner) != 1:
            raise errors.FormatError(
                "cannot tell which loss file belongs to this mixture file",
                source=str(mix),
                hint="name pairs alike (train_mixture_1m.csv + train_pile_loss_1m.csv) or load "
                "one pair at a time",
            )
        pairs.append((mix, partner[0]))
    unused = set(losses) - {loss for _, loss in pairs}
    if unused:
        raise errors.FormatError(
            "no mixture file for this loss file",
            source=str(min(unused)),
            hint="pass its mixture file too",
        )
    return pairs


def _csv_header(path: Path) -> list[str]:
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            return next(csv.reader(fh), [])
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise errors.UnreadableFileError(
            f"cannot read the header ({err})", source=str(path), hint="save the file as UTF-8 CSV"
        ) from None


def _strip(name: str, prefixes: Sequence[str] = (), suffixes: Sequence[str] = ()) -> str:
    for p in prefixes:
        if name.startswith(p):
            name = name[len(p) :]
    for s in suffixes:
        if name.endswith(s):
            name = name[: -len(s)]
    return name


def regmix_domain(column: str) -> str:
    """Domain name of a RegMix column: ``train_the_pile_pile_cc`` and
    ``metric/the_pile_pile_cc_val_loss`` are both ``pile_cc``."""
    if column.startswith("train_"):
        return _strip(column, ("train_", "the_pile_"))
    return _strip(column, ("metric/", "the_pile_"), ("_val_loss", "_loss"))


def _run_prefix(mix_path: Path) -> str:
    """Run ids are the index, prefixed by the mixture file's name before 'mixture' (``train_``)."""
    stem = mix_path.stem
    pos = stem.lower().find("mixture")
    return stem[:pos] if pos > 0 else ""


def _regmix_ids(path: Path, frame: pd.DataFrame, lines: np.ndarray) -> list[str]:
    ids: list[str] = []
    first_line: dict[str, int] = {}
    for value, line in zip(frame["index"].tolist(), lines):
        text = (
            ""
            if value is None or (isinstance(value, float) and math.isnan(value))
            else str(value).strip()
        )
        if not text:
            raise errors.MissingValueError(
                "index is empty",
                source=str(path),
                row=int(line),
                column="index",
                hint="give every row an index",
            )
        if text in first_line:
            raise errors.DuplicateRunError(
                f"index {text!r} appears twice (first on row {first_line[text]})",
                source=str(path),
                row=int(line),
                column="index",
                hint="give each run one row",
            )
        first_line[text] = int(line)
        ids.append(text)
    return ids


def _load_regmix_pair(
    mix_path: Path, loss_path: Path, renormalize, tolerance, notes, max_loss
) -> RunTable:
    mix, mix_lines = _read_text_table(mix_path, "index")
    loss, loss_lines = _read_text_table(loss_path, "index")
    for path, frame in ((mix_path, mix), (loss_path, loss)):
        if frame.empty:
            raise errors.EmptyInputError(
                "no data rows", source=str(path), hint="a run table needs at least one run"
            )
    if _regmix_role(mix_path, mix) != "mixtures":
        mix_path, loss_path, mix, loss = loss_path, mix_path, loss, mix
        mix_lines, loss_lines = loss_lines, mix_lines
    mix_ids = _regmix_ids(mix_path, mix, mix_lines)
    loss_ids = _regmix_ids(loss_path, loss, loss_lines)

    loss_row = {k: i for i, k in enumerate(loss_ids)}
    for k, line in zip(mix_ids, mix_lines):
        if k not in loss_row:
            raise errors.UnmatchedRunError(
                f"index {k!r} (row {line} of {mix_path}) has no losses in {loss_path}",
                source=str(loss_path),
                run=k,
                column="index",
                hint="both files need the same index values",
            )
    mix_set = set(mix_ids)
    for k, line in zip(loss_ids, loss_lines):
        if k not in mix_set:
            raise errors.UnmatchedRunError(
                f"index {k!r} has losses but no mixture in {mix_path}",
                source=str(loss_path),
                row=int(line),
                run=k,
                column="index",
                hint="both files need the same index values",
            )

    # column names: domain names and where each came from
    col_of: dict[str, tuple[Path, str]] = {}
    rename_mix: dict[str, str] = {}
    rename_loss: dict[str, str] = {}
    for frame, prefix, kind, path, rename in (
        (mix, MIX_PREFIX, "training", mix_path, rename_mix),
        (loss, LOSS_PREFIX, "validation", loss_path, rename_loss),
    ):
        for col in frame.columns[frame.columns != "index"]:
            new = prefix + regmix_domain(col)
            if new in col_of:
                raise errors.DomainNameError(
                    f"two columns name {kind} domain {new[len(prefix) :]!r}",
                    source=str(path),
                    column=col,
                    hint="each domain needs one column",
                )
            rename[col], col_of[new] = new, (path, col)
    train = [c[len(MIX_PREFIX) :] for c in rename_mix.values()]
    evals = [c[len(LOSS_PREFIX) :] for c in rename_loss.values()]
    _check_partner_names(train, evals, loss_path, rename_loss)

    order = [loss_row[k] for k in mix_ids]
    prefix = _run_prefix(mix_path)
    merged = pd.concat(
        [
            pd.DataFrame({"run": [prefix + k for k in mix_ids]}),
            mix.drop(columns="index").rename(columns=rename_mix).reset_index(drop=True),
            loss.drop(columns="index")
            .rename(columns=rename_loss)
            .iloc[order]
            .reset_index(drop=True),
        ],
        axis=1,
    )
    mix_line = dict(zip(merged["run"], mix_lines.tolist()))
    loss_line = {prefix + k: int(loss_lines[loss_row[k]]) for k in mix_ids}
    try:
        table = RunTable.from_frame(
            merged,
            source=str(mix_path),
            row_numbers=[int(x) for x in mix_lines],
            renormalize=renormalize,
            tolerance=tolerance,
            report=notes,
            max_loss=max_loss,
        )
    except errors.BayesmixError as err:
        raise _relocate_regmix(err, col_of, mix_path, loss_path, mix_line, loss_line) from None
    _check_never_together(table.to_tidy(), str(loss_path), [loss_line[r] for r in table.runs])
    return RunTable(
        table.to_tidy(), table.train_domains, table.eval_domains, source=f"{mix_path} + {loss_path}"
    )


def _relocate_regmix(err, col_of, mix_path, loss_path, mix_line, loss_line):
    """Point an error raised on the merged frame at the file, row and column it came from."""
    loss_side = (err.column or "").startswith(LOSS_PREFIX) or isinstance(
        err,
        (
            errors.NonFiniteLossError,
            errors.NonPositiveLossError,
            errors.ImplausibleLossError,
            errors.NoLossesError,
        ),
    )
    path = loss_path if loss_side else mix_path
    column = col_of.get(err.column, (path, err.column))[1] if err.column else None
    row = None
    if err.run is not None:
        prefix = _run_prefix(mix_path)
        row = (loss_line if loss_side else mix_line).get(err.run)
        run = err.run[len(prefix) :] if prefix and err.run.startswith(prefix) else err.run
    else:
        run = None
    return type(err)(err.problem, source=str(path), row=row, run=run, column=column, hint=err.hint)


# ---------------------------------------------------------------------------------- Ye et al.
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
    name = _strip(name, ("pythia-pile.valid.",), (".bin",))
    name = _strip(name, (), (".valid",))
    return YE_ALIASES.get(name, name)


def _ye_train_domains(group: str, n: int, source: str, line: int) -> tuple[str, ...]:
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


def _load_ye(
    path: Path, renormalize, tolerance, notes, tokens_per_step, start_checkpoint, max_loss
) -> RunTable:
    source = str(path)
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except UnicodeDecodeError as err:
        raise errors.UnreadableFileError(
            f"not UTF-8 text (byte {err.start})",
            source=source,
            hint="Ye et al. logs are plain text",
        ) from None
    except OSError as err:
        raise errors.UnreadableFileError(
            f"cannot read the file ({err.strerror or err})", source=source, hint="check the path"
        ) from None
    m = _FILE_SIZE_RE.match(path.stem)
    file_size = parse_size(m["size"]) if m else None

    records: dict[tuple[str, int], dict] = {}
    start: dict[str, tuple[float, int]] = {}
    start_size = None
    train_names: tuple[str, ...] | None = None
    train_line = 0
    n_last = n_dup = n_missing = 0
    for line_no, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        fields = raw.rstrip("\r").split("\t")
        if len(fields) != 3:
            raise errors.FormatError(
                f"expected 3 tab-separated fields, found {len(fields)}",
                source=source,
                row=line_no,
                hint="lines are checkpoint_path<TAB>validation_file<TAB>loss",
            )
        ckpt, valid, loss_text = (f.strip() for f in fields)
        # the one rule of bayesmix.data: nan = missing (the line is skipped), inf = error
        loss = check_loss(loss_text, max_loss=max_loss, source=source, row=line_no, column="loss")
        missing = math.isnan(loss)
        n_missing += missing
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
            if start_size is not None and size != start_size:
                raise errors.InconsistentMixtureError(
                    "two different starting checkpoints in one file",
                    source=source,
                    row=line_no,
                    column="checkpoint_path",
                    hint="split the file",
                )
            start_size = size
            if not missing:
                _put_loss(start, domain, loss, line_no, source, "the starting checkpoint")
            continue
        if parts[-1] == "last":
            n_last += 1
            continue
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
        if train_names is None:
            train_names, train_line = names, line_no
        elif names != train_names:
            raise errors.DomainNameError(
                f"training domains {list(names)} differ from {list(train_names)} "
                f"(row {train_line})",
                source=source,
                row=line_no,
                column="checkpoint_path",
                hint="one file holds one family of mixtures",
            )
        if rm["size"]:
            size = parse_size(rm["size"])
        elif file_size is not None:
            size = file_size
        else:
            raise errors.FormatError(
                "no model size in the checkpoint path or the file name",
                source=source,
                row=line_no,
                column="checkpoint_path",
                hint="name the file like 410M.txt",
            )
        run = f"{size_label(size)}_{rm['tag']}"
        rec = records.get((run, step))
        if rec is None:
            rec = records[(run, step)] = {
                "line": line_no,
                "props": props,
                "size": size,
                "tag": rm["tag"],
                "losses": {},
            }
        elif rec["props"] != props:
            raise errors.InconsistentMixtureError(
                f"run {run!r} at step {step} has proportions {rm['props']} here but "
                f"{'-'.join(f'{p:g}' for p in rec['props'])} on row {rec['line']}",
                source=source,
                row=line_no,
                column="checkpoint_path",
                hint="one run id, one mixture",
            )
        if not missing and _put_loss(
            rec["losses"], domain, loss, line_no, source, f"run {run!r} step {step}"
        ):
            n_dup += 1

    if start and start_checkpoint:
        runs: dict[str, dict] = {}
        for (run, _), rec in records.items():
            runs.setdefault(run, rec)
        for run, rec in runs.items():
            if (run, 0) not in records:
                records[(run, 0)] = {
                    "line": min(line for _, line in start.values()),
                    "props": rec["props"],
                    "size": rec["size"],
                    "tag": rec["tag"],
                    "losses": dict(start),
                }
        notes.append(f"{source}: starting checkpoint loaded as step 0 of each of {len(runs)} runs")
    elif start:
        notes.append(f"{source}: skipped the starting checkpoint ({len(start)} lines)")
    if not records:
        raise errors.EmptyInputError(
            "no run checkpoints in this file",
            source=source,
            hint="lines are checkpoint_path<TAB>validation_file<TAB>loss",
        )
    if n_last:
        notes.append(f"{source}: skipped {n_last} lines of 'last' checkpoints (no step number)")
    if n_dup:
        notes.append(f"{source}: dropped {n_dup} repeated lines with identical losses")
    if n_missing:
        notes.append(f"{source}: {n_missing} lines with a nan loss read as missing losses")

    evals = sorted({d for rec in records.values() for d in rec["losses"]}, key=str.lower)
    if not evals:
        raise errors.NoLossesError(
            "every loss in the file is nan (missing)",
            source=source,
            row=min(rec["line"] for rec in records.values()),
            column="loss",
            hint="a run file needs at least one loss",
        )
    ordered = sorted(
        records.items(),  # by size, mixture id (numerically), step
        key=lambda kv: (kv[1]["size"], _natural(kv[1]["tag"]), kv[0][1]),
    )
    assert train_names is not None  # set by the first record
    rows: dict[str, list] = {"run": [], "n_params": [], "step": [], "tokens": []}
    for name in train_names:
        rows[MIX_PREFIX + name] = []
    for name in evals:
        rows[LOSS_PREFIX + name] = []
    lines = []
    for (run, step), rec in ordered:
        rows["run"].append(run)
        rows["n_params"].append(rec["size"])
        rows["step"].append(float(step))
        rows["tokens"].append(float(step) * tokens_per_step)
        for name, p in zip(train_names, rec["props"]):
            rows[MIX_PREFIX + name].append(p)
        for name in evals:
            rows[LOSS_PREFIX + name].append(rec["losses"].get(name, (np.nan, 0))[0])
        lines.append(rec["line"])
    frame = pd.DataFrame(rows)
    table = RunTable.from_frame(
        frame,
        source=source,
        row_numbers=lines,
        renormalize=renormalize,
        tolerance=tolerance,
        report=notes,
        max_loss=max_loss,
    )
    _check_never_together(table.to_tidy(), source, lines)
    return table


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


def _natural(text: str) -> tuple:
    """Sort key that orders 'ct_10' after 'ct_9'."""
    return tuple(int(p) if i % 2 else p for i, p in enumerate(re.split(r"(\d+)", text)))


def size_label(n_params: float) -> str:
    """7e7 -> '70M', 1e9 -> '1B', 1.4e9 -> '1.4B'."""
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n_params >= scale:
            return f"{n_params / scale:g}{unit}"
    return f"{n_params:g}"


# ---------------------------------------------------------------------------------- checks
def _check_partner_names(train, evals, loss_path, rename_loss) -> None:
    """A validation name that is a near-miss of a training name is a misspelling."""
    back = {v[len(LOSS_PREFIX) :]: k for k, v in rename_loss.items()}
    for name in evals:
        if name in train:
            continue
        close = difflib.get_close_matches(name, train, n=1, cutoff=0.9)
        if close:
            raise errors.DomainNameError(
                f"validation domain {name!r} is not a training domain but looks like {close[0]!r}",
                source=str(loss_path),
                column=back.get(name, name),
                hint=f"spell it {close[0]!r} in both files",
            )


def _check_never_together(tidy: pd.DataFrame, source: str, rows: Sequence[int]) -> None:
    """Two similar validation names never observed in the same record: one domain spelt twice."""
    cols = [c for c in tidy.columns if c.startswith(LOSS_PREFIX)]
    if len(cols) < 2:
        return
    seen = tidy[cols].notna().to_numpy()
    names = [c[len(LOSS_PREFIX) :] for c in cols]
    for a in range(len(names)):
        for b in range(a + 1, len(names)):
            ratio = difflib.SequenceMatcher(None, names[a].lower(), names[b].lower()).ratio()
            if ratio < 0.85 or (seen[:, a] & seen[:, b]).any():
                continue
            rare = a if seen[:, a].sum() <= seen[:, b].sum() else b
            other = b if rare == a else a
            i = int(np.flatnonzero(seen[:, rare])[0])
            raise errors.DomainNameError(
                f"validation domains {names[rare]!r} and {names[other]!r} never appear in the "
                "same record: probably one domain spelt two ways",
                source=source,
                row=int(rows[i]) if i < len(rows) else None,
                column=LOSS_PREFIX + names[rare],
                hint=f"spell it {names[other]!r}",
            )


def _check_expected(table: RunTable, expected) -> None:
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
