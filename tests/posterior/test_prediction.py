"""Predictions' helpers (bayesmix.posterior.prediction): the target-scale check names the
Python parameter that allows more, and the CLI shows its flag instead."""

from __future__ import annotations

import pytest

from bayesmix import errors
from bayesmix.cli import error_text
from bayesmix.posterior.prediction import JOINT_RETIRED, scale_messages

RANGES = {"n_params": (1e6, 1e7), "tokens": (1e9, 1e10)}


def test_inside_the_fitted_range_says_nothing():
    assert scale_messages(RANGES, n_params=5e6, tokens=2e9, max_extrapolation=10) == []


def test_beyond_the_fitted_range_warns_once_per_input():
    msgs = scale_messages(RANGES, n_params=[3e7, 3e7], tokens=5e8, max_extrapolation=10)
    assert len(msgs) == 2 and all(m.endswith(JOINT_RETIRED) for m in msgs)
    assert "3x above the largest" in msgs[0] and "2x below the smallest" in msgs[1]


def test_too_far_names_the_parameter_and_the_cli_its_flag():
    with pytest.raises(errors.ExtrapolationError) as info:
        scale_messages(RANGES, n_params=2.5e8, tokens=None, max_extrapolation=10)
    err = info.value
    assert err.param == "max_extrapolation"
    assert "more than 10x outside" in str(err) and "max_extrapolation=25" in str(err)
    shown = error_text(err, {"max_extrapolation": "--max-extrapolation"})
    assert "--max-extrapolation 25" in shown and "max_extrapolation=" not in shown
