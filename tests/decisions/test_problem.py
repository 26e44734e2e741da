"""The decision problem (bayesmix.decisions.problem): checked once, errors naming the Python
parameter (the CLI shows the flag instead, before reading any file); ``decide(posterior,
problem)`` and the keyword form give the same report; the frontier takes the same problem.

No MCMC: draws near a simulated M4 truth (LawDraws).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

import bayesmix as bm
from bayesmix import errors
from bayesmix.cli import main
from bayesmix.decisions.draws import LawDraws
from bayesmix.decisions.frontier import frontier
from bayesmix.decisions.guarantees import Guarantee
from bayesmix.decisions.objectives import Objective
from bayesmix.decisions.problem import DecisionProblem

TRAIN = ["web", "code", "books"]


@pytest.fixture(scope="module")
def draws() -> LawDraws:
    """120 M4 draws close to a simulated truth over 3 training and 3 validation domains."""
    runs, truth = bm.simulate(TRAIN, n_runs=8, random_seed=0)
    rng = np.random.default_rng(1)
    params = {
        k: truth[k] * rng.normal(1, 0.02, (120, *np.shape(truth[k]))) for k in ("m", "rho", "t")
    }
    return LawDraws(params, runs.train_domains, runs.eval_domains)


def test_the_problem_normalises_its_fields_and_is_public():
    problem = bm.DecisionProblem(
        objective="quantile:0.8", guarantees="no-worse:all=0.01@0.9", ci_kind="hdi"
    )
    assert problem.objective == Objective("quantile", 0.8)
    assert problem.guarantees == (Guarantee("no-worse", "all", 0.01, 0.9),)
    assert (problem.ci_prob, problem.ci_kind, problem.scale_options) == (0.9, "hdi", {})
    assert "DecisionProblem" in bm.__all__ and bm.DecisionProblem is DecisionProblem
    with pytest.raises(dataclasses.FrozenInstanceError):
        problem.ci_prob = 0.5  # type: ignore[misc]


@pytest.mark.parametrize(
    ("fields", "param", "start"),
    [
        ({"ci_prob": 1.5}, "ci_prob", "ci_prob=1.5: interval probability"),
        ({"ci_prob": "high"}, "ci_prob", "ci_prob='high' is not a number"),
        ({"ci_kind": "hpd"}, "ci_kind", "ci_kind='hpd': unknown interval kind"),
        ({"objective": "quantile:x"}, "objective", "objective='quantile:x': "),
        ({"guarantees": ["web=0.01"]}, "guarantees", "guarantees= holds 'web=0.01'"),
        ({"max_extrapolation": -1.0}, "max_extrapolation", "max_extrapolation=-1.0 is not"),
        ({"max_extrapolation": float("nan")}, "max_extrapolation", "max_extrapolation=nan"),
        ({"target": "web", "weights": {"web": 1}}, "target", "target='web' and weights"),
        ({"inputs": 5}, "inputs", "inputs=5 is not a mapping"),
        ({"constraints": [0.5, 0.5]}, "constraints", "constraints=list is not"),
    ],
)
def test_a_bad_field_names_its_parameter(fields, param, start):
    with pytest.raises(errors.BayesmixError) as info:
        DecisionProblem(**fields)
    assert info.value.param == param
    assert str(info.value).startswith(start)
    assert "--" not in str(info.value)


def test_decide_with_a_problem_equals_the_keyword_form(draws):
    cons = bm.Constraints.build(TRAIN, max_share={"code": 0.3})
    problem = DecisionProblem(constraints=cons, target="code", objective="cvar:0.8", ci_prob=0.8)
    by_problem = bm.decide(draws, problem, per_draw=False, random_seed=2)
    by_keywords = bm.decide(
        draws,
        constraints=cons,
        target="code",
        objective="cvar:0.8",
        ci_prob=0.8,
        per_draw=False,
        random_seed=2,
    )
    pd.testing.assert_frame_equal(by_problem.recommendation, by_keywords.recommendation)
    pd.testing.assert_frame_equal(by_problem.losses, by_keywords.losses)
    assert by_problem.objective == "cvar:0.8" and by_problem.prob == 0.8
    assert bool(cons.contains(by_problem.mixture.to_numpy()))


def test_a_problem_and_its_fields_at_once_are_refused(draws):
    with pytest.raises(
        errors.OptionError, match=r"problem= was given with its fields target"
    ) as info:
        bm.decide(draws, DecisionProblem(), target="code")
    assert info.value.param == "problem"
    with pytest.raises(errors.OptionError, match="is not a DecisionProblem"):
        bm.decide(draws, {"target": "code"})  # type: ignore[arg-type]
    with pytest.raises(errors.OptionError, match="problem= was given with its fields guarantees"):
        frontier(draws, DecisionProblem(target="code"), guards=["no-worse:all=0.01"])


def test_the_frontier_takes_the_problem_and_refuses_what_it_cannot_sweep(draws):
    problem = DecisionProblem(target="code", guarantees=["no-worse:all=0.005@0.8"])
    front = frontier(draws, problem, tolerances=[0.0, 0.01], random_seed=1)
    assert list(front.table["tolerance"]) == [0.0, 0.01] and front.target == "code"
    assert front.table["target_loss"].iloc[1] <= front.table["target_loss"].iloc[0] + 1e-12
    bad = [
        (dataclasses.replace(problem, objective="quantile:0.9"), {}, "objective"),
        (dataclasses.replace(problem, guarantees=()), {}, "guards"),
        (dataclasses.replace(problem, guarantees=["max-loss:web=9@0.9"]), {}, "guards"),
        (problem, {"probs": [0.5, 1.0]}, "probs"),
        (problem, {"probs": [0.5], "tolerances": [0.0]}, "tolerances"),
    ]
    for prob_, kwargs, param in bad:
        with pytest.raises(errors.OptionError) as info:
            frontier(draws, prob_, **kwargs)
        assert info.value.param == param and "--" not in str(info.value)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["optimize", "--ci-prob", "1.5"], "--ci-prob 1.5: interval probability must be in"),
        (["optimize", "--objective", "cvar:x"], "--objective 'cvar:x': "),
        (["optimize", "--no-worse", "web0.01"], "--no-worse 'web0.01' is not DOMAIN=BOUND@PROB"),
        (["frontier", "--target", "web", "--guard", "web0.01"], "--guard 'web0.01' is not"),
        (["frontier", "--target", "web", "--guard", "all=0.01", "--ci-prob", "2"], "--ci-prob 2.0"),
        (
            ["critical-share", "--original", "a", "--new", "b", "--tolerance", "-1"],
            "--tolerance -1.0 is not a number of nats >= 0",
        ),
    ],
)
def test_the_cli_shows_the_flag_and_fails_before_reading_the_posterior(
    argv, expected, tmp_path, capsys
):
    missing = tmp_path / "never-read.nc"  # the options fail first: the file is never opened
    code = main([argv[0], str(missing), *argv[1:]])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert expected in err, err
