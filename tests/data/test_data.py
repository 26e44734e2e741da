"""RunTable: validation rules it owns, selections and views (loaders are in test_loaders.py)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from bayesmix import errors
from bayesmix.data.table import RunTable, check_known_domains


def frame(**overrides) -> pd.DataFrame:
    """Two runs x two checkpoints, 2 training and 2 validation domains; one loss missing."""
    base = {
        "run": ["a", "a", "b", "b"],
        "n_params": [7e7] * 4,
        "step": [1000.0, 2000.0, 1000.0, 2000.0],
        "tokens": [1e9, 2e9, 1e9, 2e9],
        "mix.web": [0.25, 0.25, 0.5, 0.5],
        "mix.code": [0.75, 0.75, 0.5, 0.5],
        "loss.web": [3.0, 2.8, 2.9, np.nan],
        "loss.code": [1.5, 1.4, 1.7, 1.6],
    }
    base.update(overrides)
    return pd.DataFrame(base)


@pytest.fixture
def table() -> RunTable:
    return RunTable.from_frame(frame(), source="t.csv")


def test_basic_facts(table):
    assert table.runs == ("a", "b") and table.n_runs == 2 and len(table) == 4
    assert table.train_domains == ("web", "code") and table.eval_domains == ("web", "code")
    assert table.has_steps
    assert table.mixtures.loc["b"].tolist() == [0.5, 0.5]
    assert table.losses.loc[("a", 2000.0), "web"] == 2.8
    assert np.isnan(table.losses.loc[("b", 2000.0), "web"])  # missing stays missing
    assert "2 runs, 4 records" in repr(table)


def test_final_at_step_select(table):
    final = table.final()
    assert final.column("step").tolist() == [2000.0, 2000.0]
    assert table.at_step(1000).runs == ("a", "b")
    assert table.select(["b", "a"]).runs == ("b", "a")
    with pytest.raises(errors.FormatError, match="unknown run 'z'"):
        table.select(["z"])
    with pytest.raises(errors.EmptyInputError, match="step 5"):
        table.at_step(5)


def test_to_long_drops_missing(table):
    long = table.to_long()
    assert len(long) == 7  # 8 cells, one missing
    assert set(long.columns) == {"run", "n_params", "step", "tokens", "eval_domain", "loss"}


def test_to_xarray_dims(table):
    ds = table.to_xarray()
    assert ds["proportions"].dims == ("run", "train_domain")
    assert ds["loss"].dims == ("run", "eval_domain", "step")
    assert ds["loss"].sel(run="a", eval_domain="code", step=2000.0).item() == 1.4
    assert ds["n_params"].dims == ("run",)
    assert ds["loss"].attrs["units"] == "nats per token"


def test_concat_and_duplicates(table):
    other = RunTable.from_frame(frame(run=["c", "c", "d", "d"]))
    both = table.concat(other)
    assert both.runs == ("a", "b", "c", "d")
    with pytest.raises(errors.DuplicateRunError):
        table.concat(table)
    with pytest.raises(errors.DomainNameError, match="training domains differ"):
        table.concat(RunTable.from_frame(frame().rename(columns={"mix.web": "mix.books"})))


def test_summary_is_json_ready(table):
    s = table.summary()
    json.dumps(s)
    assert s["runs"] == 2 and s["records"] == 4 and s["missing_losses"] == 1
    assert s["proportion_range"]["web"] == [0.25, 0.5]
    assert s["steps"] == {"count": 2, "min": 1000.0, "max": 2000.0}
    assert s["sizes"] == [7e7]


def test_summary_of_a_step_column_with_every_cell_empty_has_no_steps():
    """A ``step`` header whose cells are all empty (found by the hostile-input fuzzing:
    ``bayesmix validate`` crashed taking the minimum of no steps) gives no steps entry."""
    one = pd.DataFrame(
        {"run": ["r0"], "step": [np.nan], "mix.a": [0.0], "mix.b": [1.0], "loss.x": [1.0]}
    )
    s = RunTable.from_frame(one).summary()
    assert "steps" not in s and s["runs"] == 1


def test_round_trip_through_tidy(table):
    again = RunTable.from_frame(table.to_tidy())
    pd.testing.assert_frame_equal(again.to_tidy(), table.to_tidy())


def test_step_zero_is_a_start_checkpoint_but_negative_is_not():
    start = RunTable.from_frame(frame(step=[0.0, 2000.0, 0.0, 2000.0], tokens=[0.0, 2e9, 0.0, 2e9]))
    assert start.at_step(0).n_runs == 2
    assert start.final().column("step").tolist() == [2000.0, 2000.0]
    with pytest.raises(errors.NonNumericError, match="row 2.*'step'.*non-negative"):
        RunTable.from_frame(frame(step=[-1.0, 2000.0, 1000.0, 2000.0]))
    with pytest.raises(errors.NonNumericError, match="'n_params'.*positive"):
        RunTable.from_frame(frame(n_params=[0.0] * 4))


def test_tolerance_and_renormalize():
    f = frame(**{"mix.web": [0.253, 0.253, 0.5, 0.5]})  # sums to 1.003
    RunTable.from_frame(f)  # within the default tolerance
    with pytest.raises(errors.ProportionSumError, match="1.003"):
        RunTable.from_frame(f, tolerance=0.001)
    notes: list[str] = []
    t = RunTable.from_frame(f, tolerance=0.001, renormalize=True, report=notes)
    assert t.mixtures.sum(axis=1).tolist() == pytest.approx([1.0, 1.0], abs=1e-12)
    with pytest.raises(errors.ProportionSumError, match="too far from 1"):
        RunTable.from_frame(frame(**{"mix.web": [25.0, 25.0, 50.0, 50.0]}), renormalize=True)


def test_model_size_must_not_change_between_checkpoints():
    with pytest.raises(errors.InconsistentMixtureError, match="'n_params'"):
        RunTable.from_frame(frame(n_params=[7e7, 1.6e8, 7e7, 7e7]))


def test_domain_names_rejected():
    with pytest.raises(errors.DomainNameError, match="'/'"):
        RunTable.from_frame(frame().rename(columns={"loss.web": "loss.we/b"}))
    with pytest.raises(errors.DomainNameError, match="surrounding spaces"):
        RunTable.from_frame(frame().rename(columns={"loss.web": "loss.web "}))


def test_empty_and_missing_run_id():
    with pytest.raises(errors.EmptyInputError):
        RunTable.from_frame(frame().iloc[:0])
    # default row numbers are CSV lines (header = line 1): the third record is row 4
    with pytest.raises(errors.MissingValueError, match="row 4.*'run'"):
        RunTable.from_frame(frame(run=["a", "a", None, "b"]))


def test_check_known_domains_suggests():
    check_known_domains(["web"], ["web", "code"], "training")
    with pytest.raises(errors.DomainNameError, match="did you mean 'code'"):
        check_known_domains(["cod"], ["web", "code"], "training", source="x.csv")
