"""The ledger's records per round: the fit each round of proposals came from, the most recent
fit, and each round's hand-off file (the file its proposals are written to for the training
jobs, and whether it was written).

They live in the ``meta`` table as JSON objects under ``fit:round<N>``, ``fit:last`` and
``handoff:round<N>``. A round's fit and hand-off records are written in the same transaction as
its proposals (:func:`put_round_records`), so a round whose file was lost (process killed
between the ledger write and the file) is reported (:func:`missing_handoffs`) and can be
rewritten from the ledger (:func:`handoff_frame`).
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Mapping

import pandas as pd

from bayesmix import errors
from bayesmix.loop.ledger_store import LedgerStore
from bayesmix.loop.ledger_views import runs_frame

#: Prefix of the meta keys holding the fit record of each round of proposals.
FIT_KEY = "fit:round"
#: Meta key of the record of the most recent fit (written when the fit is saved, before any
#: proposal, so a fit is reused even if its proposals were never recorded).
LAST_FIT_KEY = "fit:last"
#: Prefix of the meta keys holding each round's hand-off file ({"path", "written"}).
HANDOFF_KEY = "handoff:round"

#: A round's hand-off file, or a callable giving it from the round number.
Handoff = str | os.PathLike | Callable[[int], str | os.PathLike]


def json_record(store: LedgerStore, record: Mapping, what: str) -> str:
    """``record`` as the JSON text stored in ``meta``; LedgerError naming ``what`` when it is
    not JSON-serialisable."""
    try:
        return json.dumps(dict(record), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise errors.LedgerError(
            f"{what} is not JSON-serialisable: {err}", source=str(store.path)
        ) from None


def next_round(con: sqlite3.Connection) -> int:
    """The round the next batch of proposals gets (0 in an empty ledger, else the highest
    round + 1), as the ledger is inside the transaction of ``con``."""
    count, top = con.execute("SELECT count(*), ifnull(max(round), 0) FROM runs").fetchone()
    return 0 if count == 0 else int(top) + 1


def put_round_records(
    store: LedgerStore,
    con: sqlite3.Connection,
    round: int,
    fit_json: str | None,
    handoff: str | os.PathLike | None,
) -> None:
    """Inside the proposals' write transaction: store round ``round``'s fit record and its
    hand-off file (not yet written), replacing earlier records of that round."""
    if fit_json is not None:
        con.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
            (f"{FIT_KEY}{round}", fit_json),
        )
    if handoff is not None:
        record = json.dumps({"path": store.relative_path(handoff), "written": False})
        con.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
            (f"{HANDOFF_KEY}{round}", record),
        )


def record_fit(store: LedgerStore, record: Mapping) -> None:
    """Store the record of the most recent fit (see :meth:`Ledger.record_fit`)."""
    text = json_record(store, record, "fit record")
    with store.write("record_fit") as con:
        con.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (LAST_FIT_KEY, text))


def last_fit(store: LedgerStore) -> dict | None:
    """The most recent fit record, else the record stored with the latest round of proposals,
    else None."""
    with store.read() as con:
        row = con.execute("SELECT value FROM meta WHERE key = ?", (LAST_FIT_KEY,)).fetchone()
    if row is not None:
        return store.meta_record(LAST_FIT_KEY, row[0])
    records = fit_records(store)
    return records[max(records)] if records else None


def fit_records(store: LedgerStore) -> dict[int, dict]:
    """The fit records stored with proposals, by round."""
    return _round_records(store, FIT_KEY)


def handoffs(store: LedgerStore) -> dict[int, dict]:
    """Each round's hand-off file, by round: {"path": relative to the ledger's folder,
    "written": bool}."""
    return _round_records(store, HANDOFF_KEY)


def _round_records(store: LedgerStore, prefix: str) -> dict[int, dict]:
    with store.read() as con:
        rows = con.execute(
            "SELECT key, value FROM meta WHERE key LIKE ?", (prefix + "%",)
        ).fetchall()
    return dict(sorted((store.meta_round(k, prefix), store.meta_record(k, v)) for k, v in rows))


def mark_handoff_written(
    store: LedgerStore, round: int, path: str | os.PathLike | None = None
) -> None:
    """Record that round ``round``'s proposals were written (to ``path``, default the file
    recorded with them); nothing when neither is known."""
    key = f"{HANDOFF_KEY}{int(round)}"
    with store.write("mark_handoff") as con:
        row = con.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        stored = store.meta_record(key, row[0]).get("path") if row else None
        rel = store.relative_path(path) if path is not None else stored
        if rel is None:
            return
        con.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
            (key, json.dumps({"path": rel, "written": True})),
        )


def missing_handoffs(store: LedgerStore) -> dict[int, str]:
    """Rounds whose hand-off file was never written: {round: path relative to the ledger's
    folder}."""
    return {r: h["path"] for r, h in handoffs(store).items() if not h.get("written")}


def handoff_frame(store: LedgerStore, round: int) -> pd.DataFrame:
    """The proposals of round ``round`` as written for the training jobs (every run proposed
    in that round, whatever its status now, in the order recorded; runs imported or ingested
    from outside left out). LedgerError when the round has none."""
    runs = runs_frame(store)
    frame = runs[(runs["round"] == int(round)) & ~runs["external"]]
    versions = set(frame["domain_set"])
    if len(versions) == 1 and versions != {store.domain_sets[-1].name}:
        # a round of an earlier domain set: its runs as proposed, in that set's domains
        runs = runs_frame(store, domain_set=versions.pop())
        frame = runs[(runs["round"] == int(round)) & ~runs["external"]]
    if frame.empty:
        rounds = sorted(set(runs.loc[~runs["external"], "round"].tolist()))
        raise errors.LedgerError(
            f"round {round} has no proposed runs",
            source=str(store.path),
            hint=(
                f"rounds with proposals: {', '.join(map(str, rounds))}"
                if rounds
                else "nothing has been proposed yet"
            ),
        )
    return frame.reset_index(drop=True)
