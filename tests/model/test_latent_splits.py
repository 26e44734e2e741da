"""Latent split fractions (bayesmix.data.latent_splits, bayesmix.model.splits): the fit infers
the fractions of a split domain's share in remapped old runs, and reduces exactly to the
fixed-fraction model where no split is latent."""

from __future__ import annotations

import numpy as np
import pymc as pm
import pytest

import bayesmix as bm
from bayesmix import errors
from bayesmix.data.domain_maps import concat_versions
from bayesmix.data.latent_splits import LatentSplits, latent_splits
from bayesmix.model.model import (
    build_model,
    prepare_data,
    split_key,
    structure_key,
    with_latent_splits,
)
from bayesmix.model.spec import load_spec

DOMAINS = ["web", "code", "b1", "b2"]
TRUE_F = np.array([0.85, 0.15])  # how the old swarm really divided "books"
SPLIT = {"split": {"books": {"into": ["b1", "b2"], "tokens": [0.4, 0.6]}}}  # prior: 0.4 / 0.6


def _case():
    """16 new runs over 4 domains; 48 old runs that trained b1 and b2 at TRUE_F, seen only
    through their sum ``books``, remapped back by tokens 0.4 / 0.6 (far from the truth)."""
    rng = np.random.default_rng(0)
    new_mix = rng.dirichlet(np.ones(4), size=16)
    old3 = rng.dirichlet(np.ones(3), size=48)
    old_mix = np.column_stack([old3[:, :2], old3[:, 2:] * TRUE_F])
    runs, _ = bm.simulate(
        DOMAINS, n_runs=64, design=np.vstack([new_mix, old_mix]), random_seed=0, noise_sd=0.01
    )
    ids = list(runs.runs)
    old = runs.select(ids[16:]).remap({"merge": {"books": ["b1", "b2"]}})
    both = concat_versions([runs.select(ids[:16]), old.remap(SPLIT)])
    return old, both


@pytest.fixture(scope="session")
def case():
    return _case()


@pytest.fixture(scope="session")
def latent_fit(case):
    old, both = case
    splits = latent_splits(SPLIT, old, concentration=4.0)
    return bm.fit(
        both,
        "default",
        latent_splits=splits,
        draws=300,
        tune=300,
        chains=2,
        random_seed=1,
        warn=False,
        max_time=0,
    )


def test_fit_recovers_split_fractions_away_from_prior(latent_fit):
    f = latent_fit.tree["posterior"]["split_fraction"]
    assert f.dims == ("chain", "draw", "split_part")
    assert list(f["split_part"].values) == ["b1", "b2"]
    mean = f.mean(("chain", "draw")).values
    # 48 old runs x 4 losses at noise sd 0.01 pin the fraction to about +-0.02 (posterior sd
    # 0.01-0.02 over seeds); 0.06 leaves three sd while the prior mean 0.4 is 0.45 away
    np.testing.assert_allclose(mean, TRUE_F, atol=0.06)
    lo, hi = np.quantile(f.sel(split_part="b1").values, [0.05, 0.95])
    assert lo > 0.4 + 0.2  # the data moved it well past the prior's centre
    assert f.attrs["units"] == "fraction of the split group's share"


def test_fixed_fraction_model_is_unchanged_without_splits(case):
    _, both = case
    spec = load_spec("default")
    data = prepare_data(both, spec.law)
    assert with_latent_splits(data, None, both.train_domains) is data
    assert split_key(data) == ""
    plain = structure_key(spec, both.train_domains, both.eval_domains)
    assert structure_key(spec, both.train_domains, both.eval_domains, splits="") == plain
    model = build_model(spec, both.train_domains, both.eval_domains, data)
    assert not any(n.startswith("split_") for n in model.named_vars)


