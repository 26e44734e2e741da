"""`bayesmix init`, `ingest`, `status` end to end, as a user runs them: in-process through the
CLI's ``main`` (conftest.run_cli: exit code, stdout, stderr as a subprocess gives them), and one
refused command in a real subprocess (exit 2, one line, no traceback)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
from conftest import run_cli

from bayesmix.loop.ledger import Ledger


def bayesmix(*args, cwd) -> subprocess.CompletedProcess:
    return run_cli(*args, cwd=cwd)


def bayesmix_process(*args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bayesmix", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_one_line_error(proc, command: str, *fragments: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"bayesmix {command}: error: ")
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def fake_results(proposals: pd.DataFrame, runs: list[str]) -> pd.DataFrame:
    """Results a training job would report: the proposed mixture and made-up losses."""
    out = proposals[proposals["run"].isin(runs)].drop(columns=["round", "strategy"])
    out["loss.web"] = 3.0 - out["mix.web"]
    out["loss.code"] = 2.5 - out["mix.code"]
    return out


def test_init_status_ingest_status(tmp_path):
    proc = bayesmix(
        "init",
        "--ledger",
        "exp.db",
        "--domains",
        "web,code,books",
        "--eval-domains",
        "web,code",
        "--min-share",
        "web=0.2",
        "--max-share",
        "books=0.4",
        "--fixed",
        "code=0.1",
        "--initial-design",
        8,
        "--seed",
        5,
        "--target",
        "web=2,code=1",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "proposed 8 runs (r0001 to r0008), written to exp-round0.csv" in proc.stdout
    proposals = pd.read_csv(tmp_path / "exp-round0.csv")
    assert list(proposals.columns) == [
        "run",
        "round",
        "strategy",
        "mix.web",
        "mix.code",
        "mix.books",
    ]
    assert (proposals["strategy"] == "initial-sobol").all() and (proposals["round"] == 0).all()
    mix = proposals[["mix.web", "mix.code", "mix.books"]].to_numpy()
    np.testing.assert_allclose(mix.sum(axis=1), 1.0, atol=1e-12)
    assert (mix[:, 0] >= 0.2).all() and (mix[:, 2] <= 0.4).all()
    np.testing.assert_allclose(mix[:, 1], 0.1)

    proc = bayesmix("status", "--ledger", "exp.db", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "constraints: web >= 0.2, code = 0.1, books <= 0.4" in proc.stdout
    assert "runs: 8 (8 proposed)" in proc.stdout
    assert '"target_weights": {"code": 1.0, "web": 2.0}' in proc.stdout

    fake_results(proposals, ["r0001", "r0002", "r0003"]).to_csv(tmp_path / "res.csv", index=False)
    proc = bayesmix("ingest", "--ledger", "exp.db", "res.csv", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "3 newly completed, 6 losses added in 3 checkpoints" in proc.stdout
    assert "completed: r0001, r0002, r0003" in proc.stdout
    proc = bayesmix("ingest", "--ledger", "exp.db", "res.csv", cwd=tmp_path)  # again: no-op
    assert proc.returncode == 0 and "0 losses added" in proc.stdout
    assert "6 already recorded" in proc.stdout

    proc = bayesmix(
        "status",
        "--ledger",
        "exp.db",
        "--set",
        "r0004=running",
        "--set",
        "r0005=failed",
        "--json",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    status = json.loads(proc.stdout)
    assert status["by_status"] == {
        "proposed": 3,
        "running": 1,
        "completed": 3,
        "failed": 1,
        "abandoned": 0,
    }
    assert status["recorded_losses"] == 6
    assert [r["status"] for r in status["run_list"]][:5] == ["completed"] * 3 + [
        "running",
        "failed",
    ]
    proc = bayesmix("status", "--ledger", "exp.db", cwd=tmp_path)
    row = next(line for line in proc.stdout.splitlines() if line.startswith("r0004"))
    assert row.split()[:5] == ["r0004", "0", "initial-sobol", "running", "0"]
    with Ledger.open(tmp_path / "exp.db") as led:
        assert led.settings["target_weights"] == {"web": 2.0, "code": 1.0}
        assert led.run_table().n_runs == 3


def test_init_from_runs_then_design_avoids_them(tmp_path):
    frame = pd.DataFrame(
        {
            "run": ["a", "b"],
            "mix.x": [0.3, 0.6],
            "mix.y": [0.7, 0.4],
            "loss.x": [3.0, 2.8],
            "loss.y": [2.0, 2.4],
        }
    )
    frame.to_csv(tmp_path / "past.csv", index=False)
    proc = bayesmix(
        "init",
        "--ledger",
        "exp.db",
        "--runs",
        "past.csv",
        "--initial-design",
        4,
        "--min-distance",
        0.05,
        "--out",
        "first.json",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "read 2 runs, 2 added as new runs" in proc.stdout
    first = json.loads((tmp_path / "first.json").read_text())
    assert [p["run"] for p in first] == ["r0001", "r0002", "r0003", "r0004"]
    design = np.array([[p["mix.x"], p["mix.y"]] for p in first])
    past = frame[["mix.x", "mix.y"]].to_numpy()
    assert np.sqrt(((design[:, None] - past[None]) ** 2).sum(-1)).min() >= 0.05
    with Ledger.open(tmp_path / "exp.db") as led:
        assert led.train_domains == ("x", "y") and led.eval_domains == ("x", "y")
        runs = led.runs()
        assert runs.set_index("run").loc[["a", "b"], "strategy"].tolist() == ["imported"] * 2


def test_init_from_regmix_runs(tmp_path, shared_data):
    regmix = shared_data / "regmix"
    proc = bayesmix(
        "init",
        "--ledger",
        "exp.db",
        "--runs",
        regmix / "train_mixture_1m.csv",
        regmix / "train_pile_loss_1m.csv",
        "--renormalize",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    with Ledger.open(tmp_path / "exp.db") as led:
        assert len(led.train_domains) == 17 and len(led.eval_domains) == 13
        assert led.run_table().n_runs == 512


def test_help(tmp_path):
    for command in ("init", "ingest", "status"):
        proc = bayesmix(command, "--help", cwd=tmp_path)
        assert proc.returncode == 0 and "--ledger" in proc.stdout


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    proc = bayesmix_process("status", "--ledger", "missing.db", cwd=tmp_path)
    assert_one_line_error(proc, "status", "missing.db", "no ledger file", "bayesmix init")
    proc = bayesmix("ingest", "--ledger", "missing.db", "res.csv", cwd=tmp_path)
    assert_one_line_error(proc, "ingest", "no ledger file")
    assert not (tmp_path / "missing.db").exists()

    proc = bayesmix(
        "init",
        "--ledger",
        "exp.db",
        "--domains",
        "web,code",
        "--max-share",
        "wbe=0.5",
        cwd=tmp_path,
    )
    assert_one_line_error(proc, "init", "unknown training domain 'wbe'", "did you mean 'web'")
    proc = bayesmix(
        "init",
        "--ledger",
        "exp.db",
        "--domains",
        "web,code",
        "--max-share",
        "web:0.5",
        cwd=tmp_path,
    )
    assert_one_line_error(proc, "init", "--max-share 'web:0.5' is not NAME=VALUE")
    proc = bayesmix(
        "init",
        "--ledger",
        "exp.db",
        "--domains",
        "web,code",
        "--min-share",
        "web=0.7,code=0.7",
        cwd=tmp_path,
    )
    assert_one_line_error(proc, "init", "sum to 1.4 > 1")
    proc = bayesmix(
        "init",
        "--ledger",
        "exp.db",
        "--domains",
        "a,b,c",
        "--fixed",
        "a=0.5,b=0.5",
        "--initial-design",
        3,
        cwd=tmp_path,
    )
    assert_one_line_error(proc, "init", "single feasible mixture")
    proc = bayesmix(
        "init",
        "--ledger",
        "exp.db",
        "--domains",
        "a,b",
        "--initial-design",
        3,
        "--out",
        "props.txt",
        cwd=tmp_path,
    )
    assert_one_line_error(proc, "init", "props.txt", ".csv or .json")
    assert not (tmp_path / "exp.db").exists()  # no half-made ledger after a refused init

    assert (
        bayesmix(
            "init",
            "--ledger",
            "exp.db",
            "--domains",
            "web,code",
            "--initial-design",
            2,
            cwd=tmp_path,
        ).returncode
        == 0
    )
    before = (tmp_path / "exp.db").read_bytes()
    proc = bayesmix("init", "--ledger", "exp.db", "--domains", "web,code", cwd=tmp_path)
    assert_one_line_error(proc, "init", "refusing to overwrite")
    assert (tmp_path / "exp.db").read_bytes() == before

    proposals = pd.read_csv(tmp_path / "exp-round0.csv")
    fake_results(proposals, ["r0001"]).rename(columns={"loss.code": "loss.cdoe"}).to_csv(
        tmp_path / "typo.csv", index=False
    )
    proc = bayesmix("ingest", "--ledger", "exp.db", "typo.csv", cwd=tmp_path)
    assert_one_line_error(
        proc, "ingest", "typo.csv", "unknown validation domain 'cdoe'", "did you mean 'code'"
    )
    (tmp_path / "bad.csv").write_text("run,mix.web,mix.code,loss.web\nr0001,0.5,zero,3.1\n")
    proc = bayesmix("ingest", "--ledger", "exp.db", "bad.csv", cwd=tmp_path)
    assert_one_line_error(proc, "ingest", "bad.csv", "row 2", "mix.code", "not a number")
    res = fake_results(proposals, ["r0001"]).drop(columns="loss.code")
    res.assign(run="r0099").to_csv(tmp_path / "unknown.csv", index=False)
    proc = bayesmix("ingest", "--ledger", "exp.db", "unknown.csv", cwd=tmp_path)
    assert_one_line_error(proc, "ingest", "'r0099'", "--import-unknown")
    proc = bayesmix("status", "--ledger", "exp.db", "--set", "r0001=done", cwd=tmp_path)
    assert_one_line_error(proc, "status", "unknown status 'done'")
    proc = bayesmix("status", "--ledger", "typo.csv", cwd=tmp_path)
    assert_one_line_error(proc, "status", "typo.csv", "not a bayesmix ledger")
    with Ledger.open(tmp_path / "exp.db") as led:  # nothing above changed the ledger
        assert led.summary()["by_status"]["proposed"] == 2
        assert led.summary()["recorded_losses"] == 0
