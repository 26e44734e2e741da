"""Scoring a posterior on held-out runs: bm.evaluate and `bayesmix evaluate`."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import bayesmix as bm
from bayesmix import errors
from bayesmix.cli import main
from bayesmix.posterior.evaluation import OVERALL

N_HELD = 30


def _heldout(sim, seed: int = 3) -> pd.DataFrame:
    """New runs from the fixture's true law: Dirichlet(1) mixtures, the truth's noise sd."""
    rng = np.random.default_rng(seed)
    truth = sim.truth
    mix = rng.dirichlet(np.ones(len(truth["train_domains"])), N_HELD)
    loss = truth.true_loss(mix) + rng.normal(0.0, truth["sigma"], (N_HELD, len(truth["sigma"])))
    frame = pd.DataFrame({"run": [f"h{i}" for i in range(N_HELD)]})
    for j, d in enumerate(truth["train_domains"]):
        frame[f"mix.{d}"] = mix[:, j]
    for k, d in enumerate(truth["eval_domains"]):
        frame[f"loss.{d}"] = loss[:, k]
    return frame


@pytest.mark.slow
def test_evaluate_scores_held_out_runs_of_the_true_law(simulated_fit):
    held = _heldout(simulated_fit)
    weights = {d: 1.0 for d in simulated_fit.posterior.eval_domains}
    ev = bm.evaluate(simulated_fit.posterior, held, weights=weights)
    rec = ev.records
    assert len(rec) == N_HELD * (len(weights) + 1)  # every pair and one overall row per run
    pairs = rec[rec["eval_domain"] != OVERALL]
    # the scores are what the records say
    s = ev.summary()
    assert s["mae"] == pytest.approx((pairs["observed"] - pairs["mean"]).abs().mean())
    assert s["coverage"] == pytest.approx(pairs["inside"].mean())
    # nominal 0.9 over 120 pairs (sd ~0.03 if calibrated): 0.75-0.99 fails a fit that is off,
    # not one that is right; the fixture is a 2 x 300-draw fit of the true law's form
    assert 0.75 <= s["coverage"] <= 0.99
    # errors are about the noise: MAE of pure noise is 0.8 sd; allow twice that for the
    # posterior's own error
    assert s["mae"] < 1.6 * float(np.mean(simulated_fit.truth["sigma"])) + 0.01
    dom = ev.by_domain()
    assert list(dom["eval_domain"])[-1] == OVERALL
    assert set(dom.columns) >= {"n", "mae", "bias", "spearman", "coverage", "width"}
    overall = rec[rec["eval_domain"] == OVERALL]
    observed = held[[f"loss.{d}" for d in simulated_fit.posterior.eval_domains]].mean(axis=1)
    np.testing.assert_allclose(overall["observed"].to_numpy(), observed.to_numpy())
    assert "overall loss: MAE" in ev.to_text()


@pytest.mark.slow
def test_evaluate_refuses_runs_without_the_posteriors_domains(simulated_fit):
    held = _heldout(simulated_fit).drop(columns=[f"mix.{simulated_fit.truth['train_domains'][0]}"])
    with pytest.raises(errors.BayesmixError):
        bm.evaluate(simulated_fit.posterior, held)
    with pytest.raises(TypeError, match="heldout must be a RunTable or a pandas DataFrame"):
        bm.evaluate(simulated_fit.posterior, [1, 2, 3])


@pytest.mark.slow
def test_cli_evaluate_prints_writes_and_plots(simulated_fit, saved_posterior, tmp_path, capsys):
    held = tmp_path / "heldout.csv"
    _heldout(simulated_fit).to_csv(held, index=False)
    out, plot = tmp_path / "scores.json", tmp_path / "scores.png"
    code = main(["evaluate", str(saved_posterior), str(held), "-o", str(out), "--plot", str(plot)])
    text = capsys.readouterr().out
    assert code == 0 and "held-out runs: 30 (120 losses)" in text
    saved = json.loads(out.read_text())
    assert saved["summary"]["n_runs"] == N_HELD and len(saved["records"]) == 120
    assert plot.stat().st_size > 1000
    assert main(["evaluate", str(saved_posterior), str(held), "--json", "--ci-prob", "0.5"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["summary"]["ci_prob"] == 0.5 and "records" not in printed
    # an existing output is never replaced without --force, and nothing is written
    before = out.read_bytes()
    assert main(["evaluate", str(saved_posterior), str(held), "-o", str(out)]) == 2
    assert out.read_bytes() == before
    # the held-out file is never an output
    assert main(["evaluate", str(saved_posterior), str(held), "-o", str(held), "--force"]) == 2
