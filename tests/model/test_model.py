"""Model specifications (TOML, extends, user priors, errors) and the PyMC model built from them."""

from __future__ import annotations

import tomllib

import numpy as np
import pandas as pd
import pymc as pm
import pytest
from conftest import FIT_KW, SIM_DOMAINS, simulate_runs

from bayesmix import errors
from bayesmix.data.table import RunTable
from bayesmix.laws import get_law
from bayesmix.model.model import build_model, diagonal_pairs, prepare_data, structure_key
from bayesmix.model.priors import Prior
from bayesmix.model.spec import NOISE_PRIORS, ModelSpec, available_models, load_spec, models_dir


# ------------------------------------------------------------------------------ specifications
def test_shipped_specifications_load_by_name():
    assert {"default", "normal", "noncentered"} <= set(available_models())
    spec = load_spec("default")
    raw = tomllib.loads((models_dir() / "default.toml").read_text())
    assert spec.name == "default" and spec.law == raw["law"] == "m4"
    assert spec.likelihood["family"] == raw["likelihood"]["family"]
    # priors the file does not give are the law's and the noise model's defaults
    defaults = {**get_law("m4").priors, **NOISE_PRIORS}
    assert set(spec.priors) == set(defaults)
    for name, table in {**defaults, **raw.get("priors", {})}.items():
        assert spec.priors[name] == Prior.from_dict(table), name
    assert spec.priors["m"].uses_data()  # "data" = scaled to the data by the model builder


def test_load_by_path_and_extends_inherit_the_parent():
    default = load_spec("default")
    by_path = load_spec(models_dir() / "normal.toml")
    assert by_path.name == "normal"
    assert by_path.likelihood["family"] == "normal"
    assert by_path.priors == default.priors  # `extends = "default"` brings every prior
    assert load_spec("normal") == by_path


def test_user_file_extends_a_shipped_model_and_a_relative_file(tmp_path):
    (tmp_path / "base.toml").write_text(
        'name = "base"\nextends = "default"\n[likelihood]\nnu = 7.0\n'
        '[priors]\nrho_logit_sigma = { dist = "HalfNormal", sigma = 0.3 }\n'
    )
    (tmp_path / "child.toml").write_text(
        'name = "child"\nextends = "base.toml"\n[hierarchy]\ndiagonal = "off"\n'
    )
    spec = load_spec(tmp_path / "child.toml")
    default = load_spec("default")
    assert spec.name == "child"
    assert spec.likelihood == {"family": "student_t", "nu": 7.0}  # merged key by key
    assert spec.hierarchy["diagonal"] == "off"
    assert spec.priors["rho_logit_sigma"] == Prior("HalfNormal", {"sigma": 0.3})
    assert spec.priors["m"] == default.priors["m"]
    assert {k: p for k, p in spec.priors.items() if k != "rho_logit_sigma"} == {
        k: p for k, p in default.priors.items() if k != "rho_logit_sigma"
    }
    assert "rho_logit_sigma ~ HalfNormal(sigma=0.3)" in str(spec)


def test_user_priors_override_defaults_and_reach_the_model():
    default = load_spec("default")
    original = default.priors["rho_logit_sigma"]
    spec = default.with_priors(
        rho_logit_sigma=Prior("HalfNormal", {"sigma": 0.3}),
        rho_logit_mu={"dist": "Normal", "mu": -2.0, "sigma": 0.5},
    )
    assert spec.priors["rho_logit_sigma"].params == {"sigma": 0.3}
    assert spec.priors["rho_logit_mu"].params == {"mu": -2.0, "sigma": 0.5}
    assert default.priors["rho_logit_sigma"] == original  # the original is unchanged
    assert original.params != {"sigma": 0.3}
    assert ModelSpec.from_json(spec.to_json()) == spec  # what a saved posterior stores
    runs, _ = simulate_runs(n_runs=12)
    model = build_model(spec, runs.train_domains, runs.eval_domains, prepare_data(runs))
    draws = pm.draw(model["rho_logit_sigma"], draws=4000, random_seed=0)
    # HalfNormal(0.3) has mean 0.3 sqrt(2/pi) = 0.239; the mean of 4000 draws has sd
    # 0.3 * 0.60 / sqrt(4000) = 0.003, so 0.015 is 5 sd (the shipped prior is another one).
    assert abs(draws.mean() - 0.3 * np.sqrt(2 / np.pi)) < 0.015
    draws = pm.draw(model["rho_logit_mu"], draws=4000, random_seed=0)
    assert abs(draws.mean() + 2.0) < 0.05  # Normal(-2, 0.5): sd of the mean 0.008
    with pytest.raises(errors.SpecError, match="Foo"):
        default.with_priors(rho_logit_sigma={"dist": "Foo"})


