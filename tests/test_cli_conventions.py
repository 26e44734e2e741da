"""CLI conventions shared by every subcommand: -o/--output, --ci-prob/--ci-kind."""

from __future__ import annotations

import pytest

from bayesmix.cli import COMMANDS, build_parser

WRITERS = ("fit", "predict", "pipeline", "compare", "backtest", "evaluate", "export")
WRITERS += ("frontier", "optimize", "report", "init", "propose", "critical_share")


def _options(name: str) -> set[str]:
    parser = build_parser()
    sub = next(a for a in parser._subparsers._actions if a.dest == "command")  # noqa: SLF001
    return {
        s for action in sub.choices[name.replace("_", "-")]._actions for s in action.option_strings
    }


@pytest.mark.parametrize("name", WRITERS)
def test_every_command_that_writes_a_result_takes_dash_o_and_output(name):
    assert name in COMMANDS
    assert {"-o", "--output"} <= _options(name), name


@pytest.mark.parametrize("name", ["predict", "optimize", "report", "evaluate"])
def test_interval_options_are_named_like_the_python_api(name):
    opts = _options(name)
    assert {"--ci-prob", "--prob", "--ci-kind"} <= opts, name
