"""Reading run files strictly, so that every problem names its file, line and column.

``read_csv_table`` reads a CSV with each data row's line number (header on line 1) and rejects
what pandas would accept silently: a column named twice, a row with more or fewer fields than
the header, broken quoting. ``read_parquet`` and ``csv_header`` turn their libraries' errors
into :class:`~bayesmix.errors.UnreadableFileError`. Used by the tidy and RegMix loaders.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from bayesmix import errors


def read_text(path: Path) -> str:
    """The whole text of the CSV file ``path`` (UTF-8, a byte-order mark dropped);
    UnreadableFileError naming the file when it is missing, not UTF-8 or unreadable."""
    source = str(path)
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            return fh.read()
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


def read_csv_table(
    path: Path, id_column: str, text: str | None = None
) -> tuple[pd.DataFrame, np.ndarray]:
    """A CSV as strings-for-ids DataFrame plus the line number of each row (header = line 1).
    ``text``: the file's text when the caller has read it already (:func:`read_text`)."""
    source = str(path)
    text = read_text(path) if text is None else text
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


#: Cell texts pandas reads as missing that are not an empty cell: a loss written so is more
#: likely a run that diverged than one never measured, so loading says where they are.
WRITTEN_MISSING = frozenset({"nan", "na", "n/a", "null", "none", "-nan", "<na>", "#n/a"})


def written_missing(text: str, path: Path, prefix: str = "loss.") -> list[str]:
    """One note per column of ``prefix`` whose cells are written as missing (``nan``, ``NA``,
    ...) rather than left empty, naming the file, the column and the rows (header = row 1).
    ``text``: the CSV's text as :func:`read_text` read it (the file is not read again)."""
    reader = csv.reader(io.StringIO(text))
    header = next(reader, [])
    cols = [i for i, name in enumerate(header) if name.startswith(prefix)]
    found: dict[str, list[int]] = {}
    for fields in reader:
        for i in cols:
            if i < len(fields) and fields[i].strip().lower() in WRITTEN_MISSING:
                found.setdefault(header[i], []).append(reader.line_num)
    notes = []
    for column, rows in found.items():
        shown = ", ".join(map(str, rows[:10])) + (", ..." if len(rows) > 10 else "")
        notes.append(
            f"{path}: column {column!r} is written as missing (e.g. 'nan') on row(s) {shown}: "
            "read as not measured; if those runs diverged, they are left out of the fit"
        )
    return notes


def read_parquet(path: Path) -> pd.DataFrame:
    """A Parquet file as a DataFrame; UnreadableFileError naming the file otherwise."""
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError, ImportError) as err:
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise errors.UnreadableFileError(
            f"not a readable Parquet file: {detail}",
            source=str(path),
            hint="write it again with to_parquet",
        ) from None


def is_parquet(path: Path) -> bool:
    """Whether the file starts with Parquet's magic bytes."""
    with open(path, "rb") as fh:
        return fh.read(4) == b"PAR1"


def csv_header(path: Path) -> list[str]:
    """The first line of a CSV file as column names (reads nothing else)."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            return next(csv.reader(fh), [])
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise errors.UnreadableFileError(
            f"cannot read the header ({err})", source=str(path), hint="save the file as UTF-8 CSV"
        ) from None


def strip_affixes(name: str, prefixes: Sequence[str] = (), suffixes: Sequence[str] = ()) -> str:
    """``name`` without each of ``prefixes`` it starts with and ``suffixes`` it ends with, in
    order (``strip_affixes("train_the_pile_x", ("train_", "the_pile_"))`` -> ``"x"``)."""
    for p in prefixes:
        if name.startswith(p):
            name = name[len(p) :]
    for s in suffixes:
        if name.endswith(s):
            name = name[: -len(s)]
    return name
