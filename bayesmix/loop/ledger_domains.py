"""A live experiment's training-domain set changed: the new version recorded, and every run read
in the current set.

:func:`change_domains` (``Ledger.change_domains``, ``Experiment.change_domains``, ``bayesmix
change-domains``) records a new domain-set version (:mod:`bayesmix.loop.ledger_versions`) from a
:class:`~bayesmix.data.domain_maps.DomainMap` of the current one, in one transaction. Runs of the
old version that are proposed but not yet run are handled as asked: ``pending="abandon"`` marks
them abandoned; ``pending="remap"`` rewrites their planned mixtures in the new set (and moves
them to the new version) when the map keeps them and the new constraints hold them, else
abandons them; either way the change's record lists them with their old mixtures. A change while
runs are running is refused (their results would come back in the old set): wait for them, or
mark them failed or abandoned first. Failed and abandoned runs of an old version cannot be set
back to proposed (``ledger_status``): propose again in the new set.

:func:`current_shares` reads any run's stored mixture (in its own version's domains) in the
current set through the stored maps, chained over every change since: the ledger's run table,
runs frame, distance checks and summaries use it, so a fit after a change uses every completed
run (those a map leaves out, ``drop_runs = "exclude"``, excepted) and the loop goes on without
starting over.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from bayesmix import errors
from bayesmix.data.constraints import Constraints
from bayesmix.data.domain_maps import DomainMap, as_domain_map
from bayesmix.data.table import check_domain_names
from bayesmix.loop.ledger_store import LedgerStore, mix_json, now
from bayesmix.loop.ledger_versions import version_name

#: What ``pending=`` may say about proposed runs of the old version.
PENDING_POLICIES = ("abandon", "remap")


@dataclass
class DomainChange:
    """What one :func:`change_domains` did: the new ``version`` and its ``name``, ``old`` and
    ``new`` training domains, runs ``abandoned`` and ``remapped`` (proposed runs of the old
    version), ``constraints`` (the new set's) and ``notes`` (how constraints were carried, runs
    the map leaves out of fits)."""

    version: int
    name: str
    previous: str
    old: tuple[str, ...]
    new: tuple[str, ...]
    constraints: Constraints
    abandoned: list[str] = field(default_factory=list)
    remapped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """A few lines for people: the new version and what happened to runs in flight."""
        lines = [
            f"domain set {self.previous} -> {self.name} (version {self.version}): "
            f"{len(self.old)} -> {len(self.new)} training domains ({', '.join(self.new)})"
        ]
        if self.abandoned:
            lines.append(
                f"abandoned {len(self.abandoned)} proposed run(s) of {self.previous} "
                f"({_ids(self.abandoned)}): propose again in {self.name}"
            )
        if self.remapped:
            lines.append(
                f"remapped {len(self.remapped)} proposed run(s) to {self.name} "
                f"({_ids(self.remapped)}): train them on their new mixtures"
            )
        if not self.abandoned and not self.remapped:
            lines.append(f"no proposed runs of {self.previous} were waiting")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


# ---------------------------------------------------------------------------------- reading
def current_shares(
    store: LedgerStore, rows: Sequence[tuple[str, int, str]]
) -> tuple[np.ndarray, list[str]]:
    """Mixtures of runs (``rows``: run, domain-set version, stored mixture cell) in the current
    training-domain set: (n, M) in :attr:`LedgerStore.train_domains` order, through every map
    since each run's version; NaN rows for runs a map leaves out (a share of a dropped domain,
    ``drop_runs = "exclude"``). Also the maps' notes (one line per step that changed runs)."""
    out = np.full((len(rows), len(store.train_domains)), np.nan)
    notes: list[str] = []
    carried = pd.DataFrame(columns=list(store.domains_of(1)), dtype=float)
    for ds in store.domain_sets:
        if ds.map is not None:  # the runs so far, carried into this version's set
            carried, kept, note = ds.map.convert(carried)
            carried = carried[kept]
            if note:
                notes.append(f"{store.domain_sets[ds.version - 2].name} -> {ds.name}: {note}")
        idx = [i for i, row in enumerate(rows) if int(row[1]) == ds.version]
        mine = pd.DataFrame(
            [store.mixture(rows[i][0], rows[i][2], ds.version) for i in idx],
            index=pd.Index(idx, dtype=int),
            columns=list(ds.train_domains),
            dtype=float,
        )
        carried = mine if carried.empty else pd.concat([carried, mine[carried.columns]])
    if len(carried):
        out[carried.index.to_numpy(int)] = carried[list(store.train_domains)].to_numpy(float)
    return out, notes


