"""Output helpers shared by the model subcommands (fit, predict, diagnose): not a subcommand.

Atomic table writes (CSV or JSON chosen by extension), the loud diagnostics warning on stderr,
and JSON-safe conversion of numbers (NaN and inf become null).
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from pathlib import Path

import pandas as pd

from bayesmix import errors

TABLE_SUFFIXES = (".csv", ".json")


def check_output(path: str | Path, suffixes: tuple[str, ...] | None = None,
                 option: str = "-o") -> Path:
    """Fail before any work when ``path`` cannot be an output file (a directory, a file as
    parent folder, or an unsupported extension)."""
    path = Path(path)
    if path.is_dir():
        raise errors.OptionError(f"{option} {path} is a directory", hint="give a file name")
    parent = next((p for p in path.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise errors.OptionError(f"{option} {path}: {parent} is a file, not a folder")
    if suffixes is not None and path.suffix.lower() not in suffixes:
        raise errors.OptionError(f"{option} {path}: unknown output format {path.suffix!r}",
                                 hint=f"use a file ending in {' or '.join(suffixes)}")
    return path


def write_table(df: pd.DataFrame, path: str | Path) -> Path:
    """Write ``df`` as CSV or JSON records (by extension), atomically: temp file + os.replace."""
    path = check_output(path, TABLE_SUFFIXES)
    if path.suffix.lower() == ".json":
        text = json.dumps(json_safe(df.to_dict(orient="records")), indent=2) + "\n"
    else:
        text = df.to_csv(index=False)
    return write_text(text, path)


def write_text(text: str, path: str | Path) -> Path:
    """Write ``text`` atomically: a failed write leaves any old file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual mode
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def loud_warning(message: str | None, note: str | None = None) -> None:
    """Print a failed diagnostics gate on stderr, framed, so that nobody misses it."""
    if not message:
        return
    bar = "!" * 78
    lines = [bar, f"WARNING: {message}",
             "WARNING: predictions and decisions drawn from this posterior may be wrong; refit "
             "with more --tune/--draws (see `bayesmix diagnose`)."]
    if note:
        lines.append(f"WARNING: {note}")
    print("\n".join([*lines, bar]), file=sys.stderr)


def json_safe(obj):
    """``obj`` with NaN/inf floats replaced by None and NumPy scalars made plain (for JSON)."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
