"""Recording run results in the ledger (:meth:`Ledger.record_results`, :meth:`Ledger.import_runs`).

One results file is recorded whole or not at all. Before the write lock is taken the table is
validated (its domains are the ledger's, every loss obeys :func:`bayesmix.data.table.check_loss`);
then one write transaction settles the step layout, matches the table's runs to the ledger's
(status, mixture within :data:`MIXTURE_ATOL`, model size), adds the runs it does not know (when
asked to), writes the losses and marks the runs with results completed.

Recording is idempotent: a value already stored (relative tolerance :data:`VALUE_RTOL`) is left
alone. A different value is a conflict: by default the whole file is rejected and nothing is
written; with ``on_conflict="replace"`` the new value overwrites the old one and is counted as
replaced.
"""

from __future__ import annotations

import difflib
import math
import sqlite3
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from bayesmix import errors
from bayesmix.data.table import LOSS_PREFIX, MIX_PREFIX, RunTable, check_known_domains
from bayesmix.data.validation import MAX_LOSS, check_loss, check_max_loss
from bayesmix.loop.ledger_store import LedgerStore, mix_json, now

#: Largest difference in any share between a proposed mixture and the mixture reported with its
#: results (results files often round shares to 3 or 4 decimals).
MIXTURE_ATOL = 1e-3
#: Relative tolerance under which a re-recorded value (loss, tokens, n_params) counts as the same.
VALUE_RTOL = 1e-9
#: Strategy of runs added by :meth:`Ledger.import_runs`.
IMPORTED = "imported"
#: Strategy of runs the ledger did not know, added by ``record_results(unknown="import")``.
EXTERNAL = "external"
#: Statuses of runs that become completed when their results are recorded.
PENDING = ("proposed", "running")


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


def ingest(
    store: LedgerStore,
    table: RunTable,
    *,
    unknown: str,
    on_conflict: str,
    imported: bool,
    max_loss: float = MAX_LOSS,
) -> IngestSummary:
    """Record ``table``'s losses in one transaction (see :meth:`Ledger.record_results`);
    ``imported``: runs the ledger does not know are past runs (round 0, strategy
    :data:`IMPORTED`), else results of the current round (strategy :data:`EXTERNAL`)."""
    if unknown not in ("error", "import"):
        raise ValueError(f"unknown must be 'error' or 'import', got {unknown!r}")
    if on_conflict not in ("error", "replace"):
        raise ValueError(f"on_conflict must be 'error' or 'replace', got {on_conflict!r}")
    tidy = table.to_tidy()
    _check_table(store, table, tidy, check_max_loss(max_loss))
    rec = _Recording(store, table, tidy, on_conflict)
    with store.write("ingest") as con:
        rec.settle_steps(con)
        known = {
            row[0]: row
            for row in con.execute("SELECT run, status, mixture, n_params, domain_set FROM runs")
        }
        new_runs = _new_runs(table, known, unknown)
        for run in table.runs:
            if run in known:
                rec.match_run(con, run, known[run])
        rec.add_runs(con, new_runs, imported)
        touched = rec.write_losses(con)
        store.fault("ingest:inserted")
        rec.refuse_conflicts()
        rec.complete(con, [r for r in sorted(touched) if r in known and known[r][1] in PENDING])
    order = {r: i for i, r in enumerate(table.runs)}
    rec.summary.completed.sort(key=order.__getitem__)
    return rec.summary


def _check_table(store: LedgerStore, table: RunTable, tidy: pd.DataFrame, max_loss: float) -> None:
    """The table's domains are the ledger's (every training domain, known validation domains)
    and every loss is one the ledger may store, before anything is written."""
    source = table.source or "results"
    _check_not_older_set(store, table, source)
    check_known_domains(table.train_domains, store.train_domains, "training", source)
    missing = [d for d in store.train_domains if d not in table.train_domains]
    if missing:
        raise errors.DomainNameError(
            f"no proportion column for training domain {missing[0]!r}",
            source=source,
            column=MIX_PREFIX + missing[0],
            hint="results need every mix.<domain> column "
            f"of the ledger: {', '.join(store.train_domains)}",
        )
    check_known_domains(table.eval_domains, store.eval_domains, "validation", source)
    for rec in tidy.to_dict("records"):
        for dom in table.eval_domains:
            check_loss(
                rec[LOSS_PREFIX + dom],
                max_loss=max_loss,
                source=source,
                run=str(rec["run"]),
                column=LOSS_PREFIX + dom,
            )


def _check_not_older_set(store: LedgerStore, table: RunTable, source: str) -> None:
    """A table in an earlier domain set than the ledger's current one: refused, saying so."""
    if set(table.train_domains) == set(store.train_domains):
        return
    for older in store.domain_sets[:-1]:
        if set(table.train_domains) == set(older.train_domains):
            raise errors.DomainNameError(
                f"the results are in domain set {older.name!r} but the ledger's domain set is "
                f"now {store.domain_sets[-1].name!r} ({', '.join(store.train_domains)})",
                source=source,
                hint="results are recorded for runs of the current domain set only; runs of "
                "earlier sets already recorded are used in every fit, remapped",
            )


