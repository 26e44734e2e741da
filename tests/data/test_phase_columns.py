"""The run table's phase columns (bayesmix.data.phases): a phased run's arrays, a static run as
one phase, and one-line errors naming the row and column of each kind of bad phase cell."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import bayesmix as bm
from bayesmix import errors


def frame() -> pd.DataFrame:
    """Run a: 80% on (0.6, 0.4) then 20% on (0.2, 0.8), whole run (0.52, 0.48); run b static."""
    return pd.DataFrame(
        {
            "run": ["a", "b"],
            "mix.web": [0.52, 0.7],
            "mix.code": [0.48, 0.3],
            "phase_frac.1": [0.8, None],
            "phase_frac.2": [0.2, None],
            "mix1.web": [0.6, None],
            "mix1.code": [0.4, None],
            "mix2.web": [0.2, None],
            "mix2.code": [0.8, None],
            "loss.web": [3.0, 3.1],
        }
    )


def test_phases_are_read_per_record_and_a_static_run_is_one_phase():
    table = bm.RunTable.from_frame(frame())
    frac, mixes = table.phases()
    np.testing.assert_allclose(frac, [[0.8, 0.2], [1.0, 0.0]])
    np.testing.assert_allclose(mixes[0], [[0.6, 0.4], [0.2, 0.8]])
    np.testing.assert_allclose(mixes[1], [[0.7, 0.3], [0.7, 0.3]])
    # the columns survive selections and the tidy view
    assert "mix2.code" in table.final().to_tidy().columns
    static = frame().drop(columns=[c for c in frame() if c.startswith(("phase", "mix1", "mix2"))])
    assert bm.RunTable.from_frame(static).phases() is None


@pytest.mark.parametrize(
    ("change", "kind", "where"),
    [
        ({"mix2.web": [0.5, None]}, errors.FormatError, "column 'mix2.web'"),  # phase sum 1.3
        ({"phase_frac.2": [0.3, None]}, errors.FormatError, "column 'phase_frac.1'"),  # 1.1
        ({"mix.web": [0.6, 0.7], "mix.code": [0.4, 0.3]}, errors.FormatError, "phases give 0."),
        ({"mix1.web": [None, None]}, errors.MissingValueError, "column 'mix1.web'"),
        ({"mix1.web": [-0.1, None], "mix1.code": [1.1, None]}, errors.FormatError, "mix1.web"),
        ({"phase_frac.2": ["x", None]}, errors.NonNumericError, "column 'phase_frac.2'"),
    ],
)
def test_bad_phase_cells_are_one_line_errors_naming_row_and_column(change, kind, where):
    bad = frame().assign(**change)
    with pytest.raises(kind) as err:
        bm.RunTable.from_frame(bad, source="runs.csv")
    text = str(err.value)
    assert "\n" not in text and "runs.csv" in text and where in text
    assert "row 2" in text  # run a's row in the CSV (header on line 1)


@pytest.mark.parametrize(
    ("drop_or_add", "where"),
    [
        ({"drop": "mix2.code"}, "'mix2.code' is missing"),
        ({"add": ("mix3.web", 0.5)}, "'mix3.web' is beyond the phases 1..2"),
        ({"add": ("mix1.books", 0.0)}, "'mix1.books' names no training domain"),
        ({"add": ("phase_frac.x", 0.0)}, "'phase_frac.x' has no phase number"),
    ],
)
def test_incomplete_or_unknown_phase_columns_are_named(drop_or_add, where):
    bad = frame()
    if "drop" in drop_or_add:
        bad = bad.drop(columns=drop_or_add["drop"])
    else:
        name, value = drop_or_add["add"]
        bad[name] = value
    with pytest.raises(errors.FormatError, match=where):
        bm.RunTable.from_frame(bad)


def test_phases_must_agree_between_checkpoints_of_one_run():
    two = pd.concat([frame().iloc[:1], frame().iloc[:1]], ignore_index=True)
    two["step"] = [100, 200]
    # the same whole-run mixture (0.52, 0.48) from other phases: 0.5 (0.84, 0.16) + 0.5 (0.2, 0.8)
    two.loc[1, "phase_frac.1"], two.loc[1, "phase_frac.2"] = 0.5, 0.5
    two.loc[1, "mix1.web"], two.loc[1, "mix1.code"] = 0.84, 0.16
    with pytest.raises(errors.FormatError, match="phases differ between checkpoints") as err:
        bm.RunTable.from_frame(two)
    assert "row 3" in str(err.value)


def test_a_domain_map_rewrites_each_phase_and_keeps_the_whole_run_consistent():
    three = frame().assign(**{"mix.x": [0.0, 0.0], "mix1.x": [0.0, None], "mix2.x": [0.0, None]})
    # run a: phase 2 moves 0.1 of web to x (whole run: web 0.5, x 0.02)
    three.loc[0, ["mix2.web", "mix2.x", "mix.web", "mix.x"]] = [0.1, 0.1, 0.5, 0.02]
    table = bm.RunTable.from_frame(three)
    merged = table.remap({"rename": {"web": "webtext"}, "merge": {"other": ["code", "x"]}})
    assert merged.train_domains == ("webtext", "other")
    frac, mixes = merged.phases()
    np.testing.assert_allclose(mixes[0], [[0.6, 0.4], [0.1, 0.9]])
    np.testing.assert_allclose(mixes[1], [[0.7, 0.3], [0.7, 0.3]])  # static stays static
    # dropping x and rescaling: each phase rescaled, the whole run = the phase-weighted mixture
    dropped = table.remap({"drop": ["x"], "drop_runs": "renormalize"})
    frac, mixes = dropped.phases()
    np.testing.assert_allclose(mixes[0, 1], [1 / 9, 8 / 9])
    np.testing.assert_allclose(dropped.mixtures.loc["a"].to_numpy(), frac[0] @ mixes[0])
