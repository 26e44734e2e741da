"""``bayesmix run`` and bayesmix.loop.runner: the closed loop with local and Ray executors.

The jobs are a fake trainer (a few lines of Python written into the test's folder) that
reports the losses of a fixed M4 law for its mixture, so the loop's bookkeeping is tested
without training: retries, jobs killed mid-way, Ctrl-C and restart, runs taken back from a dead
runner, template filling. One test (marked slow) runs two rounds with a real fit in between.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import wait_until

from bayesmix import errors
from bayesmix.loop.command_template import check_template, fill_template, planned_scale
from bayesmix.loop.executors import LocalExecutor
from bayesmix.loop.experiment import Experiment
from bayesmix.loop.jobs import Job, run_job
from bayesmix.loop.ledger import Ledger
from bayesmix.loop.runner import Runner, RunSummary, runs_frame

pytestmark = pytest.mark.filterwarnings("ignore::bayesmix.posterior.diagnostics.ConvergenceWarning")
DOMAINS = ["web", "code", "books"]
#: The fake trainer's law: L_i(r) = C_i + K_i exp(T_i . r) (M4), fixed numbers.
C = np.array([2.0, 1.2, 2.4])
K = np.array([1.5, 1.0, 1.2])
T = np.array([[-1.8, -0.3, -0.5], [-0.2, -2.0, -0.1], [-0.6, -0.2, -1.5]])

FAKE = textwrap.dedent(
    """
    import argparse, json, math, os, sys, time
    ap = argparse.ArgumentParser()
    ap.add_argument("--run"); ap.add_argument("--mixture-file"); ap.add_argument("--out")
    a = ap.parse_args()
    mix = json.load(open(a.mixture_file))
    if os.environ.get("FAKE_PIDDIR"):
        open(os.path.join(os.environ["FAKE_PIDDIR"], a.run), "w").write(str(os.getpid()))
    time.sleep(float(os.environ.get("FAKE_SLEEP", "0")))
    if os.environ.get("FAKE_FAIL") == "always":
        print("CUDA out of memory (fake)", file=sys.stderr); sys.exit(3)
    once = os.environ.get("FAKE_FAIL_ONCE_DIR")
    if once and not os.path.exists(os.path.join(once, a.run)):
        open(os.path.join(once, a.run), "w").close()
        print("transient failure (fake)", file=sys.stderr); sys.exit(3)
    C, K, T = %s, %s, %s
    doms = %s
    r = [mix[d] for d in doms]
    loss = [C[i] + K[i] * math.exp(sum(T[i][j] * r[j] for j in range(3))) for i in range(3)]
    head = ["run"] + ["mix." + d for d in doms] + ["loss." + d for d in doms]
    row = [a.run] + [repr(x) for x in r] + [repr(x) for x in loss]
    tmp = a.out + ".tmp"
    open(tmp, "w").write(",".join(head) + "\\n" + ",".join(row) + "\\n")
    os.replace(tmp, a.out)
    """
) % (C.tolist(), K.tolist(), T.tolist(), DOMAINS)


def true_loss(mix: np.ndarray) -> np.ndarray:
    return C + K * np.exp(T @ mix)


@pytest.fixture
def loop(tmp_path):
    """(experiment, command template) on a new ledger of three domains; tiny MCMC settings."""
    script = tmp_path / "fake_trainer.py"
    script.write_text(FAKE)
    exp = Experiment.create(tmp_path / "exp.db", DOMAINS, draws=100, tune=100, chains=2)
    command = (
        f"{sys.executable} {script} --run {{run}} --mixture-file {{mixture_file}} --out {{out}}"
    )
    return exp, command


def runner(exp, command, parallel=2, **kw) -> Runner:
    kw.setdefault("batch", 4)
    return Runner(exp, command, LocalExecutor(parallel), **kw)


def statuses(exp) -> dict[str, str]:
    with Ledger.open(exp.path) as led:
        frame = led.runs()
    return dict(zip(frame["run"], frame["status"]))


# ---------------------------------------------------------------- template
def test_template_placeholders_are_checked_and_quoted():
    with pytest.raises(errors.OptionError, match=r"\{mixture\}"):
        check_template("train --mix {mixture} --out {out}")
    with pytest.raises(errors.OptionError, match="must contain .out."):
        check_template("train --run {run}")
    check_template("HOME=${HOME} train --out {out}")  # shell expansions are not placeholders
    mix = json.dumps({"web": 0.5, "code's": 0.5})
    cmd = fill_template("echo {mixture_json} > {out}", {"mixture_json": mix, "out": "a b.txt"})
    # the shell gets the JSON and the path back intact, quotes and spaces included
    out = subprocess.run(
        ["sh", "-c", f"cd {os.getcwd()} && {cmd.replace('> ', '; echo ')}"],
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    assert out == [mix, "a b.txt"]


def test_size_placeholders_come_from_the_runs_planned_size_and_steps():
    import pandas as pd

    frame = pd.DataFrame(
        {"run": ["r1", "r2"], "n_params": [2e7, np.nan], "steps": [1000.0, np.nan]}
    )
    planned = planned_scale(frame)
    assert planned == {"r1": {"n_params": "20000000", "steps": "1000"}, "r2": {}}
    template = "train --size {n_params} --steps {steps} --out {out}"
    check_template(template)
    cmd = fill_template(template, {"run": "r1", "out": "o.csv", **planned["r1"]})
    assert cmd == "train --size 20000000 --steps 1000 --out o.csv"
    with pytest.raises(errors.OptionError, match="run r2 has no planned n_params"):
        fill_template(template, {"run": "r2", "out": "o.csv", **planned["r2"]})


# ---------------------------------------------------------------- local loop
def test_one_round_from_an_empty_ledger(loop):
    exp, command = loop
    summary = runner(exp, command).run(1, recommend=False)
    assert summary.rounds == 1 and len(summary.completed) == 4 and not summary.failed
    assert set(statuses(exp).values()) == {"completed"}
    with Ledger.open(exp.path) as led:
        table = led.run_table()
    mix = table.mixtures[DOMAINS].to_numpy()
    losses = table.losses[DOMAINS].to_numpy()
    # the ledger holds exactly what the jobs computed for the proposed mixtures (CSV repr)
    np.testing.assert_allclose(losses, np.array([true_loss(m) for m in mix]), rtol=1e-12)
    jobs = runs_frame(exp.path)
    assert list(jobs["attempts"]) == [1, 1, 1, 1]
    folder = Path(exp.path).with_name("exp-runs") / summary.completed[0]
    assert {"mixture.json", "stdout.log", "stderr.log", "result.csv"} <= {
        p.name for p in folder.iterdir()
    }


def test_a_menu_given_to_run_is_recorded_once_before_the_first_launch(loop):
    """Experiment.run(menu=..., target_scale=...) records the menu once, before its first
    launch (not again by each round's propose); the default law's runs are planned at the
    menu's largest entry."""
    exp, command = loop
    said: list[str] = []
    exp.log = said.append
    menu = {"menu": "2@200,3@200", "target_scale": "5@4000", "tokens_per_step": 256}
    summary = exp.run(command, rounds=2, n=1, recommend=False, **menu)
    assert len(summary.completed) == 2
    recorded = [i for i, m in enumerate(said) if "recorded: proxy menu" in m]
    first_launch = next(i for i, m in enumerate(said) if m.startswith("running "))
    assert len(recorded) == 1 and recorded[0] < first_launch, said
    assert exp.status()["fidelity"]["target"] == {"n_params": 5.0, "tokens": 4000 * 256.0}
    assert set(exp.runs()["n_params"]) == {3.0}


def test_a_job_that_fails_once_is_retried(loop, tmp_path):
    exp, command = loop
    (tmp_path / "once").mkdir()
    r = runner(exp, command, retries=1, env={"FAKE_FAIL_ONCE_DIR": str(tmp_path / "once")})
    summary = r.run(1, recommend=False)
    assert len(summary.completed) == 4 and summary.retried == 4 and not summary.failed
    jobs = runs_frame(exp.path)
    assert list(jobs["attempts"]) == [2, 2, 2, 2]
    assert all("exited with status 3" in n and "transient failure" in n for n in jobs["last_note"])


def test_retries_run_out_then_the_run_is_failed_with_its_stderr(loop):
    exp, command = loop
    r = runner(exp, command, retries=1, batch=2, env={"FAKE_FAIL": "always"})
    summary = r.run(1, recommend=False)
    assert sorted(summary.failed) == sorted(statuses(exp)) and not summary.completed
    assert set(statuses(exp).values()) == {"failed"}
    jobs = runs_frame(exp.path)
    assert list(jobs["attempts"]) == [2, 2]
    assert all("CUDA out of memory (fake)" in n for n in jobs["last_note"])
    shown = subprocess.run(
        [sys.executable, "-m", "bayesmix", "status", "--ledger", str(exp.path)],
        capture_output=True,
        text=True,
    ).stdout
    assert "2 needed retries or failed" in shown and "CUDA out of memory (fake)" in shown
    with Ledger.open(exp.path) as led, pytest.raises(errors.LedgerError, match="no recorded"):
        led.run_table(None)  # no result recorded for a failed run


def test_a_job_killed_mid_way_leaves_the_run_failed(loop, tmp_path):
    exp, command = loop
    piddir = tmp_path / "pids"
    piddir.mkdir()
    r = runner(
        exp, command, retries=0, batch=1, env={"FAKE_SLEEP": "30", "FAKE_PIDDIR": str(piddir)}
    )

    def kill_when_started():
        def started():  # the fake trainer's pid, once it has written it
            return [int(t) for p in piddir.iterdir() if (t := p.read_text().strip())]

        pids = wait_until(started, timeout=60)
        if pids:
            os.kill(pids[0], signal.SIGKILL)

    killer = threading.Thread(target=kill_when_started)
    killer.start()
    summary = r.run(1, recommend=False)
    killer.join()
    assert len(summary.failed) == 1 and not summary.completed
    run = summary.failed[0]
    assert statuses(exp) == {run: "failed"}
    assert "killed by SIGKILL" in runs_frame(exp.path)["last_note"][0]
    with Ledger.open(exp.path) as led, pytest.raises(errors.LedgerError, match="no recorded"):
        led.run_table(None)
    # a failed run can be revived by hand and then runs again
    exp.set_status(run, "proposed")
    summary = runner(exp, command, retries=0, batch=1).run(1, recommend=False)
    assert summary.completed == [run] and statuses(exp) == {run: "completed"}


def _with_default_sigint(args: list[str]) -> list[str]:
    """``args`` run with SIGINT at its default, as from a terminal: a suite started in the
    background (``make test &``) ignores SIGINT, and children inherit that. The same pid: a
    small Python sets SIGINT and then execs ``args`` (no ``preexec_fn``: unsafe with threads)."""
    code = "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    code += "os.execv(sys.argv[1], sys.argv[1:])"
    return [sys.executable, "-c", code, *args]


def test_ctrl_c_leaves_the_ledger_consistent_and_a_restart_resumes(loop, tmp_path):
    exp, command = loop
    env = {**os.environ, "FAKE_SLEEP": "60"}
    args = [sys.executable, "-m", "bayesmix", "run", "--ledger", str(exp.path), "-n", "3",
            "--parallel", "2", "--no-recommend", "--command", command]  # fmt: skip
    proc = subprocess.Popen(_with_default_sigint(args), env=env, stderr=subprocess.PIPE, text=True)
    # until two jobs run (the third waits for a slot)
    if not wait_until(lambda: list(statuses(exp).values()).count("running") == 2, timeout=60):
        proc.kill()
        pytest.fail("the runs never started")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert set(statuses(exp).values()) == {"proposed"}  # nothing left running or half-done
    jobs = runs_frame(exp.path)
    assert (jobs["attempts"] == 0).all()  # the interrupted attempt does not count
    assert not list(Path(exp.path).with_name("exp-runs").glob("*/result.csv"))
    # restart: the same command (without the sleep) resumes the same runs, proposes nothing new
    out = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert set(statuses(exp).values()) == {"completed"} and len(statuses(exp)) == 3


def test_runs_of_a_dead_runner_are_taken_back(loop):
    exp, command = loop
    exp.propose(2)
    runs = list(statuses(exp))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its pid is now free: a runner that died
    with Ledger.open(exp.path) as led:
        for run in runs:
            led.claim(run, {"host": os.uname().nodename, "pid": dead.pid})
    # one of them had finished: its result file is there and is recorded without training
    r = runner(exp, command, batch=2)
    finished = r._folder(runs[0])
    finished.mkdir(parents=True)
    mix = json.dumps(dict(zip(DOMAINS, exp.runs().loc[0, [f"mix.{d}" for d in DOMAINS]])))
    (finished / "mixture.json").write_text(mix)
    run_job(Job(runs[0], command.replace("{run}", runs[0]).replace(
        "{mixture_file}", str(finished / "mixture.json")).replace("{out}", str(r._out(runs[0]))),
        str(finished), str(finished / "mixture.json"), mix, str(r._out(runs[0]))))  # fmt: skip
    summary = r.run(1, recommend=False)
    assert sorted(summary.reclaimed) == sorted(runs)
    assert set(statuses(exp).values()) == {"completed"} and len(statuses(exp)) == 2
    attempts = dict(zip(*runs_frame(exp.path)[["run", "attempts"]].to_numpy().T))
    assert attempts[runs[0]] == 1  # recorded from its file, not launched again
    assert attempts[runs[1]] == 2  # launched again; the lost attempt counts


def test_a_live_runners_runs_are_left_alone(loop):
    exp, command = loop
    exp.propose(1)
    (run,) = statuses(exp)
    with Ledger.open(exp.path) as led:
        led.claim(run, {"host": "another-machine", "pid": 1})  # fresh heartbeat
    r = runner(exp, command, batch=1)
    r.reclaim_stale(summary := RunSummary())
    assert not summary.reclaimed and statuses(exp) == {run: "running"}
    r.stale_after_s = 1e-3  # its heartbeat is now too old (once a millisecond passed): taken back

    def taken_back():
        r.reclaim_stale(summary)
        return summary.reclaimed

    assert wait_until(taken_back, timeout=10) == [run] and statuses(exp) == {run: "proposed"}


def test_cli_errors_are_one_line(loop, tmp_path):
    exp, _ = loop
    for extra, message in (
        (["--command", "train {run}"], "must contain {out}"),
        (["--command", "t {out}", "--parallel", "0"], "--parallel must be >= 1"),
        (["--command", "t {out}", "--ray-address", "x:1"], "--ray-address needs --executor ray"),
    ):
        out = subprocess.run(
            [sys.executable, "-m", "bayesmix", "run", "--ledger", str(exp.path), *extra],
            capture_output=True,
            text=True,
        )
        assert out.returncode == 2 and message in out.stderr, out.stderr
        assert len(out.stderr.strip().splitlines()) == 1
    assert statuses(exp) == {}  # nothing proposed


# ---------------------------------------------------------------- with fits (slow)
@pytest.mark.slow
def test_two_rounds_with_a_fit_between_and_a_recommendation(loop):
    exp, command = loop
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = runner(exp, command, batch=6).run(2)
    assert summary.rounds == 2 and len(summary.completed) == 12
    frame = exp.runs()
    first, second = sorted(set(frame["round"]))
    assert (frame["round"] == first).sum() == 6 and (frame["round"] == second).sum() == 6
    assert set(frame.loc[frame["round"] == second, "strategy"]) == {"thompson"}
    rec = summary.recommendation.recommendation.set_index("train_domain")["share"]
    assert list(rec.index) == DOMAINS and abs(rec.sum() - 1) < 1e-6


# ---------------------------------------------------------------- Ray
def test_the_loop_on_a_local_ray_instance(loop, tmp_path):
    pytest.importorskip("ray", reason="Ray is the optional extra bayesmix[ray]")
    from bayesmix.loop.executors import RayExecutor

    exp, command = loop
    (tmp_path / "once").mkdir()
    executor = RayExecutor(parallel=2)  # a local instance bound to 127.0.0.1
    r = Runner(exp, command, executor, batch=3, retries=1,
               env={"FAKE_FAIL_ONCE_DIR": str(tmp_path / "once")})  # fmt: skip
    summary = r.run(1, recommend=False)
    assert len(summary.completed) == 3 and summary.retried == 3
    assert set(statuses(exp).values()) == {"completed"}


def test_a_cancelled_job_stops_its_whole_process_group(tmp_path):
    """run_job stops as soon as ``cancelled()`` is true: the command's group (here a child it
    left in the background) is gone and the result says "cancelled" (how the Ray executor's
    tasks stop, without Ray's interrupt)."""
    folder = tmp_path / "r1"
    job = Job("r1", "sleep 300 & echo $! > child.pid; wait", str(folder),
              str(folder / "mixture.json"), "{}", str(folder / "result.csv"))  # fmt: skip
    flag = threading.Event()
    results = []
    worker = threading.Thread(target=lambda: results.append(run_job(job, cancelled=flag.is_set)))
    worker.start()
    pid_file = folder / "child.pid"
    text = wait_until(lambda: pid_file.is_file() and pid_file.read_text().strip(), timeout=60)
    assert text, "the job's child process never started"
    pid = int(text)
    assert worker.is_alive()  # cancelled() is false: the job runs on
    flag.set()
    worker.join(timeout=60)
    assert not worker.is_alive() and results[0].stderr_tail == "cancelled"
    assert results[0].result_text is None and not results[0].ok
    assert wait_until(lambda: _gone(pid), timeout=30), f"process {pid} still runs"


def _gone(pid: int) -> bool:
    """Process ``pid`` is gone (or a zombie awaiting its reaper), not orphaned."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except FileNotFoundError:
        return True


def test_cancelling_ray_jobs_stops_their_processes(tmp_path):
    pytest.importorskip("ray", reason="Ray is the optional extra bayesmix[ray]")
    from bayesmix.loop.executors import RayExecutor

    executor = RayExecutor(parallel=1)
    try:
        folder = tmp_path / "r1"
        job = Job("r1", "sleep 300 & echo $! > child.pid; wait", str(folder),
                  str(folder / "mixture.json"), "{}", str(folder / "result.csv"))  # fmt: skip
        future = executor.submit(job)
        pid_file = folder / "child.pid"
        text = wait_until(lambda: pid_file.is_file() and pid_file.read_text().strip(), timeout=60)
        assert text, "the job's child process never started"
        pid = int(text)
        assert Path(f"/proc/{pid}").exists()
        executor.cancel_all()
        # the job's whole process group stops: polled, since cancelling is asynchronous
        assert wait_until(lambda: _gone(pid), timeout=30), f"process {pid} still runs"
        del future  # its result is a TaskCancelledError; the loop never reads it
    finally:
        executor.shutdown()


def test_experiment_run_is_the_same_loop_from_python(loop, tmp_path):
    exp, command = loop
    lines: list[str] = []
    exp.log = lines.append
    once = {"FAKE_FAIL_ONCE_DIR": str(tmp_path)}
    summary = exp.run(
        command, rounds=1, n=3, parallel=2, recommend=False, workdir=tmp_path / "jobs", env=once
    )
    assert len(summary.completed) == 3 and summary.retried == 3 and not summary.interrupted
    assert {p.name for p in (tmp_path / "jobs").iterdir()} == set(summary.completed)
    assert any("launched" in line for line in lines) and "3 run(s) completed" in lines[-1]
    with pytest.raises(errors.OptionError, match="must contain"):
        exp.run("train --run {run}")


class _InterruptedLaunch(LocalExecutor):
    """A local executor whose second launch is interrupted by Ctrl-C after its run was
    claimed and before the job exists: the narrowest window of an interrupt."""

    def __init__(self):
        super().__init__(parallel=2)
        self.launches = 0

    def submit(self, job):
        self.launches += 1
        if self.launches == 2:
            raise KeyboardInterrupt
        return super().submit(job)


def test_an_interrupt_between_claim_and_launch_releases_the_claimed_run(loop):
    exp, command = loop
    exp.propose(3)
    r = Runner(exp, command, _InterruptedLaunch(), env={"FAKE_SLEEP": "30"}, batch=3)
    summary = r.run(1, recommend=False)
    assert summary.interrupted
    # the claimed-but-not-launched run and the launched one are both proposed again, unpaid
    assert set(statuses(exp).values()) == {"proposed"}
    assert (runs_frame(exp.path)["attempts"] == 0).all()


# ---------------------------------------------------------------- a domain change mid-loop (slow)
#: The fake trainer after web and books are merged into "text": training domains text, code;
#: the same validation domains (web, code, books); the law's slopes in the new set.
FAKE_MERGED = textwrap.dedent(
    """
    import argparse, json, math
    ap = argparse.ArgumentParser()
    ap.add_argument("--run"); ap.add_argument("--mixture-file"); ap.add_argument("--out")
    a = ap.parse_args()
    mix = json.load(open(a.mixture_file))
    C, K, T = %s, %s, %s
    r = [mix["text"], mix["code"]]
    loss = [C[i] + K[i] * math.exp(T[i][0] * r[0] + T[i][1] * r[1]) for i in range(3)]
    head = ["run", "mix.text", "mix.code", "loss.web", "loss.code", "loss.books"]
    row = [a.run] + [repr(x) for x in r] + [repr(x) for x in loss]
    open(a.out, "w").write(",".join(head) + "\\n" + ",".join(row) + "\\n")
    """
) % (C.tolist(), K.tolist(), T[:, :2].tolist())


@pytest.mark.slow
def test_the_loop_continues_after_a_domain_change_with_every_run(loop, tmp_path):
    exp, command = loop
    assert runner(exp, command, batch=6).run(1, recommend=False).completed  # round 0, no fit
    change = exp.change_domains({"merge": {"text": ["web", "books"]}})
    assert change.new == ("text", "code") and change.abandoned == []
    script = tmp_path / "fake_merged.py"
    script.write_text(FAKE_MERGED)
    merged = (
        f"{sys.executable} {script} --run {{run}} --mixture-file {{mixture_file}} --out {{out}}"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = runner(exp, merged, batch=4).run(1)
    assert len(summary.completed) == 4 and not summary.failed
    frame = exp.runs()
    new = frame[frame["round"] == frame["round"].max()]
    assert len(new) == 4 and set(new["domain_set"]) == {"v2"}
    assert set(new["strategy"]) == {"thompson"}  # proposed from a fit, not a fresh design
    with Ledger.open(exp.path) as led:
        # the fit behind round 1 used all 6 runs of v1, remapped into (text, code)
        assert led.fit_records()[int(new["round"].iloc[0])]["n_runs"] == 6
        fitted = led.run_table()
    assert fitted.n_runs == 10 and fitted.train_domains == ("text", "code")
    old = frame[frame["domain_set"] == "v1"]
    with Ledger.open(exp.path) as led:
        stored = led.runs(domain_set="v1").set_index("run")
    np.testing.assert_allclose(
        old.set_index("run")["mix.text"], stored["mix.web"] + stored["mix.books"], atol=1e-12
    )
    assert [s["in_fit"] for s in exp.status()["domain_sets"]] == [6, 4]
    rec = summary.recommendation.recommendation.set_index("train_domain")["share"]
    assert list(rec.index) == ["text", "code"] and abs(rec.sum() - 1) < 1e-6
