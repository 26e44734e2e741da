"""`bayesmix run` on Slurm through submitit (its local mode) and the per-round hook (MLflow)."""

from __future__ import annotations

import sys

import pandas as pd
import pytest

from bayesmix.loop.executors import LocalExecutor, get_executor
from bayesmix.loop.experiment import Experiment
from bayesmix.loop.ledger import Ledger
from bayesmix.loop.runner import RoundReport, Runner

pytestmark = pytest.mark.filterwarnings("ignore::bayesmix.posterior.diagnostics.ConvergenceWarning")
DOMAINS = ["web", "code"]
TRAIN = """
import json, os, sys
run, mix_file, out = sys.argv[1:4]
mix = json.load(open(mix_file))
rows = ["run,mix.web,mix.code,loss.web,loss.code",
        f"{run},{mix['web']!r},{mix['code']!r},{3.0 - mix['web']!r},{3.0 - mix['code']!r}"]
open(out + ".tmp", "w").write("\\n".join(rows) + "\\n"); os.replace(out + ".tmp", out)
"""


@pytest.fixture
def loop(tmp_path):
    (tmp_path / "train.py").write_text(TRAIN)
    exp = Experiment.create(tmp_path / "exp.db", DOMAINS, draws=100, tune=100, chains=2)
    command = f"{sys.executable} {tmp_path / 'train.py'} {{run}} {{mixture_file}} {{out}}"
    return exp, command


def test_slurm_executor_runs_the_loop_through_submitit(loop, tmp_path):
    pytest.importorskip("submitit")
    exp, command = loop
    executor = get_executor(
        "slurm", 2, slurm={"cluster": "local", "timeout_min": 5}, folder=tmp_path / "slurm"
    )
    summary = Runner(exp, command, executor, batch=2, retries=0).run(1, recommend=False)
    assert len(summary.completed) == 2 and not summary.failed
    with Ledger.open(exp.path) as led:
        assert set(led.runs()["status"]) == {"completed"}
    assert any((tmp_path / "slurm").iterdir())  # submitit's own files are kept apart


def test_slurm_options_need_the_slurm_executor(loop, capsys):
    from bayesmix.cli import main

    exp, command = loop
    code = main(["run", "--ledger", str(exp.path), "--command", command, "--slurm-time", "5"])
    assert code == 2 and "--slurm-* options need --executor slurm" in capsys.readouterr().err


def test_round_hook_gets_each_round_and_its_failure_never_stops_the_loop(loop):
    exp, command = loop
    seen: list[RoundReport] = []
    lines: list[str] = []
    Runner(exp, command, LocalExecutor(2), batch=2, on_round=seen.append).run(1, recommend=False)
    (report,) = seen
    assert report.round == 1 and sorted(report.completed) == sorted(report.runs)
    assert len(report.losses) == 2 and "loss.web" in report.losses.columns

    def broken(_):
        raise ConnectionError("tracking server down")

    summary = Runner(exp, command, LocalExecutor(2), batch=2, on_round=broken, log=lines.append)
    assert len(summary.run(1, recommend=False).completed) == 2
    assert any("per-round hook failed: ConnectionError" in line for line in lines)


def test_mlflow_tracker_logs_each_round(tmp_path):
    mlflow = pytest.importorskip("mlflow")
    from bayesmix.loop.tracking import MLflowTracker

    tracker = MLflowTracker(tmp_path / "mlruns", experiment="test")
    frame = pd.DataFrame({"run": ["a", "b"], "loss.web": [2.5, 2.4], "loss.code (py)": [1.9, 2.0]})
    for n, done in ((1, ["a"]), (2, ["b"])):
        part = frame[frame["run"].isin(["a", "b"][:n])]
        tracker(RoundReport(n, done, done, [], part, str(tmp_path / "exp.db"), 1.0 * n))
    client = mlflow.tracking.MlflowClient()
    history = client.get_metric_history(tracker.run_id, "best_loss.web")
    assert [(m.step, m.value) for m in history] == [(1, 2.5), (2, 2.4)]
    names = set(client.get_run(tracker.run_id).data.metrics)
    assert "best_loss.code _py_" in names and "completed_total" in names
