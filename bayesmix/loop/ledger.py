"""The experiment ledger: one SQLite file per mixture experiment.

It holds what an active-learning loop must never lose: the training and validation domains, the
constraints, free-form settings (e.g. target weights), every proposed run (id, mixture, optional
model size and training amount, strategy, round, the posterior it came from with a content hash),
each run's status, and its results (losses per validation domain per step).

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
posteriors can be moved together and used from any working directory); entries written by older
versions (relative to the working directory of the time) are still found
(:meth:`Ledger.resolve_path`). Each round whose proposals are handed off in a file records the
file's path and whether it was written, so a round whose file was lost (process killed between
the ledger write and the file) is reported and can be rewritten from the ledger
(:meth:`Ledger.handoff_frame`, ``bayesmix export``).

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

Fault injection. Every write transaction calls :func:`_fault_point` at named points (after the
write lock is taken, between its statements, just before ``COMMIT``); it does nothing, and tests
replace it to crash a writer or to stop it inside its transaction deterministically.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import os
import secrets
import sqlite3
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from bayesmix import errors
from bayesmix.data.constraints import Constraints
from bayesmix.data.table import (
    LOSS_PREFIX,
    MIX_PREFIX,
    RunTable,
    check_domain_names,
    check_known_domains,
)
from bayesmix.data.validation import MAX_LOSS, check_loss, check_max_loss
from bayesmix.io import atomic_write_text, same_file

SCHEMA_VERSION = 1
APPLICATION = "bayesmix-ledger"
STATUSES = ("proposed", "running", "completed", "failed", "abandoned")
#: Allowed status changes (see the module docstring); ``completed`` only via recorded results.
TRANSITIONS = {
    "proposed": ("running", "failed", "abandoned", "completed"),
    "running": ("proposed", "failed", "abandoned", "completed"),
    "failed": ("proposed",),
    "abandoned": ("proposed",),
    "completed": (),
}
#: Largest difference in any share between a proposed mixture and the mixture reported with its
#: results (results files often round shares to 3 or 4 decimals).
MIXTURE_ATOL = 1e-3
#: Relative tolerance under which a re-recorded value (loss, tokens, n_params) counts as the same.
VALUE_RTOL = 1e-9
#: Seconds a writer waits for another writer's transaction before giving up.
BUSY_TIMEOUT_S = 60.0
IMPORTED = "imported"
EXTERNAL = "external"
#: Prefix of the meta keys holding the fit record of each round of proposals.
_FIT_KEY = "fit:round"
#: Meta key of the record of the most recent fit (written when the fit is saved, before any
#: proposal, so a fit is reused even if its proposals were never recorded).
_LAST_FIT_KEY = "fit:last"
#: Prefix of the meta keys holding each round's hand-off file ({"path", "written"}).
_HANDOFF_KEY = "handoff:round"
#: Statuses a new proposal must keep its distance from.
_OCCUPIED = ("proposed", "running", "completed")
#: Prefix of the meta keys holding each launched run's job record (see :meth:`Ledger.claim`).
_JOB_KEY = "job:"


# re-exported: bayesmix.loop.ledger.ProposalConflictError / DamagedLedgerError
ProposalConflictError = errors.ProposalConflictError
DamagedLedgerError = errors.DamagedLedgerError


def _fault_point(name: str) -> None:
    """Fault-injection hook: called at named points inside every write transaction
    (``"<operation>:begin"`` once the write lock is held, ``"<operation>:commit"`` just before
    ``COMMIT``, and a few points between statements, e.g. ``"add_proposals:inserted"``). Does
    nothing; tests monkeypatch it to raise (a writer dying mid-transaction) or to wait on a
    ``threading.Event`` (a writer stopped while holding the lock)."""


def _connect(path: Path) -> sqlite3.Connection:
    """The connection :meth:`Ledger.open` uses (read-write when the file allows it; SQLite
    falls back to read-only on a write-protected file). Tests may replace it, e.g. with
    ``mode=ro`` to get a read-only ledger even as root."""
    return sqlite3.connect(
        path.resolve().as_uri() + "?mode=rw", uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None
    )


_SCHEMA = f"""
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE runs (
    seq INTEGER PRIMARY KEY,
    run TEXT NOT NULL UNIQUE,
    round INTEGER NOT NULL CHECK (round >= 0),
    strategy TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ({", ".join(repr(s) for s in STATUSES)})),
    external INTEGER NOT NULL DEFAULT 0,
    mixture TEXT NOT NULL,
    n_params REAL,
    steps REAL,
    tokens REAL,
    posterior_path TEXT,
    posterior_hash TEXT,
    created TEXT NOT NULL,
    updated TEXT NOT NULL
);
CREATE TABLE results (
    run TEXT NOT NULL REFERENCES runs (run),
    step REAL,
    eval_domain TEXT NOT NULL,
    loss REAL NOT NULL CHECK (loss > 0),
    tokens REAL,
    source TEXT,
    recorded TEXT NOT NULL
);
CREATE UNIQUE INDEX results_key ON results (run, ifnull(step, -1), eval_domain);
"""


@dataclass
class IngestSummary:
    """What one :meth:`Ledger.record_results` or :meth:`Ledger.import_runs` call changed."""

    source: str | None
    runs: int = 0  #: runs in the input
    completed: list[str] = field(default_factory=list)  #: proposed/running runs now completed
    added_runs: list[str] = field(default_factory=list)  #: runs new to the ledger (imported)
    checkpoints_added: int = 0  #: (run, step) records with a new loss
    losses_added: int = 0
    losses_unchanged: int = 0
    values_replaced: int = 0  #: losses/tokens/n_params overwritten

    @property
    def changed(self) -> bool:
        return bool(self.losses_added or self.values_replaced or self.added_runs or self.completed)

    def describe(self) -> str:
        """One line for people: what changed."""
        parts = [f"read {_count(self.runs, 'run')}"]
        if self.completed:
            parts.append(f"{len(self.completed)} newly completed")
        if self.added_runs:
            parts.append(f"{len(self.added_runs)} added as new runs")
        parts.append(
            f"{_count(self.losses_added, 'loss', 'losses')} added in "
            f"{_count(self.checkpoints_added, 'checkpoint')}"
        )
        parts.append(f"{self.losses_unchanged} already recorded")
        if self.values_replaced:
            parts.append(f"{_count(self.values_replaced, 'value')} replaced")
        return (f"{self.source}: " if self.source else "") + ", ".join(parts)


class Ledger:
    """An open experiment ledger. Build with :meth:`create` or :meth:`open`; close when done
    (also a context manager). One connection per process: do not share across ``fork``."""

    def __init__(self, connection: sqlite3.Connection, path: Path):
        self._con = connection
        self.path = path
        meta = dict(connection.execute("SELECT key, value FROM meta").fetchall())
        self.train_domains: tuple[str, ...] = self._meta_domains(meta, "train_domains")
        self.eval_domains: tuple[str, ...] = self._meta_domains(meta, "eval_domains")
        self.constraints = self._meta_constraints(meta)
        self.settings: dict = self._meta_json(meta, "settings", dict, "an object")
        self._check_cells()

    # ------------------------------------------------------------------ damaged cells
    def _damaged(self, table: str, row: str, column: str, problem: str) -> DamagedLedgerError:
        return DamagedLedgerError(
            f"table {table}, {row}, column {column!r}: {problem}",
            source=str(self.path),
            hint="the ledger was edited by hand or damaged; restore it from a backup or fix "
            "that cell",
        )

    def _meta_json(self, meta: dict, key: str, kind: type, what: str):
        """The JSON value of meta key ``key`` (of type ``kind``), or DamagedLedgerError."""
        if key not in meta:
            raise self._damaged("meta", f"key {key!r}", "value", "the row is missing")
        try:
            value = json.loads(meta[key])
        except (ValueError, TypeError) as err:
            raise self._damaged("meta", f"key {key!r}", "value", f"not JSON ({err})") from None
        if not isinstance(value, kind):
            raise self._damaged(
                "meta", f"key {key!r}", "value", f"JSON but not {what}: {meta[key][:60]!r}"
            )
        return value

    def _meta_domains(self, meta: dict, key: str) -> tuple[str, ...]:
        names = self._meta_json(meta, key, list, "a list of domain names")
        if (
            not names
            or not all(isinstance(n, str) and n for n in names)
            or len(set(names)) != len(names)
        ):
            raise self._damaged(
                "meta",
                f"key {key!r}",
                "value",
                f"not a list of distinct domain names: {meta[key][:60]!r}",
            )
        return tuple(names)

    def _meta_constraints(self, meta: dict) -> Constraints:
        raw = self._meta_json(meta, "constraints", dict, "an object")
        try:
            cons = Constraints.from_dict(raw)
        except (ValueError, TypeError, KeyError, AttributeError, IndexError) as err:
            problem = err.problem if isinstance(err, errors.BayesmixError) else str(err)
            raise self._damaged(
                "meta", "key 'constraints'", "value", f"not a valid constraint set ({problem})"
            ) from None
        if sorted(cons.domains) != sorted(self.train_domains):
            raise self._damaged(
                "meta",
                "key 'constraints'",
                "value",
                f"constraints are over domains {list(cons.domains)} but "
                f"meta train_domains lists {list(self.train_domains)}",
            )
        return cons

    def _mixture(self, run: str, text) -> list[float]:
        """A ``runs.mixture`` cell: a JSON list of one finite share per training domain."""
        try:
            mix = json.loads(text)
        except (ValueError, TypeError) as err:
            raise self._damaged("runs", f"run {run!r}", "mixture", f"not JSON ({err})") from None
        m = len(self.train_domains)
        if not (
            isinstance(mix, list)
            and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                for v in mix
            )
        ):
            raise self._damaged(
                "runs", f"run {run!r}", "mixture", f"not a list of numbers: {str(text)[:60]!r}"
            )
        if len(mix) != m:
            raise self._damaged(
                "runs",
                f"run {run!r}",
                "mixture",
                f"{len(mix)} shares but the ledger has {m} training domains "
                f"({', '.join(self.train_domains)})",
            )
        return [float(v) for v in mix]

    def _check_cells(self) -> None:
        """Every run's mixture readable and as long as the domain list; every result for a
        known validation domain (DamagedLedgerError otherwise)."""
        with self._read() as con:
            rows = con.execute("SELECT run, mixture FROM runs ORDER BY seq").fetchall()
            doms = con.execute(
                "SELECT run, eval_domain FROM results GROUP BY eval_domain"
            ).fetchall()
        for run, text in rows:
            self._mixture(run, text)
        for run, dom in doms:
            if dom not in self.eval_domains:
                raise self._damaged(
                    "results",
                    f"run {run!r}",
                    "eval_domain",
                    f"{dom!r} is not one of the ledger's validation domains "
                    f"({', '.join(self.eval_domains)})",
                )

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
        path = Path(path)
        if path.exists():
            raise errors.LedgerError(
                "a file already exists here; refusing to overwrite it",
                source=str(path),
                hint="choose a new path or delete it",
            )
        if not path.parent.is_dir():
            raise errors.LedgerError(
                f"directory {str(path.parent)!r} does not exist", source=str(path)
            )
        train, evals = [str(d) for d in train_domains], [str(d) for d in eval_domains]
        if len(train) == 1:
            raise errors.DomainNameError(
                f"only one training domain ({train[0]!r}): a mixture needs at least 2",
                source=str(path),
                hint="list every training domain, e.g. --domains web,code",
            )
        for names, kind in ((train, "training"), (evals, "validation")):
            if not names:
                raise errors.DomainNameError(f"no {kind} domains given", source=str(path))
            if len(set(names)) != len(names):
                dup = next(d for d in names if names.count(d) > 1)
                raise errors.DomainNameError(
                    f"{kind} domain {dup!r} is listed twice", source=str(path)
                )
            check_domain_names(names, kind, str(path))
        constraints = _align_constraints(constraints, train, str(path))
        try:
            settings_json = json.dumps(dict(settings or {}), sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as err:
            raise errors.LedgerError(
                f"settings are not JSON-serialisable: {err}", source=str(path)
            ) from None
        now = _now()
        meta = {
            "application": APPLICATION,
            "schema_version": str(SCHEMA_VERSION),
            "created": now,
            "train_domains": json.dumps(train),
            "eval_domains": json.dumps(evals),
            "constraints": constraints.to_json(),
            "settings": settings_json,
            "next_run_number": "1",
        }
        # Build the file under a temporary name, then link it into place: the ledger appears
        # complete or not at all, and os.link fails instead of overwriting a concurrent create.
        # (mode 0666 & ~umask like bayesmix.io's writer; linked, not replaced, so not atomic_path)
        tmp = str(path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp"))
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except OSError as err:
            raise errors.LedgerError(
                f"cannot create the ledger ({err.strerror or err})",
                source=str(path),
                hint="choose a folder you can write to",
            ) from None
        try:
            con = sqlite3.connect(tmp, isolation_level=None)
            try:
                con.executescript("BEGIN;" + _SCHEMA + "COMMIT;")
                con.execute("BEGIN")
                con.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", meta.items())
                con.execute("COMMIT")
                con.execute("PRAGMA journal_mode=WAL")
            finally:
                con.close()
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise errors.LedgerError(
                    "a file already exists here; refusing to overwrite it", source=str(path)
                ) from None
        finally:
            for suffix in ("", "-wal", "-shm", "-journal"):
                try:
                    os.unlink(tmp + suffix)
                except FileNotFoundError:
                    pass
        return cls.open(path)

    @classmethod
    def open(cls, path: str | os.PathLike) -> Ledger:
        """Open an existing ledger; LedgerError if missing, not a ledger, or another schema."""
        path = Path(path)
        if not path.is_file():
            raise errors.LedgerError(
                "no ledger file here",
                source=str(path),
                hint="create one with `bayesmix init --ledger PATH ...`",
            )
        with open(path, "rb") as fh:
            header = fh.read(16)
        if header != b"SQLite format 3\x00":
            raise errors.LedgerError(
                "not a bayesmix ledger (not an SQLite database)", source=str(path)
            )
        try:
            con = _connect(path)
            con.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=FULL")
            con.execute("PRAGMA foreign_keys=ON")
            has_meta = con.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
            ).fetchone()
            meta = dict(con.execute("SELECT key, value FROM meta").fetchall()) if has_meta else {}
        except sqlite3.DatabaseError as err:
            raise errors.LedgerError(f"cannot read the ledger: {err}", source=str(path)) from None
        if not isinstance(meta, dict) or meta.get("application") != APPLICATION:
            con.close()
            raise errors.LedgerError(
                "not a bayesmix ledger (an SQLite file without its tables)", source=str(path)
            )
        if meta.get("schema_version") != str(SCHEMA_VERSION):
            con.close()
            raise errors.LedgerError(
                f"ledger schema version {meta.get('schema_version')} is not the version "
                f"{SCHEMA_VERSION} this bayesmix reads",
                source=str(path),
                hint="use the bayesmix version that wrote it",
            )
        try:
            return cls(con, path)
        except BaseException:
            con.close()
            raise

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Ledger({str(self.path)!r})"

    @contextmanager
    def _write(self, operation: str = "write"):
        """One write transaction: takes the write lock up front (waits up to the busy
        timeout), commits on success, rolls back on any exception. SQLite's errors (read-only
        file, lock timeout, disk full) become one-line LedgerErrors; nothing is changed.
        Calls :func:`_fault_point` with ``"<operation>:begin"`` and ``"<operation>:commit"``."""
        try:
            self._con.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as err:
            raise self._write_failed(err) from None
        try:
            _fault_point(f"{operation}:begin")
            yield self._con
            _fault_point(f"{operation}:commit")
            self._con.execute("COMMIT")
        except sqlite3.OperationalError as err:
            self._rollback()
            raise self._write_failed(err) from None
        except BaseException:
            self._rollback()
            raise

    def _rollback(self) -> None:
        if self._con.in_transaction:
            try:
                self._con.execute("ROLLBACK")
            except sqlite3.Error:
                pass

    def _write_failed(self, err: sqlite3.Error) -> errors.LedgerError:
        """The one-line error for a failed write (nothing was changed)."""
        text = str(err)
        if "readonly" in text or "read-only" in text:
            return errors.LedgerError(
                "the ledger is read-only: nothing was changed",
                source=str(self.path),
                hint="make the file and its folder writable (the folder holds the ledger's "
                "-wal and -shm files), or work on a copy",
            )
        if "locked" in text or "busy" in text:
            return errors.LedgerError(
                f"cannot lock the ledger for writing ({text}): nothing was changed",
                source=str(self.path),
                hint="another process holds it; try again",
            )
        return errors.LedgerError(
            f"cannot write the ledger ({text}): nothing was changed",
            source=str(self.path),
            hint="check free disk space and the file's permissions",
        )

    def check_writable(self) -> None:
        """LedgerError (one line) unless this process can write the ledger now: a write is
        tried and rolled back. Call it before long work (a fit) whose result must be
        recorded."""
        try:
            self._con.execute("BEGIN IMMEDIATE")
            self._con.execute("UPDATE meta SET value = value WHERE key = 'application'")
        except sqlite3.OperationalError as err:
            self._rollback()
            raise self._write_failed(err) from None
        self._rollback()

    @contextmanager
    def _read(self):
        """One read transaction: a consistent snapshot across several queries."""
        self._con.execute("BEGIN")
        try:
            yield self._con
        finally:
            self._con.execute("COMMIT")

    # ------------------------------------------------------------------ proposals
    def add_proposals(
        self,
        mixtures: np.ndarray | pd.DataFrame,
        strategy: str,
        round: int | None = None,
        *,
        posterior: str | os.PathLike | None = None,
        n_params: float | Sequence[float] | np.ndarray | None = None,
        steps: float | Sequence[float] | np.ndarray | None = None,
        tokens: float | Sequence[float] | np.ndarray | None = None,
        fit: Mapping | None = None,
        min_distance: float | None = None,
        handoff: str | os.PathLike | Callable[[int], str | os.PathLike] | None = None,
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
        mix = self._mixture_array(mixtures)
        n = len(mix)
        if not isinstance(strategy, str) or not strategy.strip():
            raise errors.LedgerError("a proposal needs a non-empty strategy name")
        if round is not None and (
            isinstance(round, bool) or not isinstance(round, (int, np.integer)) or round < 0
        ):
            raise errors.LedgerError(f"round must be an integer >= 0, got {round!r}")
        if min_distance is not None and not (np.isfinite(min_distance) and min_distance >= 0):
            raise errors.LedgerError(f"min_distance must be >= 0, got {min_distance!r}")
        if min_distance:
            self._check_spread(mix, float(min_distance))
        inside = self.constraints.contains(mix)
        for bad in np.flatnonzero(~inside):
            raise errors.InfeasibleError(
                f"proposal {bad + 1} ({_fmt_mix(mix[bad], self.train_domains)}) "
                f"{self._violation(mix[bad])}",
                source=str(self.path),
                hint="proposals must satisfy the ledger's constraints",
            )
        extras = {
            name: _per_run(value, n, name)
            for name, value in (("n_params", n_params), ("steps", steps), ("tokens", tokens))
        }
        fit_json = None
        if fit is not None:
            try:
                fit_json = json.dumps(dict(fit), sort_keys=True, allow_nan=False)
            except (TypeError, ValueError) as err:
                raise errors.LedgerError(
                    f"fit record is not JSON-serialisable: {err}", source=str(self.path)
                ) from None
        post_path = post_hash = None
        if posterior is not None:
            post_path, post_hash = self.relative_path(posterior), file_hash(posterior)
        now = _now()
        ids: list[str] = []
        with self._write("add_proposals") as con:
            if round is None:
                count, top = con.execute(
                    "SELECT count(*), ifnull(max(round), 0) FROM runs"
                ).fetchone()
                round = 0 if count == 0 else int(top) + 1
            if min_distance:
                self._check_distances(con, mix, float(min_distance))
            if callable(handoff):
                handoff = handoff(int(round))
            handoff_json = (
                None
                if handoff is None
                else json.dumps({"path": self.relative_path(handoff), "written": False})
            )
            number = int(
                con.execute("SELECT value FROM meta WHERE key = 'next_run_number'").fetchone()[0]
            )
            taken = {r for (r,) in con.execute("SELECT run FROM runs")}
            for i in range(n):
                while (run := f"r{number:04d}") in taken:
                    number += 1
                number += 1
                ids.append(run)
                con.execute(
                    "INSERT INTO runs (run, round, strategy, status, external, mixture, n_params,"
                    " steps, tokens, posterior_path, posterior_hash, created, updated) "
                    "VALUES (?, ?, ?, 'proposed', 0, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        run,
                        int(round),
                        strategy,
                        _mix_json(mix[i]),
                        extras["n_params"][i],
                        extras["steps"][i],
                        extras["tokens"][i],
                        post_path,
                        post_hash,
                        now,
                        now,
                    ),
                )
            _fault_point("add_proposals:inserted")
            con.execute("UPDATE meta SET value = ? WHERE key = 'next_run_number'", (str(number),))
            if fit_json is not None:
                con.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                    (f"{_FIT_KEY}{int(round)}", fit_json),
                )
            if handoff_json is not None:
                con.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                    (f"{_HANDOFF_KEY}{int(round)}", handoff_json),
                )
        return ids

    def _check_spread(self, mix: np.ndarray, dist: float) -> None:
        """Proposals of one batch at least ``dist`` apart (a caller's bug otherwise)."""
        for i in range(1, len(mix)):
            d = np.sqrt(((mix[:i] - mix[i]) ** 2).sum(axis=1))
            if d.min() < dist - 1e-9:
                raise errors.LedgerError(
                    f"proposals {int(d.argmin()) + 1} and {i + 1} are {d.min():.4g} apart, "
                    f"closer than the minimum distance {dist:g}",
                    source=str(self.path),
                )

    def _check_distances(self, con, mix: np.ndarray, dist: float) -> None:
        """Inside the write transaction: every proposal at least ``dist`` from every proposed,
        running or completed run as the ledger is now; ProposalConflictError otherwise."""
        marks = ", ".join("?" * len(_OCCUPIED))
        rows = con.execute(
            f"SELECT run, round, status, mixture FROM runs WHERE status IN ({marks}) ORDER BY seq",
            _OCCUPIED,
        ).fetchall()
        if not rows:
            return
        taken = np.array([self._mixture(r[0], r[3]) for r in rows], float)
        d = np.sqrt(((mix[:, None, :] - taken[None]) ** 2).sum(axis=2))  # (n, k)
        i, k = np.unravel_index(int(np.argmin(d)), d.shape)
        if d[i, k] < dist - 1e-9:
            run, rnd, status = rows[k][:3]
            raise ProposalConflictError(
                f"proposal {i + 1} ({_fmt_mix(mix[i], self.train_domains)}) is {d[i, k]:.4g} "
                f"from run {run!r} ({status}, round {rnd}), closer than the minimum distance "
                f"{dist:g}; nothing recorded",
                source=str(self.path),
                hint="another proposer probably recorded runs while this batch was being "
                "chosen: propose again (the new runs will be taken into account)",
            )

    # ------------------------------------------------------------------ files next to the ledger
    @property
    def folder(self) -> Path:
        """The ledger's folder (absolute): stored file paths are relative to it."""
        return Path(os.path.abspath(self.path)).parent

    def relative_path(self, path: str | os.PathLike) -> str:
        """``path`` (absolute or relative to the working directory) as stored in the ledger:
        relative to the ledger's folder (absolute when on another drive)."""
        full = os.path.abspath(path)
        try:
            return Path(os.path.relpath(full, self.folder)).as_posix()
        except ValueError:  # another drive (Windows)
            return full

    def resolve_path(self, stored: str | None, file_hash_: str | None = None) -> Path | None:
        """The file a stored path names: relative to the ledger's folder (this version), else
        relative to the working directory or next to the ledger under its file name (entries of
        older versions, written relative to the working directory of the time). With
        ``file_hash_`` the first candidate with that content wins. None when no candidate
        exists (or matches)."""
        if not stored:
            return None
        p = Path(stored)
        candidates = (
            [p]
            if p.is_absolute()
            else [self.folder / p, Path(os.path.abspath(p)), self.folder / p.name]
        )
        for c in candidates:
            if c.is_file() and (file_hash_ is None or file_hash(c) == file_hash_):
                return Path(os.path.normpath(c))
        return None

    def _shown_path(self, stored: str | None, cache: dict) -> str | None:
        if stored is None:
            return None
        if stored not in cache:
            found = self.resolve_path(stored)
            cache[stored] = str(
                found if found is not None else Path(os.path.normpath(self.folder / stored))
            )
        return cache[stored]

    # ------------------------------------------------------------------ fits and hand-offs
    def record_fit(self, record: Mapping) -> None:
        """Store the record of the most recent fit (JSON-serialisable mapping: posterior path
        relative to the ledger's folder, its hash, the results digest, settings, diagnostics)."""
        try:
            text = json.dumps(dict(record), sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as err:
            raise errors.LedgerError(
                f"fit record is not JSON-serialisable: {err}", source=str(self.path)
            ) from None
        with self._write("record_fit") as con:
            con.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (_LAST_FIT_KEY, text)
            )

    def last_fit(self) -> dict | None:
        """The most recent fit record (:meth:`record_fit`), else the record stored with the
        latest round of proposals (ledgers of older versions), else None."""
        with self._read() as con:
            row = con.execute("SELECT value FROM meta WHERE key = ?", (_LAST_FIT_KEY,)).fetchone()
        if row is not None:
            return self._meta_record(_LAST_FIT_KEY, row[0])
        records = self.fit_records()
        return records[max(records)] if records else None

    def handoffs(self) -> dict[int, dict]:
        """Each round's hand-off file, by round: {"path": relative to the ledger's folder,
        "written": bool}."""
        with self._read() as con:
            rows = con.execute(
                "SELECT key, value FROM meta WHERE key LIKE ?", (_HANDOFF_KEY + "%",)
            ).fetchall()
        return dict(
            sorted((self._meta_round(k, _HANDOFF_KEY), self._meta_record(k, v)) for k, v in rows)
        )

    def mark_handoff_written(self, round: int, path: str | os.PathLike | None = None) -> None:
        """Record that round ``round``'s proposals were written (to ``path``, default the file
        recorded with them)."""
        key = f"{_HANDOFF_KEY}{int(round)}"
        with self._write("mark_handoff") as con:
            row = con.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            stored = self._meta_record(key, row[0]).get("path") if row else None
            rel = self.relative_path(path) if path is not None else stored
            if rel is None:
                return
            con.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                (key, json.dumps({"path": rel, "written": True})),
            )

    def missing_handoffs(self) -> dict[int, str]:
        """Rounds whose hand-off file was never written (the process stopped between recording
        the runs and writing the file): {round: path relative to the ledger's folder}."""
        return {r: h["path"] for r, h in self.handoffs().items() if not h.get("written")}

    def handoff_frame(self, round: int) -> pd.DataFrame:
        """The proposals of round ``round`` as written for the training jobs (the frame
        :func:`write_proposals` takes): every run proposed in that round, whatever its status
        now, in the order recorded; runs imported or ingested from outside are left out.
        LedgerError when the round has none."""
        runs = self.runs()
        frame = runs[(runs["round"] == int(round)) & ~runs["external"]]
        if frame.empty:
            rounds = sorted(set(runs.loc[~runs["external"], "round"].tolist()))
            raise errors.LedgerError(
                f"round {round} has no proposed runs",
                source=str(self.path),
                hint=(
                    f"rounds with proposals: {', '.join(map(str, rounds))}"
                    if rounds
                    else "nothing has been proposed yet"
                ),
            )
        return frame.reset_index(drop=True)

    def next_round(self) -> int:
        """The round the next batch of proposals would get (0 in an empty ledger)."""
        with self._read() as con:
            count, top = con.execute("SELECT count(*), ifnull(max(round), 0) FROM runs").fetchone()
        return 0 if count == 0 else int(top) + 1

    def fit_records(self) -> dict[int, dict]:
        """The fit records stored with proposals (``add_proposals(fit=...)``), by round."""
        with self._read() as con:
            rows = con.execute(
                "SELECT key, value FROM meta WHERE key LIKE ?", (_FIT_KEY + "%",)
            ).fetchall()
        return dict(
            sorted((self._meta_round(k, _FIT_KEY), self._meta_record(k, v)) for k, v in rows)
        )

    def _meta_record(self, key: str, text: str) -> dict:
        return self._meta_json({key: text}, key, dict, "an object")

    def _meta_round(self, key: str, prefix: str) -> int:
        try:
            return int(key[len(prefix) :])
        except ValueError:
            raise self._damaged(
                "meta", f"key {key!r}", "key", f"not {prefix}<round number>"
            ) from None

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
        changes = {str(r): s for r, s in dict(changes).items()}
        for run, status in changes.items():
            if status not in STATUSES:
                raise errors.LedgerError(
                    f"unknown status {status!r}",
                    run=run,
                    source=str(self.path),
                    hint=f"use one of {', '.join(STATUSES)}; nothing was changed",
                )
        changed: list[str] = []
        with self._write("set_status") as con:
            current = dict(con.execute("SELECT run, status FROM runs"))
            for run, status in changes.items():
                if run not in current:
                    err = self._unknown_run(con, run)
                    err.hint = (err.hint or "") + "; nothing was changed"
                    raise type(err)(err.problem, source=err.source, run=err.run, hint=err.hint)
                old = current[run]
                if old == status:
                    continue
                if status == "completed":
                    raise errors.LedgerError(
                        f"cannot mark a run completed by hand (it is {old})",
                        run=run,
                        source=str(self.path),
                        hint="runs become completed when their results are recorded "
                        "(bayesmix ingest); nothing was changed",
                    )
                if status not in TRANSITIONS[old]:
                    allowed = [s for s in TRANSITIONS[old] if s != "completed"]
                    raise errors.LedgerError(
                        f"cannot change status from {old} to {status}",
                        run=run,
                        source=str(self.path),
                        hint=(
                            f"from {old} a run may go to {', '.join(allowed)}"
                            if allowed
                            else f"{old} is final"
                        )
                        + "; nothing was changed",
                    )
                changed.append(run)
            now = _now()
            for i, run in enumerate(changed):
                if i:
                    _fault_point("set_status:updated")
                con.execute(
                    "UPDATE runs SET status = ?, updated = ? WHERE run = ?",
                    (changes[run], now, run),
                )
                job = self._job(con, run)
                if changes[run] == "proposed" and job.get("attempts"):
                    # a retry by hand gets bayesmix run's retries afresh
                    note = f"set to proposed by hand at {now}: attempt count reset"
                    job.setdefault("history", []).append(note)
                    job["attempts"] = 0
                    self._put_job(con, run, job)
        return changed

    # ------------------------------------------------------------------ jobs (bayesmix run)
    def claim(self, run: str, owner: Mapping, *, stale: bool = False) -> dict | None:
        """Mark ``run`` running for ``owner`` (``{"host", "pid", ...}``) in one transaction and
        return its job record (``attempts`` counts launches, this one included; ``owner``,
        ``started``, ``heartbeat``: UTC ISO times; ``history``: one line per earlier attempt).

        Only a proposed run is claimed (``stale=True``: also a running one, taken over from a
        dead runner); None when another runner changed it first, so two runners never launch
        the same run."""
        with self._write("claim") as con:
            row = con.execute("SELECT status FROM runs WHERE run = ?", (run,)).fetchone()
            allowed = ("proposed", "running") if stale else ("proposed",)
            if row is None or row[0] not in allowed:
                return None
            job = self._job(con, run)
            now = _now()
            job.update(
                attempts=int(job.get("attempts", 0)) + 1,
                owner=dict(owner),
                started=now,
                heartbeat=now,
            )
            con.execute("UPDATE runs SET status = 'running', updated = ? WHERE run = ?", (now, run))
            self._put_job(con, run, job)
        return job

    def release(
        self, run: str, status: str, note: str | None = None, *, refund: bool = False
    ) -> None:
        """End ``run``'s current attempt: status ``proposed`` (to be launched again) or
        ``failed``, with ``note`` (e.g. the job's stderr tail) added to its job record's
        history. ``refund``: the attempt does not count (interrupted by the user). A run that is
        no longer running (completed meanwhile) is left as it is."""
        if status not in ("proposed", "failed"):
            raise ValueError(f"release to proposed or failed, not {status!r}")
        with self._write("release") as con:
            row = con.execute("SELECT status FROM runs WHERE run = ?", (run,)).fetchone()
            if row is None or row[0] != "running":
                return
            job = self._job(con, run)
            if note:
                job.setdefault("history", []).append(f"attempt {job.get('attempts', 0)}: {note}")
            if refund:
                job["attempts"] = max(0, int(job.get("attempts", 1)) - 1)
            job.pop("owner", None)
            con.execute(
                "UPDATE runs SET status = ?, updated = ? WHERE run = ?", (status, _now(), run)
            )
            self._put_job(con, run, job)

    def heartbeat(self, runs: Iterable[str]) -> None:
        """Refresh the heartbeat of these running runs' job records (a live runner's sign)."""
        runs = list(runs)
        if not runs:
            return
        with self._write("heartbeat") as con:
            now = _now()
            for run in runs:
                job = self._job(con, run)
                if job:
                    job["heartbeat"] = now
                    self._put_job(con, run, job)

    def jobs(self) -> dict[str, dict]:
        """Every launched run's job record, by run id."""
        with self._read() as con:
            rows = con.execute(
                "SELECT key, value FROM meta WHERE key LIKE ?", (_JOB_KEY + "%",)
            ).fetchall()
        return {k[len(_JOB_KEY) :]: self._meta_record(k, v) for k, v in rows}

    def _job(self, con, run: str) -> dict:
        row = con.execute("SELECT value FROM meta WHERE key = ?", (_JOB_KEY + run,)).fetchone()
        return self._meta_record(_JOB_KEY + run, row[0]) if row else {}

    def _put_job(self, con, run: str, job: dict) -> None:
        con.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
            (_JOB_KEY + run, json.dumps(job, sort_keys=True)),
        )

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
        return self._ingest(
            table, unknown=unknown, on_conflict=on_conflict, imported=False, max_loss=max_loss
        )

    def import_runs(
        self, table: RunTable, *, on_conflict: str = "error", max_loss: float = MAX_LOSS
    ) -> IngestSummary:
        """Add past runs (status completed, strategy ``"imported"``, round 0, flagged external).

        Runs already in the ledger are treated as by :meth:`record_results`, so importing the
        same table twice changes nothing.
        """
        return self._ingest(
            table, unknown="import", on_conflict=on_conflict, imported=True, max_loss=max_loss
        )

    def _ingest(
        self,
        table: RunTable,
        *,
        unknown: str,
        on_conflict: str,
        imported: bool,
        max_loss: float = MAX_LOSS,
    ) -> IngestSummary:
        if unknown not in ("error", "import"):
            raise ValueError(f"unknown must be 'error' or 'import', got {unknown!r}")
        if on_conflict not in ("error", "replace"):
            raise ValueError(f"on_conflict must be 'error' or 'replace', got {on_conflict!r}")
        source = table.source or "results"
        max_loss = check_max_loss(max_loss)
        check_known_domains(table.train_domains, self.train_domains, "training", source)
        missing = [d for d in self.train_domains if d not in table.train_domains]
        if missing:
            raise errors.DomainNameError(
                f"no proportion column for training domain {missing[0]!r}",
                source=source,
                column=MIX_PREFIX + missing[0],
                hint="results need every mix.<domain> column "
                f"of the ledger: {', '.join(self.train_domains)}",
            )
        check_known_domains(table.eval_domains, self.eval_domains, "validation", source)

        mixtures = table.mixtures[list(self.train_domains)]
        tidy = table.to_tidy()
        has_steps = table.has_steps
        for rec in tidy.to_dict("records"):  # every loss, before any write
            for dom in table.eval_domains:
                check_loss(
                    rec[LOSS_PREFIX + dom],
                    max_loss=max_loss,
                    source=source,
                    run=str(rec["run"]),
                    column=LOSS_PREFIX + dom,
                )
        n_params = (
            tidy.drop_duplicates("run").set_index("run")["n_params"]
            if "n_params" in tidy.columns
            else None
        )
        summary = IngestSummary(source=table.source, runs=table.n_runs)
        conflicts: list[str] = []
        now = _now()

        def conflict(what: str, old: float, new: float) -> bool:
            """Record a conflict; True if the new value should be written."""
            if on_conflict == "replace":
                summary.values_replaced += 1
                return True
            conflicts.append(f"{what}: ledger has {old:.10g}, {source} has {new:.10g}")
            return False

        with self._write("ingest") as con:
            stored_steps = con.execute("SELECT count(step), count(*) FROM results").fetchone()
            if stored_steps[0] and not has_steps:
                # results without a step column for a ledger recording steps: each run's
                # planned steps (propose --steps) say which checkpoint they are
                planned = dict(con.execute("SELECT run, steps FROM runs"))
                steps = [planned.get(str(r)) for r in tidy["run"]]
                if all(v is not None for v in steps):
                    tidy = tidy.assign(step=[float(v) for v in steps if v is not None])
                    has_steps = True
            if stored_steps[1] and bool(stored_steps[0]) != has_steps:
                raise errors.LedgerError(
                    "this ledger records losses "
                    + ("per step" if stored_steps[0] else "without steps")
                    + " but the results "
                    + ("have" if has_steps else "have no")
                    + " 'step' column",
                    source=source,
                    hint=(
                        "add a 'step' column (the training step of each result), or propose "
                        "runs with planned steps (a pool with a steps column) so a result "
                        "without one is taken at its planned step"
                        if stored_steps[0]
                        else "keep one layout for all results of an experiment"
                    ),
                )
            known = {
                row[0]: row
                for row in con.execute("SELECT run, status, mixture, n_params FROM runs")
            }
            new_runs = [r for r in table.runs if r not in known]
            if new_runs and unknown == "error":
                close = difflib.get_close_matches(new_runs[0], list(known), n=1, cutoff=0.6)
                raise errors.LedgerError(
                    f"{len(new_runs)} run(s) not in the ledger, first {new_runs[0]!r}",
                    source=source,
                    hint=(f"did you mean {close[0]!r}? " if close else "")
                    + "pass --import-unknown (unknown='import') to add them as external runs",
                )
            for run in table.runs:
                if run not in known:
                    continue
                _, status, mix_json, old_np = known[run]
                if status in ("failed", "abandoned"):
                    raise errors.LedgerError(
                        f"run is marked {status}; results cannot be recorded for it",
                        source=source,
                        run=run,
                        hint="set it back to proposed first "
                        f"(bayesmix status --set {run}=proposed)",
                    )
                proposed = self._mixture(run, mix_json)
                diff = np.abs(np.asarray(proposed) - mixtures.loc[run].to_numpy())
                if diff.max() > MIXTURE_ATOL:
                    j = int(diff.argmax())
                    raise errors.InconsistentMixtureError(
                        f"share of {self.train_domains[j]!r} is "
                        f"{mixtures.loc[run].iloc[j]:.6g} but the ledger proposed "
                        f"{proposed[j]:.6g}",
                        source=source,
                        run=run,
                        column=MIX_PREFIX + self.train_domains[j],
                        hint="a run trained on another mixture needs another run id",
                    )
                new_np = None if n_params is None else n_params.get(run)
                if new_np is not None and not math.isnan(new_np):
                    if old_np is None:
                        con.execute("UPDATE runs SET n_params = ? WHERE run = ?", (new_np, run))
                    elif not _same(old_np, new_np) and conflict(
                        f"run {run!r} n_params", old_np, new_np
                    ):
                        con.execute("UPDATE runs SET n_params = ? WHERE run = ?", (new_np, run))
            round_new = (
                0
                if imported
                else int(con.execute("SELECT ifnull(max(round), 0) FROM runs").fetchone()[0])
            )
            for run in new_runs:
                np_value = None if n_params is None else n_params.get(run)
                con.execute(
                    "INSERT INTO runs (run, round, strategy, status, external, mixture, n_params,"
                    " created, updated) VALUES (?, ?, ?, 'completed', 1, ?, ?, ?, ?)",
                    (
                        run,
                        round_new,
                        IMPORTED if imported else EXTERNAL,
                        _mix_json(mixtures.loc[run].to_numpy()),
                        _none_if_nan(np_value),
                        now,
                        now,
                    ),
                )
                summary.added_runs.append(run)

            stored = {}
            for run, step, dom, loss, tok in con.execute(
                "SELECT run, step, eval_domain, loss, tokens FROM results"
            ):
                stored[(run, step, dom)] = (loss, tok)
            touched: set[str] = set()
            for rec in tidy.to_dict("records"):
                run = rec["run"]
                step = float(rec["step"]) if has_steps else None
                tok = _none_if_nan(rec.get("tokens"))
                added_here = False
                for dom in table.eval_domains:
                    loss = float(rec[LOSS_PREFIX + dom])
                    if math.isnan(loss):
                        continue
                    where = (
                        f"run {run!r}"
                        + (f" step {step:g}" if has_steps else "")
                        + f" {LOSS_PREFIX}{dom}"
                    )
                    old = stored.get((run, step, dom))
                    if old is None:
                        con.execute(
                            "INSERT INTO results (run, step, eval_domain, loss, tokens, source, "
                            "recorded) VALUES (?, ?, ?, ?, ?, ?, ?)",
                            (run, step, dom, loss, tok, table.source, now),
                        )
                        summary.losses_added += 1
                        added_here = True
                        continue
                    old_loss, old_tok = old
                    write = False
                    if not _same(old_loss, loss):
                        write = conflict(where, old_loss, loss)
                    if tok is not None and old_tok is not None and not _same(old_tok, tok):
                        write = conflict(where.rsplit(" ", 1)[0] + " tokens", old_tok, tok) or write
                    if write or (tok is not None and old_tok is None):
                        con.execute(
                            "UPDATE results SET loss = ?, tokens = ?, source = ?, recorded = ? "
                            "WHERE run = ? AND ifnull(step, -1) = ifnull(?, -1) "
                            "AND eval_domain = ?",
                            (loss, tok, table.source, now, run, step, dom),
                        )
                    if not write:
                        summary.losses_unchanged += 1
                if added_here:
                    summary.checkpoints_added += 1
                touched.add(run)
            _fault_point("ingest:inserted")
            if conflicts:
                more = f" (and {len(conflicts) - 1} more)" if len(conflicts) > 1 else ""
                raise errors.LedgerError(
                    f"conflicting values, nothing recorded: {conflicts[0]}{more}",
                    source=source,
                    hint="fix the file, or pass --replace (on_conflict='replace') to overwrite",
                )
            for run in sorted(touched):
                if run in known and known[run][1] in ("proposed", "running"):
                    con.execute(
                        "UPDATE runs SET status = 'completed', updated = ? WHERE run = ?",
                        (now, run),
                    )
                    summary.completed.append(run)
        order = {r: i for i, r in enumerate(table.runs)}
        summary.completed.sort(key=order.__getitem__)
        return summary

    # ------------------------------------------------------------------ views
    def runs(self, status: str | Iterable[str] | None = None) -> pd.DataFrame:
        """Runs in the order they were added, one row each: run, round, strategy, status,
        external, n_params, steps, tokens, posterior (absolute path, found from the ledger's
        folder), posterior_hash, created, updated, checkpoints (records with results),
        mix.<train domain>..."""
        wanted = self._status_filter(status)
        with self._read() as con:
            rows = con.execute(
                "SELECT r.run, r.round, r.strategy, r.status, r.external, r.n_params, r.steps, "
                "r.tokens, r.posterior_path, r.posterior_hash, r.created, r.updated, "
                "(SELECT count(DISTINCT ifnull(step, -1)) FROM results s WHERE s.run = r.run), "
                "r.mixture FROM runs r ORDER BY r.seq"
            ).fetchall()
        cols = [
            "run",
            "round",
            "strategy",
            "status",
            "external",
            "n_params",
            "steps",
            "tokens",
            "posterior",
            "posterior_hash",
            "created",
            "updated",
            "checkpoints",
        ]
        rows = [row for row in rows if wanted is None or row[3] in wanted]
        cache: dict = {}
        rows = [(*row[:8], self._shown_path(row[8], cache), *row[9:]) for row in rows]
        frame = pd.DataFrame([row[:-1] for row in rows], columns=cols)
        frame = frame.astype(
            {
                "round": int,
                "external": bool,
                "checkpoints": int,
                "n_params": float,
                "steps": float,
                "tokens": float,
            }
        )
        mix = np.array([self._mixture(row[0], row[-1]) for row in rows], float).reshape(
            len(rows), len(self.train_domains)
        )
        for j, d in enumerate(self.train_domains):
            frame[MIX_PREFIX + d] = mix[:, j]
        return frame

    def pending(self) -> pd.DataFrame:
        """Mixtures of proposed and running runs: DataFrame (index ``run``, columns training
        domains), e.g. to condition the next batch on runs still in flight."""
        frame = self.runs(("proposed", "running"))
        out = frame.set_index("run")[[MIX_PREFIX + d for d in self.train_domains]]
        out.columns = list(self.train_domains)
        out.columns.name = "train_domain"
        return out

    def run_table(self, status: str | Iterable[str] | None = "completed") -> RunTable:
        """Recorded results as a validated :class:`RunTable` (the tidy layout of data/table.py).

        One record per (run, step); columns run, [n_params], [step], [tokens], mix.*, loss.*
        for every domain of the ledger (missing losses stay empty). Only completed runs have
        results. LedgerError when nothing has been recorded.
        """
        wanted = self._status_filter(status)
        with self._read() as con:
            runs = {
                row[0]: row
                for row in con.execute("SELECT run, status, n_params, mixture, seq FROM runs")
            }
            results = con.execute(
                "SELECT run, step, eval_domain, loss, tokens FROM results "
                "ORDER BY run, ifnull(step, -1)"
            ).fetchall()
        results = [r for r in results if wanted is None or runs[r[0]][1] in wanted]
        if not results:
            raise errors.LedgerError(
                "the ledger has no recorded results"
                + (f" for {status} runs" if isinstance(status, str) else ""),
                source=str(self.path),
                hint="record results with `bayesmix ingest`",
            )
        has_steps = results[0][1] is not None
        records: dict[tuple, dict] = {}
        for run, step, dom, loss, tok in results:
            rec = records.setdefault(
                (runs[run][4], step if step is not None else 0.0, run),
                {
                    "run": run,
                    "step": step,
                    "tokens": tok,
                    "n_params": runs[run][2],
                    **{
                        MIX_PREFIX + d: v
                        for d, v in zip(self.train_domains, self._mixture(run, runs[run][3]))
                    },
                },
            )
            rec[LOSS_PREFIX + dom] = loss
            if tok is not None:
                rec["tokens"] = tok
        frame = pd.DataFrame([records[k] for k in sorted(records)])
        for d in self.eval_domains:
            if LOSS_PREFIX + d not in frame.columns:
                frame[LOSS_PREFIX + d] = np.nan
        meta = [
            c
            for c, keep in (
                ("n_params", frame["n_params"].notna().any()),
                ("step", has_steps),
                ("tokens", frame["tokens"].notna().any()),
            )
            if keep
        ]
        frame = frame[
            [
                "run",
                *meta,
                *[MIX_PREFIX + d for d in self.train_domains],
                *[LOSS_PREFIX + d for d in self.eval_domains],
            ]
        ]
        return RunTable.from_frame(frame, source=str(self.path))

    def current_round(self) -> int:
        """The highest round of any run (0 for an empty ledger)."""
        with self._read() as con:
            return int(con.execute("SELECT ifnull(max(round), 0) FROM runs").fetchone()[0])

    def summary(self) -> dict:
        """Plain dict (JSON-friendly): domains, constraints, settings, counts by status and by
        round, number of recorded losses, current round."""
        with self._read() as con:
            by_status = dict(con.execute("SELECT status, count(*) FROM runs GROUP BY status"))
            by_round: dict[str, dict[str, int]] = {}
            for rnd, status, count in con.execute(
                "SELECT round, status, count(*) FROM runs GROUP BY round, status ORDER BY round"
            ):
                by_round.setdefault(str(rnd), {})[status] = count
            strategies = dict(
                con.execute(
                    "SELECT strategy, count(*) FROM runs GROUP BY strategy ORDER BY min(seq)"
                )
            )
            n_losses, n_checkpoints = con.execute(
                "SELECT count(*), count(DISTINCT run || '@' || ifnull(step, -1)) FROM results"
            ).fetchone()
            external = con.execute("SELECT count(*) FROM runs WHERE external").fetchone()[0]
            created = con.execute("SELECT value FROM meta WHERE key = 'created'").fetchone()[0]
            current = int(con.execute("SELECT ifnull(max(round), 0) FROM runs").fetchone()[0])
        c = self.constraints
        return {
            "ledger": str(self.path),
            "schema_version": SCHEMA_VERSION,
            "created": created,
            "train_domains": list(self.train_domains),
            "eval_domains": list(self.eval_domains),
            "constraints": {
                d: {"min": float(c.lower[i]), "max": float(c.upper[i])}
                for i, d in enumerate(c.domains)
            },
            "settings": self.settings,
            "runs": int(sum(by_status.values())),
            "by_status": {s: int(by_status.get(s, 0)) for s in STATUSES},
            "by_round": by_round,
            "by_strategy": strategies,
            "external_runs": int(external),
            "recorded_losses": int(n_losses),
            "recorded_checkpoints": int(n_checkpoints),
            "current_round": current,
        }

    # ------------------------------------------------------------------ helpers
    def _mixture_array(self, mixtures) -> np.ndarray:
        m = len(self.train_domains)
        if isinstance(mixtures, pd.DataFrame):
            cols = [str(c).removeprefix(MIX_PREFIX) for c in mixtures.columns]
            check_known_domains(cols, self.train_domains, "training", str(self.path))
            absent = [d for d in self.train_domains if d not in cols]
            if absent:
                raise errors.DomainNameError(
                    f"proposals have no column for domain {absent[0]!r}", source=str(self.path)
                )
            frame = mixtures.copy()
            frame.columns = cols
            mixtures = frame[list(self.train_domains)].to_numpy(dtype=float)
        mix = np.asarray(mixtures, dtype=float)
        if mix.ndim == 1 and mix.size == m:
            mix = mix[None]
        if mix.ndim != 2 or mix.shape[1] != m or len(mix) == 0:
            raise errors.LedgerError(
                f"proposals must be an array (n, {m}) with n >= 1, one "
                f"column per training domain; got shape {mix.shape}"
            )
        if not np.all(np.isfinite(mix)):
            raise errors.LedgerError("proposals contain non-finite shares")
        return mix

    def _violation(self, r: np.ndarray) -> str:
        c = self.constraints
        if abs(r.sum() - 1.0) > 1e-6:
            return f"sums to {r.sum():.6g}, not 1"
        j = int(np.argmax(np.maximum(c.lower - r, r - c.upper)))
        d = self.train_domains[j]
        if r[j] < c.lower[j]:
            return f"gives {d!r} {r[j]:.6g}, below its minimum {c.lower[j]:.6g}"
        return f"gives {d!r} {r[j]:.6g}, above its maximum {c.upper[j]:.6g}"

    def _unknown_run(self, con, run: str) -> errors.LedgerError:
        ids = [r for (r,) in con.execute("SELECT run FROM runs")]
        close = difflib.get_close_matches(run, ids, n=1, cutoff=0.6)
        return errors.LedgerError(
            "no such run in the ledger",
            source=str(self.path),
            run=run,
            hint=f"did you mean {close[0]!r}?"
            if close
            else "see `bayesmix status` for the run ids",
        )

    @staticmethod
    def _status_filter(status) -> set[str] | None:
        if status is None:
            return None
        wanted = {status} if isinstance(status, str) else set(status)
        bad = wanted - set(STATUSES)
        if bad:
            raise errors.LedgerError(
                f"unknown status {sorted(bad)[0]!r}", hint=f"use one of {', '.join(STATUSES)}"
            )
        return wanted


