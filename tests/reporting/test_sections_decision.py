"""The decision's sections of the report (bayesmix.reporting.sections_decision): the loop's
progress from a ledger, on the posterior of test_sections_law.py (given draws, no sampler)."""

from __future__ import annotations

from conftest import SIM_DOMAINS, simulate_runs
from test_sections_law import view  # noqa: F401  (the fixture)

from bayesmix.reporting.figures import esc
from bayesmix.reporting.sections_decision import section_ledger


def test_ledger_section_counts_the_rounds(view, tmp_path):  # noqa: F811
    from bayesmix.data.constraints import Constraints
    from bayesmix.loop.experiment import Experiment

    runs, _ = simulate_runs(n_runs=12)
    Experiment.create(tmp_path / "exp.db", runs=runs, constraints=Constraints.build(SIM_DOMAINS))
    key, head, content = section_ledger(view, tmp_path / "exp.db")
    assert (key, head) == ("ledger", "Active-learning progress")
    assert f"Ledger {esc('exp.db')}: 12 runs in 1 rounds" in content
    assert 'data-figure="ledger-progress"' in content and "<table>" in content
