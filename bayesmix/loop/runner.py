"""The closed loop of ``bayesmix run``: launch proposed runs, ingest their losses, propose again.

Each round: runs the ledger holds as ``proposed`` are launched (none: a new batch is proposed
first, an initial design when nothing is completed yet), at most ``parallel`` at a time, through
an :class:`~bayesmix.loop.jobs.Executor`. A launch fills the user's command template
(:data:`PLACEHOLDERS`, shell-quoted), marks the run ``running`` with a job record in the ledger
(:meth:`~bayesmix.loop.ledger.Ledger.claim`: owner host and pid, attempt count, heartbeat), runs the
command (from the directory the runner was started in, or ``cwd``; ``{workdir}`` is the run's
own folder ``<workdir>/<run>/``, which holds its mixture file, logs and result) and, when it
exits 0 having written its result file (any run table format ``bayesmix ingest`` reads;
normally a tidy CSV), records the losses: the run becomes ``completed``. A failed launch
(non-zero exit, killed, timed out, no or bad result file) is recorded with its stderr tail and
retried up to ``retries`` times; then it is ``failed``. A run set back to ``proposed`` by hand
gets its retries afresh. After R rounds the loop stops (and recommends a mixture).

What a job may not do. Its result file holds its own run's rows only (rows of another run fail
the attempt, never recorded under that run); a result file no launch of the run wrote (left by
another experiment) is set aside as ``result.csv.stale`` and the run launched; when the command
exits (or is stopped) every process left in its process group is ended too; a run id that
cannot name one folder inside the work folder (``../x``) fails without a launch. Nothing the job
does makes the runner raise: each fault is that attempt's one-line reason in the ledger.

Interruption and restart. Ctrl-C (SIGINT) stops the jobs (SIGTERM to their process groups,
SIGKILL after 5 s), records the results that had already arrived, and puts every run it had claimed
back to ``proposed`` without counting the attempt; every ledger write is one transaction, and
jobs write their result files atomically, so nothing is half-written. A restarted ``run``
first takes back runs left ``running`` by a runner that died (kill -9, lost machine): at once
when that runner's process is gone from this host, otherwise once its heartbeat (refreshed
every :data:`HEARTBEAT_S` s) is older than ``stale_after_s`` (default
:data:`DEFAULT_STALE_AFTER_S`, 10 minutes). A taken-back run whose result file is already in
its folder is ingested without training again; otherwise it is launched again (the lost
attempt counts). Runs set ``running`` by hand (no job record) are left alone.
"""

from __future__ import annotations

import csv
import json
import os
import re
import socket
import tempfile
import time
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from bayesmix import errors
from bayesmix.io import atomic_write_text
from bayesmix.loop.command_template import (
    PLACEHOLDERS,
    check_template,
    fill_template,
    planned_scale,
)
from bayesmix.loop.jobs import Executor, Job, JobResult
from bayesmix.loop.ledger import Ledger

#: The propose options that record a proxy menu (:meth:`Runner.record_menu`: once per run).
MENU_OPTIONS = ("menu", "target_scale", "tokens_per_step")

#: Seconds between heartbeats of a live runner (its running runs' job records).
HEARTBEAT_S = 30.0
#: Default seconds without a heartbeat after which another runner takes a running run back.
DEFAULT_STALE_AFTER_S = 600.0
#: A run id that can name its folder: one path component, no "..", no separators.
SAFE_RUN_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")


def check_workdir(path: str | os.PathLike) -> Path:
    """The runs' folder, created if missing and checked writable (OptionError naming
    ``workdir=`` otherwise), before any run is claimed."""
    folder = Path(path).absolute()
    if folder.exists() and not folder.is_dir():
        raise errors.OptionError(
            f"workdir={str(folder)!r} is a file, not a folder", param="workdir"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".bayesmix-write-check-"):
            pass
    except OSError as err:
        raise errors.OptionError(
            f"workdir={str(folder)!r} cannot hold the runs' folders: {err.strerror or err}",
            param="workdir",
        ) from None
    return folder


