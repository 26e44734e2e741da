"""Simulator: seeded, right shapes, noise-free losses follow M4, noise of the stated size;
``simulate_law`` does the same for any registered law."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bayesmix import errors
from bayesmix.laws import available_laws, get_law, m4
from bayesmix.model.simulation import simulate, simulate_law
from bayesmix.model.spec import load_spec


def test_same_seed_same_data_other_seed_other_data():
    a, ta = simulate(random_seed=3, sizes=[7e7, 1.6e8], steps=[1000, 3000])
    b, tb = simulate(random_seed=3, sizes=[7e7, 1.6e8], steps=[1000, 3000])
    pd.testing.assert_frame_equal(a.to_tidy(), b.to_tidy())
    for key in ("m", "rho", "t", "sigma"):
        np.testing.assert_array_equal(ta[key], tb[key])
    c, _ = simulate(random_seed=4, sizes=[7e7, 1.6e8], steps=[1000, 3000])
    assert not np.allclose(a.losses.to_numpy(), c.losses.to_numpy())


def test_shapes_and_names():
    table, truth = simulate(4, 6, 10, random_seed=1, sizes=[7e7, 1.6e8, 4.1e8], steps=[1000, 2000])
    assert table.n_runs == 30 and len(table) == 60
    assert table.train_domains == ("d1", "d2", "d3", "d4")
    assert table.eval_domains == ("d1", "d2", "d3", "d4", "e5", "e6")
    assert table.runs[:2] == ("70M_0", "70M_1")
    assert truth["t"].shape == (6, 4) and truth["m"].shape == (6,)
    assert truth["train_domains"] == table.train_domains
    ds = truth.to_dataset()
    assert ds["t"].dims == ("eval_domain", "train_domain")
    names, _ = simulate(["web", "code"], ["code", "math"], 3, random_seed=0)
    assert names.train_domains == ("web", "code") and names.eval_domains == ("code", "math")


def test_law_parameters_are_realistic():
    table, truth = simulate(8, n_runs=50, random_seed=5)
    np.testing.assert_allclose(truth["t"].sum(axis=1), 0.0, atol=1e-12)  # zero-sum rows
    assert np.all((truth["c"] / truth["m"] >= 0.6) & (truth["c"] / truth["m"] <= 0.8))
    assert np.all((truth["m"] >= 2) & (truth["m"] <= 4))
    np.testing.assert_allclose(truth["c"] + truth["k"], truth["m"])
    diag = np.diag(truth["t"])  # same names: the matching training domain helps most
    off = truth["t"][~np.eye(8, dtype=bool)]
    assert diag.mean() < -1.0 < off.mean() + 1.0
    loss = table.losses.to_numpy()
    assert loss.min() > 1.0 and loss.max() < 10.0 and 2.0 < np.median(loss) < 4.5


def test_noise_free_losses_follow_the_law():
    table, truth = simulate(5, 3, 20, random_seed=2, noise_sd=0.0)
    r = table.mixtures.to_numpy()
    expected = m4.mean_loss(r, {k: truth[k] for k in m4.PARAMS})
    np.testing.assert_allclose(table.losses.to_numpy(), expected, rtol=1e-12)
    # the paper's (c, k, t) give the same numbers
    c, k, t = m4.to_ck(truth)
    np.testing.assert_allclose(expected, c + k * np.exp(r @ t.T), rtol=1e-12)
    # the helper takes arrays, single mixtures and DataFrames
    np.testing.assert_allclose(truth.true_loss(r), expected, rtol=1e-12)
    np.testing.assert_allclose(truth.true_loss(r[0]), expected[0], rtol=1e-12)
    df = truth.true_loss(table.mixtures)
    assert list(df.index) == list(table.runs) and list(df.columns) == list(table.eval_domains)


def test_noise_free_scale_law():
    table, truth = simulate(
        3, 3, 5, random_seed=8, noise_sd=0.0, sizes=[7e7, 4.1e8], steps=[1000, 4000]
    )
    tidy = table.to_tidy()
    r = tidy[[f"mix.{d}" for d in table.train_domains]].to_numpy()
    got = tidy[[f"loss.{d}" for d in table.eval_domains]].to_numpy()
    want = truth.true_loss(r, n_params=tidy["n_params"].to_numpy(), step=tidy["step"].to_numpy())
    np.testing.assert_allclose(got, want, rtol=1e-12)
    # M4 holds exactly at the reference scale (smallest size, last step) ...
    ref = (tidy["n_params"] == 7e7) & (tidy["step"] == 4000)
    np.testing.assert_allclose(got[ref.to_numpy()], truth.true_loss(r[ref.to_numpy()]))
    # ... and bigger models / longer training lower every loss
    assert np.all(truth.scale_factor(4.1e8, 4000) < 1.0)
    assert np.all(truth.scale_factor(7e7, 1000) > 1.0)


def test_gaussian_noise_sd():
    table, truth = simulate(5, 5, 400, random_seed=6, noise_sd=0.02)
    resid = (table.losses.to_numpy() - truth.true_loss(table.mixtures.to_numpy())).ravel()
    # 2000 residuals: the sample sd has a standard error of sd / sqrt(2 n) = 1.6 %, so a 10 %
    # band is about 6 standard errors wide; the mean's standard error is 0.02 / sqrt(2000).
    assert resid.std(ddof=1) == pytest.approx(0.02, rel=0.10)
    assert abs(resid.mean()) < 4 * 0.02 / np.sqrt(resid.size)


def test_student_t_noise_scale_and_tails():
    table, truth = simulate(5, 5, 400, random_seed=7, noise_sd=0.02, student_t_df=3)
    resid = (table.losses.to_numpy() - truth.true_loss(table.mixtures.to_numpy())).ravel()
    assert truth["noise"] == "student_t" and truth["student_t_df"] == 3
    # median |T_3| is 0.7649; with 2000 draws the sample median of |resid| is within ~4 %
    # (1 sd); 12 % leaves 3 sd of room
    assert np.median(np.abs(resid)) == pytest.approx(0.02 * 0.7649, rel=0.12)
    # heavier tails than a normal: excess kurtosis of t_3 is infinite, of a normal 0
    z = (resid - resid.mean()) / resid.std()
    assert np.mean(z**4) - 3 > 1.0


def test_corner_mixtures_and_explicit_design():
    table, _ = simulate(4, n_runs=20, random_seed=9, corner_fraction=0.25)
    top = table.mixtures.max(axis=1).to_numpy()
    assert (top >= 0.95).sum() >= 5
    design = np.array([[1.0, 0.0, 0.0], [0.2, 0.3, 0.5]])
    t2, _ = simulate(3, random_seed=1, design=design)
    np.testing.assert_array_equal(t2.mixtures.to_numpy(), design)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"train_domains": 1},
        {"train_domains": ["a", "a"]},
        {"noise_sd": -0.1},
        {"design": "latin"},
        {"n_runs": 0},
        {"sizes": [0.0]},
        {"steps": [-5]},
        {"student_t_df": 0},
        {"scale": {"a_n": 0.6, "a_d": 0.5}},
        {"design": np.array([[0.5, 0.6]]), "train_domains": 2},
    ],
)
def test_bad_settings_raise_simulation_error(kwargs):
    with pytest.raises(errors.SimulationError):
        simulate(random_seed=0, **kwargs)


# ---------------------------------------------------------------------------------- simulate_law
@pytest.mark.parametrize("law_name", sorted(available_laws()))
def test_simulate_law_draws_a_truth_the_table_follows(law_name):
    law = get_law(law_name)
    scale = {k: v for k, v in (("n_params", 1e8), ("tokens", 1e10)) if k in law.inputs}
    table, truth = simulate_law(
        law_name,
        ["web", "code", "math"],
        ["code", "books"],
        15,
        random_seed=4,
        noise_sd=0.0,
        **scale,
    )
    assert truth.law is law and table.n_runs == 15
    assert table.train_domains == ("web", "code", "math")
    assert table.eval_domains == ("code", "books")
    latent = truth.params.get("s", np.zeros((2, 0))).shape[-1]  # K latent domains (implicit)
    sizes = {"eval_domain": 2, "train_domain": 3, "latent": latent}
    ds = truth.to_dataset()
    for p in law.params:  # every parameter, with its declared dims
        assert truth.params[p.name].shape == tuple(sizes[d] for d in p.dims), p.name
        assert ds[p.name].dims == p.dims
    mix = table.mixtures.to_numpy()
    losses = table.losses.to_numpy()
    np.testing.assert_allclose(losses, law.predict(mix, truth.params, **scale), rtol=1e-12)
    np.testing.assert_allclose(truth.true_loss(mix, **scale), losses, rtol=1e-12)
    np.testing.assert_allclose(truth.true_loss(mix[0], **scale), losses[0], rtol=1e-12)
    df = truth.true_loss(table.mixtures, **scale)
    assert list(df.index) == list(table.runs) and list(df.columns) == ["code", "books"]
    assert np.all(losses > 0)


def test_simulate_law_seeded_sparse_and_noisy():
    a, ta = simulate_law("additive", 6, n_runs=300, random_seed=1, zero_fraction=0.5, noise_sd=0.02)
    b, tb = simulate_law("additive", 6, n_runs=300, random_seed=1, zero_fraction=0.5, noise_sd=0.02)
    pd.testing.assert_frame_equal(a.to_tidy(), b.to_tidy())
    for key in ta.params:
        np.testing.assert_array_equal(ta.params[key], tb.params[key])
    mix = a.mixtures.to_numpy()
    np.testing.assert_allclose(mix.sum(axis=1), 1.0)
    assert (mix > 0).any(axis=1).all()
    # each share is dropped with probability 0.5 (a run keeps one at least): 1800 shares, so
    # the zero fraction is 0.5 +- 0.012 (1 sd); +-0.06 is 5 sd
    assert abs((mix == 0).mean() - 0.5) < 0.06
    resid = (a.losses.to_numpy() - ta.true_loss(mix)).ravel()
    # 1800 residuals: the sample sd is within 1.7 % (1 sd) of 0.02; 10 % is about 6 sd
    assert resid.std(ddof=1) == pytest.approx(0.02, rel=0.10)
    c, _ = simulate_law("additive", 6, n_runs=300, random_seed=2, zero_fraction=0.5)
    assert not np.allclose(a.losses.to_numpy(), c.losses.to_numpy())
    # held-out runs of the same truth: new mixtures, same parameters
    d, td = simulate_law("additive", 6, n_runs=20, random_seed=3, truth=ta, noise_sd=0.0)
    assert td.params is ta.params
    np.testing.assert_allclose(d.losses.to_numpy(), ta.true_loss(d.mixtures.to_numpy()))
    with pytest.raises(errors.SimulationError):
        simulate_law("powershare", 6, n_runs=5, random_seed=3, truth=ta)


def test_simulate_law_uses_the_priors_of_a_spec():
    """A specification's priors (here a nearly fixed m) are what the truth is drawn from."""
    spec = load_spec("powershare").with_priors(m={"dist": "Normal", "mu": 2.5, "sigma": 1e-6})
    _, truth = simulate_law(spec, 4, n_runs=5, random_seed=0)
    np.testing.assert_allclose(truth.params["m"], 2.5, atol=1e-4)
    # data-scaled priors take loss_mean / loss_scale: m ~ Normal(10, 1e-6 ...) here
    _, t2 = simulate_law("powershare", 4, n_runs=5, random_seed=0, loss_mean=10.0, loss_scale=1e-6)
    np.testing.assert_allclose(t2.params["m"], 10.0, atol=1e-4)
    # a shipped specification by name, a law by name and a Law object all work
    assert simulate_law("default", 3, n_runs=4, random_seed=0)[1].law.name == "m4"
    assert simulate_law(get_law("m4"), 3, n_runs=4, random_seed=0)[1].law.name == "m4"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"law_or_spec": "nosuchlaw"},
        {"law_or_spec": "m4", "noise_sd": -1.0},
        {"law_or_spec": "m4", "zero_fraction": 1.0},
        {"law_or_spec": "m4", "loss_scale": 0.0},
        {"law_or_spec": "m4", "train_domains": 1},
    ],
)
def test_simulate_law_bad_settings_raise_simulation_error(kwargs):
    with pytest.raises(errors.SimulationError):
        simulate_law(random_seed=0, **kwargs)