@pytest.mark.parametrize(
    "text, message",
    [
        ('name = "x"\nlaw = "m4\n', "cannot read model specification"),  # TOML syntax
        ('extends = "default"\ncolour = "red"\n', "unknown key 'colour'"),
        ('extends = "default"\n[likelihood]\nfamily = "cauchy"\n', "unknown likelihood family"),
        ('extends = "default"\n[likelihood]\ndf = 3\n', "unknown likelihood key 'df'"),
        (
            'extends = "default"\n[priors]\nm = { dist = "Nromal", mu = 1, sigma = 1 }\n',
            "unknown distribution 'Nromal'",
        ),
        ('extends = "default"\n[priors]\nm = { dist = "Normal", loc = 1 }\n', "no parameter 'loc'"),
        ('extends = "default"\n[priors]\ngamma = { dist = "Normal" }\n', "unknown prior 'gamma'"),
        ('extends = "default"\n[priors]\nm = 3.0\n', "needs a table with a 'dist' key"),
        (
            'law = "m4log"\n[priors]\nw_mu = { dist = "Normal", mu = 0, sigma = 1 }\n',
            "unknown prior 'w_mu' for law m4log",
        ),
        (
            'extends = "default"\n[hierarchy]\ndiagonal = "yes"\n',
            "diagonal must be auto, on or off",
        ),
        (
            'extends = "default"\n[hierarchy]\ncurvature = "partial"\n',
            "curvature must be centered or noncentered",
        ),
        ('law = "m7"\n', "unknown law 'm7'"),
    ],
)
def test_bad_specification_is_a_spec_error_naming_the_file(tmp_path, text, message):
    path = tmp_path / "my_model.toml"
    path.write_text(text)
    with pytest.raises(errors.SpecError, match=message) as err:
        load_spec(path)
    assert str(path) in str(err.value)
    assert "\n" not in str(err.value)


def test_unknown_model_name_missing_file_and_extends_loop(tmp_path):
    with pytest.raises(errors.SpecError, match="unknown model 'nope'.*default"):
        load_spec("nope")
    with pytest.raises(errors.SpecError, match="missing.toml: model file not found"):
        load_spec(tmp_path / "missing.toml")
    (tmp_path / "a.toml").write_text('extends = "b.toml"\n')
    (tmp_path / "b.toml").write_text('extends = "a.toml"\n')
    with pytest.raises(errors.SpecError, match="loops"):
        load_spec(tmp_path / "a.toml")


# ------------------------------------------------------------------------------ model structure
def _model(train, evals, spec="default", n_runs=10, seed=0):
    """A model over simulated runs with the given domain names (built, never sampled)."""
    from bayesmix.model.simulation import simulate

    runs, _ = simulate(list(train), list(evals), n_runs=n_runs, random_seed=seed)
    return build_model(load_spec(spec), runs.train_domains, runs.eval_domains, prepare_data(runs))


def test_model_dims_and_coords_are_named():
    model = _model(SIM_DOMAINS, SIM_DOMAINS)
    assert list(model.coords["train_domain"]) == list(SIM_DOMAINS)
    assert list(model.coords["eval_domain"]) == list(SIM_DOMAINS)
    dims = model.named_vars_to_dims
    assert dims["t"] == ("eval_domain", "train_domain")
    for name in ("m", "rho", "c", "k", "sigma"):
        assert dims[name] == ("eval_domain",)
    assert dims["r"] == ("run", "train_domain")


