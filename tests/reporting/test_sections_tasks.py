"""The report's downstream-tasks section on a small ``tasks`` posterior."""

from __future__ import annotations

import pytest

from bayesmix.decisions.accuracy_link import AccuracyLink
from bayesmix.decisions.decision import decide
from bayesmix.decisions.task_groups import accuracy_changes
from bayesmix.reporting.html_report import build_html, figure_names
from tests.conftest import family_posterior


def test_a_tasks_report_shows_per_task_changes_and_family_tradeoffs():
    _, _, post = family_posterior(seed=0)  # draws around the truth, no sampler
    page = build_html(post)
    assert '<section id="tasks">' in page
    assert {"task_changes", "task_tradeoffs"} <= set(figure_names(page))
    # the families' table names both families of the fixture
    section = page[page.index('<section id="tasks">') :]
    assert "<td>a</td>" in section and "<td>b</td>" in section


@pytest.mark.slow
def test_other_laws_have_no_tasks_section(simulated_fit):
    assert '<section id="tasks">' not in build_html(simulated_fit.posterior)


def test_a_decision_in_benchmark_points_is_shown_for_any_law():
    # the plain M4 law: no per-task section of its own
    _, _, post = family_posterior(seed=1, model="default")
    decision = decide(post, per_draw=False)
    assert '<section id="tasks">' not in build_html(post, decision=decision)
    link = AccuracyLink(floor=0.25, ceiling=0.85, midpoint=2.0, width=0.3, rmse=0.004)
    decision.accuracy_changes = accuracy_changes(post, decision, {"b_task1": link})
    page = build_html(post, decision=decision)
    section = page[
        page.index('<section id="tasks">') : page.index(
            "</section>", page.index('<section id="tasks">')
        )
    ]
    assert figure_names(section) == ["accuracy_changes"]
    row = decision.accuracy_changes.iloc[0]
    # the table in percentage points: baseline, recommended, change, interval, P, rmse x 100
    cells = [row["accuracy_baseline"], row["accuracy"], row["change"], row["lower"], row["upper"]]
    expected = "".join(f"<td>{100 * v:.2f}</td>" for v in cells)
    assert f"<td>b_task1</td>{expected}<td>{row['p_better']:.2f}</td><td>0.40</td>" in section
