"""Recording proposed runs in the ledger (:meth:`Ledger.add_proposals`).

A batch is checked before the write lock is taken (shares per training domain, the ledger's
constraints, a strategy name, planned model size and training amount per run, the spread within
the batch); then one write transaction allocates the round (``round=None``), re-checks the
distance to every proposed, running and completed run as the ledger is at that moment (runs
another process recorded while this one was choosing included: :class:`ProposalConflictError`,
nothing written), gives the runs new ids (``r0001``, ...) and stores the round's fit and hand-off
records with them.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bayesmix import errors
from bayesmix.data.table import MIX_PREFIX, check_known_domains
from bayesmix.loop.ledger_domains import current_shares
from bayesmix.loop.ledger_rounds import Handoff, json_record, next_round, put_round_records
from bayesmix.loop.ledger_store import LedgerStore, file_hash, mix_json, now

#: Statuses a new proposal must keep its distance from.
OCCUPIED = ("proposed", "running", "completed")

#: A planned amount (model size, steps, tokens): one value for every run, or one per run.
PerRun = float | Sequence[float] | np.ndarray | None


@dataclass(frozen=True)
class _Batch:
    """A checked batch of proposals, ready to be written."""

    mix: np.ndarray  #: (n, M) shares in the ledger's training-domain order
    strategy: str
    planned: dict[str, list[float | None]]  #: n_params, steps, tokens: one value per run
    posterior_path: str | None  #: relative to the ledger's folder
    posterior_hash: str | None


def add_proposals(
    store: LedgerStore,
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
    """Record proposed runs in one transaction and return their new ids (see
    :meth:`Ledger.add_proposals` for the arguments)."""
    mix = _proposal_array(store, mixtures)
    _check_arguments(strategy, round, min_distance)
    if min_distance:
        _check_spread(store, mix, float(min_distance))
    _check_feasible(store, mix)
    planned = {
        name: _per_run(value, len(mix), name)
        for name, value in (("n_params", n_params), ("steps", steps), ("tokens", tokens))
    }
    fit_json = None if fit is None else json_record(store, fit, "fit record")
    post_path = post_hash = None
    if posterior is not None:
        post_path, post_hash = store.relative_path(posterior), file_hash(posterior)
    batch = _Batch(mix, strategy, planned, post_path, post_hash)
    with store.write("add_proposals") as con:
        if round is None:
            round = next_round(con)
        if min_distance:
            _check_distances(store, con, mix, float(min_distance))
        if callable(handoff):
            handoff = handoff(int(round))
        ids = _insert_runs(store, con, batch, int(round))
        put_round_records(store, con, int(round), fit_json, handoff)
    return ids


def _proposal_array(store: LedgerStore, mixtures: np.ndarray | pd.DataFrame) -> np.ndarray:
    """Proposals as an (n, M) array in the ledger's training-domain order: from an array (one
    mixture or n) or a DataFrame with one column per training domain (``mix.`` prefix
    optional). LedgerError or DomainNameError otherwise."""
    m = len(store.train_domains)
    if isinstance(mixtures, pd.DataFrame):
        cols = [str(c).removeprefix(MIX_PREFIX) for c in mixtures.columns]
        check_known_domains(cols, store.train_domains, "training", str(store.path))
        absent = [d for d in store.train_domains if d not in cols]
        if absent:
            raise errors.DomainNameError(
                f"proposals have no column for domain {absent[0]!r}", source=str(store.path)
            )
        frame = mixtures.copy()
        frame.columns = cols
        mixtures = frame[list(store.train_domains)].to_numpy(dtype=float)
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


def _check_arguments(strategy, round, min_distance) -> None:
    if not isinstance(strategy, str) or not strategy.strip():
        raise errors.LedgerError("a proposal needs a non-empty strategy name")
    if round is not None and (
        isinstance(round, bool) or not isinstance(round, (int, np.integer)) or round < 0
    ):
        raise errors.LedgerError(f"round must be an integer >= 0, got {round!r}")
    if min_distance is not None and not (np.isfinite(min_distance) and min_distance >= 0):
        raise errors.LedgerError(f"min_distance must be >= 0, got {min_distance!r}")


def _check_feasible(store: LedgerStore, mix: np.ndarray) -> None:
    """Every proposal inside the ledger's constraints (InfeasibleError naming the first one
    outside and how)."""
    inside = store.constraints.contains(mix)
    for bad in np.flatnonzero(~inside):
        raise errors.InfeasibleError(
            f"proposal {bad + 1} ({_fmt_mix(mix[bad], store.train_domains)}) "
            f"{_violation(store, mix[bad])}",
            source=str(store.path),
            hint="proposals must satisfy the ledger's constraints",
        )


def _violation(store: LedgerStore, r: np.ndarray) -> str:
    c = store.constraints
    if abs(r.sum() - 1.0) > 1e-6:
        return f"sums to {r.sum():.6g}, not 1"
    j = int(np.argmax(np.maximum(c.lower - r, r - c.upper)))
    d = store.train_domains[j]
    if r[j] < c.lower[j]:
        return f"gives {d!r} {r[j]:.6g}, below its minimum {c.lower[j]:.6g}"
    return f"gives {d!r} {r[j]:.6g}, above its maximum {c.upper[j]:.6g}"


def _check_spread(store: LedgerStore, mix: np.ndarray, dist: float) -> None:
    """Proposals of one batch at least ``dist`` apart (a caller's bug otherwise)."""
    for i in range(1, len(mix)):
        d = np.sqrt(((mix[:i] - mix[i]) ** 2).sum(axis=1))
        if d.min() < dist - 1e-9:
            raise errors.LedgerError(
                f"proposals {int(d.argmin()) + 1} and {i + 1} are {d.min():.4g} apart, "
                f"closer than the minimum distance {dist:g}",
                source=str(store.path),
            )


def _check_distances(
    store: LedgerStore, con: sqlite3.Connection, mix: np.ndarray, dist: float
) -> None:
    """Inside the write transaction: every proposal at least ``dist`` from every proposed,
    running or completed run as the ledger is now; ProposalConflictError otherwise."""
    marks = ", ".join("?" * len(OCCUPIED))
    rows = con.execute(
        f"SELECT run, round, status, mixture, domain_set FROM runs WHERE status IN ({marks}) "
        "ORDER BY seq",
        OCCUPIED,
    ).fetchall()
    taken, _ = current_shares(store, [(r[0], r[4], r[3]) for r in rows])
    inside = ~np.isnan(taken).any(axis=1)  # runs of an earlier domain set a map left out
    rows, taken = [r for r, ok in zip(rows, inside) if ok], taken[inside]
    if not rows:
        return
    d = np.sqrt(((mix[:, None, :] - taken[None]) ** 2).sum(axis=2))  # (n, k)
    i, k = np.unravel_index(int(np.argmin(d)), d.shape)
    if d[i, k] < dist - 1e-9:
        run, rnd, status = rows[k][:3]
        raise errors.ProposalConflictError(
            f"proposal {i + 1} ({_fmt_mix(mix[i], store.train_domains)}) is {d[i, k]:.4g} "
            f"from run {run!r} ({status}, round {rnd}), closer than the minimum distance "
            f"{dist:g}; nothing recorded",
            source=str(store.path),
            hint="another proposer probably recorded runs while this batch was being "
            "chosen: propose again (the new runs will be taken into account)",
        )


def _insert_runs(
    store: LedgerStore, con: sqlite3.Connection, batch: _Batch, round: int
) -> list[str]:
    """Inside the write transaction: one ``runs`` row per proposal (status proposed) under the
    next free ids, and the id counter moved past them. Returns the ids."""
    number = int(con.execute("SELECT value FROM meta WHERE key = 'next_run_number'").fetchone()[0])
    taken = {r for (r,) in con.execute("SELECT run FROM runs")}
    stamp = now()
    ids: list[str] = []
    for i, shares in enumerate(batch.mix):
        while (run := f"r{number:04d}") in taken:
            number += 1
        number += 1
        ids.append(run)
        con.execute(
            "INSERT INTO runs (run, round, strategy, status, external, mixture, n_params,"
            " steps, tokens, posterior_path, posterior_hash, created, updated, domain_set) "
            "VALUES (?, ?, ?, 'proposed', 0, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                run,
                round,
                batch.strategy,
                mix_json(shares),
                batch.planned["n_params"][i],
                batch.planned["steps"][i],
                batch.planned["tokens"][i],
                batch.posterior_path,
                batch.posterior_hash,
                stamp,
                stamp,
                store.version,
            ),
        )
    store.fault("add_proposals:inserted")
    con.execute("UPDATE meta SET value = ? WHERE key = 'next_run_number'", (str(number),))
    return ids


def _per_run(value: PerRun, n: int, name: str) -> list[float | None]:
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


def _fmt_mix(r: np.ndarray, domains: Sequence[str]) -> str:
    """A mixture for people: ``web=0.5, code=0.5``."""
    return ", ".join(f"{d}={v:.4g}" for d, v in zip(domains, r))
