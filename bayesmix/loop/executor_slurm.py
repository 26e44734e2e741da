"""Training jobs of ``bayesmix run`` as Slurm jobs, through submitit (``--executor slurm``).

One Slurm job per run: submitit pickles :func:`bayesmix.loop.jobs.run_job` with the
:class:`~bayesmix.loop.jobs.Job` and runs it on a node, so the job runs there exactly as it
would locally (mixture file first, logs in the run's folder, the result file's text sent
back). ``folder`` keeps submitit's own files (its pickles and Slurm logs); the nodes need the
run folders and this Python environment on a shared file system, as Slurm clusters have.
``cluster="local"`` runs the same jobs as local processes through submitit (tests, laptops).
Needs the ``slurm`` extra (``pip install 'bayesmix[slurm]'``): submitit is the well-kept
library of Slurm submission from Python, whose job states and cancellation we would otherwise
rewrite.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from bayesmix import errors
from bayesmix.loop.jobs import Job, JobResult, run_job, stop_process


class SlurmExecutor:
    """Jobs as Slurm jobs (``parallel`` at a time); ``folder``: submitit's files;
    ``parameters``: submitit's (``slurm_partition``, ``timeout_min``, ``cpus_per_task``,
    ``gpus_per_node``, ``mem_gb``, ...); ``cluster``: None (Slurm when found), ``"slurm"`` or
    ``"local"``."""

    def __init__(
        self,
        parallel: int = 1,
        *,
        folder: str | os.PathLike,
        parameters: Mapping | None = None,
        cluster: str | None = None,
    ):
        try:
            import submitit
        except ImportError:
            raise errors.OptionError(
                "--executor slurm needs submitit: pip install 'bayesmix[slurm]'"
            ) from None
        if parallel < 1:
            raise errors.OptionError(f"--parallel must be >= 1, got {parallel}")
        if cluster not in (None, "slurm", "local"):
            raise errors.OptionError(f"cluster must be 'slurm' or 'local', got {cluster!r}")
        self.parallel, self.folder, self.cluster = parallel, Path(folder), cluster
        try:
            self._ex = submitit.AutoExecutor(folder=str(self.folder), cluster=cluster)
            self._ex.update_parameters(**dict(parameters or {}))
        except Exception as err:  # no sbatch found, an unknown parameter: one line
            raise errors.OptionError(f"cannot set up the Slurm executor: {err}") from None
        self._jobs: dict[str, object] = {}
        self._waiters = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="slurm-wait")

    def __repr__(self) -> str:
        return f"SlurmExecutor(parallel={self.parallel}, cluster={self.cluster!r})"

    def submit(self, job: Job) -> Future[JobResult]:
        sjob = self._ex.submit(slurm_job, job)
        self._jobs[job.run] = sjob
        return self._waiters.submit(_wait, job, sjob)

    def cancel_all(self) -> None:
        """scancel every job (SIGTERM in the job, which stops its process group)."""
        for sjob in self._jobs.values():
            try:
                sjob.cancel(check=False)  # type: ignore[attr-defined]
            except Exception:
                pass

    def shutdown(self) -> None:
        self._waiters.shutdown(wait=True, cancel_futures=True)


def _wait(job: Job, sjob) -> JobResult:
    """The job's JobResult; a Slurm-level failure (cancelled, node lost, out of time) as a
    failed JobResult naming the Slurm job."""
    try:
        result = sjob.result()
    except Exception as err:
        text = str(err).strip().splitlines()
        why = text[-1] if text else type(err).__name__
        return JobResult(job.run, None, 0.0, f"Slurm job {sjob.job_id} failed: {why}")
    return result


def slurm_job(job: Job) -> JobResult:
    """:func:`run_job` inside a Slurm job: SIGTERM (scancel, the time limit) stops the job's
    process group before the job ends, instead of leaving the training command running."""
    procs: list[subprocess.Popen] = []

    def stop(signum, frame):
        for proc in procs:
            stop_process(proc)
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread: nothing to arm
        pass
    return run_job(job, on_start=procs.append)
