"""``bayesmix change-domains``: a live experiment's domain set changed from the shell; the
status shows runs per version; refused changes exit 2 with one line and change nothing (one in a
real subprocess: no traceback)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import pandas as pd
import pytest
from conftest import run_cli

from bayesmix.loop.ledger import Ledger


def rows(path) -> list:
    con = sqlite3.connect(path)
    try:
        return (
            con.execute("SELECT * FROM runs ORDER BY seq").fetchall()
            + con.execute("SELECT * FROM domain_sets").fetchall()
        )
    finally:
        con.close()


@pytest.fixture
def experiment(tmp_path):
    """A ledger with 6 proposed runs, 4 of them completed; and a map v1 -> v2."""
    proc = run_cli(
        "init",
        "--ledger",
        "exp.db",
        "--domains",
        "web,code,books",
        "--eval-domains",
        "web,code",
        "--max-share",
        "code=0.6",
        "--initial-design",
        "6",
        "--seed",
        "1",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    props = pd.read_csv(tmp_path / "exp-round0.csv")
    done = props.iloc[:4].drop(columns=["round", "strategy"])
    done["loss.web"], done["loss.code"] = 3.0 - done["mix.web"], 2.5 - done["mix.code"]
    done.to_csv(tmp_path / "res.csv", index=False)
    assert run_cli("ingest", "--ledger", "exp.db", "res.csv", cwd=tmp_path).returncode == 0
    (tmp_path / "v2.toml").write_text(
        'from = "v1"\nto = "v2"\nadd = ["forum"]\n[merge]\ntext = ["web", "books"]\n'
    )
    return tmp_path, props


def test_change_domains_then_status_shows_runs_per_version(experiment):
    folder, props = experiment
    proc = run_cli("change-domains", "--ledger", "exp.db", "--map", "v2.toml", cwd=folder)
    assert proc.returncode == 0, proc.stderr
    pending = ", ".join(props["run"].iloc[4:])
    assert "domain set v1 -> v2 (version 2): 3 -> 3 training domains (text, code, forum)" in (
        proc.stdout
    )
    assert f"abandoned 2 proposed run(s) of v1 ({pending})" in proc.stdout
    with Ledger.open(folder / "exp.db") as led:
        assert led.domain_set == "v2" and led.train_domains == ("text", "code", "forum")
        assert led.constraints.upper.tolist() == [1.0, 0.6, 1.0]  # code's bound carried
        fit_table = led.run_table()
    assert fit_table.n_runs == 4 and fit_table.train_domains == ("text", "code", "forum")
    expected = (props["mix.web"] + props["mix.books"]).iloc[:4].to_numpy()
    assert fit_table.mixtures["text"].to_numpy() == pytest.approx(expected, abs=1e-12)

    status = run_cli("status", "--ledger", "exp.db", cwd=folder)
    assert status.returncode == 0, status.stderr
    assert "domain sets (2; current v2):" in status.stdout
    assert "v1 (web, code, books): 6 runs (4 completed, 2 abandoned); 4 in the fit" in status.stdout
    assert "v2 (text, code, forum): 0 runs (no runs); 0 in the fit" in status.stdout
    as_json = json.loads(run_cli("status", "--ledger", "exp.db", "--json", cwd=folder).stdout)
    assert [(s["name"], s["in_fit"]) for s in as_json["domain_sets"]] == [("v1", 4), ("v2", 0)]
    assert {r["domain_set"] for r in as_json["run_list"]} == {"v1"}


def test_pending_runs_remapped_with_new_constraints_as_json(experiment):
    folder, props = experiment
    (folder / "unlabelled.toml").write_text('add = ["forum"]\n[merge]\ntext = ["web", "books"]\n')
    proc = run_cli(
        "change-domains",
        "--ledger",
        "exp.db",
        "--map",
        "unlabelled.toml",
        "--pending",
        "remap",
        "--max-share",
        "forum=0.2",
        "--name",
        "swarm2",
        "--json",
        cwd=folder,
    )
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    assert record["name"] == "swarm2" and record["remapped"] == props["run"].iloc[4:].tolist()
    assert record["constraints"]["upper"] == [1.0, 1.0, 0.2]  # the bounds given replace all
    with Ledger.open(folder / "exp.db") as led:
        runs = led.runs("proposed")
    assert (runs["domain_set"] == "swarm2").all() and (runs["mix.forum"] == 0).all()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--map", "bad.toml"], "field 'merge.text'"),
        (["--map", "v2.toml", "--name", "v1"], "--name"),
        (
            ["--map", "v2.toml", "--name", "swarm2"],
            "--name 'swarm2' differs from the map's field 'to'",
        ),
        (["--map", "v2.toml", "--max-share", "nope=0.2"], "nope"),
        (["--map", "missing.toml"], "missing.toml"),
    ],
)
def test_refused_changes_exit_2_with_one_line_and_change_nothing(experiment, args, fragment):
    folder, _ = experiment
    (folder / "bad.toml").write_text('[merge]\ntext = ["web", "wiki"]\n')
    before = rows(folder / "exp.db")
    proc = run_cli("change-domains", "--ledger", "exp.db", *args, cwd=folder)
    assert proc.returncode == 2, proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bayesmix change-domains: error: ")
    assert fragment in lines[0] and "Traceback" not in proc.stderr
    assert rows(folder / "exp.db") == before


def test_a_change_while_runs_are_running_is_refused_in_a_real_process(experiment):
    folder, props = experiment
    run = props["run"].iloc[4]
    proc = run_cli("status", "--ledger", "exp.db", "--set", f"{run}=running", cwd=folder)
    assert proc.returncode == 0, proc.stderr
    before = rows(folder / "exp.db")
    proc = subprocess.run(
        [sys.executable, "-m", "bayesmix", "change-domains", "--ledger", "exp.db"]
        + ["--map", "v2.toml"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert f"running under domain set 'v1' ({run})" in proc.stderr
    assert rows(folder / "exp.db") == before
