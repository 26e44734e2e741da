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
from bayesmix.loop.ledger import Ledger, resolve_fidelity

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


@pytest.mark.parametrize("model", ["scaling", "default"])
def test_the_initial_design_spreads_over_the_menus_sizes_for_a_law_over_scale(tmp_path, model):
    """Before any result, for a law over model size and tokens, the design's runs get planned
    sizes in turn, each size's longest entry, so the first fit sees every size; the ledger
    stores them for bayesmix run. A law of one size (the default m4) could not fit runs of
    several sizes: all its runs are planned at the largest entry, and a note says why."""
    exp = Experiment.create(tmp_path / "exp.db", ["a", "b", "c"], ["a"], model=model)
    menu = Menu.build([1e7, 1e8, 1e9], [100, 200], tokens_per_step=1e6)
    with Ledger.open(exp.path) as led:
        led.set_menu(menu, TARGET)
    frame = exp.propose(6)
    with Ledger.open(exp.path) as led:
        runs = led.runs()
    sizes = [1e7, 1e8, 1e9] * 2 if model == "scaling" else [1e9] * 6
    assert list(runs["n_params"]) == sizes and list(frame["n_params"]) == sizes
    assert set(runs["steps"]) == {200.0}
    one_size = [n for n in frame.attrs["notes"] if "fits one model size" in n]
    assert len(one_size) == (model == "default")


def test_what_is_not_given_is_kept_from_the_ledger(tmp_path):
    """A new menu keeps the recorded target and the recorded menu's tokens per step; a new
    target keeps the menu; with nothing recorded both are needed."""
    exp = Experiment.create(
        tmp_path / "exp.db",
        ["a", "b"],
        menu="2@200,3@400",
        target_scale="5@4000",
        tokens_per_step=256,
    )
    fid = exp.set_menu("2@100=1,4@100=3")
    assert fid.target == {"n_params": 5.0, "tokens": 4000 * 256.0}
    np.testing.assert_array_equal(fid.menu.tokens, [100 * 256, 100 * 256])
    np.testing.assert_array_equal(fid.menu.cost, [1.0, 3.0])
    fid = exp.set_menu(target_scale="6@8000")
    np.testing.assert_array_equal(fid.menu.n_params, [2.0, 4.0])  # the menu kept
    assert fid.target["tokens"] == 8000 * 256.0
    status = exp.status()["fidelity"]
    assert status["text"] == "2@100=1,4@100=3" and status["tokens_per_step"] == 256.0
    with pytest.raises(errors.OptionError, match="no target scale") as info:
        resolve_fidelity(None, "2@200")
    assert info.value.param == "target_scale"
    with pytest.raises(errors.OptionError, match="no proxy menu"):
        resolve_fidelity(None, target_scale="5@100")


def test_bad_menu_text_changes_nothing(tmp_path):
    exp = Experiment.create(tmp_path / "exp.db", ["a", "b"], menu="2@200", target_scale="5@4000")
    before = exp.status()["fidelity"]
    with pytest.raises(errors.OptionError, match="menu='3@x'"):
        exp.set_menu("2@100,3@x")
    with pytest.raises(errors.OptionError, match="menu='3@x'"):
        exp.propose(2, menu="3@x")
    assert exp.status()["fidelity"] == before and exp.runs().empty
    # a bad menu at creation: no ledger file at all
    with pytest.raises(errors.OptionError, match="menu='1@'"):
        Experiment.create(tmp_path / "new.db", ["a", "b"], menu="1@", target_scale="5@4000")
    assert not (tmp_path / "new.db").exists()


def test_creation_with_a_menu_spreads_round_0_over_the_sizes(tmp_path):
    menu = {"menu": "2@100,2@200,3@200,4@400", "target_scale": "5@4000", "tokens_per_step": 256}
    exp = Experiment.create(
        tmp_path / "exp.db", ["a", "b", "c"], initial_design=5, model="scaling", **menu
    )
    runs = exp.runs()
    # each size's longest entry in turn, sizes ascending
    assert list(runs["n_params"]) == [2, 3, 4, 2, 3]
    assert list(runs["steps"]) == [200, 200, 400, 200, 200]
    assert list(runs["tokens"]) == [200 * 256, 200 * 256, 400 * 256, 200 * 256, 200 * 256]
    shown = exp.last_proposals
    # relative to the menu's cheapest entry, 2 x 100 (as status shows the menu)
    np.testing.assert_allclose(shown["cost"], [2, 3, 8, 2, 3])
    assert exp.status()["fidelity"]["target"] == {"n_params": 5.0, "tokens": 4000 * 256.0}
    # the default law (m4) fits one size: its round 0 sits at the largest entry
    exp = Experiment.create(tmp_path / "m4.db", ["a", "b", "c"], initial_design=3, **menu)
    assert list(exp.runs()["n_params"]) == [4] * 3 and list(exp.runs()["steps"]) == [400] * 3


