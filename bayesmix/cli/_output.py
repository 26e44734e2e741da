"""Output helpers shared by the model subcommands (fit, predict, diagnose): not a subcommand.

Output-path checks and atomic table writes (CSV or JSON chosen by extension), both from
:mod:`bayesmix.io`; the loud diagnostics warning on stderr; JSON-safe conversion of numbers
(NaN and inf become null).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from bayesmix.io import atomic_write_text, check_output_path, json_safe

TABLE_SUFFIXES = (".csv", ".json")


def proposals_table(frame: pd.DataFrame) -> str:
    """A proposal frame as the loop commands print it: run, [score], [size, steps, tokens,
    cost], then the shares (``mix.`` dropped); sizes as 70M, steps whole, costs relative."""
    from bayesmix.data.ye_logs import size_label

    shown = frame.drop(columns=[c for c in ("round", "strategy") if c in frame.columns])
    fmt: dict = {}
    if "n_params" in shown.columns:
        shown = shown.rename(columns={"n_params": "size"})
        fmt["size"] = lambda v: "-" if pd.isna(v) else size_label(float(v))
    if "steps" in shown.columns:
        fmt["steps"] = lambda v: "-" if pd.isna(v) else f"{v:.0f}"
    for col in ("tokens", "cost"):
        if col in shown.columns:
            fmt[col] = lambda v: "-" if pd.isna(v) else f"{v:.4g}"
    order = [c for c in ("size", "steps", "tokens", "cost") if c in shown.columns]
    rest = [c for c in shown.columns if c not in order]
    first = [c for c in rest if not str(c).startswith("mix.")]
    mixes = [c for c in rest if str(c).startswith("mix.")]
    shown = shown[first + order + mixes]
    shown.columns = [str(c).removeprefix("mix.") for c in shown.columns]
    return shown.to_string(index=False, formatters=fmt, float_format=lambda v: f"{v:.4f}")


def add_force_argument(p: argparse.ArgumentParser) -> None:
    """``--force``: replace an existing output file (never an input)."""
    p.add_argument(
        "--force",
        action="store_true",
        help="replace existing output files (inputs are never overwritten)",
    )


def check_output(
    path: str | Path,
    suffixes: tuple[str, ...] | None = None,
    option: str = "-o",
    *,
    inputs: Iterable = (),
    force: bool = False,
) -> Path:
    """Fail before any work when ``path`` cannot be an output file: a directory, a file as
    parent folder, an unsupported extension, one of ``inputs``, an existing file without
    ``force``, a folder this user cannot write (:func:`bayesmix.io.check_output_path`)."""
    return check_output_path(path, inputs=inputs, force=force, option=option, suffixes=suffixes)


def table_text(df: pd.DataFrame, path: str | Path) -> str:
    """``df`` as CSV, or as JSON records when ``path`` ends in .json."""
    if Path(path).suffix.lower() == ".json":
        return json.dumps(json_safe(df.to_dict(orient="records")), indent=2) + "\n"
    return df.to_csv(index=False)


def write_table(df: pd.DataFrame, path: str | Path) -> Path:
    """Write ``df`` as CSV or JSON records (by extension), atomically (check the path first
    with :func:`check_output`)."""
    return write_text(table_text(df, path), path)


def write_text(text: str, path: str | Path) -> Path:
    """Write ``text`` atomically: a failed write leaves any old file intact (WriteError)."""
    return atomic_write_text(path, text)


def loud_warning(message: str | None, note: str | None = None) -> None:
    """Print a failed diagnostics gate on stderr, framed, so that nobody misses it."""
    if not message:
        return
    bar = "!" * 78
    lines = [
        bar,
        f"WARNING: {message}",
        "WARNING: predictions and decisions drawn from this posterior may be wrong; refit "
        "with more --tune/--draws (see `bayesmix diagnose`).",
    ]
    if note:
        lines.append(f"WARNING: {note}")
    print("\n".join([*lines, bar]), file=sys.stderr)


def add_json_argument(p: argparse.ArgumentParser) -> None:
    """``--json``: the result as JSON on stdout instead of text (progress stays on stderr)."""
    p.add_argument("--json", action="store_true", help="print the result as JSON instead of text")


def print_json(obj) -> None:
    """``obj`` (dict, list or DataFrame: its records) as indented JSON, NaN as null."""
    if isinstance(obj, pd.DataFrame):
        obj = obj.to_dict(orient="records")
    print(json.dumps(json_safe(obj), indent=2))
