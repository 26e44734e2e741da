"""One training job and how it runs: the interface every executor implements.

:class:`Job` (a run's command, folder and result file), :class:`JobResult`, the
:class:`Executor` protocol (``submit``, ``cancel_all``, ``shutdown``) and :func:`run_job`, which
runs one job the same way on every executor (its own process group; :func:`stop_process` ends
it). Below the executors (:mod:`bayesmix.loop.executors`, :mod:`bayesmix.loop.executor_slurm`),
which both use it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

#: Characters of a failed job's stderr kept in the ledger.
STDERR_TAIL_CHARS = 2000
#: Seconds between SIGTERM and SIGKILL when a job is stopped.
KILL_GRACE_S = 5.0
#: Seconds between checks of a running job (exit, timeout, cancellation).
POLL_S = 0.1


@dataclass(frozen=True)
class Job:
    """One launch of one run: ``command`` (a shell command, placeholders already filled),
    ``folder`` (its working folder, created), ``mixture_file`` and ``mixture_json`` (the file
    the command may read, written before it starts), ``out`` (the result file it must write),
    ``timeout_s`` (None: no limit), extra environment variables ``env``, ``cwd`` where the
    command starts (None, or a directory this host lacks, e.g. on another Ray node: ``folder``)."""

    run: str
    command: str
    folder: str
    mixture_file: str
    mixture_json: str
    out: str
    timeout_s: float | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None


@dataclass
class JobResult:
    """What became of a job: ``returncode`` (negative: killed by that signal; None: it could not
    start), ``elapsed_s``, ``stderr_tail``, ``result_text`` (the result file's text, None when
    the job wrote none), ``timed_out``, ``host``."""

    run: str
    returncode: int | None
    elapsed_s: float
    stderr_tail: str = ""
    result_text: str | None = None
    timed_out: bool = False
    host: str = ""
    #: Why the result file the job left cannot be used (not UTF-8 text, a folder), or "".
    result_problem: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.result_text is not None

    def problem(self) -> str:
        """One line saying why the job failed (empty when it did not)."""
        if self.ok:
            return ""
        if self.returncode is None:
            what = "could not start"
        elif self.timed_out:
            what = f"timed out after {self.elapsed_s:.0f} s"
        elif self.returncode < 0 or 128 < self.returncode <= 128 + 64:
            # negative: the job itself was killed; 129-192: the shell running it reports a
            # command killed by signal (status - 128), e.g. 137 for SIGKILL
            number = -self.returncode if self.returncode < 0 else self.returncode - 128
            try:
                name = signal.Signals(number).name
            except ValueError:
                name = f"signal {number}"
            what = f"killed by {name}" + (
                f" (exit status {self.returncode})" if self.returncode > 0 else ""
            )
        elif self.returncode != 0:
            what = f"exited with status {self.returncode}"
        elif self.result_problem:
            what = f"exited 0 but its result file {self.result_problem}"
        else:
            what = "exited 0 but wrote no result file"
        tail = " | ".join(line for line in self.stderr_tail.strip().splitlines()[-3:] if line)
        return f"{what}" + (f"; stderr: {tail}" if tail else "")


class Executor(Protocol):
    """Runs jobs somewhere; see the module docstring."""

    def submit(self, job: Job) -> Future[JobResult]: ...

    def cancel_all(self) -> None: ...

    def shutdown(self) -> None: ...


def run_job(job: Job, on_start=None, cancelled=None) -> JobResult:
    """Run ``job`` here and wait for it: write its mixture file, start the command in its own
    process group (``on_start(popen)`` is called once it runs), stop it at the timeout or as
    soon as ``cancelled()`` is true (checked every :data:`POLL_S`), end whatever it left
    running in its group, read back stderr's tail and the result file. Never raises for a
    failing command or a folder it cannot use: the JobResult says what failed."""
    folder = Path(job.folder)
    host = socket.gethostname()
    try:
        prepare_folder(job)
    except OSError as err:
        return JobResult(job.run, None, 0.0, f"its folder cannot be used: {err}", host=host)
    t0 = time.perf_counter()
    timed_out = False
    env = {**os.environ, **job.env}
    with open(folder / "stdout.log", "ab") as so, open(folder / "stderr.log", "ab") as se:
        se.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} {job.command}\n".encode())
        se.flush()
        start = se.tell()  # this attempt's stderr begins here
        try:
            proc = subprocess.Popen(
                job.command,
                shell=True,
                cwd=job.cwd if job.cwd and Path(job.cwd).is_dir() else folder,
                stdout=so,
                stderr=se,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        except OSError as err:
            return JobResult(job.run, None, 0.0, f"{err}", host=host)
        if on_start is not None:
            on_start(proc)
        try:
            # polled, not one blocking wait: Ray cancels a task by raising KeyboardInterrupt
            # between Python bytecodes, which a blocking waitpid would never reach
            deadline = None if job.timeout_s is None else time.monotonic() + job.timeout_s
            while proc.poll() is None:
                if deadline is not None and time.monotonic() > deadline:
                    timed_out = True
                    break
                if cancelled is not None and cancelled():
                    break
                time.sleep(POLL_S)
        finally:
            stop_process(proc)  # the command, or what it left behind in its group
    elapsed = time.perf_counter() - t0
    if cancelled is not None and not timed_out and cancelled():
        return JobResult(job.run, proc.returncode, elapsed, "cancelled", host=host)
    tail = _tail(folder / "stderr.log", start)
    text, problem = read_result(Path(job.out), proc.returncode)
    return JobResult(
        job.run,
        proc.returncode,
        elapsed,
        tail,
        text,
        timed_out=timed_out,
        host=host,
        result_problem=problem,
    )


def prepare_folder(job: Job) -> None:
    """Create the job's folder, write its mixture file and set aside a result file left by an
    earlier attempt. OSError when the folder cannot be used (read-only, a file in the way, a
    result path that is a folder)."""
    folder = Path(job.folder)
    folder.mkdir(parents=True, exist_ok=True)
    Path(job.mixture_file).write_text(job.mixture_json + "\n")
    out = Path(job.out)
    if out.is_dir():
        raise IsADirectoryError(f"{out} is a folder where the result file belongs; remove it")
    if out.exists():  # left over from an attempt that failed after writing it
        out.unlink()


def read_result(out: Path, returncode: int | None) -> tuple[str | None, str]:
    """(the result file's text or None, why it cannot be used or ""). A failed attempt's
    result is not a result: it is set aside as ``<out>.failed``, never ingested; so is a file
    that is not UTF-8 text."""
    if out.is_dir():
        return None, f"{out} is a folder, not a file"
    if not out.is_file():
        return None, ""
    aside = out.with_name(out.name + ".failed")
    if returncode != 0:
        out.replace(aside)
        return None, ""
    try:
        return out.read_text(encoding="utf-8"), ""
    except UnicodeDecodeError:
        out.replace(aside)
        return None, f"is not UTF-8 text (kept as {aside.name})"
    except OSError as err:
        return None, f"cannot be read: {err.strerror or err}"


def stop_process(proc: subprocess.Popen) -> None:
    """End the job's whole process group: SIGTERM, then SIGKILL after :data:`KILL_GRACE_S` to
    whatever is left, the command itself or children it left behind (the group outlives a
    leader that exited, so its members are checked, not only the leader)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not group_alive(proc.pid):
            break
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            break
        deadline = time.monotonic() + (KILL_GRACE_S if sig == signal.SIGTERM else 1.0)
        while time.monotonic() < deadline:
            proc.poll()  # reap the leader, so it does not count as a member
            if not group_alive(proc.pid):
                break
            time.sleep(POLL_S)
    try:
        proc.wait(timeout=KILL_GRACE_S)
    except subprocess.TimeoutExpired:
        pass


def group_alive(pgid: int) -> bool:
    """True while any process of group ``pgid`` runs. Zombies (exited, waiting for a parent
    that may never reap them, as in containers whose first process does not) do not count;
    on Linux /proc tells them apart, elsewhere any member counts."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path("/proc")
    if not (proc / "self" / "stat").is_file():
        return True
    for stat in proc.glob("[0-9]*/stat"):
        try:
            state, _ppid, group = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        if int(group) == pgid and state != "Z":
            return True
    return False


def _tail(path: Path, start: int = 0) -> str:
    """The last :data:`STDERR_TAIL_CHARS` bytes of ``path`` after byte ``start``."""
    try:
        with open(path, "rb") as f:
            f.seek(max(start, f.seek(0, os.SEEK_END) - STDERR_TAIL_CHARS))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""
