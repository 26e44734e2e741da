"""``bayesmix run`` under hostile trainers and files (issue 30's runner probes, one test each).

Every fault ends as a failed attempt with a one-line reason, or a one-line error with exit 2;
no run is left ``running`` by a runner that returned, no process of a job outlives it, and
nothing is written outside the work folder. The jobs are small Python scripts; no MCMC.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from conftest import wait_until

from bayesmix import errors
from bayesmix.cli import main
from bayesmix.loop import jobs
from bayesmix.loop.executors import LocalExecutor, check_reachable
from bayesmix.loop.experiment import Experiment
from bayesmix.loop.ledger import Ledger
from bayesmix.loop.runner import Runner, check_workdir

DOMAINS = ["web", "code", "books"]
#: A trainer that writes its own run's losses (argv: run, mixture file, out), after what
#: ``PREFIX`` (code pasted before it) does.
GOOD = """
import json, os, sys
run, mixture_file, out = sys.argv[1:4]
m = json.load(open(mixture_file))
row = [run] + [repr(m[d]) for d in ("web", "code", "books")] + ["2.0", "1.5", "2.5"]
head = "run,mix.web,mix.code,mix.books,loss.web,loss.code,loss.books"
open(out + ".tmp", "w").write(head + "\\n" + ",".join(row) + "\\n")
os.replace(out + ".tmp", out)
"""


def make_loop(tmp_path: Path, trainer: str, n_runs: int = 2):
    """(experiment with ``n_runs`` proposed runs, command template) for ``trainer``'s code."""
    (tmp_path / "trainer.py").write_text(textwrap.dedent(trainer))
    exp = Experiment.create(tmp_path / "exp.db", DOMAINS, draws=50, tune=50, chains=2)
    exp.propose(n_runs, "random")
    command = f"{sys.executable} {tmp_path / 'trainer.py'} {{run}} {{mixture_file}} {{out}}"
    return exp, command


def run_loop(exp, command, **kw):
    kw.setdefault("batch", 2)
    return Runner(exp, command, LocalExecutor(kw.pop("parallel", 2)), **kw).run(1, recommend=False)


def statuses(exp) -> dict[str, str]:
    with Ledger.open(exp.path) as led:
        frame = led.runs()
    return dict(zip(frame["run"], frame["status"]))


def history(exp, run: str) -> str:
    with Ledger.open(exp.path) as led:
        return " | ".join(led.jobs()[run].get("history", []))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its new parent) is not running
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def test_a_result_file_that_is_not_utf8_fails_the_attempt_not_the_runner(tmp_path):
    exp, command = make_loop(tmp_path, "import sys\nopen(sys.argv[3], 'wb').write(b'\\xff\\xfe')\n")
    summary = run_loop(exp, command, retries=0)
    assert sorted(summary.failed) == sorted(statuses(exp)) and not summary.completed
    assert set(statuses(exp).values()) == {"failed"}  # nothing left running
    run = summary.failed[0]
    assert "is not UTF-8 text" in history(exp, run)
    folder = Path(exp.path).with_name("exp-runs") / run
    assert (folder / "result.csv.failed").is_file() and not (folder / "result.csv").exists()


def test_a_result_path_made_a_folder_fails_the_run_on_every_attempt(tmp_path):
    exp, command = make_loop(tmp_path, "import os, sys\nos.makedirs(sys.argv[3])\n")
    summary = run_loop(exp, command, retries=1)
    assert set(statuses(exp).values()) == {"failed"} and summary.retried == 2
    text = history(exp, summary.failed[0])
    assert "is a folder, not a file" in text  # attempt 1: the job made it a folder
    assert "is a folder where the result file belongs" in text  # attempt 2: it is still there


