"""Run statuses and job records in the ledger: changes by hand (:func:`set_statuses`, all or
nothing) and the attempts of ``bayesmix run`` (:func:`claim`, :func:`release`,
:func:`heartbeat`: one job record per launched run, in ``meta`` under ``job:<run>``).

Allowed status changes (:data:`TRANSITIONS`)::

    proposed  -> running | failed | abandoned | completed*
    running   -> proposed | failed | abandoned | completed*
    failed    -> proposed          (retry)
    abandoned -> proposed          (revive)
    completed -> (final)

``*`` only by recording results (``ledger_results``), never by hand.
"""

from __future__ import annotations

import difflib
import json
import sqlite3
from collections.abc import Iterable, Mapping

from bayesmix import errors
from bayesmix.loop.ledger_store import STATUSES, LedgerStore, now

#: Allowed status changes (see the module docstring); ``completed`` only via recorded results.
TRANSITIONS = {
    "proposed": ("running", "failed", "abandoned", "completed"),
    "running": ("proposed", "failed", "abandoned", "completed"),
    "failed": ("proposed",),
    "abandoned": ("proposed",),
    "completed": (),
}
#: Prefix of the meta keys holding each launched run's job record (see :func:`claim`).
JOB_KEY = "job:"


# ---------------------------------------------------------------------------------- by hand
def set_statuses(store: LedgerStore, changes: Mapping[str, str]) -> list[str]:
    """Change several runs' statuses, all or nothing: every change is checked (known run,
    known status, allowed transition) before any is written, in one transaction. A run set
    back to proposed by hand gets its attempts afresh. Returns the runs whose status changed."""
    changes = {str(r): s for r, s in dict(changes).items()}
    for run, status in changes.items():
        if status not in STATUSES:
            raise errors.LedgerError(
                f"unknown status {status!r}",
                run=run,
                source=str(store.path),
                hint=f"use one of {', '.join(STATUSES)}; nothing was changed",
            )
    with store.write("set_status") as con:
        current = dict(con.execute("SELECT run, status FROM runs"))
        changed = [
            run
            for run, status in changes.items()
            if _allowed_change(store, con, run, current.get(run), status)
        ]
        _refuse_older_set(store, con, [r for r in changed if changes[r] == "proposed"])
        stamp = now()
        for i, run in enumerate(changed):
            if i:
                store.fault("set_status:updated")
            con.execute(
                "UPDATE runs SET status = ?, updated = ? WHERE run = ?", (changes[run], stamp, run)
            )
            if changes[run] == "proposed":
                _reset_attempts(store, con, run, stamp)
    return changed


def _allowed_change(
    store: LedgerStore, con: sqlite3.Connection, run: str, old: str | None, status: str
) -> bool:
    """Whether ``run`` (status ``old``, None when unknown) changes to ``status``: False when it
    has it already, LedgerError when the change is not allowed."""
    if old is None:
        err = _unknown_run(store, con, run)
        raise type(err)(
            err.problem, source=err.source, run=err.run, hint=f"{err.hint}; nothing was changed"
        )
    if old == status:
        return False
    if status == "completed":
        raise errors.LedgerError(
            f"cannot mark a run completed by hand (it is {old})",
            run=run,
            source=str(store.path),
            hint="runs become completed when their results are recorded "
            "(bayesmix ingest); nothing was changed",
        )
    if status not in TRANSITIONS[old]:
        allowed = [s for s in TRANSITIONS[old] if s != "completed"]
        raise errors.LedgerError(
            f"cannot change status from {old} to {status}",
            run=run,
            source=str(store.path),
            hint=(
                f"from {old} a run may go to {', '.join(allowed)}" if allowed else f"{old} is final"
            )
            + "; nothing was changed",
        )
    return True


def _refuse_older_set(store: LedgerStore, con: sqlite3.Connection, runs: list[str]) -> None:
    """A run of an earlier domain set cannot be proposed again (its mixture is in the old set)."""
    for run in runs:
        (version,) = con.execute("SELECT domain_set FROM runs WHERE run = ?", (run,)).fetchone()
        if version != store.version:
            raise errors.LedgerError(
                f"run is of domain set {store.domain_sets[version - 1].name!r}, not the current "
                f"{store.domain_sets[-1].name!r}: it cannot be proposed again",
                run=run,
                source=str(store.path),
                hint="propose a new run in the current domain set; nothing was changed",
            )


