"""The geometry of the pooled blocks (no MCMC): partially centred slopes keep their density,
their centring weight follows what the data pin, and a spread over 3 validation domains is
fixed at its prior's mean instead of learned."""

from __future__ import annotations

import numpy as np
import pymc as pm
import pytest
from scipy import stats

from bayesmix.laws import m4
from bayesmix.model.model import build_model, prepare_data
from bayesmix.model.simulation import simulate
from bayesmix.model.spec import load_spec


def test_partially_centred_slopes_have_the_same_density():
    """raw ~ Normal(w loc, s^w), b = loc + s^(1-w) (raw - w loc): log p(raw) minus the log
    Jacobian log s^(1-w) equals the log Normal(loc, s) density of b, for every w."""
    rng = np.random.default_rng(0)
    loc, scale = rng.normal(size=(3, 4)), 0.37
    weight = rng.uniform(size=(3, 4))
    weight[0] = [0.0, 1.0, 0.0, 1.0]  # the two pure forms too
    ctx = type("Ctx", (), {})()
    with pm.Model(coords={"eval_domain": range(3), "train_domain": range(4)}) as model:
        b = m4.pooled_matrix(ctx, "b_raw", loc, scale, centered=True, weight=weight)
    raw = rng.normal(size=(3, 4))
    logp = model.compile_logp(sum=False)({"b_raw": raw})[0]
    b_value = b.eval({model["b_raw"]: raw})
    jacobian = (1.0 - weight) * np.log(scale)
    np.testing.assert_allclose(logp - jacobian, stats.norm.logpdf(b_value, loc, scale), atol=1e-9)


def test_slope_centering_follows_what_the_data_pin():
    """Weights near 1 where many runs pin the slopes with little noise, lower with much noise,
    and 0 when the runs cannot separate the slopes (fewer than training domains + 2)."""
    rng = np.random.default_rng(1)
    r = rng.dirichlet(np.ones(4), size=60)
    slopes = np.array([[0.3, -0.2, 0.1, -0.2], [-0.1, 0.2, 0.1, -0.2]])
    clean = 3.0 * (1.0 + r @ slopes.T)  # (60, 2) losses, relative slopes as above
    pinned = m4.slope_centering(r, clean + rng.normal(0, 0.005, clean.shape), clean.mean(0))
    noisy = m4.slope_centering(r, clean + rng.normal(0, 0.5, clean.shape), clean.mean(0))
    # se of a slope: 0.005 / 3 / sd(r_j) / sqrt(60) ~ 1e-3 against a spread of 0.2: w > 0.99;
    # at noise 0.5 the se (~0.1) is of the order of the spread
    assert pinned.min() > 0.99
    assert noisy.mean() < 0.9
    assert (m4.slope_centering(r[:5], clean[:5], clean.mean(0)) == 0).all()
    losses = clean.copy()
    losses[:57, 1] = np.nan  # 3 observed losses in domain 1: its slopes are not resolved
    w = m4.slope_centering(r, losses, clean.mean(0))
    assert w[0].min() > 0.99 and (w[1] == 0).all()


@pytest.mark.parametrize("n_eval, learned", [(3, False), (4, True)])
def test_a_spread_over_few_domains_is_fixed_at_its_prior_mean(n_eval, learned):
    """With 3 validation domains the curvature's and the noise scales' spreads are numbers
    (their priors' means), not model variables; with 4 they are sampled."""
    names = ["web", "code", "books", "wiki"][:n_eval]
    runs, _ = simulate(names, n_runs=12, random_seed=0)
    spec = load_spec("default")
    model = build_model(spec, runs.train_domains, runs.eval_domains, prepare_data(runs, "m4"))
    for name in ("rho_logit_sigma", "log_sigma_sigma"):
        assert (name in model.named_vars) == learned
    assert "slope_centering" in model.named_vars
    assert spec.priors["rho_logit_sigma"].mean() == pytest.approx(0.5)  # Gamma(3, 6)


def _skewed_runs(seed: int, n_runs: int = 40):
    """Runs whose mean shares are far from the uniform mixture (as 5Mix's: one domain at
    ~0.5, one at ~0.07), from a known M4 law over 4 training and 4 validation domains."""
    rng = np.random.default_rng(seed)
    shares = rng.dirichlet(2.0 * np.array([4.0, 1.0, 1.0, 0.5]), size=n_runs)
    return simulate(
        ["web", "code", "books", "wiki"], n_runs=n_runs, design=shares, random_seed=seed
    )


