"""The experiment ledger: one SQLite file per mixture experiment.

It holds what an active-learning loop must never lose: the training and validation domains, the
constraints, free-form settings (e.g. target weights), every proposed run (id, mixture, optional
model size and training amount, strategy, round, the posterior it came from with a content hash),
each run's status, and its results (losses per validation domain per step).

:class:`Ledger` is the one class the package and its users open. Its storage (the file, schema,
connection, the one write transaction, damage checks: :mod:`bayesmix.loop.ledger_store`) is
shared by its operations, each in a module of its own: proposals (``ledger_proposals``), fits and
hand-off files per round (``ledger_rounds``), statuses and job records (``ledger_status``),
results (``ledger_results``), domain-set versions (``ledger_versions``: the table and the
upgrade of older ledgers; ``ledger_domains``: a change of the set, runs read in the current set)
and read-only views (``ledger_views``); the proposals file for the training jobs is
:mod:`bayesmix.loop.proposals_file`.

Domain-set versions. The ledger records every version of the training-domain set (name,
domains, constraints, the map from the version before) and, with every run, the version it was
proposed under; a run's stored mixture is never rewritten. :meth:`Ledger.change_domains` adds a
version; :meth:`Ledger.run_table` and :meth:`Ledger.runs` then give every run in the current set,
older runs remapped through the stored maps (chained), so a fit after a change uses all of them.

Every write is one ``BEGIN IMMEDIATE`` transaction on a WAL-mode database with a busy timeout, so
a process killed mid-write leaves the ledger as it was before that write, and concurrent writers
queue instead of interleaving. Unique constraints (run id; run, step, validation domain) guard
against duplicates even if the Python checks were bypassed.

Run statuses and their allowed changes (:data:`TRANSITIONS`)::

    proposed  -> running | failed | abandoned | completed*
    running   -> proposed | failed | abandoned | completed*
    failed    -> proposed          (retry)
    abandoned -> proposed          (revive)
    completed -> (final)

``*`` only by recording results (:meth:`Ledger.record_results`), never by hand.

Concurrent proposers. :meth:`Ledger.add_proposals` with ``round=None`` allocates the next round
inside its write transaction and, with ``min_distance``, re-checks every proposal against every
pending and completed run as they are at that moment (runs another process recorded while this
one was choosing included): two proposers never share a round, and a batch that came too close
to runs recorded meanwhile is refused whole (:class:`ProposalConflictError`, nothing written) so
the caller can choose again.

Files. Posterior paths are stored relative to the ledger's folder (so the ledger and its
posteriors can be moved together and used from any working directory); entries written relative
to the working directory of the time are still found (:meth:`Ledger.resolve_path`). Each round
whose proposals are handed off in a file records the file's path and whether it was written, so
a round whose file was lost (process killed between the ledger write and the file) is reported
and can be rewritten from the ledger (:meth:`Ledger.handoff_frame`, ``bayesmix export``).

Recording results is idempotent: a loss already stored with the same value (relative tolerance
:data:`VALUE_RTOL`) is left alone. A different value is a conflict: by default the whole file is
rejected and nothing is written; with ``on_conflict="replace"`` the new value overwrites the old
one and is counted as replaced. Every stored loss obeys :func:`bayesmix.data.table.check_loss`
(finite, positive, at most ``max_loss``).

Failures are one line (:class:`~bayesmix.errors.LedgerError`) and change nothing: a read-only
ledger (file or folder), a ledger locked for longer than the busy timeout, and a ledger edited by
hand or damaged (a ``meta`` or ``runs.mixture`` cell that is not JSON, mixtures whose length
disagrees with the domain list, results for an unknown validation domain:
:class:`DamagedLedgerError`, naming the file, table, row and column; checked when it is opened).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from bayesmix import errors
from bayesmix.data.constraints import Constraints
from bayesmix.data.table import MAX_LOSS, RunTable
from bayesmix.loop import (
    ledger_domains,
    ledger_fidelity,
    ledger_proposals,
    ledger_results,
    ledger_rounds,
    ledger_status,
    ledger_views,
)
from bayesmix.loop.ledger_domains import DomainChange
from bayesmix.loop.ledger_fidelity import Fidelity, describe_fidelity, resolve_fidelity
from bayesmix.loop.ledger_proposals import PerRun
from bayesmix.loop.ledger_results import MIXTURE_ATOL, VALUE_RTOL, IngestSummary
from bayesmix.loop.ledger_rounds import Handoff
from bayesmix.loop.ledger_status import TRANSITIONS
from bayesmix.loop.ledger_store import (
    STATUSES,
    LedgerStore,
    create_file,
    file_hash,
    open_connection,
)
from bayesmix.loop.ledger_versions import DomainSet
from bayesmix.loop.proposals_file import check_proposals_path, write_proposals

# The names the package and its users import from the ledger: defined in the modules above,
# importable from here as the one place to find them.
__all__ = [
    "MIXTURE_ATOL",
    "STATUSES",
    "TRANSITIONS",
    "VALUE_RTOL",
    "DamagedLedgerError",
    "DomainChange",
    "DomainSet",
    "Fidelity",
    "IngestSummary",
    "Ledger",
    "ProposalConflictError",
    "check_proposals_path",
    "describe_fidelity",
    "file_hash",
    "resolve_fidelity",
    "write_proposals",
]

ProposalConflictError = errors.ProposalConflictError
DamagedLedgerError = errors.DamagedLedgerError


class Ledger:
    """An open experiment ledger. Build with :meth:`create` or :meth:`open`; close when done
    (also a context manager). One connection per process: do not share across ``fork``."""

    def __init__(self, connection: sqlite3.Connection, path: Path):
        self._store = LedgerStore(connection, path)

    @property
    def path(self) -> Path:
        """The ledger file, as given when it was opened."""
        return self._store.path

    @property
    def train_domains(self) -> tuple[str, ...]:
        """The training domains: the order of every mixture's shares."""
        return self._store.train_domains

    @property
    def eval_domains(self) -> tuple[str, ...]:
        """The validation domains losses are recorded for."""
        return self._store.eval_domains

    @property
    def constraints(self) -> Constraints:
        """The feasible set every proposal must lie in."""
        return self._store.constraints

    @property
    def domain_sets(self) -> tuple[DomainSet, ...]:
        """Every version of the training-domain set, in order; the last is the current one."""
        return self._store.domain_sets

    @property
    def domain_set(self) -> str:
        """The name of the current domain-set version (``v1`` until the set changes)."""
        return self._store.domain_sets[-1].name

    @property
    def settings(self) -> dict:
        """Free-form settings given at creation (e.g. target weights)."""
        return self._store.settings

    # ------------------------------------------------------------------ create / open
    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        train_domains: Sequence[str],
        eval_domains: Sequence[str],
        constraints: Constraints | None = None,
        settings: Mapping | None = None,
    ) -> Ledger:
        """Write a new, empty ledger at ``path`` and open it; never overwrites an existing file.

        ``constraints`` default to the plain simplex over ``train_domains``; ``settings`` is any
        JSON-serialisable mapping (e.g. ``{"target_weights": {"web": 1.0}}``).
        """
        create_file(Path(path), train_domains, eval_domains, constraints, settings)
        return cls.open(path)

    @classmethod
    def open(cls, path: str | os.PathLike) -> Ledger:
        """Open an existing ledger; LedgerError if missing, not a ledger, or another schema."""
        path = Path(path)
        con = open_connection(path)
        try:
            return cls(con, path)
        except BaseException:
            con.close()
            raise

    def close(self) -> None:
        self._store.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Ledger({str(self.path)!r})"

    def check_writable(self) -> None:
        """LedgerError (one line) unless this process can write the ledger now: a write is
        tried and rolled back. Call it before long work (a fit) whose result must be
        recorded."""
        self._store.check_writable()

    # ------------------------------------------------------------------ files next to the ledger
    @property
    def folder(self) -> Path:
        """The ledger's folder (absolute): stored file paths are relative to it."""
        return self._store.folder

    def relative_path(self, path: str | os.PathLike) -> str:
        """``path`` (absolute or relative to the working directory) as stored in the ledger:
        relative to the ledger's folder (absolute when on another drive)."""
        return self._store.relative_path(path)

    def resolve_path(self, stored: str | None, file_hash_: str | None = None) -> Path | None:
        """The file a stored path names: relative to the ledger's folder, else relative to the
        working directory or next to the ledger under its file name (entries written relative
        to the working directory of the time). With ``file_hash_`` the first candidate with
        that content wins. None when no candidate exists (or matches)."""
        return self._store.resolve_path(stored, file_hash_)

    # ------------------------------------------------------------------ domain sets
    def change_domains(
        self,
        domain_map,
        *,
        name: str | None = None,
        constraints: Constraints | None = None,
        pending: str = "abandon",
    ) -> DomainChange:
        """Record a new version of the training-domain set, made from the current one by
        ``domain_map`` (a :class:`~bayesmix.data.domain_maps.DomainMap`, TOML path or dict), in
        one transaction; this ledger then works in the new set.

        ``name``: the new version's name (default: the map's ``to``, else ``v<N>``).
        ``constraints``: over the new domains (default: kept and renamed domains keep their
        bounds, the others are 0 to 1). ``pending``: the old version's proposed runs are
        ``"abandon"``-ed, or ``"remap"``-ped to the new set (abandoned when the map leaves them
        out or the new constraints exclude them). Refused while runs are running. Nothing is
        written on any error (:mod:`bayesmix.loop.ledger_domains`).
        """
        change = ledger_domains.change_domains(
            self._store, domain_map, name=name, constraints=constraints, pending=pending
        )
        self._store = LedgerStore(self._store.con, self._store.path)
        return change

    # ------------------------------------------------------------------ proposals
    def add_proposals(
        self,
        mixtures: np.ndarray | pd.DataFrame,
        strategy: str,
        round: int | None = None,
        *,
        posterior: str | os.PathLike | None = None,
        n_params: PerRun = None,
        steps: PerRun = None,
        tokens: PerRun = None,
        fit: Mapping | None = None,
        min_distance: float | None = None,
        handoff: Handoff | None = None,
    ) -> list[str]:
        """Record proposed runs atomically and return their new ids (``r0001``, ...).

        ``mixtures`` is (n, M) in :attr:`train_domains` order, or a DataFrame with one column
        per training domain. Each must satisfy the ledger's constraints. ``posterior`` is the
        file the proposals came from (its path and SHA-256 are stored). ``n_params``, ``steps``,
        ``tokens`` (the planned model size and training amount) are one value or one per run.
        ``fit`` (JSON-serialisable mapping, e.g. the posterior's path, hash and diagnostics
        warning) is stored for this round in the same transaction; see :meth:`fit_records`.

        ``round=None`` allocates the next round (0 in an empty ledger, else the highest + 1)
        inside the write transaction; read it back with :meth:`runs`. ``min_distance``
        (Euclidean, in shares): refuse the whole batch (:class:`ProposalConflictError`, nothing
        written) when a proposal lies closer than this to another of the batch or to any
        proposed, running or completed run at the moment of writing. ``handoff``: the file the
        proposals will be written to, or a callable giving it from the round (stored for the
        round; see :meth:`mark_handoff_written`).
        The posterior's path is stored relative to the ledger's folder.
        """
        return ledger_proposals.add_proposals(
            self._store,
            mixtures,
            strategy,
            round,
            posterior=posterior,
            n_params=n_params,
            steps=steps,
            tokens=tokens,
            fit=fit,
            min_distance=min_distance,
            handoff=handoff,
        )

    # ------------------------------------------------------------------ fits and hand-offs
    def set_menu(self, menu, target: Mapping) -> None:
        """Record the proxy menu (:class:`bayesmix.loop.fidelity.Menu`) and the target run's
        scale (``{"n_params": N, "tokens": D}``) of a multi-fidelity loop; replaces any before."""
        ledger_fidelity.set_fidelity(self._store, menu, target)

    def fidelity(self):
        """The recorded menu and target scale (:class:`~bayesmix.loop.ledger_fidelity.Fidelity`),
        or None."""
        return ledger_fidelity.fidelity(self._store)

    def record_fit(self, record: Mapping) -> None:
        """Store the record of the most recent fit (JSON-serialisable mapping: posterior path
        relative to the ledger's folder, its hash, the results digest, settings, diagnostics)."""
        ledger_rounds.record_fit(self._store, record)

    def last_fit(self) -> dict | None:
        """The most recent fit record (:meth:`record_fit`), else the record stored with the
        latest round of proposals (a ledger without a separate fit record), else None."""
        return ledger_rounds.last_fit(self._store)

    def fit_records(self) -> dict[int, dict]:
        """The fit records stored with proposals (``add_proposals(fit=...)``), by round."""
        return ledger_rounds.fit_records(self._store)

    def handoffs(self) -> dict[int, dict]:
        """Each round's hand-off file, by round: {"path": relative to the ledger's folder,
        "written": bool}."""
        return ledger_rounds.handoffs(self._store)

    def mark_handoff_written(self, round: int, path: str | os.PathLike | None = None) -> None:
        """Record that round ``round``'s proposals were written (to ``path``, default the file
        recorded with them)."""
        ledger_rounds.mark_handoff_written(self._store, round, path)

    def missing_handoffs(self) -> dict[int, str]:
        """Rounds whose hand-off file was never written (the process stopped between recording
        the runs and writing the file): {round: path relative to the ledger's folder}."""
        return ledger_rounds.missing_handoffs(self._store)

    def handoff_frame(self, round: int) -> pd.DataFrame:
        """The proposals of round ``round`` as written for the training jobs (the frame
        :func:`write_proposals` takes): every run proposed in that round, whatever its status
        now, in the order recorded; runs imported or ingested from outside are left out.
        LedgerError when the round has none."""
        return ledger_rounds.handoff_frame(self._store, round)

    def next_round(self) -> int:
        """The round the next batch of proposals would get (0 in an empty ledger)."""
        with self._store.read() as con:
            return ledger_rounds.next_round(con)

    # ------------------------------------------------------------------ statuses and jobs
    def set_status(self, run: str, status: str) -> None:
        """Change one run's status; LedgerError for an unknown run or a forbidden change.

        Setting the same status again does nothing. ``completed`` cannot be set by hand: a run
        becomes completed when its results are recorded.
        """
        self.set_statuses({run: status})

    def set_statuses(self, changes: Mapping[str, str]) -> list[str]:
        """Change several runs' statuses, all or nothing: every change is checked (known run,
        known status, allowed transition, see :meth:`set_status`) before any is written, in one
        transaction. Returns the runs whose status changed."""
        return ledger_status.set_statuses(self._store, changes)

    def claim(self, run: str, owner: Mapping, *, stale: bool = False) -> dict | None:
        """Mark ``run`` running for ``owner`` (``{"host", "pid", ...}``) in one transaction and
        return its job record (``attempts`` counts launches, this one included; ``owner``,
        ``started``, ``heartbeat``: UTC ISO times; ``history``: one line per earlier attempt).

        Only a proposed run is claimed (``stale=True``: also a running one, taken over from a
        dead runner); None when another runner changed it first, so two runners never launch
        the same run."""
        return ledger_status.claim(self._store, run, owner, stale=stale)

    def release(
        self, run: str, status: str, note: str | None = None, *, refund: bool = False
    ) -> None:
        """End ``run``'s current attempt: status ``proposed`` (to be launched again) or
        ``failed``, with ``note`` (e.g. the job's stderr tail) added to its job record's
        history. ``refund``: the attempt does not count (interrupted by the user). A run that is
        no longer running (completed meanwhile) is left as it is."""
        ledger_status.release(self._store, run, status, note, refund=refund)

    def heartbeat(self, runs: Iterable[str]) -> None:
        """Refresh the heartbeat of these running runs' job records (a live runner's sign)."""
        ledger_status.heartbeat(self._store, runs)

    def jobs(self) -> dict[str, dict]:
        """Every launched run's job record, by run id."""
        return ledger_status.jobs(self._store)

    # ------------------------------------------------------------------ results
    def record_results(
        self,
        table: RunTable,
        *,
        unknown: str = "error",
        on_conflict: str = "error",
        max_loss: float = MAX_LOSS,
    ) -> IngestSummary:
        """Record the losses in ``table`` for runs of this ledger, in one transaction.

        Checks that the table's training domains are the ledger's, its validation domains are
        known, each run's mixture matches the proposed one (within :data:`MIXTURE_ATOL`) and the
        run is not failed or abandoned (set it back to proposed first). Proposed and running runs
        become completed. Runs the ledger does not know are an error (``unknown="error"``) or
        are added as completed runs with strategy ``"external"`` in the current round, flagged
        external (``unknown="import"``). Idempotent; conflicting values are rejected or replaced
        (``on_conflict="error" | "replace"``), see the module docstring. Every loss is checked
        with :func:`bayesmix.data.table.check_loss` (finite, > 0, at most ``max_loss`` nats per
        token) before anything is written.
        """
        return ledger_results.ingest(
            self._store,
            table,
            unknown=unknown,
            on_conflict=on_conflict,
            imported=False,
            max_loss=max_loss,
        )

    def import_runs(
        self, table: RunTable, *, on_conflict: str = "error", max_loss: float = MAX_LOSS
    ) -> IngestSummary:
        """Add past runs (status completed, strategy ``"imported"``, round 0, flagged external).

        Runs already in the ledger are treated as by :meth:`record_results`, so importing the
        same table twice changes nothing.
        """
        return ledger_results.ingest(
            self._store,
            table,
            unknown="import",
            on_conflict=on_conflict,
            imported=True,
            max_loss=max_loss,
        )

    # ------------------------------------------------------------------ views
    def runs(
        self, status: str | Iterable[str] | None = None, *, domain_set: int | str | None = None
    ) -> pd.DataFrame:
        """Runs in the order they were added, one row each: run, round, strategy, status,
        external, n_params, steps, tokens, posterior (absolute path, found from the ledger's
        folder), posterior_hash, created, updated, checkpoints (records with results),
        domain_set (the version's name), mix.<train domain>... in the current set (runs of
        earlier versions remapped; NaN for runs a map leaves out). ``domain_set`` (a version's
        number or name): that version's runs only, as stored, in its own domains."""
        return ledger_views.runs_frame(self._store, status, domain_set)

    def pending(self) -> pd.DataFrame:
        """Mixtures of proposed and running runs: DataFrame (index ``run``, columns training
        domains), e.g. to condition the next batch on runs still in flight."""
        return ledger_views.pending(self._store)

    def run_table(
        self,
        status: str | Iterable[str] | None = "completed",
        *,
        domain_set: int | str | None = None,
        report: list[str] | None = None,
    ) -> RunTable:
        """Recorded results as a validated :class:`RunTable` (the tidy layout of data/table.py).

        One record per (run, step); columns run, [n_params], [step], [tokens], mix.*, loss.*
        for every domain of the ledger (missing losses stay empty). Only completed runs have
        results. Runs of earlier domain-set versions are in the current set, remapped through
        the stored maps (runs a map leaves out are not in it; ``report`` receives the maps'
        notes); ``domain_set`` (a version's number or name): that version's runs only, in its
        own domains. LedgerError when nothing has been recorded.
        """
        return ledger_views.run_table(self._store, status, domain_set, report)

    def current_round(self) -> int:
        """The highest round of any run (0 for an empty ledger)."""
        return ledger_views.current_round(self._store)

    def summary(self) -> dict:
        """Plain dict (JSON-friendly): domains, constraints, settings, counts by status and by
        round, number of recorded losses, current round."""
        return ledger_views.summary(self._store)
