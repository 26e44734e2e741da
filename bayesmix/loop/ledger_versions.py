"""The ledger's domain-set versions: their table, the upgrade of older ledgers, reading them.

A ledger records its experiment's training-domain sets in order (table ``domain_sets``: version
1, 2, ...; each with its name, its training domains in order, the constraints over them, the
domain map (:class:`bayesmix.data.domain_maps.DomainMap`, as its TOML tables in JSON) from the
version before, when it was made and what the change did to runs in flight) and, with every run,
the version it was proposed or imported under (``runs.domain_set``). A run's ``mixture`` cell is
in its own version's domains and is never rewritten when the set changes; the current version is
the last, and ``meta``'s ``train_domains`` and ``constraints`` are its.

Ledgers of schema 1 (written before versions existed) are upgraded when opened for writing
(:func:`upgrade`): one ``BEGIN IMMEDIATE`` transaction creates the table with version 1 = the
ledger's domains and constraints, gives every run version 1 and sets schema 2. Every stored row is
kept; a process killed mid-way leaves the ledger at schema 1, as it was.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

from bayesmix import errors
from bayesmix.data.domain_maps import DomainMap

#: The schema this bayesmix writes and reads.
SCHEMA_VERSION = 2
#: Older schemas :func:`upgrade` brings to :data:`SCHEMA_VERSION`.
UPGRADABLE = (1,)

DOMAIN_SETS_TABLE = """
CREATE TABLE domain_sets (
    version INTEGER PRIMARY KEY CHECK (version >= 1),
    name TEXT NOT NULL UNIQUE,
    train_domains TEXT NOT NULL,
    constraints TEXT NOT NULL,
    map TEXT,
    created TEXT NOT NULL,
    note TEXT
);
"""
#: The ``runs`` column naming each run's version (added by :func:`upgrade` to schema-1 ledgers).
RUNS_COLUMN = "domain_set INTEGER NOT NULL DEFAULT 1 CHECK (domain_set >= 1)"

Damaged = Callable[[str, str, str, str], errors.DamagedLedgerError]


@dataclass(frozen=True)
class DomainSet:
    """One version of the experiment's training-domain set: ``version`` (1, 2, ...), ``name``
    (e.g. ``"v2"``), ``train_domains`` in order, ``constraints`` (JSON text of
    :class:`~bayesmix.data.constraints.Constraints`), ``map`` (the DomainMap from the version
    before; None for version 1), ``created`` (UTC ISO time) and ``note`` (what the change did:
    runs abandoned or remapped, their earlier mixtures; {} for version 1)."""

    version: int
    name: str
    train_domains: tuple[str, ...]
    constraints: str
    map: DomainMap | None
    created: str
    note: dict


def version_name(version: int) -> str:
    """The default name of a version: ``v1``, ``v2``, ..."""
    return f"v{int(version)}"


def upgrade(
    con: sqlite3.Connection, path: str, fault: Callable[[str], None], writable: bool
) -> None:
    """Bring a ledger of an older schema (:data:`UPGRADABLE`) to :data:`SCHEMA_VERSION` in one
    transaction, keeping every row; nothing when it is current. LedgerError (nothing changed)
    for a read-only ledger, a newer schema or a failed write."""
    found = _schema(con)
    if found == str(SCHEMA_VERSION):
        return
    if found not in {str(v) for v in UPGRADABLE}:
        raise errors.LedgerError(
            f"ledger schema version {found} is not the version {SCHEMA_VERSION} this "
            "bayesmix reads",
            source=path,
            hint="use the bayesmix version that wrote it",
        )
    if not writable:
        raise errors.LedgerError(
            f"ledger schema version {found} must be upgraded to {SCHEMA_VERSION} (domain-set "
            "versions; every row is kept) but the ledger is read-only: nothing was changed",
            source=path,
            hint="open it once where its file and folder are writable (e.g. bayesmix status)",
        )
    try:
        con.execute("BEGIN IMMEDIATE")
        try:
            if _schema(con) == "1":  # another process may have upgraded it meanwhile
                _upgrade_from_1(con, fault)
            fault("upgrade:commit")
            con.execute("COMMIT")
        except BaseException:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise
    except sqlite3.Error as err:
        raise errors.LedgerError(
            f"cannot upgrade the ledger to schema {SCHEMA_VERSION} ({err}): nothing was changed",
            source=path,
            hint="check that the file and its folder are writable and the disk has space",
        ) from None


def _schema(con: sqlite3.Connection) -> str | None:
    row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return None if row is None else row[0]


def _upgrade_from_1(con: sqlite3.Connection, fault: Callable[[str], None]) -> None:
    """Schema 1 -> 2: version 1 is the ledger's domains and constraints; every run is of it."""
    meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
    con.execute(DOMAIN_SETS_TABLE)
    con.execute(
        "INSERT INTO domain_sets (version, name, train_domains, constraints, map, created, note)"
        " VALUES (1, ?, ?, ?, NULL, ?, NULL)",
        (version_name(1), meta.get("train_domains"), meta.get("constraints"), meta.get("created")),
    )
    fault("upgrade:table")
    con.execute(f"ALTER TABLE runs ADD COLUMN {RUNS_COLUMN}")
    con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))


