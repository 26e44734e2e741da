"""The ledger's proxy menu and target scale (multi-fidelity loops).

Stored in the ``meta`` table under :data:`FIDELITY_KEY` as one JSON object: ``menu`` (rows of
n_params, steps, tokens, cost) and ``target`` (the target run's ``n_params`` and ``tokens``). A
new key, no new table: ledgers written before it simply have none (``fidelity`` is None), so no
schema upgrade is needed. Proposals then carry each run's planned size and steps in the
``runs`` table's existing columns.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from bayesmix import errors
from bayesmix.loop.fidelity import SCALE_INPUTS, Menu
from bayesmix.loop.ledger_rounds import json_record
from bayesmix.loop.ledger_store import LedgerStore

FIDELITY_KEY = "fidelity"


@dataclass(frozen=True)
class Fidelity:
    """A ledger's proxy menu and the target run's scale (``n_params``, ``tokens``)."""

    menu: Menu
    target: dict[str, float]


def check_target(target: Mapping) -> dict[str, float]:
    """The target scale as floats; OptionError naming the missing or bad field."""
    out = {}
    for key in SCALE_INPUTS:
        value = dict(target or {}).get(key)
        try:
            number = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            number = float("nan")
        if not (np.isfinite(number) and number > 0):
            raise errors.OptionError(
                f"target {key}={value!r} must be a positive number", param=f"target[{key!r}]"
            )
        out[key] = number
    return out


def set_fidelity(store: LedgerStore, menu: Menu, target: Mapping) -> None:
    """Record (or replace) the menu and the target scale."""
    record = {
        "menu": menu.frame().to_dict(orient="records"),
        "target": check_target(target),
    }
    text = json_record(store, record, "proxy menu")
    with store.write("set_fidelity") as con:
        con.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (FIDELITY_KEY, text))


def fidelity(store: LedgerStore) -> Fidelity | None:
    """The recorded menu and target scale, or None (a single-scale ledger)."""
    with store.read() as con:
        row = con.execute("SELECT value FROM meta WHERE key = ?", (FIDELITY_KEY,)).fetchone()
    if row is None:
        return None
    record = store.meta_record(FIDELITY_KEY, row[0])
    try:
        rows = record["menu"]
        menu = Menu(*(np.array([r[k] for r in rows], float) for k in Menu.fields()))
        target = check_target(record["target"])
    except (KeyError, TypeError, ValueError, errors.BayesmixError) as err:
        raise store.damaged(
            "meta", f"key {FIDELITY_KEY!r}", "value", f"not a proxy menu ({err})"
        ) from None
    return Fidelity(menu, target)
