"""The collapsed curve model of stages 1 and 2 (bayesmix.scaling.curve_model), no MCMC.

The model evaluates each curve's shape once per (group, domain, distinct x) and sums over
slots; these tests check that its likelihood is the per-observation one it stands for (the
same formula summed observation by observation in NumPy), with and without annealing.
"""

from __future__ import annotations

import numpy as np
import pytest

import bayesmix as bm
from bayesmix.model.simulation import simulate
from bayesmix.scaling.curve_model import (
    build_curve_model,
    collapsed_loglik,
    curve_law,
    model_values,
)
from bayesmix.scaling.curves import curve_values, step_data


def _runs(annealed: bool):
    runs, _ = simulate(
        ["web", "code"], n_runs=4, random_seed=0, sizes=[2e7, 5e7], steps=[300, 600, 1000]
    )
    if not annealed:
        return runs
    tidy = runs.to_tidy().assign(schedule="cosine", total_steps=1000.0)
    return bm.RunTable.from_frame(tidy)


def _per_observation_loglik(d, p: dict) -> float:
    """The collapsed log likelihood summed from per-observation terms (the plain form)."""
    law, v = curve_law(d), curve_values(d)
    g, k = d.curve_group[d.obs_curve], d.curve_eval[d.obs_curve]
    point = {"exponent": p["exponent"][g, k]}
    inputs = {"log_ratio": d.log_ratio}
    yc = v["y_centred"]
    if d.annealed:
        point["C"] = p["C"][g, k]
        inputs["anneal"] = d.anneal
        yc = yc - law.shift(inputs, point)
    xo = law.basis(inputs, point)
    n = len(d.curve_n)
    m_r = p["R_mean"][d.curve_group, d.curve_eval]
    return float(
        np.sum(
            collapsed_loglik(
                np,
                d.curve_n,
                np.bincount(d.obs_curve, xo, n),
                np.bincount(d.obs_curve, xo**2, n),
                np.bincount(d.obs_curve, yc, n),
                np.bincount(d.obs_curve, xo * yc, n),
                np.bincount(d.obs_curve, yc**2, n),
                p["sigma"][d.curve_eval],
                v["level_mean"],
                v["level_sd"],
                m_r,
                p["R_cv"][d.curve_eval] * m_r,
            )
        )
    )


@pytest.mark.parametrize("annealed", [False, True])
def test_slot_sums_give_the_per_observation_likelihood(annealed):
    d = step_data(_runs(annealed))
    assert d.annealed == annealed
    # the checkpoints of one size share their steps: far fewer slots than observations
    assert model_values(d)["slot_x"].size < len(d.y) / 4
    model = build_curve_model(d)
    names = ["exponent", "R_mean", "R_cv", "sigma"] + (["C"] if annealed else [])
    outs = model.replace_rvs_by_values([model["loss"], *(model[n] for n in names)])
    fn = model.compile_fn(outs, inputs=model.value_vars, on_unused_input="ignore")
    rng = np.random.default_rng(1)
    for _ in range(3):  # away from the initial point, where every curve looks alike
        point = {k: v + rng.normal(0.0, 0.2, np.shape(v)) for k, v in model.initial_point().items()}
        loss, *values = fn(point)
        expected = _per_observation_loglik(d, dict(zip(names, values)))
        # the same sums added in another order: agreement to rounding
        assert np.isclose(float(loss), expected, rtol=1e-10, atol=1e-8)


def test_noise_floor_bounds_the_noise_and_zero_changes_nothing():
    """A noise floor f (stage 2: the noise stage 1 put into its imputations) makes the noise
    sqrt(f^2 + exp(log_sigma)^2) at every point of the sampler's space; f = 0 (stage 1) is the
    plain exp(log_sigma), with the same log density."""
    import dataclasses

    d = step_data(_runs(False))
    floor = np.array([0.03, 0.05])
    plain, floored = (
        build_curve_model(d),
        build_curve_model(dataclasses.replace(d, noise_floor=floor)),
    )
    rng = np.random.default_rng(2)
    point = {k: v + rng.normal(0.0, 0.5, np.shape(v)) for k, v in plain.initial_point().items()}
    own = np.exp(point["log_sigma"])

    def sigma(model):
        (out,) = model.replace_rvs_by_values([model["sigma"]])
        return model.compile_fn(out, inputs=model.value_vars, on_unused_input="ignore")(point)

    sigma_plain, sigma_floor = sigma(plain), sigma(floored)
    np.testing.assert_allclose(sigma_plain, own, rtol=1e-12)
    np.testing.assert_allclose(sigma_floor, np.sqrt(floor**2 + own**2), rtol=1e-12)
    assert np.all(sigma_floor >= floor)
    # the same density at f = 0 as a model built without any floor value
    zero = build_curve_model(dataclasses.replace(d, noise_floor=np.zeros(2)))
    assert np.isclose(zero.compile_logp()(point), plain.compile_logp()(point), rtol=1e-12)
    assert not np.isclose(floored.compile_logp()(point), plain.compile_logp()(point))


def test_step_law_recovers_the_simulated_exponent(monkeypatch):
    """Stage 1 in the slot form on simulated learning curves whose loss is a power law in the
    tokens with exponent beta = 0.35 (bayesmix.model.simulation's scale law): every (size,
    domain) exponent's posterior median is within 0.01 of it (its 90% intervals are about 0.01
    wide at this noise; seed 4 gives medians within 0.005), with no divergences. The stage is
    fitted along fit's path: fit's compile cache and its gate driver, at the stage's
    settings."""
    from bayesmix.inference import fitting
    from bayesmix.model.simulation import SCALE_DEFAULTS
    from bayesmix.scaling.stages import TARGET_ACCEPT, fit_step_law

    starts = []

    def recorded(sample_once, start, **kw):
        starts.append(start)
        return real(sample_once, start, **kw)

    real = fitting.sample_to_gate
    monkeypatch.setattr(fitting, "sample_to_gate", recorded)
    compiled_before = fitting.compiled_count()

    runs, _ = simulate(
        ["web", "code", "books"],
        n_runs=6,
        random_seed=2,
        sizes=[2e7, 5e7],
        steps=[500, 1000, 2000, 4000, 8000, 16000],
        noise_sd=0.005,
    )
    fit = fit_step_law(runs, draws=300, tune=300, chains=2, random_seed=4, max_time=0, warn=False)
    exponent = fit.flat("exponent")  # (sample, group, domain)
    median = np.median(exponent, axis=0)
    assert np.all(np.abs(median - SCALE_DEFAULTS["beta"]) < 0.01), median
    # no divergences: the collapsed model has no funnel to fall into (R-hat and ESS at 300
    # draws are left to the benchmarks)
    assert fit.diagnostics.divergences == 0
    assert [(a.draws, a.tune, a.chains, a.target_accept) for a in starts] == [
        (300, 300, 2, TARGET_ACCEPT)
    ]
    assert fitting.compiled_count() == compiled_before + 1
    assert fit.settings["sampler"] == "nutpie" and len(fit.settings["attempts"]) == 1
    assert fit.compile_s > 0 and fit.sample_s > 0