def _new_runs(table: RunTable, known: dict, unknown: str) -> list[str]:
    """The table's runs the ledger does not know; LedgerError unless ``unknown="import"``."""
    new_runs = [r for r in table.runs if r not in known]
    if new_runs and unknown == "error":
        close = difflib.get_close_matches(new_runs[0], list(known), n=1, cutoff=0.6)
        raise errors.LedgerError(
            f"{len(new_runs)} run(s) not in the ledger, first {new_runs[0]!r}",
            source=table.source or "results",
            hint=(f"did you mean {close[0]!r}? " if close else "")
            + "unknown='import' adds them as external runs",
            param="unknown",
        )
    return new_runs


class _Recording:
    """One results table being written inside the ingest transaction: its records, the
    conflict policy, the conflicts found and the summary of what changed."""

    def __init__(self, store: LedgerStore, table: RunTable, tidy: pd.DataFrame, on_conflict: str):
        self.store, self.table, self.on_conflict = store, table, on_conflict
        self.source = table.source or "results"
        self.tidy = tidy  #: the table's records (RunTable.to_tidy)
        self.has_steps = table.has_steps
        self.mixtures = table.mixtures[list(store.train_domains)]
        self.n_params = (
            self.tidy.drop_duplicates("run").set_index("run")["n_params"]
            if "n_params" in self.tidy.columns
            else None
        )
        self.summary = IngestSummary(source=table.source, runs=table.n_runs)
        self.conflicts: list[str] = []
        self.now = now()

    def conflict(self, what: str, old: float, new: float) -> bool:
        """Record a conflict; True if the new value should be written."""
        if self.on_conflict == "replace":
            self.summary.values_replaced += 1
            return True
        self.conflicts.append(f"{what}: ledger has {old:.10g}, {self.source} has {new:.10g}")
        return False

    def settle_steps(self, con: sqlite3.Connection) -> None:
        """The table's step layout must be the ledger's. Results without a step column for a
        ledger recording steps are taken at each run's planned steps (``propose --steps``)
        when every run has them."""
        with_step, stored = con.execute("SELECT count(step), count(*) FROM results").fetchone()
        if with_step and not self.has_steps:
            planned = dict(con.execute("SELECT run, steps FROM runs"))
            steps = [planned.get(str(r)) for r in self.tidy["run"]]
            if all(v is not None for v in steps):
                self.tidy = self.tidy.assign(step=[float(v) for v in steps if v is not None])
                self.has_steps = True
        if stored and bool(with_step) != self.has_steps:
            raise errors.LedgerError(
                "this ledger records losses "
                + ("per step" if with_step else "without steps")
                + " but the results "
                + ("have" if self.has_steps else "have no")
                + " 'step' column",
                source=self.source,
                hint=(
                    "add a 'step' column (the training step of each result), or propose "
                    "runs with planned steps (a pool with a steps column) so a result "
                    "without one is taken at its planned step"
                    if with_step
                    else "keep one layout for all results of an experiment"
                ),
            )

    def match_run(self, con: sqlite3.Connection, run: str, row: tuple) -> None:
        """A run the ledger knows (``row``: run, status, mixture, n_params): not failed or
        abandoned, of the current domain set, trained on its proposed mixture; its model size
        stored when new."""
        _, status, mix_text, old_np, version = row
        if version != self.store.version:
            raise errors.LedgerError(
                f"run is of domain set {self.store.domain_sets[version - 1].name!r}; the "
                f"ledger's domain set is now {self.store.domain_sets[-1].name!r}",
                source=self.source,
                run=run,
                hint="results are recorded for runs of the current domain set only; give a "
                "run of another mixture a new run id",
            )
        if status in ("failed", "abandoned"):
            raise errors.LedgerError(
                f"run is marked {status}; results cannot be recorded for it",
                source=self.source,
                run=run,
                hint="set it back to proposed first",
            )
        proposed = self.store.mixture(run, mix_text)
        diff = np.abs(np.asarray(proposed) - self.mixtures.loc[run].to_numpy())
        if diff.max() > MIXTURE_ATOL:
            j = int(diff.argmax())
            raise errors.InconsistentMixtureError(
                f"share of {self.store.train_domains[j]!r} is "
                f"{self.mixtures.loc[run].iloc[j]:.6g} but the ledger proposed "
                f"{proposed[j]:.6g}",
                source=self.source,
                run=run,
                column=MIX_PREFIX + self.store.train_domains[j],
                hint="a run trained on another mixture needs another run id",
            )
        new_np = None if self.n_params is None else self.n_params.get(run)
        if new_np is None or math.isnan(new_np):
            return
        if old_np is None or (
            not _same(old_np, new_np) and self.conflict(f"run {run!r} n_params", old_np, new_np)
        ):
            con.execute("UPDATE runs SET n_params = ? WHERE run = ?", (new_np, run))

    def add_runs(self, con: sqlite3.Connection, runs: list[str], imported: bool) -> None:
        """Runs the ledger does not know, added completed and flagged external: in round 0
        (``imported``) or the current round."""
        round_new = (
            0
            if imported
            else int(con.execute("SELECT ifnull(max(round), 0) FROM runs").fetchone()[0])
        )
        for run in runs:
            np_value = None if self.n_params is None else self.n_params.get(run)
            con.execute(
                "INSERT INTO runs (run, round, strategy, status, external, mixture, n_params,"
                " created, updated, domain_set) VALUES (?, ?, ?, 'completed', 1, ?, ?, ?, ?, ?)",
                (
                    run,
                    round_new,
                    IMPORTED if imported else EXTERNAL,
                    mix_json(self.mixtures.loc[run].to_numpy()),
                    _none_if_nan(np_value),
                    self.now,
                    self.now,
                    self.store.version,
                ),
            )
            self.summary.added_runs.append(run)

    def write_losses(self, con: sqlite3.Connection) -> set[str]:
        """Every loss of the table added, left alone (same value) or, on conflict, replaced or
        listed; returns the runs with a record in the table."""
        stored = {
            (run, step, dom): (loss, tok)
            for run, step, dom, loss, tok in con.execute(
                "SELECT run, step, eval_domain, loss, tokens FROM results"
            )
        }
        touched: set[str] = set()
        for rec in self.tidy.to_dict("records"):
            run = rec["run"]
            step = float(rec["step"]) if self.has_steps else None
            tok = _none_if_nan(rec.get("tokens"))
            added_here = False
            for dom in self.table.eval_domains:
                loss = float(rec[LOSS_PREFIX + dom])
                if not math.isnan(loss):
                    key = (run, step, dom)
                    added_here |= self._write_loss(con, key, loss, tok, stored.get(key))
            if added_here:
                self.summary.checkpoints_added += 1
            touched.add(run)
        return touched

    def _write_loss(
        self,
        con: sqlite3.Connection,
        key: tuple[str, float | None, str],
        loss: float,
        tok: float | None,
        old: tuple[float, float | None] | None,
    ) -> bool:
        """One loss (``key``: run, step, validation domain) with its tokens against the stored
        ``old`` (loss, tokens); True when it was new."""
        run, step, dom = key
        if old is None:
            con.execute(
                "INSERT INTO results (run, step, eval_domain, loss, tokens, source, "
                "recorded) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (run, step, dom, loss, tok, self.table.source, self.now),
            )
            self.summary.losses_added += 1
            return True
        where = f"run {run!r}" + (f" step {step:g}" if step is not None else "")
        old_loss, old_tok = old
        write = False
        if not _same(old_loss, loss):
            write = self.conflict(f"{where} {LOSS_PREFIX}{dom}", old_loss, loss)
        if tok is not None and old_tok is not None and not _same(old_tok, tok):
            write = self.conflict(f"{where} tokens", old_tok, tok) or write
        if write or (tok is not None and old_tok is None):
            con.execute(
                "UPDATE results SET loss = ?, tokens = ?, source = ?, recorded = ? "
                "WHERE run = ? AND ifnull(step, -1) = ifnull(?, -1) AND eval_domain = ?",
                (loss, tok, self.table.source, self.now, run, step, dom),
            )
        if not write:
            self.summary.losses_unchanged += 1
        return False

    def refuse_conflicts(self) -> None:
        """LedgerError (the transaction rolls back) when values conflicted and were kept."""
        if self.conflicts:
            more = f" (and {len(self.conflicts) - 1} more)" if len(self.conflicts) > 1 else ""
            raise errors.LedgerError(
                f"conflicting values, nothing recorded: {self.conflicts[0]}{more}",
                source=self.source,
                hint="fix the file, or pass on_conflict='replace' to overwrite",
                param="on_conflict",
            )

    def complete(self, con: sqlite3.Connection, runs: list[str]) -> None:
        """Mark these proposed or running runs completed."""
        for run in runs:
            con.execute(
                "UPDATE runs SET status = 'completed', updated = ? WHERE run = ?", (self.now, run)
            )
            self.summary.completed.append(run)


def _same(a: float, b: float) -> bool:
    return math.isclose(float(a), float(b), rel_tol=VALUE_RTOL, abs_tol=0.0)


def _none_if_nan(v):
    if v is None:
        return None
    v = float(v)
    return None if math.isnan(v) else v


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"
