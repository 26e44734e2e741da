"""Where the training jobs of ``bayesmix run`` execute: this machine or a Ray cluster.

One small interface (:class:`~bayesmix.loop.jobs.Executor`): ``submit(job) -> Future[JobResult]``,
``cancel_all()`` (stop every job now: Ctrl-C) and ``shutdown()``. A job is a shell command
already filled in from the user's template (:class:`Job`); :func:`run_job` runs it the same way
everywhere: in the run's folder, with the mixture file written first, stdout and stderr kept in
``stdout.log``/``stderr.log`` there, and returns the exit code, the tail of stderr and the text
of the result file the job wrote (so a result written on a remote machine comes back to the
ledger's machine). Adding a scheduler (e.g. Slurm through submitit) means one more class with
these three methods; the loop (:mod:`bayesmix.loop.runner`) does not change.

* :class:`LocalExecutor`: a pool of ``parallel`` threads, each running one job as a subprocess
  in its own process group (so Ctrl-C reaches only the runner, which then stops the jobs).
* :class:`RayExecutor`: one Ray task per job (``num_cpus=1`` each), on the cluster at
  ``address`` or on a local Ray instance bound to the loopback address. Needs the ``ray``
  extra (``pip install 'bayesmix[ray]'``). Paths in the template are paths on the worker; the
  worker needs the training script and its data, not a shared file system for results.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from bayesmix import errors
from bayesmix.loop.jobs import (
    KILL_GRACE_S,
    Executor,
    Job,
    JobResult,
    run_job,
    stop_process,
)

EXECUTORS = ("local", "ray", "slurm")


class LocalExecutor:
    """Jobs as subprocesses of this machine, ``parallel`` at a time."""

    def __init__(self, parallel: int = 1):
        if parallel < 1:
            raise errors.OptionError(f"--parallel must be >= 1, got {parallel}")
        self.parallel = parallel
        self._pool = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="bayesmix-job")
        self._running: dict[str, subprocess.Popen] = {}
        self._lock = threading.Lock()
        self._cancelled = False

    def __repr__(self) -> str:
        return f"LocalExecutor(parallel={self.parallel})"

    def submit(self, job: Job) -> Future[JobResult]:
        return self._pool.submit(self._run, job)

    def _run(self, job: Job) -> JobResult:
        if self._cancelled:
            return JobResult(job.run, None, 0.0, "cancelled before it started")

        def started(proc: subprocess.Popen) -> None:
            with self._lock:
                self._running[job.run] = proc
            if self._cancelled:  # cancel_all ran between Popen and here
                stop_process(proc)

        try:
            return run_job(job, on_start=started)
        finally:
            with self._lock:
                self._running.pop(job.run, None)

    def cancel_all(self) -> None:
        self._cancelled = True
        with self._lock:
            procs = list(self._running.values())
        threads = [threading.Thread(target=stop_process, args=(p,)) for p in procs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class RayExecutor:
    """Jobs as Ray tasks (one CPU each) on the cluster at ``address`` (``ray://host:port`` or
    ``host:port``), or on a new local Ray instance on 127.0.0.1 with ``parallel`` CPUs."""

    def __init__(self, parallel: int = 1, address: str | None = None):
        try:
            import ray
        except ImportError:
            raise errors.OptionError(
                "--executor ray needs Ray: pip install 'bayesmix[ray]' (or use --executor local)"
            ) from None
        if parallel < 1:
            raise errors.OptionError(f"--parallel must be >= 1, got {parallel}")
        self.parallel, self.address = parallel, address
        self._ray = ray
        self._owns = not ray.is_initialized()
        if self._owns:
            kw: dict = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
            if address:
                check_reachable(address)
            try:
                if address:
                    ray.init(address=address, **kw)
                else:
                    ray.init(address="local", _node_ip_address="127.0.0.1", num_cpus=parallel, **kw)
            except Exception as err:  # ConnectionError, RuntimeError, ...: one line
                where = address or "a local instance"
                raise errors.OptionError(f"cannot start Ray on {where}: {err}") from None
        self._task = ray.remote(num_cpus=1, max_retries=0)(_ray_job)
        self._refs: dict[str, object] = {}
        self._flag: Any = None  # the CancelFlag actor (a Ray handle), started with the first job

    def __repr__(self) -> str:
        return f"RayExecutor(parallel={self.parallel}, address={self.address!r})"

    def submit(self, job: Job) -> Future[JobResult]:
        if self._flag is None:
            self._flag = self._ray.remote(num_cpus=0)(CancelFlag).remote()
        ref = self._task.remote(job, self._flag)
        self._refs[job.run] = ref
        future: Future[JobResult] = ref.future()  # type: ignore[attr-defined]
        return future

    def cancel_all(self) -> None:
        """Stop every job and wait for them up to :data:`KILL_GRACE_S` + 5 s: running tasks
        see the :class:`CancelFlag` set and stop their job's process group; tasks not yet
        started are cancelled by Ray. (Ray's own interrupt of a running task, a
        KeyboardInterrupt, is not relied on: it can miss a task that is sleeping between
        polls, ray-project/ray#32954, and the job then outlived ``cancel_all``.)"""
        refs = list(self._refs.values())
        if self._flag is not None:
            try:
                self._ray.get(self._flag.set.remote(), timeout=10.0)
            except Exception:
                pass
        for ref in refs:
            try:
                self._ray.cancel(ref, force=False)
            except Exception:
                pass
        try:
            self._ray.wait(refs, num_returns=len(refs), timeout=KILL_GRACE_S + 5.0)
        except Exception:
            pass

    def shutdown(self) -> None:
        if self._owns and self._ray.is_initialized():
            self._ray.shutdown()


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """OptionError at once when nothing listens at a Ray ``address`` (``host:port`` or
    ``ray://host:port``): Ray itself retries such an address for minutes. ``auto`` and
    addresses without a port are left to Ray."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as err:
        raise errors.OptionError(
            f"cannot reach Ray at {address}: {err.strerror or err}",
            hint="start the cluster (ray start --head) or check the address",
        ) from None


class CancelFlag:
    """A Ray actor the driver sets when it cancels every job; the tasks read it."""

    def __init__(self):
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set


#: Seconds between two reads of the CancelFlag by a running task.
FLAG_POLL_S = 0.5


class FlagReader:
    """``cancelled()`` for :func:`run_job`: the CancelFlag actor's state, read at most every
    :data:`FLAG_POLL_S` (an unreachable flag reads as not set: the task keeps running)."""

    def __init__(self, flag):
        self.flag, self.next_read, self.set = flag, 0.0, False

    def __call__(self) -> bool:
        import ray

        now = time.monotonic()
        if not self.set and now >= self.next_read:
            self.next_read = now + FLAG_POLL_S
            try:
                self.set = bool(ray.get(self.flag.is_set.remote(), timeout=5.0))
            except Exception:
                pass
        return self.set


def _ray_job(job: Job, flag=None) -> JobResult:
    """:func:`run_job` inside a Ray task: it stops its job's process group when the
    executor's :class:`CancelFlag` is set, or when the task is cancelled by Ray (a
    KeyboardInterrupt raised in it) instead of outliving the task. Ray raises that interrupt
    through SIGINT, which a worker ignores when the driver was started with SIGINT ignored
    (``bayesmix run ... &`` from a script), so it is re-armed."""
    _rearm_sigint()
    procs: list[subprocess.Popen] = []
    try:
        return run_job(
            job, on_start=procs.append, cancelled=None if flag is None else FlagReader(flag)
        )
    except BaseException:
        for proc in procs:
            stop_process(proc)
        raise


def _rearm_sigint() -> None:
    """Make SIGINT raise KeyboardInterrupt again in this (worker) process if it is ignored;
    nothing off the main thread, where handlers cannot be set."""
    try:
        if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
            signal.signal(signal.SIGINT, signal.default_int_handler)
    except ValueError:  # not the main thread
        pass


def get_executor(
    name: str,
    parallel: int = 1,
    address: str | None = None,
    *,
    slurm: Mapping | None = None,
    folder: str | os.PathLike | None = None,
) -> Executor:
    """The executor called ``name`` (:data:`EXECUTORS`); ``slurm``: submitit's parameters
    (e.g. ``slurm_partition``, ``timeout_min``; ``cluster``: "slurm" or "local"), ``folder``:
    submitit's files (:mod:`bayesmix.loop.executor_slurm`)."""
    if address and name != "ray":
        raise errors.OptionError("--ray-address needs --executor ray")
    if name == "local":
        return LocalExecutor(parallel)
    if name == "ray":
        return RayExecutor(parallel, address)
    if name == "slurm":
        from bayesmix.loop.executor_slurm import SlurmExecutor

        params = dict(slurm or {})
        cluster = params.pop("cluster", None)
        return SlurmExecutor(
            parallel, folder=folder or "slurm-jobs", parameters=params, cluster=cluster
        )
    raise errors.OptionError(f"unknown executor {name!r}: use one of {', '.join(EXECUTORS)}")
