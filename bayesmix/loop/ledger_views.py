"""What the ledger holds, read in one snapshot each: the runs as a frame (:func:`runs_frame`),
the mixtures still in flight (:func:`pending`), the recorded results as a :class:`RunTable`
(:func:`run_table`), the current round and a JSON-friendly summary (:func:`summary`).

Runs of earlier domain-set versions are shown and fitted in the current training-domain set,
remapped through the stored maps (:func:`bayesmix.loop.ledger_domains.current_shares`); asked
for one version (``domain_set=``), the views give that version's runs in its own domains."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from bayesmix import errors
from bayesmix.data.table import LOSS_PREFIX, MIX_PREFIX, RunTable
from bayesmix.loop.ledger_domains import current_shares
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
    "domain_set",
)


def runs_frame(
    store: LedgerStore,
    status: str | Iterable[str] | None = None,
    domain_set: int | str | None = None,
) -> pd.DataFrame:
    """Runs in the order they were added, one row each (see :meth:`Ledger.runs`); mixtures in
    the current domain set (NaN for runs a map leaves out), or, with ``domain_set``, that
    version's runs only in its own domains."""
    wanted = _status_filter(status)
    version = _version(store, domain_set)
    with store.read() as con:
        rows = con.execute(
            "SELECT r.run, r.round, r.strategy, r.status, r.external, r.n_params, r.steps, "
            "r.tokens, r.posterior_path, r.posterior_hash, r.created, r.updated, "
            "(SELECT count(DISTINCT ifnull(step, -1)) FROM results s WHERE s.run = r.run), "
            "r.domain_set, r.mixture FROM runs r ORDER BY r.seq"
        ).fetchall()
    rows = [row for row in rows if wanted is None or row[3] in wanted]
    rows = [row for row in rows if version is None or row[13] == version]
    cache: dict = {}
    rows = [(*row[:8], store.shown_path(row[8], cache), *row[9:]) for row in rows]
    names = [store.domain_sets[row[13] - 1].name for row in rows]
    frame = pd.DataFrame([row[:-1] for row in rows], columns=list(RUN_COLUMNS))
    frame["domain_set"] = pd.Series(names, index=frame.index, dtype=object)
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
    domains = store.domains_of(version)
    if version is None:
        mix, _ = current_shares(store, [(row[0], row[13], row[14]) for row in rows])
    else:
        mix = np.array([store.mixture(row[0], row[14], version) for row in rows], float)
    mix = mix.reshape(len(rows), len(domains))
    for j, d in enumerate(domains):
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


def run_table(
    store: LedgerStore,
    status: str | Iterable[str] | None = "completed",
    domain_set: int | str | None = None,
    report: list[str] | None = None,
) -> RunTable:
    """Recorded results as a validated :class:`RunTable`, one record per (run, step) (see
    :meth:`Ledger.run_table`): every run in the current domain set (runs a map leaves out
    excepted; ``report`` receives the maps' notes), or, with ``domain_set``, that version's runs
    in its own domains. LedgerError when nothing has been recorded."""
    wanted = _status_filter(status)
    version = _version(store, domain_set)
    with store.read() as con:
        runs = {
            row[0]: row
            for row in con.execute(
                "SELECT run, status, n_params, mixture, seq, domain_set FROM runs"
            )
        }
        results = con.execute(
            "SELECT run, step, eval_domain, loss, tokens FROM results "
            "ORDER BY run, ifnull(step, -1)"
        ).fetchall()
    results = [r for r in results if wanted is None or runs[r[0]][1] in wanted]
    results = [r for r in results if version is None or runs[r[0]][5] == version]
    has_steps = bool(results) and results[0][1] is not None
    with_results = [runs[r] for r in dict.fromkeys(r[0] for r in results)]
    if version is None:
        mix, notes = current_shares(store, [(r[0], r[5], r[3]) for r in with_results])
        if report is not None:
            report += notes
    else:
        mix = np.array([store.mixture(r[0], r[3], version) for r in with_results], float)
    shares = {r[0]: m for r, m in zip(with_results, mix) if not np.isnan(m).any()}
    results = [r for r in results if r[0] in shares]
    if not results:
        raise errors.LedgerError(
            "the ledger has no recorded results"
            + (f" for {status} runs" if isinstance(status, str) else "")
            + (f" of domain set {store.domain_sets[version - 1].name!r}" if version else ""),
            source=str(store.path),
            hint="record results with `bayesmix ingest`",
        )
    frame = _result_records(store, runs, results, shares, store.domains_of(version))
    return _tidy_table(store, frame, has_steps=has_steps, domains=store.domains_of(version))


