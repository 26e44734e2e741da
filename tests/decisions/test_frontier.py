"""The trade-off frontier (bayesmix.decisions.frontier): monotone in the tolerance and the
probability, and ``bayesmix frontier`` end to end.

No MCMC: the draws and the saved posterior of tests/decisions/test_guarantees.py (imported, not
copied).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

# the draws, the saved posterior and the CLI helper of the guarantees' tests
from test_guarantees import cli, five_draws, saved_posterior

from bayesmix.data.constraints import Constraints
from bayesmix.decisions.frontier import frontier


@pytest.fixture(scope="module")
def five():
    return five_draws()


@pytest.fixture(scope="module")
def posterior_file(tmp_path_factory):
    return saved_posterior(tmp_path_factory.mktemp("frontier"))


def test_frontier_is_monotone(five):
    c = Constraints.build(five.train_domains)
    front = frontier(
        five,
        target="d1",
        guards=["no-worse:all=0.01@0.9"],
        constraints=c,
        tolerances=np.linspace(0, 0.03, 7),
    )
    t = front.table
    assert list(t["tolerance"]) == pytest.approx(list(np.linspace(0, 0.03, 7)))
    assert t["feasible"].all()  # tolerance 0: the baseline itself is feasible
    assert np.all(np.diff(t["target_loss"]) <= 1e-12)
    assert t["target_loss"].iloc[-1] < t["target_loss"].iloc[0] - 0.01  # tolerance buys loss
    assert (t["price"] >= -1e-12).all() and (t["tightest_prob"] >= 0.9).all()
    shares = t[[f"share.{d}" for d in five.train_domains]].to_numpy()
    np.testing.assert_allclose(shares.sum(axis=1), 1.0)
    # the probability sweep: more certainty never lowers the loss
    byp = frontier(
        five, target="d1", guards=["no-worse:all=0.01@0.9"], probs=[0.5, 0.7, 0.9, 0.97]
    ).table
    assert list(byp["prob"]) == [0.5, 0.7, 0.9, 0.97]
    assert np.all(np.diff(byp["target_loss"]) >= -1e-12)


def test_cli_frontier_end_to_end(posterior_file, tmp_path, capsys):
    table, fig = tmp_path / "front.csv", tmp_path / "front.png"
    args = [
        "frontier",
        posterior_file,
        "--target",
        "code",
        "--guard",
        "all=0.01@0.9",
        "--tolerances",
        "0:0.02:0.005",
        "-o",
        table,
        "--plot",
        fig,
        "--quiet",
    ]
    code, out, err = cli(capsys, *args)
    assert code == 0, err
    front = pd.read_csv(table)
    assert list(front["tolerance"]) == pytest.approx([0, 0.005, 0.01, 0.015, 0.02])
    assert np.all(np.diff(front["target_loss"]) <= 1e-12)
    assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Frontier of code's expected loss" in out
    # never overwrite without --force; JSON by extension
    before = table.read_bytes()
    code, _, err = cli(capsys, *args)
    assert code == 2 and len(err.strip().splitlines()) == 1 and table.read_bytes() == before
    code, _, err = cli(capsys, *args, "--force")
    assert code == 0, err
    js = tmp_path / "front.json"
    code, _, err = cli(
        capsys,
        "frontier",
        posterior_file,
        "--target",
        "code",
        "--guard",
        "all=0.01",
        "--probs",
        "0.6,0.9",
        "-o",
        js,
        "--quiet",
    )
    assert code == 0, err
    rows = json.loads(js.read_text())
    assert [r["prob"] for r in rows] == [0.6, 0.9]
    assert rows[0]["target_loss"] <= rows[1]["target_loss"] + 1e-12


def test_a_frontier_with_no_feasible_point_names_the_guarantee(posterior_file, capsys):
    """A max-loss guard no mixture meets: one line naming it, exit 2 (not a table of NaN)."""
    args = ["frontier", posterior_file, "--target", "code", "--guard", "all=0.01@0.9"]
    code, _, err = cli(capsys, *args, "--max-loss", "web=0.5@0.99", "--quiet")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert "no point of the frontier meets every guarantee" in lines[0] and "web" in lines[0]


def test_a_sweep_is_counted_before_it_is_built(posterior_file, capsys):
    code, _, err = cli(
        capsys,
        "frontier",
        posterior_file,
        "--target",
        "code",
        "--guard",
        "all=0.01@0.9",
        "--tolerances",
        "0:1:1e-12",
    )
    assert code == 2 and "has 1000000000001 points (at most 200)" in err