@pytest.mark.slow
def test_rows_of_t_sum_to_zero_in_every_draw(simulated_fit):
    t = simulated_fit.posterior.tree["posterior"]["t"]
    assert t.dims == ("chain", "draw", "eval_domain", "train_domain")
    assert float(abs(t.sum("train_domain")).max()) < 1e-10
    assert float(t.std(("chain", "draw")).min()) > 0  # ... while the entries themselves vary
    prior_t = pm.draw(_model(SIM_DOMAINS, ["x", "y"])["t"], draws=200, random_seed=1)
    assert np.abs(prior_t.sum(axis=-1)).max() < 1e-10


@pytest.mark.parametrize(
    "evals, expected",
    [
        (SIM_DOMAINS, [(0, 0), (1, 1), (2, 2), (3, 3)]),  # every validation domain matches
        (["e1", "e2", "e3"], []),  # none matches: no diagonal term
        (["wiki", "Books3"], [(1, 1)]),  # only the matching one
        (["github", "pile_cc"], [(0, 0), (1, 2)]),  # up to case and punctuation
    ],
)
def test_diagonal_term_exactly_when_names_match(evals, expected):
    spec = load_spec("default")
    assert diagonal_pairs(spec, SIM_DOMAINS, evals) == expected  # (eval index, train index)
    model = _model(SIM_DOMAINS, evals)
    diagonal_vars = [v for v in model.named_vars if v.startswith("diag")]
    if expected:
        assert "diag_mu" in diagonal_vars
    else:
        assert diagonal_vars == []


def test_diagonal_setting_off_and_on(tmp_path):
    (tmp_path / "off.toml").write_text('extends = "default"\n[hierarchy]\ndiagonal = "off"\n')
    (tmp_path / "on.toml").write_text('extends = "default"\n[hierarchy]\ndiagonal = "on"\n')
    off = _model(SIM_DOMAINS, SIM_DOMAINS, spec=tmp_path / "off.toml")
    assert not [v for v in off.named_vars if v.startswith("diag")]
    with pytest.raises(errors.SpecError, match="no validation domain name matches"):
        _model(SIM_DOMAINS, ["e1", "e2"], spec=tmp_path / "on.toml")


def test_structure_key_separates_structures_not_data():
    spec = load_spec("default")
    key = structure_key(spec, SIM_DOMAINS, SIM_DOMAINS)
    assert key == structure_key(load_spec("default"), SIM_DOMAINS, SIM_DOMAINS)
    # laws over every checkpoint size their run effects by the number of runs: another
    # number of runs is another structure (sharing the compiled model corrupted memory)
    scaling = load_spec("scaling")
    assert structure_key(scaling, SIM_DOMAINS, SIM_DOMAINS, True, 20) != structure_key(
        scaling, SIM_DOMAINS, SIM_DOMAINS, True, 26
    )
    assert key != structure_key(load_spec("normal"), SIM_DOMAINS, SIM_DOMAINS)
    assert key != structure_key(spec, SIM_DOMAINS, SIM_DOMAINS[:3])
    assert key != structure_key(
        spec.with_priors(rho_logit_sigma={"dist": "HalfNormal", "sigma": 2.0}),
        SIM_DOMAINS,
        SIM_DOMAINS,
    )


# ------------------------------------------------------------------------------ missing losses
def _with_missing(runs: RunTable, frac: float, seed: int) -> RunTable:
    tidy = runs.to_tidy()
    rng = np.random.default_rng(seed)
    for d in runs.eval_domains:
        tidy.loc[rng.random(len(tidy)) < frac, f"loss.{d}"] = np.nan
    return RunTable.from_frame(tidy, source="with missing losses")


