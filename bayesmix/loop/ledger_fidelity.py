"""The ledger's proxy menu and target scale (multi-fidelity loops).

Stored in the ``meta`` table under :data:`FIDELITY_KEY` as one JSON object: ``menu`` (rows of
n_params, steps, tokens, cost) and ``target`` (the target run's ``n_params`` and ``tokens``). A
new key, no new table: ledgers written before it simply have none (``fidelity`` is None), so no
schema upgrade is needed. Proposals then carry each run's planned size and steps in the
``runs`` table's existing columns.

:func:`resolve_fidelity` is the policy of declaring or changing them (``--menu`` and
``--target-scale`` of ``bayesmix init`` and ``propose``, :meth:`Experiment.set_menu
<bayesmix.loop.experiment.Experiment.set_menu>`): what is not given is kept from the ledger,
and text is read with the ledger's tokens per step unless another is given.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from bayesmix import errors
from bayesmix.data.ye_logs import TOKENS_PER_STEP, size_label
from bayesmix.loop.fidelity import (
    SCALE_INPUTS,
    Menu,
    check_tokens_per_step,
    menu_text,
    parse_menu,
    parse_scale,
)
from bayesmix.loop.ledger_rounds import json_record
from bayesmix.loop.ledger_store import LedgerStore

FIDELITY_KEY = "fidelity"


@dataclass(frozen=True)
class Fidelity:
    """A ledger's proxy menu and the target run's scale (``n_params``, ``tokens``)."""

    menu: Menu
    target: dict[str, float]

    @property
    def tokens_per_step(self) -> float | None:
        """The menu's tokens per step when every entry has the same, else None."""
        ratio = self.menu.tokens / self.menu.steps
        return float(ratio[0]) if np.allclose(ratio, ratio[0], rtol=1e-9) else None

    def record(self) -> dict:
        """JSON-friendly: ``menu`` (rows of n_params, steps, tokens, cost), ``text`` (the
        menu as ``--menu`` text, costs relative to the cheapest entry), ``target``,
        ``tokens_per_step`` (None when the entries differ)."""
        return {
            "menu": self.menu.frame().to_dict(orient="records"),
            "text": menu_text(self.menu),
            "target": dict(self.target),
            "tokens_per_step": self.tokens_per_step,
        }

    def describe(self) -> str:
        """One line: the menu's entries with relative costs and the target scale."""
        return describe_fidelity(self.record())


def describe_fidelity(record: Mapping) -> str:
    """One line from :meth:`Fidelity.record` (as ``Experiment.status()["fidelity"]`` holds
    it): the menu's entries with relative costs, tokens per step, the target scale."""
    tps = record.get("tokens_per_step")
    per = f"; {tps:g} tokens per step" if tps is not None else ""
    t = record["target"]
    return (
        f"proxy menu (SIZE@STEPS=relative cost{per}): {record['text']}; target "
        f"{size_label(t['n_params'])} parameters, {t['tokens']:.4g} tokens"
    )


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


def resolve_fidelity(
    current: Fidelity | None,
    menu: Menu | str | None = None,
    target_scale: Mapping | str | None = None,
    tokens_per_step: float | None = None,
) -> Fidelity:
    """The menu and target scale to record: ``menu`` (a Menu or ``--menu`` text,
    :func:`bayesmix.loop.fidelity.parse_menu`) and ``target_scale`` (``{"n_params": N,
    "tokens": D}`` or ``SIZE@STEPS`` text), each kept from ``current`` (the ledger's) when not
    given. Text is read at ``tokens_per_step``, else the current menu's, else
    :data:`~bayesmix.data.ye_logs.TOKENS_PER_STEP`. OptionError naming the parameter when
    neither is given, or one is missing with nothing recorded."""
    if tokens_per_step is not None:
        tps = check_tokens_per_step(tokens_per_step)
    elif current is not None and current.tokens_per_step is not None:
        tps = current.tokens_per_step
    else:
        tps = float(TOKENS_PER_STEP)
    if menu is None and target_scale is None:
        given = "" if tokens_per_step is None else f" to read at tokens_per_step={tps:g}"
        raise errors.OptionError(
            f"no menu and no target scale given{given}",
            hint="give the proxy menu, the target run's scale or both",
            param="tokens_per_step" if tokens_per_step is not None else None,
        )
    if isinstance(menu, str):
        menu = parse_menu(menu, tokens_per_step=tps)
    if isinstance(target_scale, str):
        target_scale = parse_scale(target_scale, tokens_per_step=tps)
    if menu is None:
        if current is None:
            raise errors.OptionError(
                "the ledger has no proxy menu: give menu=SIZE@STEPS,... with the target scale",
                param="menu",
            )
        menu = current.menu
    if target_scale is None:
        if current is None:
            raise errors.OptionError(
                "the ledger has no target scale: give target_scale=SIZE@STEPS (the target "
                "run's size and steps) with the menu",
                param="target_scale",
            )
        target_scale = current.target
    if not isinstance(menu, Menu):
        raise errors.OptionError(
            f"menu={menu!r} is not a Menu or menu text",
            hint="e.g. '70M@10000,160M@10000'",
            param="menu",
        )
    return Fidelity(menu, check_target(target_scale))


def check_caps_target(settings: Mapping, target: Mapping) -> None:
    """OptionError naming ``target_scale`` when the ledger's token caps (``--tokens-available``
    at creation: shares capped at tokens x max_epochs / target tokens, stored as share bounds)
    were computed for other target tokens than ``target``'s: the caps would be stale."""
    caps = settings.get("token_caps") or {}
    planned = caps.get("target_tokens")
    tokens = float(target["tokens"])
    if planned is not None and not np.isclose(tokens, float(planned), rtol=1e-9):
        raise errors.OptionError(
            f"target_scale={tokens:.4g} tokens differs from the {float(planned):.4g} target "
            "tokens the ledger's token caps were set for: its share caps would be stale",
            hint="keep the target's tokens, or create a new ledger with --tokens-available "
            "and --target-tokens for the new target",
            param="target_scale",
        )


def set_fidelity(store: LedgerStore, menu: Menu, target: Mapping) -> None:
    """Record (or replace) the menu and the target scale (:func:`check_caps_target` first)."""
    target = check_target(target)
    check_caps_target(store.settings, target)
    record = {"menu": menu.frame().to_dict(orient="records"), "target": target}
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
        n_params, steps, tokens, cost = (
            np.array([r[k] for r in rows], float) for k in Menu.fields()
        )
        menu = Menu(n_params, steps, tokens, cost)
        target = check_target(record["target"])
    except (KeyError, TypeError, ValueError, errors.BayesmixError) as err:
        raise store.damaged(
            "meta", f"key {FIDELITY_KEY!r}", "value", f"not a proxy menu ({err})"
        ) from None
    return Fidelity(menu, target)