# ---------------------------------------------------------------------------------- changing
def change_domains(
    store: LedgerStore,
    domain_map,
    *,
    name: str | None = None,
    constraints: Constraints | None = None,
    pending: str = "abandon",
) -> DomainChange:
    """Record a new domain-set version made by ``domain_map`` from the current one, in one
    transaction (see the module docstring). ``name``: the new version's name (default the
    map's ``to``, else ``v<N>``); ``constraints``: over the new domains (default: each kept or
    renamed domain keeps its bounds, every other new domain 0 to 1); ``pending``: "abandon" or
    "remap" the old version's proposed runs. Errors name the map's field or the argument;
    nothing is written on any error."""
    if pending not in PENDING_POLICIES:
        raise errors.OptionError(
            f"pending={pending!r} must be one of {', '.join(PENDING_POLICIES)}", param="pending"
        )
    domain_map = as_domain_map(domain_map)
    old = store.train_domains
    current = store.domain_sets[-1]
    if domain_map.version_from and domain_map.version_from != current.name:
        raise errors.SpecError(
            f"field 'from' is {domain_map.version_from!r} but the ledger's current domain set "
            f"is {current.name!r}",
            source=domain_map.source,
            hint=f"a map from {current.name!r} ({', '.join(old)})",
        )
    if name is not None and domain_map.version_to and name != domain_map.version_to:
        raise errors.OptionError(
            f"name={name!r} differs from the map's field 'to' ({domain_map.version_to!r})",
            source=domain_map.source,
            param="name",
            hint="give one of them, or the same name in both",
        )
    new = domain_map.new_domains(old)
    _check_new_domains(new, domain_map)
    new_name = _new_name(store, name or domain_map.version_to or version_name(current.version + 1))
    carried, notes = _new_constraints(store, domain_map, new, constraints)
    change = DomainChange(current.version + 1, new_name, current.name, old, new, carried)
    change.notes += notes
    with store.write("change_domains") as con:
        _refuse_running(store, con, current.name)
        record = _handle_pending(store, con, change, domain_map, pending)
        store.fault("change_domains:runs")
        con.execute(
            "INSERT INTO domain_sets (version, name, train_domains, constraints, map, created, "
            "note) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                change.version,
                new_name,
                json.dumps(list(new)),
                carried.to_json(),
                json.dumps(domain_map.to_dict()),
                now(),
                json.dumps(record),
            ),
        )
        con.execute("UPDATE meta SET value = ? WHERE key = 'train_domains'", (json.dumps(new),))
        con.execute("UPDATE meta SET value = ? WHERE key = 'constraints'", (carried.to_json(),))
    return change


def _check_new_domains(new: tuple[str, ...], domain_map: DomainMap) -> None:
    if len(new) < 2:
        raise errors.DomainNameError(
            f"the map leaves {len(new)} training domain(s) ({', '.join(new) or 'none'}): a "
            "mixture needs at least 2",
            source=domain_map.source,
            hint="see docs/domain_changes.md",
        )
    check_domain_names(list(new), "training", domain_map.source)


def _new_name(store: LedgerStore, name: str) -> str:
    name = str(name).strip()
    taken = [s.name for s in store.domain_sets]
    if not name or name in taken:
        raise errors.OptionError(
            f"name={name!r}: domain-set version names must be new and non-empty "
            f"(taken: {', '.join(taken)})",
            source=str(store.path),
            param="name",
        )
    return name