def test_missing_losses_are_not_observations():
    runs, _ = simulate_runs(n_runs=20)
    holed = _with_missing(runs, 0.3, seed=3)
    n_observed = int(holed.losses.notna().to_numpy().sum())
    assert 0 < n_observed < holed.losses.size
    data = prepare_data(holed)
    assert len(data.y) == n_observed and np.isfinite(data.y).all()
    # the positions point at the observed cells, in order
    np.testing.assert_array_equal(data.y, holed.losses.to_numpy()[data.run_idx, data.eval_idx])
    model = build_model(load_spec("default"), holed.train_domains, holed.eval_domains, data)
    assert int(model["loss"].shape.eval()[0]) == n_observed
    assert len(model.coords["obs"]) == n_observed


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy: mean of an all-NaN column
def test_a_domain_without_any_loss_is_refused():
    runs, _ = simulate_runs(n_runs=10)
    tidy = runs.to_tidy()
    tidy["loss.ArXiv"] = np.nan
    with pytest.raises(errors.NoLossesError, match="loss.ArXiv"):
        prepare_data(RunTable.from_frame(tidy))


@pytest.mark.slow
def test_fit_with_missing_losses_predicts_every_domain(simulated_fit):
    from bayesmix.inference.fitting import fit

    holed = _with_missing(simulated_fit.runs, 0.25, seed=5)
    post = fit(holed, warn=False, **FIT_KW)  # same structure as the fixture: no recompilation
    observed = post.tree["observed_data"]["loss"]
    assert int(observed.notnull().sum()) == int(holed.losses.notna().to_numpy().sum())
    pd.testing.assert_frame_equal(post.fit_data().to_tidy(), holed.to_tidy())
    pred = post.predict({"uniform": dict.fromkeys(SIM_DOMAINS, 0.25)})
    assert list(pred.mean.eval_domain.values) == list(SIM_DOMAINS)
    assert np.isfinite(pred.mean.values).all() and np.isfinite(pred.predictive.values).all()
    # a quarter of the losses missing still pins the loss at the uniform mixture: within
    # 0.05 nats of the truth (noise sd is 0.02; the full-data posterior sd of m is ~0.005)
    truth = simulated_fit.truth.true_loss(np.full(4, 0.25))
    assert np.abs(pred.mean.mean(("chain", "draw")).values[0] - truth).max() < 0.05


def test_extending_file_replaces_a_prior_whole(tmp_path):
    # A prior's parameters depend on its distribution: a child that switches HalfNormal to
    # Gamma must not inherit the parent's `sigma` (merging the two tables would be an error).
    (tmp_path / "child.toml").write_text(
        'name = "child"\nextends = "default"\n[priors]\n'
        'b_sigma = { dist = "Gamma", alpha = 2.0, beta = 4.0 }\n'
    )
    spec = load_spec(tmp_path / "child.toml")
    assert spec.priors["b_sigma"] == Prior("Gamma", {"alpha": 2.0, "beta": 4.0})
    assert spec.priors["m"] == load_spec("default").priors["m"]


@pytest.mark.parametrize(
    "prior, mean",
    [
        (Prior("Gamma", {"alpha": 3.0, "beta": 6.0}), 0.5),
        (Prior("HalfNormal", {"sigma": 0.5}), 0.5 * np.sqrt(2 / np.pi)),
        (Prior("Exponential", {"lam": 4.0}), 0.25),
        (Prior("LogNormal", {"mu": 0.0, "sigma": 1.0}), np.exp(0.5)),
    ],
)
def test_prior_means_of_scale_priors(prior, mean):
    """The mean a spread over few validation domains is fixed at (laws.m4.pooling_scale)."""
    with pm.Model():
        draws = pm.draw(prior.create("x"), draws=20000, random_seed=0)
    # 20000 draws: sd of their mean is sd / 141; these priors' sd / mean is at most 1.3
    assert draws.mean() == pytest.approx(mean, rel=0.03)


def test_a_prior_without_a_usable_mean_is_refused():
    with pytest.raises(errors.SpecError, match="no mean"):
        Prior("Normal", {"mu": "data", "sigma": 1.0}).mean()
    with pytest.raises(errors.SpecError, match="no mean"):
        Prior("HalfStudentT", {"nu": 3.0, "sigma": 1.0}).mean()
