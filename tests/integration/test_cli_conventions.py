"""CLI conventions shared by every subcommand: -o/--output, --ci-prob/--ci-kind."""

from __future__ import annotations

import pytest

from bayesmix.cli import COMMANDS, build_parser

WRITERS = ("fit", "predict", "pipeline", "compare", "backtest", "evaluate", "export")
WRITERS += ("frontier", "optimize", "report", "init", "propose", "critical_share")


def _options(name: str) -> set[str]:
    parser = build_parser()
    sub = next(a for a in parser._subparsers._actions if a.dest == "subcommand")  # noqa: SLF001
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


@pytest.mark.parametrize(
    "name",
    ["predict", "optimize", "backtest", "frontier", "critical_share", "evaluate", "validate"],
)
def test_commands_that_print_results_take_json(name):
    assert "--json" in _options(name)


@pytest.mark.slow
def test_predict_and_optimize_print_json(saved_posterior, tmp_path, capsys):
    import json

    from bayesmix.cli import main

    mixtures = tmp_path / "mix.csv"
    mixtures.write_text("mixture,Github,Books3,Pile-CC,ArXiv\nm1,0.25,0.25,0.25,0.25\n")
    assert main(["predict", str(saved_posterior), str(mixtures), "--json", "--ci-kind", "hdi"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["mixture"] for r in rows} == {"m1"} and all(r["lower"] <= r["upper"] for r in rows)
    assert main(["optimize", str(saved_posterior), "--json", "--seed", "0"]) == 0
    report = json.loads(capsys.readouterr().out)
    shares = [row["share"] for row in report["recommendation"]]
    assert sum(shares) == pytest.approx(1.0)


def test_a_library_error_about_a_parameter_names_the_flag():
    """The library names the Python parameter (``max_time=``); the CLI shows the flag."""
    from bayesmix.cli import build_parser, error_text
    from bayesmix.errors import OptionError

    err = OptionError("max_time=-2.0 is not a number of seconds >= 0", param="max_time")
    assert str(err).startswith("max_time=-2.0")
    flags = build_parser().parse_args(["fit", "runs.csv"]).flags
    assert flags["max_time"] == "--max-time" and flags["output"] == "--output"
    assert error_text(err, flags) == "--max-time -2.0 is not a number of seconds >= 0"
    assert error_text(OptionError("x=1 is bad", param="x"), flags) == "x=1 is bad"
    switch = OptionError("sums are off (pass renormalize=True)", param="renormalize")
    assert error_text(switch, flags) == "sums are off (pass --renormalize)"


def test_names_over_the_file_systems_limit_are_one_line(tmp_path, capsys):
    """An output or ledger name longer than 255 bytes: one line, exit 2, nothing written."""
    from bayesmix.cli import main

    long = "x" * 300
    assert main(["init", "--ledger", str(tmp_path / f"{long}.db"), "--domains", "web,code"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bayesmix init: error: ")
    runs = tmp_path / "runs.csv"
    runs.write_text("run,mix.web,mix.code,loss.web\nr1,0.5,0.5,2.0\n")
    assert main(["report", str(runs), "-o", str(tmp_path / f"{long}.html")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "255" in err[0] and err[0].startswith("bayesmix report: error: -o")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs.csv"]


def test_a_library_setting_made_by_a_switch_names_the_switch():
    """A parameter value a flag without a value sets (``unknown='import'``) shows as the flag."""
    from bayesmix.cli import build_parser, error_text
    from bayesmix.errors import LedgerError

    flags = build_parser().parse_args(["ingest", "--ledger", "exp.db", "res.csv"]).flags
    err = LedgerError(
        "2 run(s) not in the ledger", hint="unknown='import' adds them", param="unknown"
    )
    assert error_text(err, flags) == "2 run(s) not in the ledger (--import-unknown adds them)"
    err = LedgerError("conflict", hint="pass on_conflict='replace'", param="on_conflict")
    assert error_text(err, flags) == "conflict (pass --replace)"
