"""``bayesmix ingest``: record run results in an experiment ledger.

Results files are read and validated like any run table (tidy CSV/Parquet, RegMix pairs, Ye et
al. logs). Their runs must be in the ledger (or ``--import-unknown`` adds them as external runs),
with the proposed mixtures. Ingesting the same results again changes nothing; a different value
for a stored loss is refused unless ``--replace``; a loss that is not finite, not positive or
above ``--max-loss`` is refused. All files are recorded in one transaction, or nothing is (a
read-only ledger too).
"""

from __future__ import annotations

import argparse

from bayesmix.cli._options import add_max_loss_argument, max_loss_from_args
from bayesmix.data.loaders import FORMATS


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "ingest",
        help="record run results in an experiment ledger",
        description=__doc__.split("\n\n")[0].removeprefix("``bayesmix ingest``: "),
        epilog="example:\n  bayesmix ingest --ledger exp.db results/round0.csv",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--ledger", required=True, metavar="EXP.db", help="the experiment ledger")
    p.add_argument("results", nargs="+", metavar="RESULTS", help="result files or directories")
    p.add_argument("--format", choices=FORMATS, help="format of the files (default: detect)")
    p.add_argument(
        "--renormalize", action="store_true", help="rescale proportions that do not sum to 1"
    )
    p.add_argument(
        "--import-unknown",
        dest="unknown",
        action="store_const",
        const="import",
        default="error",
        help="add runs the ledger does not know as external runs (else an error)",
    )
    p.add_argument(
        "--replace",
        dest="on_conflict",
        action="store_const",
        const="replace",
        default="error",
        help="overwrite stored values that differ (else the whole input is refused)",
    )
    add_max_loss_argument(p)
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from bayesmix.loop.experiment import Experiment

    max_loss = max_loss_from_args(args)
    exp = Experiment(args.ledger)
    report: list[str] = []
    try:
        summary = exp.ingest(
            args.results,
            format=args.format,
            renormalize=args.renormalize,
            import_unknown=args.unknown == "import",
            replace=args.on_conflict == "replace",
            report=report,
            max_loss=max_loss,
        )
    finally:
        for line in report:
            print(f"note: {line}")
    print(summary.describe())
    for label, runs in (("completed", summary.completed), ("added", summary.added_runs)):
        if runs:
            shown = ", ".join(runs[:20]) + (f", ... ({len(runs)} in all)" if len(runs) > 20 else "")
            print(f"{label}: {shown}")
    counts = exp.status()["by_status"]
    print("ledger now: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
    return 0
