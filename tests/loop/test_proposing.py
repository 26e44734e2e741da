"""Experiment.propose's request (bayesmix.loop.proposing): every option checked before the ledger
is touched, each error naming its Python parameter, which the CLI shows as its flag."""

from __future__ import annotations

import pytest

from bayesmix import errors
from bayesmix.cli import build_parser, error_text
from bayesmix.loop.experiment import Experiment


@pytest.mark.parametrize(
    "kwargs, param, text, flag_text",
    [
        ({"n": 0}, "n", "n=0 must be an integer >= 1", "-n 0 must be an integer >= 1"),
        (
            {"min_distance": -1.0},
            "min_distance",
            "min_distance=-1.0 must be >= 0",
            "--min-distance -1.0 must be >= 0",
        ),
        (
            {"cost_power": -0.5},
            "cost_power",
            "cost_power=-0.5 must be >= 0",
            "--cost-power -0.5 must be >= 0",
        ),
        (
            {"candidates": 0},
            "candidates",
            "candidates=0 must be >= 1",
            "--candidates 0 must be >= 1",
        ),
    ],
)
def test_bad_options_name_the_parameter_and_the_cli_shows_the_flag(
    tmp_path, kwargs, param, text, flag_text
):
    exp = Experiment.create(tmp_path / "exp.db", ["web", "code"])
    with pytest.raises(errors.OptionError) as info:
        exp.propose(**{"n": 2, **kwargs})
    assert info.value.param == param and str(info.value) == text
    flags = build_parser().parse_args(["propose", "--ledger", "exp.db"]).flags
    assert error_text(info.value, flags) == flag_text
    assert exp.runs().empty  # nothing recorded


def test_an_unknown_strategy_fails_before_the_ledger_is_touched(tmp_path):
    exp = Experiment.create(tmp_path / "exp.db", ["web", "code"])
    with pytest.raises(errors.OptionError, match="unknown strategy 'ucb'"):
        exp.propose(2, strategy="ucb")
    assert exp.runs().empty and exp.last_proposals is None
