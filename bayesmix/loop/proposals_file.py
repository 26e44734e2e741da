"""The proposals file handed to the training jobs: one round's proposed runs as CSV or JSON
(:func:`write_proposals`), and the check that a path can take it (:func:`check_proposals_path`),
done before anything else is written so a bad output path fails early."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from bayesmix import errors
from bayesmix.data.table import MIX_PREFIX
from bayesmix.io import atomic_write_text, same_file


def write_proposals(runs: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write proposed runs for the training jobs: CSV or JSON (list of objects) by extension.

    ``runs`` is a frame from :meth:`Ledger.runs` (or any frame with run, round, strategy and
    mix.<domain> columns). Written columns: run, round, strategy, [n_params, steps, tokens when
    given], mix.<domain>... Shares are written at full precision. The file is replaced
    atomically by :func:`bayesmix.io.atomic_write_text` (mode 0666 & ~umask; a failed write is
    a WriteError and leaves any old file).
    """
    path = check_proposals_path(path)
    kind = path.suffix.lower()
    missing = [c for c in ("run", "round", "strategy") if c not in runs.columns]
    mix_cols = [c for c in runs.columns if str(c).startswith(MIX_PREFIX)]
    if missing or not mix_cols:
        raise errors.FormatError(
            f"proposals lack column {(missing or ['mix.<domain>'])[0]!r}", source=str(path)
        )
    extra = [
        c for c in ("n_params", "steps", "tokens") if c in runs.columns and runs[c].notna().any()
    ]
    out = runs[["run", "round", "strategy", *extra, *mix_cols]].reset_index(drop=True)
    if kind == ".csv":
        text = out.to_csv(index=False, lineterminator="\n")
    else:
        records = [{k: _json_value(v) for k, v in row.items()} for row in out.to_dict("records")]
        text = json.dumps(records, indent=2) + "\n"
    return atomic_write_text(path, text)


def check_proposals_path(
    path: str | os.PathLike,
    *,
    overwrite: bool = True,
    inputs: Iterable[str | os.PathLike | None] = (),
) -> Path:
    """OptionError unless ``path`` can take the proposals: it ends in .csv or .json, is not a
    folder, its folder exists and is writable (a probe file is created and removed), it is none
    of ``inputs`` (e.g. the ledger, the candidate pool) and, unless ``overwrite``, no file is
    there yet (the error names ``force``, the callers' parameter that sets ``overwrite``).
    Check before writing anything else, so bad output paths fail early."""
    path = Path(path)
    kind = path.suffix.lower()
    if kind not in (".csv", ".json"):
        raise errors.OptionError(
            f"cannot write proposals as {kind or 'a file without suffix'}",
            source=str(path),
            hint="name the file .csv or .json",
        )
    if path.is_dir():
        raise errors.OptionError(
            "this is a folder, not a file",
            source=str(path),
            hint="give a file name ending in .csv or .json",
        )
    if not path.parent.is_dir():
        raise errors.OptionError(f"directory {str(path.parent)!r} does not exist", source=str(path))
    for other in inputs:
        if other is not None and same_file(path, other):
            raise errors.OptionError(
                "this file is an input of the command; refusing to overwrite it",
                source=str(path),
                hint="write the proposals to another file",
            )
    if not overwrite and path.exists():
        raise errors.OptionError(
            "a file already exists here; refusing to overwrite it",
            source=str(path),
            hint="choose another name, move the file, or pass force=True",
            param="force",
        )
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=path.parent)
    except OSError as err:
        raise errors.OptionError(
            f"cannot write in directory {str(path.parent)!r}: {err.strerror or err}",
            source=str(path),
        ) from None
    os.close(fd)
    os.unlink(probe)
    return path


def _json_value(v):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return None if math.isnan(v) else float(v)
    if isinstance(v, np.bool_):
        return bool(v)
    return v
