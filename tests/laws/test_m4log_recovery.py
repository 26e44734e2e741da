"""The logshare law (m4log) in its sampling parameterisation (whitened Helmert slopes, level at
the runs' mean loss, centred or non-centred noise by data size; docs/performance.md) recovers a
known law. The truth is an M4 law (conftest's simulator), which is m4log with every log-share
coefficient u = 0, so the fit must find t and m and put u near 0."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from conftest import simulate_runs

from bayesmix.inference.fitting import fit


@pytest.fixture(scope="module")
def logshare_fit():
    runs, truth = simulate_runs(n_runs=60)  # 4 domains, noise sd 0.02
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 2 x 300 draws do not pass the gate's ESS floor
        post = fit(runs, model="logshare", draws=300, tune=300, chains=2, random_seed=1, warn=False)
    return post, truth


def _mean(post, name):
    return post.tree["posterior"][name].mean(("chain", "draw")).values


@pytest.mark.slow
def test_logshare_recovers_the_slopes_level_and_zero_log_share_terms(logshare_fit):
    post, truth = logshare_fit
    # measured (seed 7 truth, seed 1 fit): corr(t) 0.999, |m error| <= 0.011 nats,
    # |u| <= 0.01; the bounds leave 3-5x room for other seeds and machines
    assert np.corrcoef(_mean(post, "t").ravel(), truth["t"].ravel())[0, 1] > 0.95
    assert np.abs(_mean(post, "m") - truth["m"]).max() < 0.04
    assert np.abs(_mean(post, "u")).max() < 0.05
    assert post.diagnostics.divergences == 0
    # its whitened slopes are sampled with a diagonal mass matrix (the law's adaptation)
    assert post.settings["adaptation"] == "diag"


@pytest.mark.slow
def test_logshare_predicts_new_mixtures_of_the_known_law(logshare_fit):
    post, truth = logshare_fit
    rng = np.random.default_rng(2)
    new = np.vstack([np.full(4, 0.25), np.eye(4) * 0.7 + 0.075, rng.dirichlet(np.ones(4), 45)])
    true = truth.true_loss(new)
    draws = post.predict(new).mean.stack(sample=("chain", "draw")).transpose(..., "sample").values
    mean, sd = draws.mean(-1), draws.std(-1)
    # measured: largest |z| 3.6 over the 200 correlated checks, mean abs error 0.007 nats
    # (noise sd 0.02); as in test_fit's M4 check, |z| < 5 and MAE < 0.02
    assert np.abs((mean - true) / sd).max() < 5
    assert np.abs(mean - true).mean() < 0.02


def test_the_curvature_shear_changes_the_sampling_variables_not_the_model():
    """The block samples ``beta + a / rho`` (m4log.shear) instead of the slopes ``beta``: a shear
    with unit Jacobian, so at the same law parameters the model's density must be the same
    whatever the shear ``a``. Checked by moving one point of the model with a = 0 to the model
    with the data's shear (same slopes, rho and everything else) and comparing the log density.
    """
    import pymc as pm
    import pytensor

    from bayesmix.laws import m4log
    from bayesmix.model.model import build_model, prepare_data
    from bayesmix.model.spec import load_spec

    runs, _ = simulate_runs(n_runs=30)
    spec = load_spec("logshare")
    data = prepare_data(runs, spec.law)
    a = data.law_data[m4log.SHEAR]
    assert np.abs(a).max() > 1e-3  # the data's shear is not trivially zero
    model = build_model(spec, runs.train_domains, runs.eval_domains, data)
    rng = np.random.default_rng(3)
    with model:
        point = {
            k: v + 0.1 * rng.normal(size=np.shape(v)) for k, v in model.initial_point().items()
        }
        logp = model.compile_logp()
        w = data.law_data[m4log.WHITEN]
        rho = 1.0 / (1.0 + np.exp(-point["rho_logit"]))  # (K,)
        pm.set_data({m4log.SHEAR: np.zeros_like(a)})
        unsheared = logp(point)
        # the same slopes beta = gamma W' under shear a: gamma_a W' = beta + a / rho
        moved = dict(point)
        moved["slopes_white"] = point["slopes_white"] + np.linalg.solve(w, (a / rho[:, None]).T).T
        pm.set_data({m4log.SHEAR: a})
        sheared = logp(moved)
        # and the model's slopes (a deterministic of the sampled variables) are the same too
        (slopes,) = model.replace_rvs_by_values([model["slopes"]])
        beta = pytensor.function(model.value_vars, slopes, on_unused_input="ignore")
        args = [moved[v.name] for v in model.value_vars]
        same_slopes = beta(*args)
        pm.set_data({m4log.SHEAR: np.zeros_like(a)})
        np.testing.assert_allclose(same_slopes, beta(*[point[v.name] for v in model.value_vars]))
    # float64 rounding of sums over a few hundred terms
    assert abs(sheared - unsheared) < 1e-8 * max(1.0, abs(unsheared))


def test_the_whitened_slopes_have_normal_contrasts_and_student_t_log_share_slopes():
    """``slopes_white`` gamma's log density is that of beta = gamma W' (beta's contrasts
    Normal(mu, b_sigma), its log-share slopes Student-t(V_NU, mu, v_sigma)) plus log |det W|,
    checked against scipy on random values, and prior draws have the Student-t's heavy tails
    in the log-share slopes only."""
    from scipy import stats

    from bayesmix.laws import m4log

    rng = np.random.default_rng(5)
    n_train = 4
    p = 2 * n_train - 1
    heavy = np.r_[np.zeros(n_train - 1), np.ones(n_train)]
    w = np.linalg.cholesky(np.cov(rng.normal(size=(p, 3 * p)))).T  # any invertible W
    mu, sd = rng.normal(size=p), np.r_[np.full(n_train - 1, 0.3), np.full(n_train, 0.05)]
    gamma = rng.normal(size=(3, p))
    got = m4log._white_logp(gamma, mu, sd, w, heavy).eval()
    beta = gamma @ w.T
    expected = (
        stats.norm.logpdf(beta[:, : n_train - 1], mu[: n_train - 1], sd[: n_train - 1]).sum(-1)
        + stats.t.logpdf(
            beta[:, n_train - 1 :], m4log.V_NU, mu[n_train - 1 :], sd[n_train - 1 :]
        ).sum(-1)
        + np.log(abs(np.linalg.det(w)))
    )
    np.testing.assert_allclose(got, expected, rtol=1e-10)
    draws = m4log._white_random(mu, sd, w, heavy, rng=rng, size=(20000,)) @ w.T
    z = (draws - mu) / sd
    kurt = stats.kurtosis(z, axis=0)
    # excess kurtosis: 0 for the Normal, infinite for t(4) (sample values 3-10 at 20000 draws)
    assert np.abs(kurt[: n_train - 1]).max() < 0.3 and kurt[n_train - 1 :].min() > 1.5


def test_hyper_start_finds_the_curvature_of_noise_free_losses_and_the_model_starts_there():
    """m4log.hyper_start: on losses computed exactly from the block's form (level from the mean
    loss, curvature rho at the features' centre, slopes beta, no shear) the grid search returns
    the true rho_logit (a grid point), and the built model's chains start at the data's starts
    (rho_logit, and b_sigma, v_sigma above the funnel's neck)."""
    from bayesmix.laws import m4log
    from bayesmix.model.model import build_model, prepare_data
    from bayesmix.model.spec import load_spec

    rng = np.random.default_rng(4)
    r = rng.dirichlet(np.ones(4), 80)
    fc = m4log.features(r) - m4log.features(r).mean(axis=0)
    beta = rng.normal(0.0, 0.15, size=(3, fc.shape[1]))
    true_logit = np.array([-1.5, 0.0, 1.2])  # on the grid (step 0.1)
    rho = 1.0 / (1.0 + np.exp(-true_logit))
    e = np.exp(fc @ beta.T / rho)  # (n, K)
    losses = 3.0 * (1.0 - rho + rho * e) / (1.0 - rho + rho * e.mean(axis=0))
    got, scales = m4log.hyper_start(r, losses, beta, np.zeros_like(beta))
    np.testing.assert_allclose(got, true_logit, atol=1e-9)
    assert np.all(scales > 0)

    runs, _ = simulate_runs(n_runs=30)
    spec = load_spec("logshare")
    data = prepare_data(runs, spec.law)
    model = build_model(spec, runs.train_domains, runs.eval_domains, data)
    point = model.initial_point()
    np.testing.assert_allclose(point["rho_logit"], data.law_data[m4log.RHO_START])
    b0, v0 = data.law_data[m4log.SCALE_START]
    np.testing.assert_allclose(point["b_sigma_log__"], np.log(b0))
    np.testing.assert_allclose(point["v_sigma_log__"], np.log(v0))
