"""Notebook display (_repr_html_) and Experiment.runs() with losses."""

from __future__ import annotations

import numpy as np
import pytest

import bayesmix as bm
from bayesmix.display import MAX_ROWS


def test_run_table_card_lists_facts_and_the_first_rows():
    runs, _ = bm.simulate(["web", "code<b>"], n_runs=MAX_ROWS + 5, random_seed=0)
    text = runs._repr_html_()
    assert text.startswith("<div><b>RunTable</b>")
    assert f"{MAX_ROWS + 5} / {MAX_ROWS + 5}" in text and "5 more rows" in text
    assert "code&lt;b&gt;" in text and "code<b>" not in text  # names are escaped


@pytest.mark.slow
def test_posterior_and_decision_cards(simulated_fit):
    post = simulated_fit.posterior
    text = post._repr_html_()
    assert "<b>Posterior</b>" in text and str(post.n_samples) in text
    # the suite's small fit fails its gate: the card says so
    assert ("FAILED" in text) == (not post.diagnostics.ok)
    rep = bm.decide(post, per_draw=False, random_seed=0)
    html = rep._repr_html_()
    assert "Decision report" in html and "<table" in html and "!!!!" not in html


def test_experiment_card_and_runs_with_losses(tmp_path):
    runs, _ = bm.simulate(["web", "code"], n_runs=4, random_seed=1)
    exp = bm.Experiment.create(tmp_path / "exp.db", runs=runs)
    frame = exp.runs()
    assert {"loss.web", "loss.code"} <= set(frame.columns)
    expected = runs.losses.loc[frame["run"], "web"].to_numpy()
    np.testing.assert_allclose(frame["loss.web"].to_numpy(), expected)
    assert "loss.web" not in exp.runs(losses=False).columns
    assert "<b>Experiment</b>" in exp._repr_html_() and "4 completed" in exp._repr_html_()