def test_m4_is_sampled_at_the_runs_mean_shares():
    """The sampled level ``m_mean`` and ``rho_logit`` are the law's loss and logit reducible
    fraction at the runs' mean shares r_bar, and ``m``, ``rho``, ``t`` are the same law from the
    uniform mixture: checked on prior draws of a model whose r_bar is far from uniform."""
    runs, _ = _skewed_runs(0)
    model = build_model(
        load_spec("default"), runs.train_domains, runs.eval_domains, prepare_data(runs, "m4")
    )
    names = ["m_mean", "rho_logit", "m", "rho", "t", "c", "k"]
    draws = dict(zip(names, pm.draw([model[n] for n in names], draws=20, random_seed=1)))
    center = runs.mixtures.to_numpy().mean(axis=0)
    assert np.abs(center - 0.25).max() > 0.2  # the test needs an off-centre design
    params = {n: draws[n] for n in ("m", "rho", "t")}
    at_center = m4.mean_loss(center[None, :], params)[:, 0, :]  # (draws, K)
    np.testing.assert_allclose(at_center, draws["m_mean"], rtol=1e-9)
    reducible = draws["k"] * np.exp(np.einsum("skj,j->sk", draws["t"], center))
    np.testing.assert_allclose(reducible / at_center, 1 / (1 + np.exp(-draws["rho_logit"])))
    np.testing.assert_allclose(draws["c"] + draws["k"], draws["m"])
    np.testing.assert_allclose(draws["t"].sum(-1), 0.0, atol=1e-9)  # rows still sum to zero


@pytest.mark.slow
def test_m4_recovers_a_law_fitted_far_from_the_uniform_mixture():
    """Fitted on runs whose shares average far from uniform, the default M4 finds the true
    slopes and the level at the uniform mixture (an extrapolation for these runs)."""
    from bayesmix.inference.fitting import fit

    runs, truth = _skewed_runs(3, n_runs=60)
    post = fit(runs, "default", draws=300, tune=300, chains=2, random_seed=1, warn=False)
    mean = {n: post.tree["posterior"][n].mean(("chain", "draw")).values for n in ("t", "m")}
    # measured (truth seed 3, mean shares (0.61, 0.16, 0.15, 0.08), fit seed 1): corr(t)
    # 0.998, |m error| <= 0.020 nats at the uniform mixture; bounds with 5x room for other
    # machines' draws
    assert np.corrcoef(mean["t"].ravel(), truth["t"].ravel())[0, 1] > 0.9
    assert np.abs(mean["m"] - truth["m"]).max() < 0.1
    assert post.diagnostics.divergences == 0


def _curvature_model(curvature: str | None):
    """The target specification (M4 + absence) with ``hierarchy.curvature`` set, built on 12
    simulated runs over 4 validation domains (the curvature's spread is learned there)."""
    runs, _ = simulate(["web", "code", "books", "wiki"], n_runs=12, random_seed=0)
    spec = load_spec("target")
    if curvature is not None:
        spec.hierarchy["curvature"] = curvature
    return build_model(spec, runs.train_domains, runs.eval_domains, prepare_data(runs, "m4"))


def test_the_curvature_form_follows_its_own_key():
    """``curvature = "noncentered"`` samples ``rho_z`` while the slopes keep their partial
    centring; ``"centered"`` samples ``rho_logit`` itself."""
    nc = _curvature_model(None)  # the shipped target specification: non-centred
    assert "rho_z" in nc.named_vars and "slope_centering" in nc.named_vars
    assert nc["rho_logit"] not in nc.free_RVs
    c = _curvature_model("centered")
    assert "rho_z" not in c.named_vars and c["rho_logit"] in c.free_RVs


def test_noncentred_curvature_has_the_same_density():
    """rho_logit = mu + s z with z ~ Normal(0, 1): log p(z) - log s is the Normal(mu, s)
    log density of rho_logit, the centred form's (the Jacobian of z -> rho_logit is s)."""
    model = _curvature_model(None)
    point = model.initial_point(random_seed=3)
    rng = np.random.default_rng(3)
    point["rho_z"] = rng.normal(size=point["rho_z"].shape)
    logps = dict(zip([v.name for v in model.free_RVs], model.compile_logp(sum=False)(point)))
    mu = point["rho_logit_mu"]
    sd = np.exp(point["rho_logit_sigma_log__"])
    rho_logit = model["rho_logit"].eval(
        {model["rho_z"]: point["rho_z"], model["rho_logit_mu"]: mu, model["rho_logit_sigma"]: sd}
    )
    expected = stats.norm.logpdf(rho_logit, mu, sd)  # per validation domain
    np.testing.assert_allclose(logps["rho_z"] - np.log(sd), expected, atol=1e-9)