def check_current(con: sqlite3.Connection, current: DomainSet, path: str) -> None:
    """Inside a write transaction: LedgerError (the transaction rolls back) when another process
    changed the domain set since ``current`` was read, so nothing is written in a stale set."""
    row = con.execute("SELECT max(version), count(*) FROM domain_sets").fetchone()
    if row != (current.version, current.version):
        (name,) = con.execute("SELECT name FROM domain_sets ORDER BY version DESC").fetchone()
        raise errors.LedgerError(
            f"the experiment's domain set changed from {current.name!r} to {name!r} since this "
            "ledger was opened: nothing was changed",
            source=path,
            hint="open the ledger again (run the command again) to work in the new set",
        )


def read_domain_sets(con: sqlite3.Connection, damaged: Damaged) -> tuple[DomainSet, ...]:
    """Every version in order, each checked (``damaged(table, row, column, problem)`` builds
    the error for a cell edited by hand or damaged)."""
    rows = con.execute(
        "SELECT version, name, train_domains, constraints, map, created, note "
        "FROM domain_sets ORDER BY version"
    ).fetchall()
    if not rows:
        raise damaged("domain_sets", "version 1", "version", "the table has no rows")
    out = []
    for i, (version, name, domains, cons, mapping, created, note) in enumerate(rows, start=1):
        where = f"version {version}"
        if version != i:
            raise damaged("domain_sets", where, "version", f"expected version {i} (1, 2, ...)")
        names = _json(domains, damaged, where, "train_domains")
        if (
            not isinstance(names, list)
            or len(names) < 2
            or not all(isinstance(n, str) and n for n in names)
            or len(set(names)) != len(names)
        ):
            raise damaged(
                "domain_sets", where, "train_domains", f"not 2+ distinct names: {domains[:60]!r}"
            )
        domain_map = None
        if version > 1:
            raw = _json(mapping, damaged, where, "map")
            try:
                domain_map = DomainMap.from_dict(raw, source=f"domain_sets {where} map")
            except errors.BayesmixError as err:
                raise damaged("domain_sets", where, "map", err.problem) from None
        extra = _json(note, damaged, where, "note") if note else {}
        out.append(
            DomainSet(int(version), str(name), tuple(names), cons, domain_map, str(created), extra)
        )
    return tuple(out)


def _json(text, damaged: Damaged, where: str, column: str):
    try:
        return json.loads(text)
    except (ValueError, TypeError) as err:
        raise damaged("domain_sets", where, column, f"not JSON ({err})") from None
