"""The ``bayesmix`` command: one module per subcommand in this package.

Each subcommand module defines ``register(subparsers) -> argparse.ArgumentParser`` and sets
``func`` (``run(args) -> int``) as the parser default. Errors in user input (``BayesmixError``)
print one line and exit with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from bayesmix import __version__
from bayesmix.errors import BayesmixError

#: Subcommand modules, in the order ``--help`` lists them.
COMMANDS = [
    "validate",
    "init",
    "ingest",
    "status",
    "optimize",
    "fit",
    "predict",
    "diagnose",
    "compare",
    "propose",
    "run",
    "export",
    "critical_share",
    "pipeline",
    "backtest",
    "evaluate",
    "frontier",
    "report",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bayesmix",
        description="Bayesian data-mixing laws: fit proxy runs, predict, choose the mixture, "
        "propose the next runs.",
    )
    parser.add_argument("--version", action="version", version=f"bayesmix {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"bayesmix.cli.{name}")
        p = module.register(sub)
        p.add_argument("--version", action="version", version=f"bayesmix {__version__}")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except BayesmixError as err:
        print(f"bayesmix {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"bayesmix {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Output piped into e.g. `head` that stopped reading: not an error of ours.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        return 0


if __name__ == "__main__":
    sys.exit(main())
