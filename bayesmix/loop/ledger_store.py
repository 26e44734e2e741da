"""The ledger's storage: the SQLite file, its schema, the connection and its one transaction.

:class:`LedgerStore` is what every ledger operation (``ledger_proposals``, ``ledger_rounds``,
``ledger_status``, ``ledger_results``, ``ledger_domains``, ``ledger_views``) works on: the open
connection, the domains, constraints and settings read from the ``meta`` table, the domain-set
versions (:mod:`bayesmix.loop.ledger_versions`; an older ledger is upgraded when opened), the
write transaction (:meth:`LedgerStore.write`) and the read snapshot (:meth:`LedgerStore.read`),
the conversion of a ``runs.mixture`` cell (in its run's version's domains) to shares and back,
the checks that a cell was not damaged, and the file paths stored relative to the ledger's
folder. No operation opens a connection of its own.

Every write is one ``BEGIN IMMEDIATE`` transaction on a WAL-mode database with a busy timeout
(:data:`BUSY_TIMEOUT_S`), so a process killed mid-write leaves the ledger as it was before that
write, and concurrent writers queue instead of interleaving. SQLite's errors (read-only file,
lock timeout, disk full) become one-line :class:`~bayesmix.errors.LedgerError`s.

Fault injection. Every write transaction calls :func:`_fault_point` at named points (after the
write lock is taken, between its statements (:meth:`LedgerStore.fault`), just before
``COMMIT``); it does nothing, and tests replace it to crash a writer or to stop it inside its
transaction deterministically.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import secrets
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from bayesmix import errors
from bayesmix.data.constraints import Constraints
from bayesmix.data.table import check_domain_names
from bayesmix.loop.ledger_versions import (
    DOMAIN_SETS_TABLE,
    RUNS_COLUMN,
    SCHEMA_VERSION,
    DomainSet,
    check_current,
    read_domain_sets,
    upgrade,
    version_name,
)

APPLICATION = "bayesmix-ledger"
STATUSES = ("proposed", "running", "completed", "failed", "abandoned")
#: Seconds a writer waits for another writer's transaction before giving up.
BUSY_TIMEOUT_S = 60.0

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
    updated TEXT NOT NULL,
    {RUNS_COLUMN}
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
{DOMAIN_SETS_TABLE}
"""


def _fault_point(name: str) -> None:
    """Fault-injection hook: called at named points inside every write transaction
    (``"<operation>:begin"`` once the write lock is held, ``"<operation>:commit"`` just before
    ``COMMIT``, and a few points between statements, e.g. ``"add_proposals:inserted"``). Does
    nothing; tests monkeypatch it to raise (a writer dying mid-transaction) or to wait on a
    ``threading.Event`` (a writer stopped while holding the lock)."""


def _connect(path: Path) -> sqlite3.Connection:
    """The connection :func:`open_connection` uses (read-write when the file allows it; SQLite
    falls back to read-only on a write-protected file). Tests may replace it, e.g. with
    ``mode=ro`` to get a read-only ledger even as root."""
    return sqlite3.connect(
        path.resolve().as_uri() + "?mode=rw", uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None
    )


