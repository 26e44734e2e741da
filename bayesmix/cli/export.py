"""``bayesmix export``: write a round's proposals file again from the experiment ledger.

The file has the format ``bayesmix propose`` and ``bayesmix init`` write (run, round, strategy,
[n_params, steps, tokens], mix.<domain>...; CSV or JSON by extension), with every run proposed
in that round whatever its status now. Use it when the file was lost, e.g. when ``propose`` was
killed after recording the runs and before writing the file.
"""

from __future__ import annotations

import argparse


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "export",
        help="write a round's proposals file again from the ledger",
        description=__doc__.split("\n\n")[0].removeprefix("``bayesmix export``: "),
        epilog="examples:\n  bayesmix export --ledger exp.db --round 4\n"
        "  bayesmix export --ledger exp.db --round 4 -o round4.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--ledger", required=True, metavar="EXP.db", help="the experiment ledger")
    p.add_argument("--round", required=True, type=int, metavar="N", help="the round to export")
    p.add_argument(
        "-o",
        "--output",
        "--out",
        dest="out",
        metavar="FILE.csv|FILE.json",
        help="where to write (default: <ledger>-round<N>.csv next to the ledger)",
    )
    p.add_argument("--force", action="store_true", help="replace the file if it exists")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from bayesmix import errors
    from bayesmix.cli._output import TABLE_SUFFIXES, check_output
    from bayesmix.experiment import Experiment

    if args.round < 0:
        raise errors.OptionError(f"--round must be >= 0, got {args.round}")
    if args.out:
        check_output(args.out, TABLE_SUFFIXES, "-o", force=args.force, inputs=[args.ledger])
    exp = Experiment(args.ledger)
    path = exp.export(args.round, args.out, force=args.force)
    runs = exp.proposals(args.round)["run"].tolist()
    print(f"round {args.round}: wrote {len(runs)} runs ({runs[0]} to {runs[-1]}) to {path}")
    return 0