def _result_records(
    store: LedgerStore, runs: dict, results: list, shares: dict, domains: tuple[str, ...]
) -> pd.DataFrame:
    """One row per (run, step) in the order the runs were added, then by step: run, step,
    tokens, n_params, mix.* (``shares``: run -> shares in ``domains``), and a loss.* column per
    validation domain with a result."""
    records: dict[tuple, dict] = {}
    for run, step, dom, loss, tok in results:
        rec = records.setdefault(
            (runs[run][4], step if step is not None else 0.0, run),
            {
                "run": run,
                "step": step,
                "tokens": tok,
                "n_params": runs[run][2],
                **{MIX_PREFIX + d: float(v) for d, v in zip(domains, shares[run])},
            },
        )
        rec[LOSS_PREFIX + dom] = loss
        if tok is not None:
            rec["tokens"] = tok
    return pd.DataFrame([records[k] for k in sorted(records)])


def _tidy_table(
    store: LedgerStore, frame: pd.DataFrame, *, has_steps: bool, domains: tuple[str, ...]
) -> RunTable:
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
            *[MIX_PREFIX + d for d in domains],
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
        versions = con.execute(
            "SELECT run, domain_set, mixture, status, "
            "EXISTS (SELECT 1 FROM results s WHERE s.run = r.run) FROM runs r ORDER BY seq"
        ).fetchall()
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
        "domain_set": store.domain_sets[-1].name,
        "domain_sets": _domain_sets(store, versions),
    }


def _domain_sets(store: LedgerStore, rows: list) -> list[dict]:
    """Per domain-set version: name, training domains, created, the map's labels, runs by
    status, and ``in_fit``: its completed runs with results that a fit in the current set uses
    (a map may leave some out)."""
    done = [r for r in rows if r[3] == "completed" and r[4]]
    mix, _ = current_shares(store, [(r[0], r[1], r[2]) for r in done])
    used = {r[0] for r, m in zip(done, mix) if not np.isnan(m).any()}
    out = []
    for ds in store.domain_sets:
        mine = [r for r in rows if r[1] == ds.version]
        counts = {s: sum(r[3] == s for r in mine) for s in STATUSES}
        out.append(
            {
                "version": ds.version,
                "name": ds.name,
                "train_domains": list(ds.train_domains),
                "created": ds.created,
                "runs": len(mine),
                "by_status": {s: n for s, n in counts.items() if n},
                "in_fit": sum(r[0] in used for r in mine),
                "abandoned_at_change": sorted(ds.note.get("abandoned", {})),
                "remapped_at_change": sorted(ds.note.get("remapped", {})),
            }
        )
    return out


def _version(store: LedgerStore, domain_set: int | str | None) -> int | None:
    """The version number ``domain_set`` names (a number or a name); None for None."""
    if domain_set is None:
        return None
    for ds in store.domain_sets:
        if domain_set in (ds.version, ds.name):
            return ds.version
    raise errors.LedgerError(
        f"domain_set={domain_set!r} is not a domain-set version of this ledger",
        source=str(store.path),
        hint="versions: " + ", ".join(f"{d.version} ({d.name})" for d in store.domain_sets),
        param="domain_set",
    )


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