def test_a_workdir_that_is_a_file_or_cannot_be_created_is_one_line(tmp_path, capsys):
    exp, command = make_loop(tmp_path, GOOD)
    (tmp_path / "afile").write_text("x")
    code = main(
        [
            "run",
            "--ledger",
            str(exp.path),
            "--command",
            command,
            "--workdir",
            str(tmp_path / "afile"),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("bayesmix run: error: --workdir ") and "is a file" in err[0]
    with pytest.raises(errors.OptionError, match="cannot hold the runs' folders"):
        check_workdir(tmp_path / "afile" / "sub")  # a file where a parent folder belongs
    assert set(statuses(exp).values()) == {"proposed"}  # no attempt used


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_workdir_is_one_line_before_any_run_is_claimed(tmp_path):
    exp, command = make_loop(tmp_path, GOOD)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(errors.OptionError, match="cannot hold the runs' folders"):
            run_loop(exp, command, workdir=ro)
    finally:
        ro.chmod(0o755)
    assert set(statuses(exp).values()) == {"proposed"}


def test_rows_of_another_run_in_a_result_file_are_refused(tmp_path):
    # every job writes the row of the first proposed run: only that run may take it
    exp, command = make_loop(tmp_path, GOOD.replace("row = [run]", "row = [FIRST]"))
    first = sorted(statuses(exp))[0]
    (tmp_path / "trainer.py").write_text(
        f"FIRST = {first!r}\n" + (tmp_path / "trainer.py").read_text()
    )
    summary = run_loop(exp, command, retries=0, parallel=1)
    assert summary.completed == [first]
    other = next(r for r in statuses(exp) if r != first)
    assert statuses(exp)[other] == "failed"
    assert f"holds rows of other runs ({first})" in history(exp, other)
    with Ledger.open(exp.path) as led:
        assert list(led.run_table().runs) == [first]  # never recorded under another run


def test_a_result_file_left_by_another_experiment_is_set_aside_and_the_run_launched(tmp_path):
    exp, command = make_loop(tmp_path, GOOD, n_runs=1)
    run = next(iter(statuses(exp)))
    folder = Path(exp.path).with_name("exp-runs") / run
    folder.mkdir(parents=True)
    stale = "run,mix.web,mix.code,mix.books,loss.web,loss.code,loss.books\n"
    stale += f"{run},0.2,0.3,0.5,9.0,9.0,9.0\n"
    (folder / "result.csv").write_text(stale)
    summary = run_loop(exp, command)
    assert summary.completed == [run]
    assert (folder / "result.csv.stale").read_text() == stale
    with Ledger.open(exp.path) as led:
        assert float(led.run_table().losses["web"].iloc[0]) == 2.0  # the trainer's, not 9.0
        assert led.jobs()[run]["attempts"] == 1  # it was launched


def test_a_run_id_with_dotdot_writes_nothing_outside_the_work_folder(tmp_path):
    exp, command = make_loop(tmp_path, GOOD, n_runs=1)
    run = next(iter(statuses(exp)))
    with sqlite3.connect(exp.path) as con:  # a hand-edited ledger
        con.execute("UPDATE runs SET run = '../escaped' WHERE run = ?", (run,))
    con.close()
    summary = run_loop(exp, command, workdir=tmp_path / "work" / "runs")
    assert summary.failed == ["../escaped"] and statuses(exp) == {"../escaped": "failed"}
    assert "cannot name a folder" in history(exp, "../escaped")
    assert not (tmp_path / "work" / "escaped").exists()
    assert list((tmp_path / "work" / "runs").iterdir()) == []


def test_a_trainer_that_ignores_sigterm_is_killed_at_the_timeout(tmp_path, monkeypatch):
    monkeypatch.setattr(jobs, "KILL_GRACE_S", 0.5)  # SIGKILL follows SIGTERM after 0.5 s
    trainer = """
    import os, signal, sys, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    open(os.path.join(os.path.dirname(sys.argv[3]), "pid"), "w").write(str(os.getpid()))
    time.sleep(120)
    """
    exp, command = make_loop(tmp_path, trainer, n_runs=1)
    summary = run_loop(exp, command, retries=0, timeout_s=1.0)
    run = summary.failed[0]
    assert "timed out" in history(exp, run)
    pid = int((Path(exp.path).with_name("exp-runs") / run / "pid").read_text())
    assert wait_until(lambda: not alive(pid), timeout=10)  # SIGKILLed, not left running


def test_a_background_child_does_not_outlive_its_job(tmp_path, monkeypatch):
    monkeypatch.setattr(jobs, "KILL_GRACE_S", 0.5)
    trainer = GOOD + textwrap.dedent(
        """
        import subprocess
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        open(os.path.join(os.path.dirname(out), "child"), "w").write(str(child.pid))
        """
    )
    exp, command = make_loop(tmp_path, trainer, n_runs=1)
    summary = run_loop(exp, command)
    pid = int((Path(exp.path).with_name("exp-runs") / summary.completed[0] / "child").read_text())
    assert wait_until(lambda: not alive(pid), timeout=10)


def test_an_unreachable_ray_address_is_one_line_at_once(tmp_path, capsys):
    with pytest.raises(errors.OptionError, match="cannot reach Ray at 127.0.0.1:1"):
        check_reachable("127.0.0.1:1", timeout_s=2)
    exp, command = make_loop(tmp_path, GOOD)
    args = ["run", "--ledger", str(exp.path), "--command", command, "--executor", "ray"]
    assert main([*args, "--ray-address", "127.0.0.1:1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bayesmix run: error: cannot reach Ray")


def test_a_multiline_command_with_a_missing_ledger_names_the_subcommand(tmp_path, capsys):
    code = main(["run", "--ledger", str(tmp_path / "none.db"), "--command", "echo a\necho {out}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("bayesmix run: error: ")


def test_two_runners_on_one_ledger_count_each_run_once(tmp_path):
    trainer = "import time\ntime.sleep(0.3)\n" + GOOD
    exp, command = make_loop(tmp_path, trainer, n_runs=4)
    results = []

    def one_runner():
        runner = Runner(Experiment(exp.path), command, LocalExecutor(1), batch=4)
        results.append(runner.run(1, recommend=False))

    threads = [threading.Thread(target=one_runner) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    completed = [run for summary in results for run in summary.completed]
    assert len(results) == 2 and sorted(completed) == sorted(statuses(exp))
    assert set(statuses(exp).values()) == {"completed"}


def test_the_proposed_runs_are_read_once_per_round_not_per_launch(tmp_path, monkeypatch):
    """A round reads the ledger's proposed runs as often with 5 runs as with 2."""
    reads = []
    real = Ledger.runs

    def counting(self, status=None):
        reads.append(status)
        return real(self, status)

    monkeypatch.setattr(Ledger, "runs", counting)
    counts = []
    for n in (2, 5):
        (tmp_path / str(n)).mkdir()
        exp, command = make_loop(tmp_path / str(n), GOOD, n_runs=n)
        reads.clear()
        summary = run_loop(exp, command, batch=n)
        assert len(summary.completed) == n
        counts.append(reads.count("proposed"))
    assert counts[0] == counts[1]


def test_a_run_another_runner_took_during_the_round_is_left_to_it(tmp_path, monkeypatch):
    """The round's list of proposed runs may be stale: a run another runner claimed since (its
    job's result file already written) is neither launched nor recorded by this runner."""
    exp, command = make_loop(tmp_path, GOOD, n_runs=2)
    taken, other = sorted(statuses(exp))
    folder = Path(exp.path).with_name("exp-runs") / taken
    real = Runner._proposed

    def then_taken(self):
        proposed = real(self)
        with Ledger.open(exp.path) as led:
            led.claim(taken, {"host": "another-machine", "pid": 1})
        folder.mkdir(parents=True)
        head = "run,mix.web,mix.code,mix.books,loss.web,loss.code,loss.books\n"
        (folder / "result.csv").write_text(head + f"{taken},0.2,0.3,0.5,9.0,9.0,9.0\n")
        return proposed

    monkeypatch.setattr(Runner, "_proposed", then_taken)
    summary = run_loop(exp, command)
    assert summary.completed == [other]
    assert statuses(exp)[taken] == "running"  # still the other runner's
    assert (folder / "result.csv").is_file()  # neither recorded nor set aside
    with Ledger.open(exp.path) as led:
        assert led.jobs()[taken]["attempts"] == 1  # the other runner's launch only


def test_stop_process_ends_the_whole_group(tmp_path, monkeypatch):
    monkeypatch.setattr(jobs, "KILL_GRACE_S", 0.5)
    script = "import subprocess, sys, time; "
    script += "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); "
    script += "print(c.pid, flush=True); time.sleep(120)"
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, start_new_session=True, text=True
    )
    child = int(proc.stdout.readline())
    jobs.stop_process(proc)
    assert proc.returncode == -signal.SIGTERM
    assert wait_until(lambda: not alive(child), timeout=10)
    assert not jobs.group_alive(proc.pid)