def test_latent_model_at_prior_fractions_is_the_fixed_model(case):
    """The fractions start at their prior mean (the Dirichlet's support point): there the
    latent model's log density of the losses equals the fixed-fraction model's exactly."""
    old, both = case
    spec = load_spec("default")
    data = prepare_data(both, spec.law)
    latent = with_latent_splits(data, latent_splits(SPLIT, old), both.train_domains)
    assert split_key(latent) != ""
    fixed_m = build_model(spec, both.train_domains, both.eval_domains, data)
    latent_m = build_model(spec, both.train_domains, both.eval_domains, latent)
    point = latent_m.initial_point()
    shared = {k: v for k, v in point.items() if k in fixed_m.initial_point()}

    def fn(model, expr):
        expr = model.replace_rvs_by_values([expr])[0]  # values, not fresh random draws
        return model.compile_fn(expr, inputs=model.value_vars, on_unused_input="ignore")

    np.testing.assert_allclose(fn(latent_m, latent_m["split_fraction"])(point), [0.4, 0.6])
    ll_fixed = fn(fixed_m, fixed_m.logp(vars=[fixed_m["loss"]]))
    ll_latent = fn(latent_m, latent_m.logp(vars=[latent_m["loss"]]))
    np.testing.assert_allclose(ll_latent(point), ll_fixed(shared), rtol=1e-10)
    # new runs keep their shares; old runs' parts are 0 in r and carried by split_share
    assert latent.split_share[:16].sum() == 0 and (latent.split_share[16:, 0] > 0).all()
    np.testing.assert_array_equal(latent.r[:16], data.r[:16])


def test_per_run_fractions_have_a_record_dim(case):
    old, both = case
    spec = load_spec("default")
    data = with_latent_splits(
        prepare_data(both, spec.law), latent_splits(SPLIT, old, per_run=True), both.train_domains
    )
    model = build_model(spec, both.train_domains, both.eval_domains, data)
    assert model.named_vars_to_dims["split_fraction"] == ("run", "split_part")
    with model:
        draws = pm.draw(model["split_fraction"], random_seed=0)
    assert draws.shape == (64, 2)
    np.testing.assert_allclose(draws.sum(axis=1), 1.0)
    assert "records=64" in split_key(data)


def test_errors_name_what_is_wrong(case):
    old, both = case
    with pytest.raises(errors.OptionError, match="'web' is not a split of the domain map"):
        latent_splits(SPLIT, old, only=["web"])
    with pytest.raises(errors.DomainNameError, match="'books' is not a training domain"):
        latent_splits(SPLIT, both)  # the remapped runs, not the old ones
    with pytest.raises(errors.OptionError, match="concentration must be a positive"):
        latent_splits(SPLIT, old, concentration=0.0)
    splits = latent_splits(SPLIT, old)
    spec = load_spec("default")
    data = prepare_data(both, spec.law)
    with pytest.raises(errors.DomainNameError, match="part 'b1' is not a training domain"):
        with_latent_splits(data, splits, ["web", "code", "x", "b2"])
    doubled = LatentSplits(splits.groups, splits.shares * 2)
    with pytest.raises(errors.FormatError, match="parts of latent split 'books' sum to"):
        with_latent_splits(data, doubled, both.train_domains)
    elsewhere = LatentSplits(splits.groups, splits.shares.set_axis([f"x{i}" for i in range(48)]))
    with pytest.raises(errors.OptionError, match="lists none of the fitted runs"):
        with_latent_splits(data, elsewhere, both.train_domains)


def test_fractions_survive_save_and_load(latent_fit, tmp_path):
    """The fractions are part of the saved DataTree, with their dim and description; the
    sampler's own Dirichlet coordinates stay out of the ``posterior`` group."""
    path = latent_fit.save(tmp_path / "post.nc")
    back = bm.Posterior.load(path).tree["posterior"]
    np.testing.assert_allclose(
        back["split_fraction"].values, latent_fit.tree["posterior"]["split_fraction"].values
    )
    assert back["split_fraction"].attrs["description"].startswith("latent fraction")
    assert "split_f_books" not in back.data_vars
    assert "split_f_books" in latent_fit.tree["sampler_variables"].data_vars
    pred = latent_fit.predict(np.array([[0.25, 0.25, 0.25, 0.25]]), warn=False)
    assert np.isfinite(np.asarray(pred.mean)).all()