def _reset_attempts(store: LedgerStore, con: sqlite3.Connection, run: str, stamp: str) -> None:
    """A run set back to proposed by hand gets bayesmix run's retries afresh."""
    job = _job(store, con, run)
    if job.get("attempts"):
        job.setdefault("history", []).append(
            f"set to proposed by hand at {stamp}: attempt count reset"
        )
        job["attempts"] = 0
        _put_job(con, run, job)


def _unknown_run(store: LedgerStore, con: sqlite3.Connection, run: str) -> errors.LedgerError:
    ids = [r for (r,) in con.execute("SELECT run FROM runs")]
    close = difflib.get_close_matches(run, ids, n=1, cutoff=0.6)
    return errors.LedgerError(
        "no such run in the ledger",
        source=str(store.path),
        run=run,
        hint=f"did you mean {close[0]!r}?" if close else "see `bayesmix status` for the run ids",
    )


# ---------------------------------------------------------------------------------- bayesmix run
def claim(store: LedgerStore, run: str, owner: Mapping, *, stale: bool = False) -> dict | None:
    """Mark ``run`` running for ``owner`` in one transaction and return its job record; None
    when it is not proposed (``stale``: nor running) any more (see :meth:`Ledger.claim`)."""
    with store.write("claim") as con:
        row = con.execute("SELECT status FROM runs WHERE run = ?", (run,)).fetchone()
        allowed = ("proposed", "running") if stale else ("proposed",)
        if row is None or row[0] not in allowed:
            return None
        job = _job(store, con, run)
        stamp = now()
        job.update(
            attempts=int(job.get("attempts", 0)) + 1,
            owner=dict(owner),
            started=stamp,
            heartbeat=stamp,
        )
        con.execute("UPDATE runs SET status = 'running', updated = ? WHERE run = ?", (stamp, run))
        _put_job(con, run, job)
    return job


def release(
    store: LedgerStore, run: str, status: str, note: str | None = None, *, refund: bool = False
) -> None:
    """End ``run``'s current attempt with status ``proposed`` or ``failed`` and ``note`` in
    its history; ``refund``: the attempt does not count. A run no longer running is left as it
    is."""
    if status not in ("proposed", "failed"):
        raise ValueError(f"release to proposed or failed, not {status!r}")
    with store.write("release") as con:
        row = con.execute("SELECT status FROM runs WHERE run = ?", (run,)).fetchone()
        if row is None or row[0] != "running":
            return
        job = _job(store, con, run)
        if note:
            job.setdefault("history", []).append(f"attempt {job.get('attempts', 0)}: {note}")
        if refund:
            job["attempts"] = max(0, int(job.get("attempts", 1)) - 1)
        job.pop("owner", None)
        con.execute("UPDATE runs SET status = ?, updated = ? WHERE run = ?", (status, now(), run))
        _put_job(con, run, job)


def heartbeat(store: LedgerStore, runs: Iterable[str]) -> None:
    """Refresh the heartbeat of these running runs' job records (a live runner's sign)."""
    runs = list(runs)
    if not runs:
        return
    with store.write("heartbeat") as con:
        stamp = now()
        for run in runs:
            job = _job(store, con, run)
            if job:
                job["heartbeat"] = stamp
                _put_job(con, run, job)


def jobs(store: LedgerStore) -> dict[str, dict]:
    """Every launched run's job record, by run id."""
    with store.read() as con:
        rows = con.execute(
            "SELECT key, value FROM meta WHERE key LIKE ?", (JOB_KEY + "%",)
        ).fetchall()
    return {k[len(JOB_KEY) :]: store.meta_record(k, v) for k, v in rows}


def _job(store: LedgerStore, con: sqlite3.Connection, run: str) -> dict:
    row = con.execute("SELECT value FROM meta WHERE key = ?", (JOB_KEY + run,)).fetchone()
    return store.meta_record(JOB_KEY + run, row[0]) if row else {}


def _put_job(con: sqlite3.Connection, run: str, job: dict) -> None:
    con.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
        (JOB_KEY + run, json.dumps(job, sort_keys=True)),
    )
