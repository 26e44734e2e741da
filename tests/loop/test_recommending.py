"""The recommendation of an experiment (bayesmix.loop.recommending): the best trained run it is
compared with by default (Experiment.recommend itself runs in test_experiment.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bayesmix.data.table import RunTable
from bayesmix.loop.recommending import best_trained_run


def test_best_trained_run_under_the_weights():
    """The baseline Experiment.recommend compares with: the lowest weighted recorded loss,
    last checkpoint of each run, skipping runs without a loss the weights need."""
    frame = pd.DataFrame(
        {
            "run": ["a", "b", "c", "c"],
            "step": [100, 100, 50, 100],
            "mix.web": [0.5, 0.2, 0.9, 0.9],
            "mix.code": [0.5, 0.8, 0.1, 0.1],
            "loss.web": [3.0, 3.4, 2.0, 2.9],  # c's first checkpoint is not its last
            "loss.code": [2.0, 1.0, 9.0, np.nan],
        }
    )
    table = RunTable.from_frame(frame)
    # equal weights: a 2.5, b 2.2, c missing code -> b
    assert best_trained_run(table)["run"] == "b"
    only_web = best_trained_run(table, target="web")
    assert only_web["run"] == "c" and only_web["loss"] == pytest.approx(2.9)
    assert only_web["mixture"] == {"web": 0.9, "code": 0.1}
    assert best_trained_run(table, weights={"web": 3, "code": 1})["run"] == "a"  # 2.75 < 2.8
    gone = RunTable.from_frame(frame.assign(**{"loss.code": np.nan}))
    assert best_trained_run(gone) is None
