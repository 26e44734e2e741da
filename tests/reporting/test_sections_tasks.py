"""The report's downstream-tasks section on a small ``tasks`` posterior."""

from __future__ import annotations

import numpy as np
import pytest

from bayesmix.reporting.html_report import build_html, figure_names
from tests.conftest import family_runs, m4_posterior


def test_a_tasks_report_shows_per_task_changes_and_family_tradeoffs():
    runs, truth = family_runs()
    rng = np.random.default_rng(0)
    shape = (2, 30)  # chains x draws around the truth, no sampler
    post = m4_posterior(
        np.broadcast_to(truth["m"], shape + truth["m"].shape).copy(),
        np.broadcast_to(truth["rho"], shape + truth["rho"].shape).copy(),
        truth["t"] + 0.05 * rng.standard_normal(shape + truth["t"].shape),
        runs,
        sigma=0.01,
        model="tasks",
    )
    page = build_html(post)
    assert '<section id="tasks">' in page
    assert {"task_changes", "task_tradeoffs"} <= set(figure_names(page))
    # the families' table names both families of the fixture
    section = page[page.index('<section id="tasks">') :]
    assert "<td>a</td>" in section and "<td>b</td>" in section


@pytest.mark.slow
def test_other_laws_have_no_tasks_section(simulated_fit):
    assert '<section id="tasks">' not in build_html(simulated_fit.posterior)
