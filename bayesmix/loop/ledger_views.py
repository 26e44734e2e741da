"""What the ledger holds, read in one snapshot each: the runs as a frame (:func:`runs_frame`),
the mixtures still in flight (:func:`pending`), the recorded results as a :class:`RunTable`
(:func:`run_table`), the current round and a JSON-friendly summary (:func:`summary`)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from bayesmix import errors
from bayesmix.data.table import LOSS_PREFIX, MIX_PREFIX, RunTable
from bayesmix.loop.ledger_store import SCHEMA_VERSION, STATUSES, LedgerStore

#: Columns of :func:`runs_frame` before the mixture columns.
RUN_COLUMNS = (
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
)


def runs_frame(store: LedgerStore, status: str | Iterable[str] | None = None) -> pd.DataFrame:
    """Runs in the order they were added, one row each (see :meth:`Ledger.runs`)."""
    wanted = _status_filter(status)
    with store.read() as con:
        rows = con.execute(
            "SELECT r.run, r.round, r.strategy, r.status, r.external, r.n_params, r.steps, "
            "r.tokens, r.posterior_path, r.posterior_hash, r.created, r.updated, "
            "(SELECT count(DISTINCT ifnull(step, -1)) FROM results s WHERE s.run = r.run), "
            "r.mixture FROM runs r ORDER BY r.seq"
        ).fetchall()
    rows = [row for row in rows if wanted is None or row[3] in wanted]
    cache: dict = {}
    rows = [(*row[:8], store.shown_path(row[8], cache), *row[9:]) for row in rows]
    frame = pd.DataFrame([row[:-1] for row in rows], columns=list(RUN_COLUMNS))
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
    mix = np.array([store.mixture(row[0], row[-1]) for row in rows], float).reshape(
        len(rows), len(store.train_domains)
    )
    for j, d in enumerate(store.train_domains):
        frame[MIX_PREFIX + d] = mix[:, j]
    return frame


def pending(store: LedgerStore) -> pd.DataFrame:
    """Mixtures of proposed and running runs: DataFrame (index ``run``, columns training
    domains)."""
    frame = runs_frame(store, ("proposed", "running"))
    out = frame.set_index("run")[[MIX_PREFIX + d for d in store.train_domains]]
    out.columns = list(store.train_domains)
    out.columns.name = "train_domain"
    return out


def run_table(store: LedgerStore, status: str | Iterable[str] | None = "completed") -> RunTable:
    """Recorded results as a validated :class:`RunTable`, one record per (run, step) (see
    :meth:`Ledger.run_table`). LedgerError when nothing has been recorded."""
    wanted = _status_filter(status)
    with store.read() as con:
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
            source=str(store.path),
            hint="record results with `bayesmix ingest`",
        )
    frame = _result_records(store, runs, results)
    return _tidy_table(store, frame, has_steps=results[0][1] is not None)


def _result_records(store: LedgerStore, runs: dict, results: list) -> pd.DataFrame:
    """One row per (run, step) in the order the runs were added, then by step: run, step,
    tokens, n_params, mix.*, and a loss.* column per validation domain with a result."""
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
                    for d, v in zip(store.train_domains, store.mixture(run, runs[run][3]))
                },
            },
        )
        rec[LOSS_PREFIX + dom] = loss
        if tok is not None:
            rec["tokens"] = tok
    return pd.DataFrame([records[k] for k in sorted(records)])


def _tidy_table(store: LedgerStore, frame: pd.DataFrame, *, has_steps: bool) -> RunTable:
    """The records in the tidy layout: run, [n_params], [step], [tokens] (each when known),
    mix.* and loss.* for every domain of the ledger (missing losses empty)."""
    for d in store.eval_domains:
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
            *[MIX_PREFIX + d for d in store.train_domains],
            *[LOSS_PREFIX + d for d in store.eval_domains],
        ]
    ]
    return RunTable.from_frame(frame, source=str(store.path))


def current_round(store: LedgerStore) -> int:
    """The highest round of any run (0 for an empty ledger)."""
    with store.read() as con:
        return int(con.execute("SELECT ifnull(max(round), 0) FROM runs").fetchone()[0])


def summary(store: LedgerStore) -> dict:
    """Plain dict (JSON-friendly): domains, constraints, settings, counts by status, round and
    strategy, recorded losses, current round (see :meth:`Ledger.summary`)."""
    with store.read() as con:
        by_status = dict(con.execute("SELECT status, count(*) FROM runs GROUP BY status"))
        by_round: dict[str, dict[str, int]] = {}
        for rnd, status, count in con.execute(
            "SELECT round, status, count(*) FROM runs GROUP BY round, status ORDER BY round"
        ):
            by_round.setdefault(str(rnd), {})[status] = count
        strategies = dict(
            con.execute("SELECT strategy, count(*) FROM runs GROUP BY strategy ORDER BY min(seq)")
        )
        n_losses, n_checkpoints = con.execute(
            "SELECT count(*), count(DISTINCT run || '@' || ifnull(step, -1)) FROM results"
        ).fetchone()
        external = con.execute("SELECT count(*) FROM runs WHERE external").fetchone()[0]
        created = con.execute("SELECT value FROM meta WHERE key = 'created'").fetchone()[0]
        current = int(con.execute("SELECT ifnull(max(round), 0) FROM runs").fetchone()[0])
    c = store.constraints
    return {
        "ledger": str(store.path),
        "schema_version": SCHEMA_VERSION,
        "created": created,
        "train_domains": list(store.train_domains),
        "eval_domains": list(store.eval_domains),
        "constraints": {
            d: {"min": float(c.lower[i]), "max": float(c.upper[i])} for i, d in enumerate(c.domains)
        },
        "settings": store.settings,
        "runs": int(sum(by_status.values())),
        "by_status": {s: int(by_status.get(s, 0)) for s in STATUSES},
        "by_round": by_round,
        "by_strategy": strategies,
        "external_runs": int(external),
        "recorded_losses": int(n_losses),
        "recorded_checkpoints": int(n_checkpoints),
        "current_round": current,
    }


def _status_filter(status: str | Iterable[str] | None) -> set[str] | None:
    """The statuses asked for (None: all); LedgerError for an unknown one."""
    if status is None:
        return None
    wanted = {status} if isinstance(status, str) else set(status)
    bad = wanted - set(STATUSES)
    if bad:
        raise errors.LedgerError(
            f"unknown status {sorted(bad)[0]!r}", hint=f"use one of {', '.join(STATUSES)}"
        )
    return wanted