def _connect_read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection for a ledger whose file or folder this process cannot write:
    SQLite's WAL needs to create files beside the ledger, so a plain open fails there.
    ``immutable`` (no locks, no WAL files) when no WAL file is left, which a cleanly closed
    ledger never leaves; else a plain read-only open that reads it."""
    wal = path.with_name(path.name + "-wal")
    flags = "mode=ro" if wal.exists() and wal.stat().st_size else "mode=ro&immutable=1"
    return sqlite3.connect(
        f"{path.resolve().as_uri()}?{flags}", uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None
    )


def writable_place(path: Path) -> bool:
    """True when this process may write the ledger file and create files in its folder."""
    return os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)


# ---------------------------------------------------------------------------------- the file
def create_file(
    path: Path,
    train_domains: Sequence[str],
    eval_domains: Sequence[str],
    constraints: Constraints | None,
    settings: Mapping | None,
) -> None:
    """Write a new, empty ledger at ``path``; never overwrites an existing file. The domain
    lists, constraints (default: the plain simplex) and settings are checked first."""
    if path.exists():
        raise errors.LedgerError(
            "a file already exists here; refusing to overwrite it",
            source=str(path),
            hint="choose a new path or delete it",
        )
    if not path.parent.is_dir():
        raise errors.LedgerError(f"directory {str(path.parent)!r} does not exist", source=str(path))
    train, evals = [str(d) for d in train_domains], [str(d) for d in eval_domains]
    _check_domains(train, evals, str(path))
    constraints = _align_constraints(constraints, train, str(path))
    try:
        settings_json = json.dumps(dict(settings or {}), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise errors.LedgerError(
            f"settings are not JSON-serialisable: {err}", source=str(path)
        ) from None
    meta = {
        "application": APPLICATION,
        "schema_version": str(SCHEMA_VERSION),
        "created": now(),
        "train_domains": json.dumps(train),
        "eval_domains": json.dumps(evals),
        "constraints": constraints.to_json(),
        "settings": settings_json,
        "next_run_number": "1",
    }
    first = (1, version_name(1), meta["train_domains"], meta["constraints"], meta["created"])
    _write_new_file(path, meta, first)


def _check_domains(train: list[str], evals: list[str], source: str) -> None:
    if len(train) == 1:
        raise errors.DomainNameError(
            f"only one training domain ({train[0]!r}): a mixture needs at least 2",
            source=source,
            hint="list every training domain, e.g. train_domains=['web', 'code']",
            param="train_domains",
        )
    for names, kind in ((train, "training"), (evals, "validation")):
        if not names:
            raise errors.DomainNameError(f"no {kind} domains given", source=source)
        if len(set(names)) != len(names):
            dup = next(d for d in names if names.count(d) > 1)
            raise errors.DomainNameError(f"{kind} domain {dup!r} is listed twice", source=source)
        check_domain_names(names, kind, source)


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


def _write_new_file(path: Path, meta: dict[str, str], first_set: tuple) -> None:
    """The schema, ``meta`` rows and domain-set version 1 (``first_set``: version, name,
    domains JSON, constraints JSON, created) in a file built under a temporary name, then
    linked into place: the ledger appears complete or not at all, and ``os.link`` fails instead
    of overwriting a concurrent create. (Mode 0666 & ~umask like bayesmix.io's writer; linked,
    not replaced, so not ``atomic_path``.)"""
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
            con.execute(
                "INSERT INTO domain_sets (version, name, train_domains, constraints, created)"
                " VALUES (?, ?, ?, ?, ?)",
                first_set,
            )
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


def open_connection(path: Path) -> sqlite3.Connection:
    """The connection to an existing ledger (WAL, busy timeout, full sync, foreign keys);
    LedgerError if the file is missing, not a ledger, or of another schema version. A ledger of
    an older schema is upgraded first, in one transaction keeping every row
    (:func:`bayesmix.loop.ledger_versions.upgrade`)."""
    if not path.is_file():
        raise errors.LedgerError(
            "no ledger file here",
            source=str(path),
            hint="create one first (bayesmix init, or Experiment.create in Python)",
        )
    with open(path, "rb") as fh:
        header = fh.read(16)
    if header != b"SQLite format 3\x00":
        raise errors.LedgerError("not a bayesmix ledger (not an SQLite database)", source=str(path))
    try:
        writable = writable_place(path)
        if writable:
            con = _connect(path)
            con.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=FULL")
        else:  # reading needs no write access (bayesmix status on a read-only share)
            con = _connect_read_only(path)
        con.execute("PRAGMA foreign_keys=ON")
        has_meta = con.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
        ).fetchone()
        meta = dict(con.execute("SELECT key, value FROM meta").fetchall()) if has_meta else {}
    except sqlite3.DatabaseError as err:
        raise errors.LedgerError(f"cannot read the ledger: {err}", source=str(path)) from None
    if meta.get("application") != APPLICATION:
        con.close()
        raise errors.LedgerError(
            "not a bayesmix ledger (an SQLite file without its tables)", source=str(path)
        )
    try:
        upgrade(con, str(path), _fault_point, writable)
    except BaseException:
        con.close()
        raise
    return con


# ---------------------------------------------------------------------------------- the store
class LedgerStore:
    """An open ledger file: its connection, the ``meta`` table's domains, constraints and
    settings (checked when opened), its transactions, and its cells read and checked."""

    def __init__(self, connection: sqlite3.Connection, path: Path):
        self.con = connection
        self.path = path
        meta = dict(connection.execute("SELECT key, value FROM meta").fetchall())
        #: Every version of the training-domain set, in order; the last is the current one.
        self.domain_sets: tuple[DomainSet, ...] = read_domain_sets(connection, self.damaged)
        self.train_domains: tuple[str, ...] = self._meta_domains(meta, "train_domains")
        if self.train_domains != self.domain_sets[-1].train_domains:
            raise self.damaged(
                "meta",
                "key 'train_domains'",
                "value",
                f"not the training domains of the current domain set "
                f"{self.domain_sets[-1].name!r} (table domain_sets)",
            )
        self.eval_domains: tuple[str, ...] = self._meta_domains(meta, "eval_domains")
        self.constraints = self._meta_constraints(meta)
        self.settings: dict = self.meta_json(meta, "settings", dict, "an object")
        self._check_cells()

    def close(self) -> None:
        self.con.close()

    # ------------------------------------------------------------------ damaged cells
    def damaged(self, table: str, row: str, column: str, problem: str) -> errors.DamagedLedgerError:
        """The error for a cell that was edited by hand or damaged."""
        return errors.DamagedLedgerError(
            f"table {table}, {row}, column {column!r}: {problem}",
            source=str(self.path),
            hint="the ledger was edited by hand or damaged; restore it from a backup or fix "
            "that cell",
        )

    def meta_json(self, meta: dict, key: str, kind: type, what: str):
        """The JSON value of meta key ``key`` (of type ``kind``), or DamagedLedgerError."""
        if key not in meta:
            raise self.damaged("meta", f"key {key!r}", "value", "the row is missing")
        try:
            value = json.loads(meta[key])
        except (ValueError, TypeError) as err:
            raise self.damaged("meta", f"key {key!r}", "value", f"not JSON ({err})") from None
        if not isinstance(value, kind):
            raise self.damaged(
                "meta", f"key {key!r}", "value", f"JSON but not {what}: {meta[key][:60]!r}"
            )
        return value

    def meta_record(self, key: str, text: str) -> dict:
        """A ``meta`` value holding a JSON object (fit, hand-off and job records)."""
        return self.meta_json({key: text}, key, dict, "an object")

    def meta_round(self, key: str, prefix: str) -> int:
        """The round number of a per-round ``meta`` key (``<prefix><round>``)."""
        try:
            return int(key[len(prefix) :])
        except ValueError:
            raise self.damaged(
                "meta", f"key {key!r}", "key", f"not {prefix}<round number>"
            ) from None

    def _meta_domains(self, meta: dict, key: str) -> tuple[str, ...]:
        names = self.meta_json(meta, key, list, "a list of domain names")
        if (
            not names
            or not all(isinstance(n, str) and n for n in names)
            or len(set(names)) != len(names)
        ):
            raise self.damaged(
                "meta",
                f"key {key!r}",
                "value",
                f"not a list of distinct domain names: {meta[key][:60]!r}",
            )
        return tuple(names)

    def _meta_constraints(self, meta: dict) -> Constraints:
        raw = self.meta_json(meta, "constraints", dict, "an object")
        try:
            cons = Constraints.from_dict(raw)
        except (ValueError, TypeError, KeyError, AttributeError, IndexError) as err:
            problem = err.problem if isinstance(err, errors.BayesmixError) else str(err)
            raise self.damaged(
                "meta", "key 'constraints'", "value", f"not a valid constraint set ({problem})"
            ) from None
        if sorted(cons.domains) != sorted(self.train_domains):
            raise self.damaged(
                "meta",
                "key 'constraints'",
                "value",
                f"constraints are over domains {list(cons.domains)} but "
                f"meta train_domains lists {list(self.train_domains)}",
            )
        return cons

    version = property(lambda self: self.domain_sets[-1].version, doc="The current version.")

    def domains_of(self, version: int | None) -> tuple[str, ...]:
        """The training domains of domain-set ``version`` (None: the current one)."""
        return (
            self.train_domains if version is None else self.domain_sets[version - 1].train_domains
        )

    def mixture(self, run: str, text, version: int | None = None) -> list[float]:
        """A ``runs.mixture`` cell: a JSON list of one finite share per training domain of the
        run's domain-set ``version`` (None: the current one)."""
        try:
            mix = json.loads(text)
        except (ValueError, TypeError) as err:
            raise self.damaged("runs", f"run {run!r}", "mixture", f"not JSON ({err})") from None
        domains = self.domains_of(version)
        m = len(domains)
        if not (
            isinstance(mix, list)
            and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                for v in mix
            )
        ):
            raise self.damaged(
                "runs", f"run {run!r}", "mixture", f"not a list of numbers: {str(text)[:60]!r}"
            )
        if len(mix) != m:
            raise self.damaged(
                "runs",
                f"run {run!r}",
                "mixture",
                f"{len(mix)} shares but its domain set has {m} training domains "
                f"({', '.join(domains)})",
            )
        return [float(v) for v in mix]

    def _check_cells(self) -> None:
        """Every run's mixture readable and as long as the domain list; every result for a
        known validation domain (DamagedLedgerError otherwise)."""
        with self.read() as con:
            rows = con.execute("SELECT run, mixture, domain_set FROM runs ORDER BY seq").fetchall()
            doms = con.execute(
                "SELECT run, eval_domain FROM results GROUP BY eval_domain"
            ).fetchall()
        for run, text, version in rows:
            if not isinstance(version, int) or not 1 <= version <= len(self.domain_sets):
                raise self.damaged(
                    "runs",
                    f"run {run!r}",
                    "domain_set",
                    f"{version!r} is not a version of table domain_sets "
                    f"(1 to {len(self.domain_sets)})",
                )
            self.mixture(run, text, version)
        for run, dom in doms:
            if dom not in self.eval_domains:
                raise self.damaged(
                    "results",
                    f"run {run!r}",
                    "eval_domain",
                    f"{dom!r} is not one of the ledger's validation domains "
                    f"({', '.join(self.eval_domains)})",
                )

    # ------------------------------------------------------------------ transactions
    @contextmanager
    def write(self, operation: str = "write") -> Iterator[sqlite3.Connection]:
        """One write transaction: takes the write lock up front (waits up to the busy
        timeout), commits on success, rolls back on any exception. SQLite's errors (read-only
        file, lock timeout, disk full) become one-line LedgerErrors; nothing is changed; so is
        a domain set changed by another process since this store was opened (``check_current``).
        Calls :func:`_fault_point` with ``"<operation>:begin"`` and ``"<operation>:commit"``."""
        try:
            self.con.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as err:
            raise self._write_failed(err) from None
        try:
            check_current(self.con, self.domain_sets[-1], str(self.path))
            _fault_point(f"{operation}:begin")
            yield self.con
            _fault_point(f"{operation}:commit")
            self.con.execute("COMMIT")
        except sqlite3.OperationalError as err:
            self._rollback()
            raise self._write_failed(err) from None
        except BaseException:
            self._rollback()
            raise

    @staticmethod
    def fault(name: str) -> None:
        """Call the fault-injection hook at point ``name`` (``"<operation>:<step>"``) between
        the statements of a write transaction."""
        _fault_point(name)

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """One read transaction: a consistent snapshot across several queries."""
        self.con.execute("BEGIN")
        try:
            yield self.con
        finally:
            self.con.execute("COMMIT")

    def check_writable(self) -> None:
        """LedgerError (one line) unless this process can write the ledger now: a write is
        tried and rolled back."""
        try:
            self.con.execute("BEGIN IMMEDIATE")
            self.con.execute("UPDATE meta SET value = value WHERE key = 'application'")
        except sqlite3.OperationalError as err:
            self._rollback()
            raise self._write_failed(err) from None
        self._rollback()

    def _rollback(self) -> None:
        if self.con.in_transaction:
            try:
                self.con.execute("ROLLBACK")
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
        """The file a stored path names: relative to the ledger's folder, else relative to the
        working directory or next to the ledger under its file name (entries written relative
        to the working directory of the time). With ``file_hash_`` the first candidate with that
        content wins. None when no candidate exists (or matches)."""
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

    def shown_path(self, stored: str | None, cache: dict) -> str | None:
        """A stored path as shown to people: the file found (:meth:`resolve_path`), else the
        path next to the ledger; ``cache`` keeps each stored path's answer for one listing."""
        if stored is None:
            return None
        if stored not in cache:
            found = self.resolve_path(stored)
            cache[stored] = str(
                found if found is not None else Path(os.path.normpath(self.folder / stored))
            )
        return cache[stored]


# ---------------------------------------------------------------------------------- cells
def mix_json(r: np.ndarray) -> str:
    """A mixture (one share per training domain) as stored in ``runs.mixture``."""
    return json.dumps([float(v) for v in r])


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


def now() -> str:
    """The current UTC time as stored in the ledger (ISO 8601, seconds)."""
    return datetime.now(UTC).isoformat(timespec="seconds")