def test_target_info_needs_a_menu_and_a_law_over_scale_before_any_fit(tmp_path):
    exp = Experiment.create(tmp_path / "exp.db", ["a", "b"])
    with pytest.raises(errors.OptionError, match="needs the ledger's proxy menu") as info:
        exp.propose(2, "target-info")
    assert info.value.param == "strategy"
    # the default law (M4) takes no size: refused before any fit, the menu not recorded
    with pytest.raises(errors.OptionError, match="law 'm4' has no input 'n_params'"):
        exp.propose(2, "target-info", menu="2@100", target_scale="5@1000")
    assert exp.status()["fidelity"] is None and exp.runs().empty


def test_a_proposal_at_one_size_of_the_menu(tmp_path):
    """size= plans a proposal at the menu's entries of one size: an initial design at its
    longest entry, costs still relative to the whole menu's cheapest entry; a size not in the
    menu, or no menu, is an OptionError naming size before anything is recorded."""
    menu = {"menu": "2@100,2@200,3@200,4@400", "target_scale": "5@4000", "tokens_per_step": 256}
    exp = Experiment.create(tmp_path / "exp.db", ["a", "b", "c"], model="scaling", **menu)
    frame = exp.propose(3, size="3")
    assert list(frame["n_params"]) == [3] * 3 and list(frame["steps"]) == [200] * 3
    np.testing.assert_allclose(frame["cost"], 3.0)  # 3 x 200 against 2 x 100
    frame = exp.propose(2, size="2@100")
    assert list(zip(frame["n_params"], frame["steps"])) == [(2, 100)] * 2
    for size, match in (("9", "size='9' is not in the ledger's menu"), ("big", "not a model")):
        with pytest.raises(errors.OptionError, match=match) as info:
            exp.propose(2, size=size)
        assert info.value.param == "size"
    assert len(exp.runs()) == 5  # the refused proposals recorded nothing
    bare = Experiment.create(tmp_path / "bare.db", ["a", "b"])
    with pytest.raises(errors.OptionError, match="needs the ledger's proxy menu"):
        bare.propose(2, size="3")
    whole = Menu.build([2, 3], [100, 200])
    entries = whole.restrict("3")
    assert list(entries.n_params) == [3, 3] and list(entries.steps) == [100, 200]
    assert entries.unit == whole.cost.min() < entries.cost.min()  # the whole menu's cheapest


def test_a_target_scale_that_would_stale_the_token_caps_is_refused(tmp_path):
    """Token caps are stored as share bounds computed for one target token count: a later
    target scale with other tokens is an OptionError naming target_scale, at set_menu and at
    propose, and nothing changes; the same tokens (another size) are accepted."""
    caps = {"tokens_available": {"a": 1e9}, "max_epochs": 1.0, "target_tokens": 5.12e9}
    exp = Experiment.create(
        tmp_path / "exp.db",
        ["a", "b", "c"],
        settings={"token_caps": caps},
        menu="2@200,3@200",
        target_scale="5@2e7",
        tokens_per_step=256,
    )
    for call in (
        lambda: exp.set_menu(target_scale="5@4e7"),
        lambda: exp.propose(2, target_scale="5@4e7"),
    ):
        with pytest.raises(
            errors.OptionError, match="differs from the 5.12e\\+09 target tokens"
        ) as info:
            call()
        assert info.value.param == "target_scale"
    assert exp.status()["fidelity"]["target"] == {"n_params": 5.0, "tokens": 5.12e9}
    assert exp.runs().empty
    assert exp.set_menu(target_scale="6@2e7").target == {"n_params": 6.0, "tokens": 5.12e9}
