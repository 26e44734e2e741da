"""``bayesmix schedule``: the best multi-phase schedule of a ``<law>+phases`` posterior from
the command line, checked against ``decide_schedule`` in process."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import run_cli

import bayesmix as bm
from bayesmix.decisions.schedule import decide_schedule
from bayesmix.model.simulation_phases import simulate_phases

#: tests/laws/test_phases.py's truth and runs: the same model structure, compiled once.
DOMAINS = ("web", "code", "hq")
TRUTH = {
    "m": np.array([3.0, 2.5, 3.2]),
    "rho": np.array([0.3, 0.35, 0.3]),
    "t": np.array([[-1.2, 0.6, 0.6], [0.5, -1.5, 1.0], [0.4, 0.4, -0.8]]),
    "late_emphasis": np.array(2.0),
}


@pytest.fixture(scope="module")
def phases_posterior(tmp_path_factory):
    runs = simulate_phases("m4+phases", TRUTH, DOMAINS, DOMAINS, n_runs=30, random_seed=1)
    post = bm.fit(
        runs, "phases", draws=100, tune=200, chains=2, random_seed=1, warn=False, max_time=0
    )  # small MCMC: the schedule's arithmetic is tested here, not the gate
    return post, post.save(tmp_path_factory.mktemp("phases") / "phases.nc")


@pytest.mark.slow
def test_schedule_prints_and_writes_the_phases_of_decide_schedule(phases_posterior, tmp_path):
    post, path = phases_posterior
    out = tmp_path / "schedule.csv"
    bounds = ["--max-share", "hq=0.06", "--phase-max-share", "2:hq=0.3"]
    done = run_cli("schedule", path, "--fractions", "0.8,0.2", *bounds, "-o", out)
    assert done.returncode == 0, done.stderr
    assert "schedule over 2 phases (fractions 0.8, 0.2)" in done.stdout
    table = pd.read_csv(out)
    wide = table.pivot(index="row", columns="train_domain", values="share")[list(DOMAINS)]
    phases = [bm.Constraints.build(DOMAINS), bm.Constraints.build(DOMAINS, max_share={"hq": 0.3})]
    whole = bm.Constraints.build(DOMAINS, max_share={"hq": 0.06})
    expected = decide_schedule(post, [0.8, 0.2], constraints=phases, whole=whole)
    np.testing.assert_allclose(wide.loc[["1", "2"]].to_numpy(), expected.mixtures.to_numpy())
    np.testing.assert_allclose(wide.loc["static"].to_numpy(), expected.static.to_numpy())
    # the whole run's shares: the phases' mixtures weighted by their step fractions
    np.testing.assert_allclose(
        wide.loc["whole"].to_numpy(), 0.8 * wide.loc["1"] + 0.2 * wide.loc["2"], atol=1e-9
    )
    assert wide.loc["2", "hq"] <= 0.3 + 1e-9 and wide.loc["whole", "hq"] <= 0.06 + 1e-9
    phase_loss = table.loc[table["row"] == "1", "expected_loss"].iloc[0]
    assert phase_loss == pytest.approx(expected.expected_loss)
    assert f"gain {round(expected.gain, 4) + 0.0:.4f}" in done.stdout


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--fractions", "0.8,0.3"], "--fractions '0.8,0.3': each phase's share must be >= 0"),
        (["--fractions", "0.8,x"], "--fractions '0.8,x': not comma-separated numbers"),
        (["--fractions", "1", "--target", "nope"], "nope"),
        (
            ["--fractions", "0.8,0.2", "--phase-max-share", "3:hq=0.3"],
            "--phase-max-share '3:hq=0.3': not K:DOMAIN=SHARE with a phase K from 1 to 2",
        ),
    ],
)
def test_bad_schedule_options_are_one_line_exit_2(phases_posterior, tmp_path, args, fragment):
    _, path = phases_posterior
    done = run_cli("schedule", path, *args, "-o", tmp_path / "s.csv")
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith("bayesmix schedule: error: ") and fragment in lines[0]
    assert not (tmp_path / "s.csv").exists()


@pytest.mark.slow
def test_a_posterior_without_phases_is_refused(saved_posterior):
    done = run_cli("schedule", saved_posterior, "--fractions", "0.8,0.2")
    assert done.returncode == 2
    assert "law 'm4' is not a <law>+phases law" in done.stderr
