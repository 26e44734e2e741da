"""Where `bayesmix run` starts its jobs, the {workdir} placeholder, and retries by hand."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bayesmix.loop.executors import LocalExecutor
from bayesmix.loop.experiment import Experiment
from bayesmix.loop.ledger import Ledger
from bayesmix.loop.runner import Runner, runs_frame

pytestmark = pytest.mark.filterwarnings("ignore::bayesmix.posterior.diagnostics.ConvergenceWarning")
DOMAINS = ["web", "code"]
#: A trainer that fails while FAIL exists next to it, else writes one loss per domain and a
#: marker file into its run folder ({workdir}).
TRAIN = """
import json, os, sys
run, mix_file, out, workdir = sys.argv[1:5]
if os.path.exists("FAIL"):
    sys.exit("failing on purpose")
mix = json.load(open(mix_file))
open(os.path.join(workdir, "marker"), "w").write(os.getcwd())
rows = ["run,mix.web,mix.code,loss.web,loss.code",
        f"{run},{mix['web']!r},{mix['code']!r},{3.0 - mix['web']!r},{3.0 - mix['code']!r}"]
open(out + ".tmp", "w").write("\\n".join(rows) + "\\n"); os.replace(out + ".tmp", out)
"""
COMMAND = f"{sys.executable} train.py {{run}} {{mixture_file}} {{out}} {{workdir}}"


@pytest.fixture
def project(tmp_path):
    proj = tmp_path / "project"
    proj.mkdir()
    (proj / "train.py").write_text(TRAIN)
    exp = Experiment.create(tmp_path / "exp.db", DOMAINS, draws=100, tune=100, chains=2)
    return proj, exp


def test_jobs_start_in_the_given_directory_and_get_their_folder(project):
    proj, exp = project
    r = Runner(exp, COMMAND, LocalExecutor(2), cwd=proj, batch=2, retries=0)
    summary = r.run(1, recommend=False)  # a relative script path works from cwd
    assert len(summary.completed) == 2 and not summary.failed
    for run in summary.completed:
        folder = r.workdir / run
        assert (folder / "marker").read_text() == str(proj)  # started in cwd
        assert (folder / "result.csv").exists()


def test_cli_default_cwd_is_where_bayesmix_run_starts(project):
    proj, exp = project
    cmd = [sys.executable, "-m", "bayesmix", "run", "--ledger", str(exp.path), "-n", "1"]
    done = subprocess.run(
        [*cmd, "--command", COMMAND, "--quiet"], cwd=proj, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    with Ledger.open(exp.path) as led:
        assert set(led.runs()["status"]) == {"completed"}


def test_a_retry_by_hand_gets_its_retries_afresh(project):
    proj, exp = project
    (proj / "FAIL").touch()
    r = Runner(exp, COMMAND, LocalExecutor(1), cwd=proj, batch=1, retries=0)
    (run,) = r.run(1, recommend=False).failed
    assert runs_frame(exp.path)["attempts"].tolist() == [1]
    (proj / "FAIL").unlink()
    with Ledger.open(exp.path) as led:
        led.set_status(run, "proposed")
        history = led.jobs()[run]["history"]
    assert runs_frame(exp.path)["attempts"].tolist() == [0]
    assert "attempt count reset" in history[-1]
    r = Runner(exp, COMMAND, LocalExecutor(1), cwd=proj, batch=1, retries=0)
    summary = r.run(1, recommend=False)  # retries=0: only a fresh count lets it run
    assert run in summary.completed
    assert runs_frame(exp.path)["attempts"].tolist()[0] == 1
