"""``bayesmix validate`` end to end: exit 0 with a summary, 2 with one line. In-process through
the CLI's ``main`` (conftest.run_cli), the first refused input in a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_cli

from bayesmix.model.simulation import simulate

ROOT = Path(__file__).resolve().parents[2]


def bayesmix(*args) -> subprocess.CompletedProcess:
    return run_cli(*args, cwd=ROOT)


def bayesmix_process(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bayesmix", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_one_line_error(proc, *fragments):
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("bayesmix validate: error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    assert proc.stdout == ""


def test_regmix_pair_summary(shared_data):
    d = shared_data / "regmix"
    proc = bayesmix("validate", d / "train_mixture_1m.csv", d / "train_pile_loss_1m.csv")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "runs:          512" in out
    assert "training:      17 domains" in out and "validation:    13 domains" in out
    assert "missing:       0 of 6656 losses" in out
    # the proportion table has one line per training domain with its min and max share
    assert any(
        line.split()[:1] == ["pile_cc"] and len(line.split()) == 3 for line in out.splitlines()
    )


def test_ye_json_summary(shared_data):
    proc = bayesmix(
        "validate", "--json", "--format", "mixinglaws", shared_data / "mixinglaws" / "5Mix"
    )
    assert proc.returncode == 0, proc.stderr
    s = json.loads(proc.stdout)
    assert len(s["train_domains"]) == 5 and len(s["eval_domains"]) == 22
    assert s["sizes"] == [7e7, 1.6e8, 3.05e8, 4.1e8, 1e9]
    assert s["steps"]["count"] >= 10
    assert any("proportions.txt" in note for note in s["notes"])


def test_simulated_tidy_file(tmp_path):
    table, _ = simulate(3, 3, 8, random_seed=1, sizes=[7e7], steps=[100, 200])
    path = tmp_path / "runs.csv"
    table.to_tidy().to_csv(path, index=False)
    proc = bayesmix("validate", path)
    assert proc.returncode == 0, proc.stderr
    assert "runs:          8" in proc.stdout and "records:       16" in proc.stdout
    assert "sizes:         70M" in proc.stdout and "steps:         2 (100 to 200)" in proc.stdout


def test_renormalize_flag(tmp_path):
    path = tmp_path / "runs.csv"
    path.write_text("run,mix.a,mix.b,loss.a\nr1,0.55,0.5,2.0\n")
    assert_one_line_error(bayesmix_process("validate", path), "runs.csv", "row 2", "--renormalize")
    proc = bayesmix("validate", "--renormalize", path)
    assert proc.returncode == 0, proc.stderr
    assert "note: renormalised 1 of 1 records" in proc.stdout


@pytest.mark.parametrize(
    "content, fragments",
    [
        (None, ["missing.csv", "not found"]),
        (b"\x89PNG\x00\x00\xff\xfe", ["bad.csv", "UTF-8"]),
        (b"run,mix.a,mix.b,loss.a\nr1,0.5,0.5,abc\n", ["bad.csv", "row 2", "'loss.a'"]),
        (b"run,mix.a,mix.b,loss.a\nr1,0.5,0.5,2,7\n", ["bad.csv", "row 2", "5 fields"]),
        (b"", ["bad.csv", "empty"]),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, content, fragments):
    if content is None:
        path = tmp_path / "missing.csv"
    else:
        path = tmp_path / "bad.csv"
        path.write_bytes(content)
    assert_one_line_error(bayesmix("validate", path), *fragments)


def test_wrong_format_option(tmp_path):
    path = tmp_path / "runs.csv"
    path.write_text("run,mix.a,mix.b,loss.a\nr1,0.5,0.5,2.0\n")
    assert_one_line_error(
        bayesmix("validate", "--format", "mixinglaws", path),
        "runs.csv",
        "row 1",
        "3 tab-separated fields",
    )


def test_json_lists_every_bad_row(tmp_path):
    runs, _ = simulate(["web", "code"], n_runs=6, random_seed=0)
    frame = runs.to_tidy()
    frame.loc[1, "mix.web"] = -0.5  # row 3 of the file
    frame.loc[4, "loss.code"] = float("inf")  # row 6
    path = tmp_path / "bad.csv"
    frame.to_csv(path, index=False)
    proc = bayesmix("validate", "--json", path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    out = json.loads(proc.stdout)
    assert out["ok"] is False and out["truncated"] is False
    assert [(e["row"], e["column"]) for e in out["errors"]] == [(3, "mix.web"), (6, "loss.code")]
    assert all(e["source"] == str(path) and e["problem"] for e in out["errors"])
    # without --json: the one-line error of the first bad row, as before
    assert_one_line_error(bayesmix("validate", path), "row 3", "mix.web")
    good = tmp_path / "good.csv"
    runs.to_tidy().to_csv(good, index=False)
    assert json.loads(bayesmix("validate", "--json", good).stdout)["ok"] is True
