"""Decisions over groups of tasks on known M4 draws (no MCMC): group weights, the worst group
and per-task trade-offs, also in benchmark points."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import bayesmix as bm
from bayesmix import errors
from bayesmix.decisions.accuracy_link import AccuracyLink
from bayesmix.decisions.draws import LawDraws
from bayesmix.decisions.task_groups import (
    TaskGroups,
    accuracy_changes,
    task_changes,
    worst_group,
)
from bayesmix.laws.m4 import from_ck

TASKS = ("mmlu_a", "mmlu_b", "mmlu_c", "code_x", "code_y")
TRAIN = ("web", "code", "junk")


def _draws(n_draws=50, seed=0):
    """MMLU tasks improve with web, code tasks with code (slope 2 per unit share), junk helps
    none; three MMLU tasks against two code tasks."""
    rng = np.random.default_rng(seed)
    t = np.array([[-2.0, 0.0, 0.0]] * 3 + [[0.0, -2.0, 0.0]] * 2)
    params = from_ck(np.full(5, 1.0), np.full(5, 1.0), t)
    draws = {
        "m": params["m"] * (1 + 0.01 * rng.standard_normal((n_draws, 5))),
        "rho": np.broadcast_to(params["rho"], (n_draws, 5)).copy(),
        "t": params["t"] + 0.05 * rng.standard_normal((n_draws, 5, 3)),
    }
    return LawDraws(draws, TRAIN, TASKS, law="m4")


def test_groups_default_to_families_with_equal_task_weights():
    groups = TaskGroups.build(TASKS)
    assert groups.names == ("mmlu", "code")
    np.testing.assert_allclose(groups.matrix[0], [1 / 3] * 3 + [0, 0])
    w = groups.weights()  # equal weight per group: each code task weighs 1/4, mmlu 1/6
    assert w["code_x"] == pytest.approx(0.25) and w["mmlu_a"] == pytest.approx(1 / 6)
    assert TaskGroups.build(TASKS, {"all": "*"}).matrix.shape == (1, 5)


def test_a_group_with_no_task_is_named():
    with pytest.raises(errors.ObjectiveError, match="group 'math' holds no task"):
        TaskGroups.build(TASKS, {"math": ["minerva_*"]})


def test_worst_group_balances_the_two_families():
    dec = worst_group(_draws())
    # symmetric groups (same slopes and levels up to 1% draw noise): against the uniform
    # baseline the worst-group optimum drops junk and splits web and code evenly, where both
    # groups gain alike (the draws' noise moves the split by a few hundredths at most)
    assert dec.mixture["junk"] == pytest.approx(0.0, abs=1e-6)
    assert dec.mixture["web"] == pytest.approx(0.5, abs=0.05)
    groups = dec.changes[dec.changes["kind"] == "group"].set_index("name")
    assert dec.worst == pytest.approx(groups["change"].max(), rel=1e-3)
    assert dec.worst < 0 and groups["change"].min() == pytest.approx(dec.worst, rel=0.1)
    # from a baseline where only junk can be given up, the optimum is the baseline itself
    # (any move between web and code hurts one group)
    dec = worst_group(_draws(), baseline={"web": 0.5, "code": 0.5, "junk": 0.0})
    assert dec.worst == pytest.approx(0.0, abs=1e-4)


def test_task_changes_show_what_a_mixture_buys_at_whose_cost():
    ch = task_changes(_draws(), {"web": 1.0, "code": 0.0, "junk": 0.0})
    tasks = ch[ch["kind"] == "task"].set_index("name")
    # all-web helps every MMLU task for sure and hurts every code task for sure
    assert (tasks.loc[["mmlu_a", "mmlu_b", "mmlu_c"], "p_better"] == 1.0).all()
    assert (tasks.loc[["code_x", "code_y"], "p_better"] == 0.0).all()
    assert (tasks["lower"] <= tasks["change"]).all() and (tasks["change"] <= tasks["upper"]).all()
    assert list(ch["kind"].unique()) == ["task", "group"]


def test_accuracy_changes_state_a_decision_in_benchmark_points():
    draws = _draws()
    # a nearly linear link (width 2 nats against loss changes of about 0.4): the change in
    # points must be -slope x the change in loss, slope = (ceiling - floor) / (4 width)
    link = AccuracyLink(floor=0.25, ceiling=0.85, midpoint=1.3, width=2.0, rmse=0.01)
    web = {"web": 1.0, "code": 0.0, "junk": 0.0}
    pts = accuracy_changes(draws, web, {"mmlu_a": link, "code_x": link}).set_index("task")
    loss = task_changes(draws, web).set_index("name")
    slope = 0.6 / 8.0
    for task in ("mmlu_a", "code_x"):
        # first-order Taylor of the sigmoid: the cubic term is below 1% of the linear one here
        assert pts.loc[task, "change"] == pytest.approx(-slope * loss.loc[task, "change"], rel=0.02)
    assert pts.loc["mmlu_a", "p_better"] == 1.0 and pts.loc["code_x", "p_better"] == 0.0
    assert list(pts.index) == ["mmlu_a", "code_x"]  # most improved first
    assert (pts["lower"] <= pts["change"]).all() and (pts["change"] <= pts["upper"]).all()
    assert (pts["link_rmse"] == 0.01).all()
    # a decision report: its recommendation against its own baseline
    report = bm.decide(draws, weights={"code_x": 1.0}, allow_subset=True, per_draw=False)
    from_report = accuracy_changes(draws, report, {"code_x": link})
    by_hand = accuracy_changes(
        draws,
        report.mixture,
        {"code_x": link},
        baseline=report.recommendation.set_index("train_domain")["baseline"],
    )
    pd.testing.assert_frame_equal(from_report, by_hand)
    assert from_report.loc[0, "change"] > 0  # the mixture chosen for code_x gains points there


def test_accuracy_changes_refuse_unknown_tasks_and_a_second_baseline():
    link = AccuracyLink(0.25, 0.85, 1.3, 0.2)
    with pytest.raises(errors.OptionError, match="tasks the posterior does not have: mmlu_z"):
        accuracy_changes(_draws(), None, {"mmlu_z": link})
    report = bm.decide(_draws(), per_draw=False)
    with pytest.raises(errors.OptionError, match="baseline=None with a decision report"):
        accuracy_changes(_draws(), report, {"mmlu_a": link}, baseline={"web": 1.0})


def test_a_decision_report_carries_its_accuracy_changes_in_text_json_and_csv():
    draws = _draws()
    link = AccuracyLink(floor=0.25, ceiling=0.85, midpoint=1.3, width=2.0, rmse=0.01)
    report = bm.decide(draws, weights={"code_x": 1.0}, allow_subset=True, per_draw=False)
    assert "Accuracy in percentage points" not in report.to_text()  # none without links
    report.accuracy_changes = accuracy_changes(draws, report, {"code_x": link, "mmlu_a": link})
    row = report.accuracy_changes.set_index("task").loc["code_x"]
    text = report.to_text()
    assert "Accuracy in percentage points" in text and "90% equal-tailed" in text
    # the text shows accuracies and changes x 100, with the interval and P(better)
    section = text[text.index("Accuracy in percentage points") :].splitlines()
    line = next(s for s in section if s.strip().startswith("code_x"))
    assert f"{100 * row['accuracy']:.2f}" in line and f"{100 * row['change']:+.2f}" in line
    assert f"[{100 * row['lower']:+.2f}, {100 * row['upper']:+.2f}]" in line
    records = report.to_dict()["accuracy_changes"]
    assert [r["task"] for r in records] == list(report.accuracy_changes["task"])
    assert records[0]["change"] == pytest.approx(report.accuracy_changes["change"].iloc[0])
    frame = report.to_frame()
    acc = frame[frame["section"] == "accuracy"].set_index(["domain", "statistic"])["value"]
    assert acc[("code_x", "change")] == pytest.approx(row["change"])
    assert acc[("mmlu_a", "link_rmse")] == 0.01
