"""The phases component (bayesmix.laws.phases): exactly the base law on static runs, the phase
weights' formula, the registry, and a small fit that recovers the late emphasis of simulated
two-phase runs (and whose posterior predictive uses each run's phases)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import bayesmix as bm
from bayesmix.laws import get_law
from bayesmix.laws.phases import (
    FRAC_DATA,
    MIX_DATA,
    PhasesLaw,
    effective_mixture,
    phase_weights,
)
from bayesmix.model.simulation_phases import simulate_phases

DOMAINS = ("web", "code", "hq")


def truth(gamma: float = 2.0) -> dict:
    t = np.array([[-1.2, 0.6, 0.6], [0.5, -1.5, 1.0], [0.4, 0.4, -0.8]])
    return {
        "m": np.array([3.0, 2.5, 3.2]),
        "rho": np.array([0.3, 0.35, 0.3]),
        "t": t,
        "late_emphasis": np.array(gamma),
    }


def test_the_wrapped_law_is_registered_by_name_and_pickles_to_itself():
    law = get_law("m4+phases")
    assert isinstance(law, PhasesLaw) and law is get_law("m4+phases")
    assert law.param_names == ("m", "rho", "t", "late_emphasis")
    assert pickle.loads(pickle.dumps(law)) is law
    assert get_law("m4+absent+phases").param_names[-2:] == ("a", "late_emphasis")


def test_a_static_run_is_exactly_the_base_law_for_any_emphasis_in_numpy_and_pytensor():
    import pytensor.tensor as pt

    law, base = get_law("m4+phases"), get_law("m4")
    rng = np.random.default_rng(0)
    r = rng.dirichlet(np.ones(3), 5)
    frac = np.tile([0.7, 0.3], (5, 1))
    inputs = {"r": r, FRAC_DATA: frac, MIX_DATA: np.stack([r, r], axis=1)}
    for gamma in (-3.0, 0.0, 4.0):
        p = truth(gamma)
        want = base.mean({"r": r}, p)
        np.testing.assert_allclose(law.mean(inputs, p), want, rtol=1e-12)
        np.testing.assert_allclose(law.mean({"r": r}, p), want, rtol=1e-12)  # a prediction
        sym = law.mean({k: pt.as_tensor_variable(v) for k, v in inputs.items()}, p, pt).eval()
        np.testing.assert_allclose(sym, want, rtol=1e-10)


def test_phase_weights_follow_the_formula():
    frac = np.array([[0.5, 0.5], [0.8, 0.2]])
    np.testing.assert_allclose(phase_weights(frac, 0.0), frac)  # no emphasis: token shares
    w = phase_weights(frac, np.array([1.0, 2.0]))  # (draw, run, phase)
    np.testing.assert_allclose(w.sum(-1), 1.0)
    # midpoints 0.25 and 0.75: w2 / w1 = exp(gamma * 0.5) for equal phases
    np.testing.assert_allclose(w[:, 0, 1] / w[:, 0, 0], np.exp([0.5, 1.0]))
    # 0.8 / 0.2 phases, midpoints 0.4 and 0.9: w2 / w1 = (0.2 / 0.8) exp(gamma * 0.5)
    np.testing.assert_allclose(w[:, 1, 1] / w[:, 1, 0], 0.25 * np.exp([0.5, 1.0]))
    mixes = np.array([[[1.0, 0.0], [0.0, 1.0]]] * 2)
    np.testing.assert_allclose(effective_mixture(frac, mixes, 0.0), frac)


@pytest.fixture(scope="module")
def fitted():
    runs = simulate_phases("m4+phases", truth(), DOMAINS, DOMAINS, n_runs=30, random_seed=1)
    post = bm.fit(
        runs, "phases", draws=200, tune=300, chains=2, random_seed=1, warn=False, max_time=20
    )  # small MCMC: the gate's ESS bound is not the point here, so no long retries
    return runs, post


@pytest.mark.slow
def test_a_small_fit_recovers_the_late_emphasis(fitted):
    _, post = fitted
    g = post.law_params()["late_emphasis"]
    # truth 2.0, prior Normal(1, 1.5); 30 runs with 0.01-nat noise pin it to a few hundredths
    # (measured sd 0.02): 0.15 is several posterior sds and far from the prior mean.
    assert abs(np.median(g) - 2.0) < 0.15
    assert post.diagnostics.divergences == 0


@pytest.mark.slow
def test_the_posterior_predictive_of_phased_runs_uses_their_phases(fitted):
    runs, post = fitted
    pred = post.tree["posterior_predictive"]["loss"].mean(("chain", "draw")).values
    obs = post.tree["observed_data"]["loss"].values
    # 0.01-nat noise: the fitted mean is within a few hundredths of every run; the law at the
    # whole-run mixture instead (what a static reading gives) is off by about 0.1 on phased runs
    assert np.abs(pred - obs).mean() < 0.02
    static = get_law("m4").mean({"r": runs.mixtures.to_numpy()}, truth())
    assert np.abs(static - obs).mean() > 2 * np.abs(pred - obs).mean()


@pytest.mark.slow
def test_a_phases_posterior_saves_loads_and_decides_static_mixtures_and_schedules(fitted, tmp_path):
    from bayesmix.decisions.schedule import decide_schedule

    _, post = fitted
    path = tmp_path / "post.nc"
    post.save(path)
    back = bm.Posterior.load(path)
    assert back.law is get_law("m4+phases")
    rec = bm.decide(back, per_draw=False, random_seed=0)  # one static mixture: the base law's
    static = decide_schedule(back, [0.8, 0.2])  # no binding constraints: no gain
    np.testing.assert_allclose(rec.mixture.to_numpy(), static.static.to_numpy(), atol=0.02)
    assert abs(static.gain) < 1e-5
