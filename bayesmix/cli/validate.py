"""``bayesmix validate FILE...``: load run files, check every rule, print what they hold.

Exit status 0 when the files load; bad input prints one line on stderr and exits with 2 (every
failure is a BayesmixError, handled by the dispatcher). With ``--json`` both outcomes are JSON
on stdout: the summary with ``"ok": true``, or ``"ok": false`` and every bad row of tidy CSV
files (up to :data:`MAX_ERRORS`), each with its file, row, run, column, problem and hint.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from bayesmix.cli._options import add_max_loss_argument, max_loss_from_args
from bayesmix.data.loaders import FORMATS, load
from bayesmix.data.table import RunTable
from bayesmix.data.validation import SUM_TOLERANCE, check_tolerance
from bayesmix.data.ye_logs import TOKENS_PER_STEP, size_label
from bayesmix.errors import BayesmixError


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "validate",
        help="check run files and summarise them",
        description="Load run results (tidy CSV/Parquet, a RegMix mixture + loss CSV pair, or "
        "Ye et al. TSV logs), check them, and print runs, domains, sizes, steps, "
        "missing losses and proportion ranges. Losses must be positive and at most "
        "--max-loss nats per token; empty or nan cells are missing losses, inf is "
        "an error. Domain names may not contain '/', ',' or '='.",
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="files or directories")
    p.add_argument("--format", choices=FORMATS, help="input format (detected when omitted)")
    p.add_argument(
        "--renormalize",
        action="store_true",
        help="rescale proportions to sum to 1 instead of rejecting them",
    )
    p.add_argument(
        "--tolerance",
        type=float,
        default=SUM_TOLERANCE,
        help=f"allowed |sum of proportions - 1| (default {SUM_TOLERANCE})",
    )
    p.add_argument(
        "--tokens-per-step",
        type=float,
        default=TOKENS_PER_STEP,
        help=f"Ye et al. logs: tokens per step (default {TOKENS_PER_STEP})",
    )
    add_max_loss_argument(p)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)
    return p


#: Most row errors ``validate --json`` lists.
MAX_ERRORS = 100


def run(args) -> int:
    notes: list[str] = []
    tolerance = check_tolerance(args.tolerance)
    max_loss = max_loss_from_args(args)
    try:
        table = load(
            args.files,
            args.format,
            renormalize=args.renormalize,
            tolerance=tolerance,
            report=notes,
            tokens_per_step=args.tokens_per_step,
            max_loss=max_loss,
        )
    except BayesmixError as err:
        if not args.json:
            raise
        found = row_errors(args.files, args, tolerance, max_loss) or [err]
        print(
            json.dumps(
                {
                    "ok": False,
                    "errors": [_error_dict(e, args.flags) for e in found[:MAX_ERRORS]],
                    "truncated": len(found) > MAX_ERRORS,
                },
                indent=2,
            )
        )
        return 2
    summary = summarize(table)
    if args.json:
        print(json.dumps({"ok": True, **summary, "notes": notes}, indent=2))
    else:
        print(format_summary(summary))
        for note in notes:
            print(f"note: {note}")
    return 0


def row_errors(files, args, tolerance: float, max_loss: float) -> list[BayesmixError]:
    """Every bad row of the tidy CSV files among ``files``, each row checked on its own (the
    loader stops at the first); empty when none is found that way (then the loader's error,
    e.g. a duplicate run across rows, is the one to report)."""
    found: list[BayesmixError] = []
    for path in files:
        path = Path(path)
        if path.suffix.lower() != ".csv" or args.format not in (None, "tidy"):
            continue
        try:
            frame = pd.read_csv(path)
        except (OSError, ValueError):
            continue
        for i in range(len(frame)):
            try:
                RunTable.from_frame(
                    frame.iloc[[i]],
                    source=str(path),
                    row_numbers=[i + 2],
                    renormalize=args.renormalize,
                    tolerance=tolerance,
                    max_loss=max_loss,
                )
            except BayesmixError as err:
                found.append(err)
                if len(found) > MAX_ERRORS:
                    return found
    return found


def _error_dict(err: BayesmixError, flags: dict[str, str]) -> dict:
    """One error as JSON; its message as the CLI prints it (parameters shown as flags)."""
    from bayesmix.cli import error_text

    return {
        "message": error_text(err, flags),
        "problem": err.problem,
        "source": err.source,
        "row": err.row,
        "run": err.run,
        "column": err.column,
        "hint": err.hint,
    }


def summarize(table: RunTable) -> dict:
    """``RunTable.summary()`` plus per-domain loss ranges and the count of loss cells."""
    out = table.summary()
    losses = table.losses
    out["loss_cells"] = int(losses.size)
    out["loss_range"] = {
        d: [float(np.nanmin(losses[d])), float(np.nanmax(losses[d]))]
        if losses[d].notna().any()
        else [None, None]
        for d in table.eval_domains
    }
    return out


def format_summary(s: dict) -> str:
    """A readable multi-line summary of :func:`summarize` output."""
    lines = [
        f"source:        {s['source']}",
        f"runs:          {s['runs']}",
        f"records:       {s['records']}",
        f"training:      {len(s['train_domains'])} domains",
        f"validation:    {len(s['eval_domains'])} domains",
    ]
    if "sizes" in s:
        lines.append("sizes:         " + ", ".join(size_label(v) for v in s["sizes"]))
    if "steps" in s:
        st = s["steps"]
        lines.append(f"steps:         {st['count']} ({st['min']:g} to {st['max']:g})")
    lines.append(f"missing:       {s['missing_losses']} of {s['loss_cells']} losses")
    width = max(len(d) for d in [*s["train_domains"], *s["eval_domains"], "validation domain"])
    lines += ["", f"{'training domain':<{width}}  {'min share':>9}  {'max share':>9}"]
    for d, (lo, hi) in s["proportion_range"].items():
        lines.append(f"{d:<{width}}  {lo:>9.4f}  {hi:>9.4f}")
    lines += ["", f"{'validation domain':<{width}}  {'min loss':>9}  {'max loss':>9}"]
    for d, (lo, hi) in s["loss_range"].items():
        lo_s = f"{lo:>9.4f}" if lo is not None else f"{'-':>9}"
        hi_s = f"{hi:>9.4f}" if hi is not None else f"{'-':>9}"
        lines.append(f"{d:<{width}}  {lo_s}  {hi_s}")
    return "\n".join(lines)
