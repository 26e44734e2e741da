"""``bayesmix propose`` end to end, as a user runs it: in-process through the CLI's ``main``
(conftest.run_cli: exit code, stdout, stderr as a subprocess gives them; the fit reuses the
session's compiled model). test_cli_model.py runs a fit in a real subprocess.

One full cycle fits:
init -> propose (initial design) -> simulated training -> ingest -> propose (fit) -> propose
again without new results (the posterior is reused, nothing is fitted). The other tests never
fit: pool mode before any result, and bad input.
"""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pandas as pd
import pytest
from conftest import SIM_DOMAINS, run_cli, train_simulated

from bayesmix.data.constraints import Constraints
from bayesmix.loop.ledger import Ledger, file_hash
from bayesmix.posterior.posterior import Posterior

MIX = [f"mix.{d}" for d in SIM_DOMAINS]


def bayesmix(*args, cwd) -> subprocess.CompletedProcess:
    return run_cli(*args, cwd=cwd)


train = train_simulated


def min_distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(((a[:, None] - b[None]) ** 2).sum(-1)).min())


@pytest.mark.slow
def test_init_propose_ingest_propose_cycle(tmp_path):
    done = bayesmix(
        "init",
        "--ledger",
        "exp.db",
        "--domains",
        ",".join(SIM_DOMAINS),
        "--max-share",
        "Pile-CC=0.6",
        "--min-share",
        "ArXiv=0.05",
        "--target",
        "Pile-CC=1",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr

    # no results yet: an initial design, no fit
    done = bayesmix("propose", "--ledger", "exp.db", "-n", 12, "--seed", 1, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "round 0: proposed 12 runs by initial-sobol" in done.stdout
    first = pd.read_csv(tmp_path / "exp-round0.csv")
    assert len(first) == 12 and not list(tmp_path.glob("*.nc"))

    # 10 runs finish, 2 stay pending
    train(first, first["run"][:10], seed=0).to_csv(tmp_path / "results.csv", index=False)
    done = bayesmix("ingest", "--ledger", "exp.db", "results.csv", cwd=tmp_path)
    assert done.returncode == 0, done.stderr

    # results arrived: fit (small MCMC), propose 4 runs away from the completed and pending
    done = bayesmix(
        "propose",
        "--ledger",
        "exp.db",
        "-n",
        4,
        "--draws",
        100,
        "--tune",
        150,
        "--chains",
        2,
        "--seed",
        2,
        "--out",
        "next.json",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "round 1: proposed 4 runs by thompson" in done.stdout
    post_path = tmp_path / "exp.posterior-round1.nc"
    post = Posterior.load(post_path)
    assert post.fit_data().n_runs == 10
    proposals = pd.DataFrame(json.loads((tmp_path / "next.json").read_text()))
    assert len(proposals) == 4 and (proposals["round"] == 1).all()
    with Ledger.open(tmp_path / "exp.db") as ledger:
        runs = ledger.runs()
        record = ledger.fit_records()[1]
        constraints = ledger.constraints
    new = runs[runs["round"] == 1]
    assert list(new["run"]) == list(proposals["run"])
    assert (new["posterior_hash"] == file_hash(post_path)).all()
    assert record["posterior_hash"] == file_hash(post_path) and record["n_runs"] == 10
    assert record["diagnostics_warning"] == post.diagnostics_warning
    # a failed gate is loud on stderr and recorded; 2 x 100 draws rarely pass it
    assert ("WARNING: posterior did not pass" in done.stderr) == (not record["diagnostics_ok"])
    x = proposals[MIX].to_numpy()
    assert constraints.contains(x).all()
    assert min_distance(x, first[MIX].to_numpy()) >= 0.05  # completed and pending runs

    # nothing new: the posterior is reused (no fit), round-1 runs now count as pending
    done = bayesmix(
        "propose",
        "--ledger",
        "exp.db",
        "-n",
        3,
        "--draws",
        100,
        "--tune",
        150,
        "--chains",
        2,
        "--strategy",
        "optimum-info",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "reusing exp.posterior-round1.nc" in done.stderr
    assert not (tmp_path / "exp.posterior-round2.nc").exists()
    third = pd.read_csv(tmp_path / "exp-round2.csv")
    assert (third["strategy"] == "optimum-info").all()
    assert min_distance(third[MIX].to_numpy(), np.vstack([x, first[MIX].to_numpy()])) >= 0.05
    with Ledger.open(tmp_path / "exp.db") as ledger:
        assert ledger.fit_records()[2]["reused"] is True


def test_pool_proposals_before_any_result(tmp_path):
    """A pool with sizes and token counts: infeasible rows are dropped, the chosen rows are
    recorded with their planned n_params and tokens."""
    done = bayesmix(
        "init",
        "--ledger",
        "exp.db",
        "--domains",
        ",".join(SIM_DOMAINS),
        "--max-share",
        "Github=0.3",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    rng = np.random.default_rng(0)
    mix = rng.dirichlet(np.ones(4), 40)
    pool = pd.DataFrame(mix, columns=list(SIM_DOMAINS))
    pool.insert(0, "run", [f"p{i}" for i in range(40)])
    pool["n_params"] = 1e6
    pool["tokens"] = np.where(np.arange(40) % 2, 1e9, 2e9)
    pool.to_csv(tmp_path / "pool.csv", index=False)
    feasible = Constraints.build(SIM_DOMAINS, max_share={"Github": 0.3}).contains(mix)
    done = bayesmix("propose", "--ledger", "exp.db", "-n", 5, "--pool", "pool.csv", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"{(~feasible).sum()} of 40 pool mixtures violate the constraints" in done.stdout
    out = pd.read_csv(tmp_path / "exp-round0.csv")
    assert (out["strategy"] == "initial-random").all()
    assert out["n_params"].eq(1e6).all() and out["tokens"].isin([1e9, 2e9]).all()
    rows = [int(np.argmin(np.abs(mix - r).sum(1))) for r in out[MIX].to_numpy()]
    np.testing.assert_allclose(out[MIX].to_numpy(), mix[rows])  # exactly pool rows
    assert feasible[rows].all() and len(set(rows)) == 5


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["-n", 4, "--strategy", "ucb"], ["unknown strategy 'ucb'", "thompson"]),
        (["-n", 0], ["-n must be >= 1"]),
        (["-n", 2, "--out", "next.txt"], ["next.txt", "a file ending in .csv or .json"]),
        (["-n", 2, "--pool", "bad_pool.csv"], ["bad_pool.csv", "unknown training domain 'web'"]),
        (["-n", 2, "--ledger", "missing.db"], ["missing.db", "no ledger file here"]),
        # the model is checked before anything is fitted or recorded
        (["-n", 2, "--model", "m7"], ["unknown model 'm7'"]),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, args, fragments):
    done = bayesmix("init", "--ledger", "exp.db", "--domains", ",".join(SIM_DOMAINS), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    pd.DataFrame({"web": [1.0]}).to_csv(tmp_path / "bad_pool.csv", index=False)
    argv = ["propose", *(["--ledger", "exp.db"] if "--ledger" not in args else []), *args]
    done = bayesmix(*argv, cwd=tmp_path)
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bayesmix propose: error: "), done.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    with Ledger.open(tmp_path / "exp.db") as ledger:
        assert len(ledger.runs()) == 0  # nothing recorded