# ---------------------------------------------------------------------------------- proposals file
def write_proposals(runs: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write proposed runs for the training jobs: CSV or JSON (list of objects) by extension.

    ``runs`` is a frame from :meth:`Ledger.runs` (or any frame with run, round, strategy and
    mix.<domain> columns). Written columns: run, round, strategy, [n_params, steps, tokens when
    given], mix.<domain>... Shares are written at full precision. The file is replaced
    atomically by :func:`bayesmix.io.atomic_write_text` (mode 0666 & ~umask; a failed write is
    a WriteError and leaves any old file).
    """
    path = check_proposals_path(path)
    kind = path.suffix.lower()
    missing = [c for c in ("run", "round", "strategy") if c not in runs.columns]
    mix_cols = [c for c in runs.columns if str(c).startswith(MIX_PREFIX)]
    if missing or not mix_cols:
        raise errors.FormatError(
            f"proposals lack column {(missing or ['mix.<domain>'])[0]!r}", source=str(path)
        )
    extra = [
        c for c in ("n_params", "steps", "tokens") if c in runs.columns and runs[c].notna().any()
    ]
    out = runs[["run", "round", "strategy", *extra, *mix_cols]].reset_index(drop=True)
    if kind == ".csv":
        text = out.to_csv(index=False, lineterminator="\n")
    else:
        records = [{k: _json_value(v) for k, v in row.items()} for row in out.to_dict("records")]
        text = json.dumps(records, indent=2) + "\n"
    return atomic_write_text(path, text)


def check_proposals_path(
    path: str | os.PathLike,
    *,
    overwrite: bool = True,
    inputs: Iterable[str | os.PathLike | None] = (),
) -> Path:
    """OptionError unless ``path`` can take the proposals: it ends in .csv or .json, is not a
    folder, its folder exists and is writable (a probe file is created and removed), it is none
    of ``inputs`` (e.g. the ledger, the candidate pool) and, unless ``overwrite``, no file is
    there yet. Check before writing anything else, so bad output paths fail early."""
    path = Path(path)
    kind = path.suffix.lower()
    if kind not in (".csv", ".json"):
        raise errors.OptionError(
            f"cannot write proposals as {kind or 'a file without suffix'}",
            source=str(path),
            hint="name the file .csv or .json",
        )
    if path.is_dir():
        raise errors.OptionError(
            "this is a folder, not a file",
            source=str(path),
            hint="give a file name ending in .csv or .json",
        )
    if not path.parent.is_dir():
        raise errors.OptionError(f"directory {str(path.parent)!r} does not exist", source=str(path))
    for other in inputs:
        if other is not None and same_file(path, other):
            raise errors.OptionError(
                "this file is an input of the command; refusing to overwrite it",
                source=str(path),
                hint="write the proposals to another file",
            )
    if not overwrite and path.exists():
        raise errors.OptionError(
            "a file already exists here; refusing to overwrite it",
            source=str(path),
            hint="choose another name, move the file, or pass --force",
        )
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=path.parent)
    except OSError as err:
        raise errors.OptionError(
            f"cannot write in directory {str(path.parent)!r}: {err.strerror or err}",
            source=str(path),
        ) from None
    os.close(fd)
    os.unlink(probe)
    return path


def file_hash(path: str | os.PathLike) -> str:
    """``sha256:<hex>`` of a file's bytes (identifies the posterior a proposal came from)."""
    path = Path(path)
    if not path.is_file():
        raise errors.PosteriorFileError("posterior file not found", source=str(path))
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


# ---------------------------------------------------------------------------------- small helpers
def _align_constraints(
    constraints: Constraints | None, train: list[str], source: str
) -> Constraints:
    if constraints is None:
        return Constraints.unconstrained(train)
    if set(constraints.domains) != set(train) or len(constraints.domains) != len(train):
        raise errors.DomainNameError(
            f"constraints are over domains {list(constraints.domains)}, not the training "
            f"domains {train}",
            source=source,
        )
    idx = [constraints.domains.index(d) for d in train]
    return Constraints(
        tuple(train), np.asarray(constraints.lower)[idx], np.asarray(constraints.upper)[idx]
    )


def _per_run(value, n: int, name: str) -> list[float | None]:
    if value is None:
        return [None] * n
    vals = (
        np.broadcast_to(np.asarray(value, float), (n,))
        if np.ndim(value) == 0
        else (np.asarray(value, float))
    )
    if vals.shape != (n,) or not np.all(np.isfinite(vals) & (vals > 0)):
        raise errors.LedgerError(f"{name} must be one positive number or {n} of them")
    return [float(v) for v in vals]


def _mix_json(r: np.ndarray) -> str:
    return json.dumps([float(v) for v in r])


def _fmt_mix(r: np.ndarray, domains: Sequence[str]) -> str:
    return ", ".join(f"{d}={v:.4g}" for d, v in zip(domains, r))


def _same(a: float, b: float) -> bool:
    return math.isclose(float(a), float(b), rel_tol=VALUE_RTOL, abs_tol=0.0)


def _none_if_nan(v):
    if v is None:
        return None
    v = float(v)
    return None if math.isnan(v) else v


def _json_value(v):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return None if math.isnan(v) else float(v)
    if isinstance(v, np.bool_):
        return bool(v)
    return v


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