def _new_constraints(
    store: LedgerStore,
    domain_map: DomainMap,
    new: tuple[str, ...],
    given: Constraints | None,
) -> tuple[Constraints, list[str]]:
    """The new set's constraints: ``given`` (checked to be over exactly the new domains), or
    each kept or renamed domain's bounds carried over and 0 to 1 for the others."""
    if given is not None:
        if sorted(given.domains) != sorted(new):
            raise errors.DomainNameError(
                f"constraints are over {list(given.domains)}, not the new training domains "
                f"{list(new)}",
                source=str(store.path),
                param="constraints",
            )
        idx = [given.domains.index(d) for d in new]
        lower, upper = np.asarray(given.lower)[idx], np.asarray(given.upper)[idx]
        return Constraints(new, lower, upper), []
    old = store.constraints
    touched = set(domain_map.drop) | set(domain_map.split)
    touched |= {o for olds in domain_map.merge.values() for o in olds}
    inverse = {v: k for k, v in domain_map.rename.items()}
    low: dict[str, float] = {}
    high: dict[str, float] = {}
    for d in new:
        src = inverse.get(d, d)
        if src in old.domains and src not in touched and d not in domain_map.add:
            j = old.domains.index(src)
            if old.lower[j] > 0:
                low[d] = float(old.lower[j])
            if old.upper[j] < 1:
                high[d] = float(old.upper[j])
    bounded = [d for d in old.domains if old.lower[old.domains.index(d)] > 0]
    bounded += [d for d in old.domains if old.upper[old.domains.index(d)] < 1]
    lost = sorted({d for d in bounded if d in touched})
    notes = []
    if low or high:
        notes.append(f"constraints carried over for {', '.join(sorted({*low, *high}))}")
    if lost:
        notes.append(
            f"bounds of {', '.join(lost)} (merged, split or dropped) are not carried: the new "
            "domains made from them are unconstrained; pass constraints to bound them"
        )
    try:
        carried = Constraints.build(new, min_share=low, max_share=high)
    except errors.InfeasibleError as err:
        raise errors.InfeasibleError(
            f"the carried-over constraints are infeasible in the new set: {err.problem}",
            source=str(store.path),
            hint="pass constraints over the new domains",
            param="constraints",
        ) from None
    return carried, notes


def _refuse_running(store: LedgerStore, con, current: str) -> None:
    running = [r for (r,) in con.execute("SELECT run FROM runs WHERE status = 'running'")]
    if running:
        raise errors.LedgerError(
            f"{len(running)} run(s) are running under domain set {current!r} ({_ids(running)}); "
            "their results would come back in the old set: nothing was changed",
            source=str(store.path),
            hint="wait for their results (bayesmix ingest), or mark them failed or abandoned "
            "(bayesmix status --set RUN=abandoned), then change the domain set",
        )


def _handle_pending(store: LedgerStore, con, change: DomainChange, domain_map, pending) -> dict:
    """Inside the transaction: the old version's proposed runs abandoned or remapped; returns
    the change's record (runs and their old mixtures)."""
    rows = con.execute(
        "SELECT run, mixture FROM runs WHERE status = 'proposed' AND domain_set = ? ORDER BY seq",
        (change.version - 1,),
    ).fetchall()
    record: dict = {"pending": pending, "abandoned": {}, "remapped": {}}
    if not rows:
        return record
    old = pd.DataFrame(
        [store.mixture(r, t, change.version - 1) for r, t in rows],
        index=[r for r, _ in rows],
        columns=list(change.old),
    )
    if pending == "remap":
        shares, keep, _ = domain_map.convert(old)
        new = shares[list(change.new)].to_numpy(float)
        keep &= change.constraints.contains(np.nan_to_num(new, nan=-1.0))
    else:
        new, keep = np.zeros((len(rows), len(change.new))), np.zeros(len(rows), bool)
    stamp = now()
    for i, (run, text) in enumerate(rows):
        if keep[i]:
            con.execute(
                "UPDATE runs SET mixture = ?, domain_set = ?, updated = ? WHERE run = ?",
                (mix_json(new[i]), change.version, stamp, run),
            )
            change.remapped.append(run)
            record["remapped"][run] = json.loads(text)
        else:
            con.execute(
                "UPDATE runs SET status = 'abandoned', updated = ? WHERE run = ?", (stamp, run)
            )
            change.abandoned.append(run)
            record["abandoned"][run] = json.loads(text)
    if pending == "remap" and change.abandoned:
        change.notes.append(
            f"{len(change.abandoned)} proposed run(s) abandoned, not remapped: the map leaves "
            "them out or the new constraints exclude them"
        )
    return record


def _ids(runs: Sequence[str]) -> str:
    return ", ".join(runs[:5]) + (", ..." if len(runs) > 5 else "")
