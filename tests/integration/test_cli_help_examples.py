"""Every example in a subcommand's ``--help`` parses: a user copying one must not meet
"unrecognized arguments" (the files it names need not exist for parsing)."""

from __future__ import annotations

import shlex

import pytest

from bayesmix.cli import COMMANDS, build_parser


def examples() -> list[str]:
    """The ``bayesmix ...`` lines of every epilog, continuation lines joined."""
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "subcommand")  # noqa: SLF001
    out = []
    for p in sub.choices.values():
        text = (p.epilog or "").replace("\\\n", " ")
        out += [line.strip() for line in text.splitlines() if line.strip().startswith("bayesmix ")]
    return out


def test_there_are_examples_to_check():
    lines = examples()
    assert len(lines) >= len(COMMANDS) // 2  # most subcommands show at least one example


@pytest.mark.parametrize("line", examples())
def test_help_example_parses(line):
    command = line.split(" | ")[0]  # what a shell pipes the output into is not ours
    args = build_parser().parse_args(shlex.split(command, comments=True)[1:])
    assert callable(args.func)
