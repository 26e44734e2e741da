"""The report's downstream-tasks section on a small ``tasks`` posterior."""

from __future__ import annotations

import pytest

from bayesmix.reporting.html_report import build_html, figure_names


@pytest.mark.slow
def test_a_tasks_report_shows_per_task_changes_and_family_tradeoffs(tasks_fit):
    post, _ = tasks_fit
    page = build_html(post)
    assert '<section id="tasks">' in page
    assert {"task_changes", "task_tradeoffs"} <= set(figure_names(page))
    # the families' table names both families of the fixture
    section = page[page.index('<section id="tasks">') :]
    assert "<td>a</td>" in section and "<td>b</td>" in section


@pytest.mark.slow
def test_other_laws_have_no_tasks_section(simulated_fit):
    assert '<section id="tasks">' not in build_html(simulated_fit.posterior)
