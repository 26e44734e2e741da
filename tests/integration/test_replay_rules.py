"""The rules that turn pool replays into their headline figures (benchmarks/pool_replay.py).

The benchmark's numbers are only as good as these two rules: which pool run is recommended and
when a recommendation counts as "within 0.1 % and staying there".
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from pool_replay import recommend, runs_to_within  # noqa: E402


def test_a_trained_run_is_recommended_at_its_recorded_loss():
    y = np.array([3.0, 2.5, 2.9, 2.7])  # recorded losses of the pool
    mean = np.array([3.1, 2.8, 2.6, 2.75])  # predictions: run 2 looks best, run 1 is underrated
    assert recommend(mean, y, used=[1]) == 1  # trained, recorded 2.5: beats every prediction
    assert recommend(mean, y, used=[0]) == 2  # trained run is worse: the best prediction wins
    assert recommend(mean, y, used=[]) == 2


def test_recommend_ignores_non_finite_predictions():
    y = np.array([3.0, 2.5, 2.9])
    mean = np.array([np.nan, -np.inf, 2.95])  # draws that overflowed
    assert recommend(mean, y, used=[0]) == 2


def test_runs_to_within_needs_the_recommendation_to_stay():
    n = np.array([16, 24, 32, 40, 48])
    assert runs_to_within(n, np.array([0.01, 0.0, 0.01, 0.0, 0.0]), 0.001, 48) == 40
    assert runs_to_within(n, np.zeros(5), 0.001, 48) == 16
    assert runs_to_within(n, np.array([0.0, 0.0, 0.0, 0.0, 0.002]), 0.001, 48) == 49  # never
