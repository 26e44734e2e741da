"""Backtests within the proxies (bayesmix.scaling.backtesting, ``bayesmix backtest``): which splits
a run table allows, and, on simulated runs whose size and step scaling are known, that both
splits refit, predict what was held out and learn an extrapolation error.

One CLI run (module fixture, small MCMC) serves the slow tests; it backtests the table of the
pipeline's tests (tests/scaling/test_pipeline.py), whose size split the pipeline's own backtest
refits too, so those refits share their compiled curve models.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import NESTED_DOMAINS, nested_runs

from bayesmix.cli import main
from bayesmix.errors import BayesmixError, OptionError
from bayesmix.model.simulation import simulate
from bayesmix.posterior import extrapolation
from bayesmix.scaling.backtesting import plan_splits, target_distance

DOMAINS = ["Github", "Books3", "Pile-CC"]
SIZES = [2e7, 5e7, 1.25e8]
STEPS = [1000, 2000, 3000, 4000, 6000, 9000]


@pytest.fixture(scope="module")
def sim():
    """10 mixtures x 3 sizes x 6 steps from a known M4 law with power laws in N and D."""
    return simulate(DOMAINS, n_runs=10, random_seed=7, sizes=SIZES, steps=STEPS, noise_sd=0.01)


def test_splits_hold_out_the_largest_size_and_the_latest_steps(sim):
    runs, _ = sim
    splits, notes = plan_splits(runs)
    assert [s.kind for s in splits] == ["size", "steps"]
    assert len(notes) == 1 and notes[0].startswith("assumed: a constant learning rate")
    size, steps = splits
    fitted = size.fitted.to_tidy()
    assert set(fitted["n_params"]) == {2e7, 5e7}
    held = size.heldout.to_tidy()
    assert set(held["n_params"]) == {1.25e8} and set(held["step"]) == {9000}
    assert size.heldout.n_runs == 10
    assert size.ranges["n_params"] == (2e7, 5e7)
    # steps: fitted up to 9000 / 3 at every size, the largest size's last checkpoint predicted
    fitted = steps.fitted.to_tidy()
    assert fitted["step"].max() == 3000 and set(fitted["n_params"]) == set(SIZES)
    held = steps.heldout.to_tidy()
    assert set(held["step"]) == {9000} and set(held["n_params"]) == {1.25e8}
    assert steps.ranges["tokens"][1] == 3000 * 1_048_576


def test_splits_that_cannot_be_made_are_named(sim):
    runs, _ = sim
    two_sizes = runs.select([r for r in runs.runs if not r.startswith("125M")])
    splits, notes = plan_splits(two_sizes, max_step=4000)
    assert splits == []
    assert any("no size backtest: 2 model size(s)" in n for n in notes)
    assert any("no steps backtest: fewer than 3 checkpoints" in n for n in notes)
    with pytest.raises(OptionError, match="step_ratio"):
        plan_splits(runs, step_ratio=1.0)
    with pytest.raises(OptionError, match="size_splits"):
        plan_splits(runs, size_splits=-1)
    # 3 sizes allow one size split however many are asked for; 0 asks for none
    assert [s.kind for s in plan_splits(runs, size_splits=3)[0]] == ["size", "steps"]
    assert [s.kind for s in plan_splits(runs, size_splits=0)[0]] == ["steps"]
    final = runs.final()
    no_steps = type(final)(
        final.to_tidy().drop(columns=["step", "tokens"]), final.train_domains, final.eval_domains
    )
    with pytest.raises(BayesmixError, match="need checkpoints with model sizes"):
        plan_splits(no_steps)


def test_target_distance_is_measured_from_the_fitted_checkpoints(sim):
    runs, _ = sim
    u = target_distance(runs, n_params=5e8, steps=27000)
    assert u == pytest.approx(np.hypot(np.log(5e8 / 1.25e8), np.log(27000 / 9000)))
    # with max_step the proxies end earlier, so the same target is further away
    assert target_distance(runs, n_params=5e8, steps=27000, max_step=3000) > u
    assert target_distance(runs, n_params=1e8, steps=9000) == 0.0


@pytest.fixture(scope="module")
def cli_backtest(tmp_path_factory):
    """``bayesmix backtest`` on 14 mixtures x 20M, 50M, 125M x steps 1000-8000; step ratio 2
    (the table's 4 checkpoints allow a steps split at 8000 / 2, not at 8000 / 3)."""
    runs, _ = nested_runs()
    folder = tmp_path_factory.mktemp("backtest")
    src = folder / "runs.csv"
    runs.to_tidy().to_csv(src, index=False)
    out = folder / "backtest.json"
    args = ["backtest", str(src), "-o", str(out), "--imputations", "2", "--draws", "150"]
    args += ["--tune", "300", "--chains", "2", "--seed", "3", "--step-ratio", "2", "--quiet"]
    return main(args), out


@pytest.mark.slow
def test_cli_backtest_refits_both_splits_and_learns_the_error(cli_backtest, capsys):
    code, out = cli_backtest
    assert code == 0
    bt = json.loads(out.read_text())
    summary = {s: i for i, s in enumerate(bt["summary"]["split"])}
    assert set(summary) == {"size", "steps", "all"}
    n = bt["summary"]["n"]
    assert n[summary["size"]] == n[summary["steps"]] == 14 * len(NESTED_DOMAINS)
    rec = bt["records"]
    dist = dict(zip(rec["split"], rec["distance"], strict=True))
    assert dist["size"] == pytest.approx(np.log(1.25e8 / 5e7))
    assert dist["steps"] == pytest.approx(np.log(8000 / 4000))
    # The simulated runs follow the pipeline's own laws: the refits must predict the held-out
    # losses well within how far they move from the fitted range (on average 0.17 nats from
    # 50M to 125M, 0.31 from step 4000 to 8000), and their 90% intervals must hold most of
    # them (42 correlated losses per split: a shifted exponent moves a whole domain, so
    # coverage moves in steps of a third). Measured with seeds 3, 4, 5: MAE 0.028-0.061
    # (size; its 2 imputations of one extrapolation from two sizes) and 0.015-0.019 (steps),
    # coverage 0.79-1.0; the bounds are below half the moves.
    for split, mae in (("size", 0.075), ("steps", 0.05)):
        assert bt["summary"]["mae"][summary[split]] < mae
        assert bt["summary"]["coverage"][summary[split]] >= 0.6
    cal = extrapolation.Calibration.from_json(json.dumps(bt["calibration"]))
    assert cal.n_splits == 2 and cal.n_residuals == 84
    assert 0.1 < cal.kappa_mean < 5 and cal.learned_axes == ["size", "tokens"]
    # the size split moved only the size, the steps split only the tokens
    moved = pd.DataFrame(rec).groupby("split")[["distance_size", "distance_tokens"]].max()
    assert moved.loc["size", "distance_tokens"] == 0 and moved.loc["steps", "distance_size"] == 0
    assert bt["verdict"].startswith("backtests (nested): 90% intervals covered")
    assert len(bt["splits"]) == 2 and all(s["seconds"] > 0 for s in bt["splits"])


def test_cli_backtest_refuses_bad_options_in_one_line(sim, tmp_path, capsys):
    runs, _ = sim
    src = tmp_path / "runs.csv"
    runs.to_tidy().to_csv(src, index=False)
    assert main(["backtest", str(src), "--draws", "0"]) == 2
    assert "--draws must be >= 1" in capsys.readouterr().err
    assert main(["backtest", str(src), "-o", str(src)]) == 2  # never overwrites an input
    assert "input" in capsys.readouterr().err
    assert main(["backtest", str(src), "-o", str(tmp_path / "bt.txt")]) == 2
    assert ".json" in capsys.readouterr().err


def test_four_sizes_give_a_second_longer_size_split():
    runs, _ = simulate(DOMAINS, n_runs=4, random_seed=8, sizes=[2e7, 5e7, 1e8, 2e8], steps=STEPS)
    splits, _ = plan_splits(runs)
    kinds = {s.kind: s for s in splits}
    assert list(kinds) == ["size", "size2", "steps"]
    assert kinds["size"].ranges["n_params"][1] == 1e8
    assert kinds["size2"].ranges["n_params"][1] == 5e7  # 2e8 predicted from 2e7-5e7
    assert set(kinds["size2"].heldout.to_tidy()["n_params"]) == {2e8}