def result_runs(path: Path) -> set[str]:
    """The run ids a CSV result file holds rows for (empty when it has no ``run`` column or
    is not CSV text: ingest then says what is wrong)."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or "run" not in reader.fieldnames:
                return set()
            return {str(row["run"]).strip() for row in reader if row.get("run")}
    except (OSError, UnicodeDecodeError, csv.Error):
        return set()


@dataclass
class RoundReport:
    """What one round of the loop did, for a per-round hook (``on_round``: tracking,
    notifications). ``round``: 1, 2, ... in this call; ``runs``: the runs launched;
    ``completed``/``failed``: those of them that completed / failed for good; ``losses``: every
    completed run of the ledger so far, one row per run (run, round, mix.*, loss.* at its last
    checkpoint); ``ledger``: its path; ``elapsed_s``: since the loop started."""

    round: int
    runs: list[str]
    completed: list[str]
    failed: list[str]
    losses: pd.DataFrame
    ledger: str
    elapsed_s: float


@dataclass
class RunSummary:
    """What one call of :meth:`Runner.run` did: rounds done, runs completed and failed (ids),
    launches retried, runs taken back from dead runners, whether it was interrupted, the
    recommendation (a DecisionReport, or None) and elapsed seconds."""

    rounds: int = 0
    completed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    retried: int = 0
    reclaimed: list[str] = field(default_factory=list)
    interrupted: bool = False
    recommendation: Any = None
    elapsed_s: float = 0.0

    def describe(self) -> str:
        text = (
            f"{self.rounds} round(s): {len(self.completed)} run(s) completed, "
            f"{len(self.failed)} failed, {self.retried} retried launch(es)"
        )
        if self.reclaimed:
            text += f", {len(self.reclaimed)} taken back from a dead runner"
        return text + (" - interrupted" if self.interrupted else "") + f" ({self.elapsed_s:.0f} s)"


class Runner:
    """Runs the loop of one experiment (see the module docstring).

    ``experiment``: a :class:`~bayesmix.loop.experiment.Experiment` (its model and MCMC settings are
    used for every refit); ``command``: the template; ``executor``: where jobs run;
    ``workdir``: the runs' folders (default ``<ledger stem>-runs`` next to the ledger); ``cwd``:
    where commands start (default: the current directory when the Runner is made);
    ``retries``: extra launches of a failing run; ``batch``/``strategy``/``propose_options``:
    what :meth:`Experiment.propose` gets when a round needs new runs; ``timeout_s``: per
    launch (None: no limit); ``log``: receives one line per event (None: silent);
    ``on_round``: called with a :class:`RoundReport` after each round (its errors are said,
    not raised).
    """

    def __init__(
        self,
        experiment,
        command: str,
        executor: Executor,
        *,
        workdir: str | os.PathLike | None = None,
        cwd: str | os.PathLike | None = None,
        retries: int = 1,
        batch: int = 8,
        strategy: str = "thompson",
        propose_options: Mapping | None = None,
        timeout_s: float | None = None,
        stale_after_s: float = DEFAULT_STALE_AFTER_S,
        env: Mapping[str, str] | None = None,
        log: Callable[[str], None] | None = None,
        on_round: Callable[[RoundReport], None] | None = None,
    ):
        check_template(command)
        for name, value, low in (("retries", retries, 0), ("batch", batch, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise errors.OptionError(
                    f"{name}={value!r} must be an integer >= {low}", param=name
                )
        if timeout_s is not None and not timeout_s > 0:
            raise errors.OptionError(
                f"timeout_s={timeout_s!r} must be > 0 seconds", param="timeout_s"
            )
        if not stale_after_s > 0:
            raise errors.OptionError(
                f"stale_after_s={stale_after_s!r} must be > 0 seconds", param="stale_after_s"
            )
        self.exp, self.command, self.executor = experiment, command, executor
        self._planned: dict[str, dict[str, str]] = {}
        ledger = Path(experiment.path)
        self.workdir = Path(
            workdir if workdir is not None else ledger.with_name(f"{ledger.stem}-runs")
        ).absolute()
        self.cwd = Path(cwd if cwd is not None else os.getcwd()).absolute()
        if not self.cwd.is_dir():
            raise errors.OptionError(f"cwd={str(self.cwd)!r} is not a directory", param="cwd")
        self.retries, self.batch, self.strategy = retries, batch, strategy
        self.propose_options = dict(propose_options or {})
        self.timeout_s, self.stale_after_s = timeout_s, stale_after_s
        self.env = dict(env or {})
        self.log = log
        self.on_round = on_round
        self.parallel = int(getattr(executor, "parallel", 1))
        self.owner = {"host": socket.gethostname(), "pid": os.getpid()}

    # ------------------------------------------------------------------ helpers
    def _say(self, msg: str) -> None:
        if self.log is not None:
            self.log(msg)

    def _folder(self, run: str) -> Path:
        return self.workdir / run

    def _out(self, run: str) -> Path:
        return self._folder(run) / "result.csv"

    def _job(self, run: str, mixture: Mapping[str, float]) -> Job:
        folder = self._folder(run)
        mix_json = json.dumps({d: float(v) for d, v in mixture.items()})
        values = {
            "run": run,
            "mixture_json": mix_json,
            "mixture_file": str(folder / "mixture.json"),
            "out": str(self._out(run)),
            "workdir": str(folder),
            **self._planned.get(run, {}),
        }
        return Job(
            run=run,
            command=fill_template(self.command, values),
            folder=str(folder),
            mixture_file=values["mixture_file"],
            mixture_json=mix_json,
            out=values["out"],
            timeout_s=self.timeout_s,
            env=self.env,
            cwd=str(self.cwd),
        )

    def _mixtures(self, status: str) -> dict[str, dict[str, float]]:
        with Ledger.open(self.exp.path) as led:
            frame = led.runs(status)
            domains = list(led.train_domains)
        planned = planned_scale(frame)
        for run, values in planned.items():
            fill_template(self.command, {p: "" for p in PLACEHOLDERS[:5]} | {"run": run} | values)
        self._planned.update(planned)
        return {
            str(row["run"]): {d: float(row[f"mix.{d}"]) for d in domains}
            for _, row in frame.iterrows()
        }

    def _ingest(self, run: str, path: Path) -> str:
        """Record the results in ``path``; '' when done, else the one-line problem. A run's
        result file holds that run's rows only: rows of another run are refused, never
        recorded as that run's losses."""
        foreign = sorted(result_runs(path) - {run})
        if foreign:
            shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
            return (
                f"its result file {path} holds rows of other runs ({shown}); a run's result "
                "file may hold its own rows only"
            )
        try:
            summary = self.exp.ingest(path)
        except (errors.BayesmixError, OSError, UnicodeDecodeError) as err:
            return f"its result file could not be recorded: {err}"
        if run not in summary.completed and run not in self._completed_now():
            return f"its result file {path} holds no results for run {run}"
        return ""

    def _completed_now(self) -> set[str]:
        with Ledger.open(self.exp.path) as led:
            return set(map(str, led.runs("completed")["run"]))

    # ------------------------------------------------------------------ restart
    def reclaim_stale(self, summary: RunSummary) -> None:
        """Take back runs left running by dead runners (module docstring)."""
        with Ledger.open(self.exp.path) as led:
            running = set(map(str, led.runs("running")["run"]))
            jobs = led.jobs()
        now = datetime.now(UTC)
        for run in sorted(running):
            job = jobs.get(run)
            if not job or "owner" not in job:
                continue  # set running by hand: someone else's job
            owner = job["owner"]
            if owner == self.owner:
                continue
            dead = owner.get("host") == self.owner["host"] and not _alive(int(owner.get("pid", 0)))
            beat = datetime.fromisoformat(str(job.get("heartbeat") or job.get("started")))
            age = (now - beat).total_seconds()
            if not dead and age < self.stale_after_s:
                continue
            why = (
                f"its runner (pid {owner.get('pid')} on {owner.get('host')}) died"
                if dead
                else f"no heartbeat from its runner for {age:.0f} s"
            )
            out = self._out(run)
            if out.is_file():
                problem = self._ingest(run, out)
                if not problem:
                    self._say(f"{run}: {why}; its result file was there, recorded")
                    summary.completed.append(run)
                    summary.reclaimed.append(run)
                    continue
            give_up = int(job.get("attempts", 1)) >= 1 + self.retries
            with Ledger.open(self.exp.path) as led:
                led.release(run, "failed" if give_up else "proposed", f"lost: {why}")
            summary.reclaimed.append(run)
            self._say(f"{run}: {why}; " + ("marked failed" if give_up else "will run again"))
            if give_up:
                summary.failed.append(run)

    # ------------------------------------------------------------------ the loop
    def record_menu(self):
        """A menu, target scale or tokens per step among the propose options is checked
        (:func:`~bayesmix.loop.proposing.menu_to_record`, with the proposals' ``size``) and
        recorded once, before the first launch, not again by every round's propose. Returns
        the Fidelity recorded, or None (nothing given, or already recorded)."""
        from bayesmix.laws import get_law
        from bayesmix.loop.proposing import menu_to_record
        from bayesmix.model.spec import load_spec

        given = {k: self.propose_options.pop(k, None) for k in MENU_OPTIONS}
        size = self.propose_options.get("size")
        if all(v is None for v in given.values()) and size is None:
            return None
        law = get_law(load_spec(self.exp.model).law)
        menu = None if all(v is None for v in given.values()) else given
        fid = menu_to_record(self.exp.path, self.strategy, law, menu, size)
        if fid is not None:
            self.exp.set_menu(fid.menu, fid.target)
        return fid

    def run(self, rounds: int = 1, *, recommend: bool = True) -> RunSummary:
        """Run ``rounds`` rounds (module docstring); KeyboardInterrupt stops cleanly and
        returns the summary with ``interrupted`` set. Then, with ``recommend`` and at least
        one completed run, the recommendation (:meth:`Experiment.recommend`)."""
        if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
            raise errors.OptionError(f"rounds={rounds!r} must be an integer >= 1", param="rounds")
        t0 = time.perf_counter()
        summary = RunSummary()
        Ledger.open(self.exp.path).check_writable()
        check_workdir(self.workdir)
        recorded = self.record_menu()
        if recorded is not None:
            self._say(f"note: recorded: {recorded.describe()}")
        inflight: dict[Future[JobResult], str] = {}
        try:
            self.reclaim_stale(summary)
            for r in range(rounds):
                todo = self._mixtures("proposed")
                if not todo:
                    frame = self.exp.propose(self.batch, self.strategy, **self.propose_options)
                    self._say(
                        f"round {frame.attrs.get('round')}: proposed {len(frame)} run(s) "
                        f"({frame.attrs.get('strategy', self.strategy)})"
                    )
                    for note in frame.attrs.get("notes", []):
                        self._say(f"note: {note}")
                    todo = self._mixtures("proposed")
                self._say(f"running {len(todo)} run(s): {', '.join(todo)}")
                done_before, failed_before = len(summary.completed), len(summary.failed)
                self._round(todo, inflight, summary)
                summary.rounds = r + 1
                self._report_round(
                    r + 1,
                    list(todo),
                    summary.completed[done_before:],
                    summary.failed[failed_before:],
                    time.perf_counter() - t0,
                )
        except KeyboardInterrupt:
            summary.interrupted = True
            self._stop(inflight, summary)
        finally:
            self.executor.shutdown()
        summary.elapsed_s = time.perf_counter() - t0
        self._say(summary.describe())
        if recommend and not summary.interrupted and self._completed_now():
            try:
                summary.recommendation = self.exp.recommend()
            except errors.TooFewRunsError as err:  # the runs are recorded; a later run fits
                self._say(f"no recommendation yet: {err.problem}")
        return summary

    def _report_round(self, n: int, runs, completed, failed, elapsed: float) -> None:
        """Call the per-round hook; its failure is said, never stops the loop (the ledger
        already holds the round)."""
        if self.on_round is None:
            return
        frame = self.exp.runs("completed")
        report = RoundReport(n, runs, completed, failed, frame, str(self.exp.path), elapsed)
        try:
            self.on_round(report)
        except Exception as err:  # a tracking server down must not stop training
            self._say(f"round {n}: the per-round hook failed: {type(err).__name__}: {err}")

    def _round(self, todo: dict, inflight: dict, summary: RunSummary) -> None:
        queue = list(todo)
        last_beat = time.monotonic()
        proposed = self._proposed()  # once per round; claim and _earlier_result check again
        while queue or inflight:
            while queue and len(inflight) < self.parallel:
                run = queue.pop(0)
                if run not in proposed:
                    self._say(f"{run}: taken by another runner or changed meanwhile; skipped")
                    continue
                if self._earlier_result(run, summary):
                    continue
                with Ledger.open(self.exp.path) as led:
                    job = led.claim(run, self.owner)
                if job is None:
                    self._say(f"{run}: taken by another runner or changed meanwhile; skipped")
                    continue
                if not SAFE_RUN_ID.fullmatch(run) or run in (".", ".."):
                    self._refuse(run, summary)
                    continue
                inflight[self.executor.submit(self._job(run, todo[run]))] = run
                self._say(f"{run}: launched (attempt {job['attempts']})")
            done, _ = wait(list(inflight), timeout=HEARTBEAT_S, return_when=FIRST_COMPLETED)
            if time.monotonic() - last_beat >= HEARTBEAT_S and inflight:
                with Ledger.open(self.exp.path) as led:
                    led.heartbeat(inflight.values())
                last_beat = time.monotonic()
            for fut in done:
                run = inflight.pop(fut)
                try:
                    result = fut.result()
                except Exception as err:  # an executor's failure is this attempt's failure
                    result = JobResult(run, None, 0.0, f"{type(err).__name__}: {err}")
                if self._finish(run, result, summary):
                    queue.append(run)

    def _proposed(self) -> set[str]:
        """The runs the ledger holds as proposed (read once per round)."""
        with Ledger.open(self.exp.path) as led:
            return set(map(str, led.runs("proposed")["run"]))

    def _earlier_result(self, run: str, summary: RunSummary) -> bool:
        """Record a result file an earlier launch of ``run`` wrote before its runner died;
        True when recorded, or when ``run`` is no longer proposed (another runner took it since
        the round began: its file is that runner's, left alone). A file no launch of this run
        wrote (older than the run's last launch, or the run was never launched: another
        experiment's leftovers) is set aside as ``result.csv.stale`` and the run is launched."""
        out = self._out(run)
        if not out.exists():
            return False
        with Ledger.open(self.exp.path) as led:
            if run not in set(map(str, led.runs("proposed")["run"])):
                self._say(f"{run}: taken by another runner or changed meanwhile; skipped")
                return True
            started = led.jobs().get(run, {}).get("started")
        written = out.stat().st_mtime if out.is_file() else None
        ours = (
            started is not None
            and written is not None
            and written >= datetime.fromisoformat(str(started)).timestamp() - 1.0
        )
        if ours and not self._ingest(run, out):
            self._say(f"{run}: result file already there, recorded")
            summary.completed.append(run)
            return True
        if out.is_file():
            out.replace(out.with_name(out.name + ".stale"))
            self._say(f"{run}: a result file no launch of this run wrote was set aside")
        return False

    def _refuse(self, run: str, summary: RunSummary) -> None:
        """Mark a claimed run failed whose id cannot name a folder inside the work folder
        (``../x``, ``a/b``: a hand-edited ledger), so nothing is written outside it."""
        problem = f"run id {run!r} cannot name a folder (letters, digits, '.', '_', '-' only)"
        with Ledger.open(self.exp.path) as led:
            led.release(run, "failed", problem)
        summary.failed.append(run)
        self._say(f"{run}: {problem}; marked failed")

    def _finish(self, run: str, result: JobResult, summary: RunSummary) -> bool:
        """Record one finished launch; True when the run is to be launched again."""
        problem = result.problem()
        if not problem:
            out = self._out(run)
            assert result.result_text is not None
            if not out.is_file() or out.read_text() != result.result_text:
                atomic_write_text(out, result.result_text)  # from a remote worker
            problem = self._ingest(run, out)
            if not problem:
                summary.completed.append(run)
                self._say(f"{run}: completed in {result.elapsed_s:.1f} s")
                return False
        with Ledger.open(self.exp.path) as led:
            attempts = int(led.jobs().get(run, {}).get("attempts", 1))
            again = attempts < 1 + self.retries
            led.release(run, "proposed" if again else "failed", problem)
        self._say(
            f"{run}: attempt {attempts} failed ({problem}); "
            + ("retrying" if again else "marked failed")
        )
        if again:
            summary.retried += 1
        else:
            summary.failed.append(run)
        return again

    def _stop(self, inflight: dict, summary: RunSummary) -> None:
        """After Ctrl-C: stop the jobs, record results that arrived, release the rest."""
        self._say("interrupted: stopping the running jobs")
        self.executor.cancel_all()
        for fut, run in list(inflight.items()):
            result = None
            if fut.done() and not fut.cancelled():
                try:
                    result = fut.result()
                except Exception:
                    result = None
            if result is not None and result.ok:
                self._finish(run, result, summary)
                continue
            with Ledger.open(self.exp.path) as led:
                led.release(run, "proposed", "interrupted by the user", refund=True)
        inflight.clear()
        # A run claimed just before the interrupt may not have reached ``inflight`` yet (the
        # signal landed between the claim and the launch): the ledger says which runs are ours.
        for run in self._owned_running():
            with Ledger.open(self.exp.path) as led:
                led.release(run, "proposed", "interrupted by the user", refund=True)

    def _owned_running(self) -> list[str]:
        """The runs the ledger holds as running for this runner (its host and pid)."""
        with Ledger.open(self.exp.path) as led:
            running = set(map(str, led.runs("running")["run"]))
            jobs = led.jobs()
        return sorted(r for r in running if jobs.get(r, {}).get("owner") == self.owner)


def _alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def runs_frame(ledger_path: str | os.PathLike) -> pd.DataFrame:
    """Tidy table of the runs launched by ``bayesmix run``: run, status, attempts, last note."""
    with Ledger.open(ledger_path) as led:
        runs = led.runs()
        jobs = led.jobs()
    rows = []
    for run, status in zip(runs["run"], runs["status"]):
        job = jobs.get(str(run))
        if job:
            history = job.get("history", [])
            rows.append(
                {
                    "run": str(run),
                    "status": status,
                    "attempts": int(job.get("attempts", 0)),
                    "last_note": history[-1] if history else "",
                }
            )
    return pd.DataFrame(rows, columns=["run", "status", "attempts", "last_note"])
