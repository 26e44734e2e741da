"""The ledger's proxy menu and target scale (bayesmix.loop.ledger_fidelity) and proposals
with planned sizes from it (no MCMC: the initial design)."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from bayesmix import errors
from bayesmix.loop.experiment import Experiment
from bayesmix.loop.fidelity import Menu
from bayesmix.loop.ledger import Ledger

SCHEMA1 = Path(__file__).resolve().parent / "ledger_schema1.db"
TARGET = {"n_params": 2e9, "tokens": 4e10}


def test_menu_round_trip_and_replace(tmp_path):
    led = Ledger.create(tmp_path / "exp.db", ["a", "b"], ["a"])
    assert led.fidelity() is None
    menu = Menu.build([1e7, 1e8], [100, 200], cost=[1, 2, 10, 20])
    led.set_menu(menu, TARGET)
    led.close()
    with Ledger.open(tmp_path / "exp.db") as again:
        fid = again.fidelity()
        np.testing.assert_array_equal(fid.menu.cost, [1, 2, 10, 20])
        np.testing.assert_array_equal(fid.menu.n_params, menu.n_params)
        assert fid.target == TARGET
        again.set_menu(Menu.build([5e7], [300]), {"n_params": 1e9, "tokens": 2e10})
        assert len(again.fidelity().menu) == 1


def test_bad_target_and_damaged_menu_are_one_line_errors(tmp_path):
    path = tmp_path / "exp.db"
    led = Ledger.create(path, ["a", "b"], ["a"])
    with pytest.raises(errors.OptionError, match="target tokens=None"):
        led.set_menu(Menu.build([1e7], [100]), {"n_params": 1e9})
    led.set_menu(Menu.build([1e7], [100]), TARGET)
    led.close()
    con = sqlite3.connect(path)
    con.execute("UPDATE meta SET value = '{\"menu\": 3}' WHERE key = 'fidelity'")
    con.commit()
    con.close()
    with Ledger.open(path) as damaged, pytest.raises(errors.DamagedLedgerError, match="fidelity"):
        damaged.fidelity()


def test_a_schema1_ledger_has_no_menu_and_takes_one(tmp_path):
    path = tmp_path / "old.db"
    shutil.copy(SCHEMA1, path)
    with Ledger.open(path) as led:
        assert led.fidelity() is None
        led.set_menu(Menu.build([1e7], [100]), TARGET)
        assert led.fidelity().target == TARGET


def test_the_initial_design_spreads_over_the_menus_sizes(tmp_path):
    """Before any result the design's runs get planned sizes in turn, each size's longest
    entry, so the first fit sees every size; the ledger stores them for bayesmix run."""
    exp = Experiment.create(tmp_path / "exp.db", ["a", "b", "c"], ["a"])
    menu = Menu.build([1e7, 1e8, 1e9], [100, 200], tokens_per_step=1e6)
    with Ledger.open(exp.path) as led:
        led.set_menu(menu, TARGET)
    frame = exp.propose(6)
    with Ledger.open(exp.path) as led:
        runs = led.runs()
    assert list(runs["n_params"]) == [1e7, 1e8, 1e9] * 2
    assert set(runs["steps"]) == {200.0}
    assert list(frame["n_params"]) == [1e7, 1e8, 1e9] * 2
