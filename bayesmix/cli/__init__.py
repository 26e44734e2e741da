"""The ``bayesmix`` command: one module per subcommand in this package.

Each subcommand module defines ``register(subparsers) -> argparse.ArgumentParser`` and sets
``func`` (``run(args) -> int``) as the parser default. Errors in user input (``BayesmixError``)
print one line and exit with status 2, never a traceback. An error about a Python parameter
(``err.param``, named ``param=`` in the message) is shown with the flag it comes from.
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
    "schedule",
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
    "remap",
    "change_domains",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bayesmix",
        description="Bayesian data-mixing laws: fit proxy runs, predict, choose the mixture, "
        "propose the next runs.",
    )
    parser.add_argument("--version", action="version", version=f"bayesmix {__version__}")
    sub = parser.add_subparsers(dest="subcommand", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"bayesmix.cli.{name}")
        p = module.register(sub)
        p.add_argument("--version", action="version", version=f"bayesmix {__version__}")
        p.set_defaults(flags=option_flags(p))
    return parser


def option_flags(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Python parameter (argparse ``dest``) -> the flag that sets it (``max_time`` ->
    ``--max-time``): the long form when there is one. A flag without a value also maps the
    setting it makes (``unknown='import'`` -> ``--import-unknown``, ``force=True`` ->
    ``--force``)."""
    flags = {}
    for action in parser._actions:  # argparse has no public list of a parser's options
        if action.option_strings and action.dest not in ("help", "version"):
            flag = max(action.option_strings, key=len)
            flags[action.dest] = flag
            if action.nargs == 0 and action.const is not None:
                flags[f"{action.dest}={action.const!r}"] = flag
    return flags


def error_text(err: BayesmixError, flags: dict[str, str]) -> str:
    """``err`` as the CLI shows it: its parameter's setting (``param=value``) replaced by the
    flag that makes it, or ``param=`` by the flag that takes the value."""
    text = str(err)
    if not err.param:
        return text
    for setting, flag in flags.items():
        if setting.startswith(f"{err.param}="):
            text = text.replace(setting, flag)
    if err.param in flags:
        text = text.replace(f"{err.param}=", f"{flags[err.param]} ")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except BayesmixError as err:
        text = error_text(err, getattr(args, "flags", {}))
        print(f"bayesmix {args.subcommand}: error: {text}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"bayesmix {args.subcommand}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Output piped into e.g. `head` that stopped reading: not an error of ours.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        return 0
    except OSError as err:  # the file system refused: one line, not a traceback
        where = f": {err.filename}" if err.filename else ""
        print(f"bayesmix {args.subcommand}: error: {err.strerror or err}{where}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
