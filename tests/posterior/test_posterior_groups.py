"""ArviZ-complete posterior files: observed_data, posterior_predictive and constant_data on the
same (run, eval_domain) dims, variable attrs with units and descriptions, sample coords taken
from the sampler's data, the law's parameters alone in ``posterior`` (the sampler's in
``sampler_variables``), and older files (without these groups) still loading."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

pytestmark = pytest.mark.slow  # uses the suite's fitted posterior


def test_groups_share_dims_and_coords(simulated_fit):
    tree = simulated_fit.posterior.tree
    obs = tree["observed_data"]["loss"]
    pred = tree["posterior_predictive"]["loss"]
    assert obs.dims == ("run", "eval_domain")
    assert pred.dims == ("chain", "draw", "run", "eval_domain")
    for dim in ("run", "eval_domain"):
        assert list(pred[dim].values) == list(obs[dim].values)
    runs = simulated_fit.runs
    assert list(obs["run"].values) == list(runs.runs)
    np.testing.assert_array_equal(obs.values, runs.losses.to_numpy())
    props = tree["constant_data"]["proportions"]
    assert props.dims == ("run", "train_domain")
    np.testing.assert_allclose(props.values, runs.mixtures.to_numpy())
    assert "n_params" not in tree["constant_data"] and "tokens" not in tree["constant_data"]


def test_replicates_cover_the_measurements(simulated_fit):
    tree = simulated_fit.posterior.tree
    obs = tree["observed_data"]["loss"].values
    draws = (
        tree["posterior_predictive"]["loss"]
        .stack(s=("chain", "draw"))
        .transpose("s", "run", "eval_domain")
        .values
    )
    lo, hi = np.quantile(draws, [0.05, 0.95], axis=0)
    covered = ((lo <= obs) & (obs <= hi)).mean()
    # 160 measurements from the law the model assumes: 90% intervals cover about 90%
    assert 0.8 <= covered <= 0.99
    assert np.abs(np.median(draws, axis=0) - obs).mean() < 0.05  # noise sd is 0.02


def test_variables_carry_units_and_descriptions(simulated_fit):
    post = simulated_fit.posterior
    ds = post.tree["posterior"]
    for param in post.law.params:
        assert ds[param.name].attrs["description"] == param.description
        assert ds[param.name].attrs["units"] == (param.units or "dimensionless")
    assert ds["sigma"].attrs["units"] == "nats per token"
    for group, name in (
        ("observed_data", "loss"),
        ("posterior_predictive", "loss"),
        ("constant_data", "proportions"),
    ):
        attrs = post.tree[group][name].attrs
        assert attrs["units"] and attrs["description"]


def test_plot_ppc_dist_reads_a_saved_file(saved_posterior, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import arviz_plots

    from bayesmix.posterior.posterior import Posterior

    tree = xr.open_datatree(saved_posterior, engine="h5netcdf")
    assert tree["observed_data"]["loss"].dims == ("run", "eval_domain")
    pc = arviz_plots.plot_ppc_dist(tree, backend="matplotlib")
    pc.savefig(tmp_path / "ppc.png")
    assert (tmp_path / "ppc.png").stat().st_size > 1000
    back = Posterior.load(saved_posterior)
    assert back.tree["posterior"]["t"].attrs["units"] == "per unit share"
    xr.testing.assert_identical(
        back.tree["posterior_predictive"].to_dataset(),
        tree["posterior_predictive"].to_dataset().load(),
    )


def test_sample_coords_come_from_the_data(simulated_fit):
    """A sampler tree with other chain/draw labels: the new groups keep those labels."""
    from bayesmix.posterior.posterior import Posterior

    post = simulated_fit.posterior
    groups = {
        name: post.tree[name].to_dataset().assign_coords(chain=[5, 6])
        for name in ("posterior", "sample_stats")
    }
    groups["posterior"] = (
        groups["posterior"].isel(draw=slice(0, 50)).assign_coords(draw=np.arange(100, 150))
    )
    groups["sample_stats"] = (
        groups["sample_stats"].isel(draw=slice(0, 50)).assign_coords(draw=np.arange(100, 150))
    )
    again = Posterior.from_fit(
        xr.DataTree.from_dict(groups), post.spec, post.fit_data(), post.diagnostics, post.settings
    )
    pred = again.tree["posterior_predictive"]["loss"]
    assert list(pred["chain"].values) == [5, 6]
    assert list(pred["draw"].values) == list(range(100, 150))


def test_files_without_the_new_groups_still_load(simulated_fit, tmp_path):
    """A file as written before these groups existed (observed_data only, no attrs) loads,
    predicts, and the report computes its predictive check."""
    from bayesmix.posterior.posterior import Posterior
    from bayesmix.reporting.sections_checks import ppc_arrays

    tree = simulated_fit.posterior.tree.copy()
    old = {name: tree[name].to_dataset() for name in ("posterior", "sample_stats", "fit_data")}
    for name in old["posterior"].data_vars:
        old["posterior"][name].attrs = {}
    old["observed_data"] = xr.Dataset({"loss": simulated_fit.runs.to_xarray()["loss"]})
    legacy = xr.DataTree.from_dict(old)
    legacy.attrs.update(tree.attrs)
    path = tmp_path / "old.nc"
    legacy.to_netcdf(path, engine="h5netcdf")
    back = Posterior.load(path)
    assert "posterior_predictive" not in back.tree.children
    pred = back.predict({"u": dict.fromkeys(back.train_domains, 0.25)})
    assert np.isfinite(pred.mean.values).all()
    obs, rep = ppc_arrays(back)
    assert obs.dims == ("run", "eval_domain") and rep.sizes["run"] == obs.sizes["run"]


@pytest.mark.parametrize("family", ["normal", "student_t"])
def test_data_groups_follow_the_likelihood(simulated_fit, family):
    """The replicates' noise follows the likelihood family (heavier tails for Student-t)."""
    from bayesmix.posterior.data_groups import data_groups

    post = simulated_fit.posterior
    lik = {"family": family, "nu": 3.0}
    groups = data_groups(
        post.tree["posterior"].to_dataset(), post.law, lik, post.fit_data(), random_seed=1
    )
    pred = groups["posterior_predictive"]["loss"].values
    assert np.isfinite(pred).all() and pred.shape[2:] == (40, 4)


def test_az_summary_of_a_saved_file_lists_only_the_laws_and_noise_parameters(saved_posterior):
    """ArviZ's default summary reads the ``posterior`` group: the law's parameters (m, rho, t),
    its documented derived ones (c, k) and the noise scales; no sampler variable."""
    import arviz as az

    tree = xr.open_datatree(saved_posterior, engine="h5netcdf")
    rows = az.summary(tree, round_to="none").index
    names = {row.split("[")[0] for row in rows}
    assert names == {"m", "rho", "t", "c", "k", "sigma"}
    assert len(rows) == 4 * 5 + 4 * 4  # 4 x 4 domains: m, rho, c, k, sigma (K); t (K, M)
    sampler = tree["sampler_variables"]
    assert {"b_raw", "rho_logit", "log_sigma_raw", "diag_mu"} <= set(sampler.data_vars)
    # M4 sampled at the runs' mean shares: its slopes also set m and rho at the uniform mixture
    assert sampler["b_raw"].attrs["sampler_variable_of"] == "m, rho, t"
    assert sampler["log_sigma_raw"].attrs["sampler_variable_of"] == "sigma"


def test_the_sampler_group_is_saved_loaded_and_gated(simulated_fit, saved_posterior):
    """The sampler's variables come back from the file; the gate checks them too and names a
    failure there by the parameter it belongs to."""
    from bayesmix.posterior.diagnostics import diagnose
    from bayesmix.posterior.posterior import Posterior

    back = Posterior.load(saved_posterior)
    xr.testing.assert_identical(
        back.tree["sampler_variables"].to_dataset(),
        simulated_fit.posterior.tree["sampler_variables"].to_dataset(),
    )
    tree = back.tree.copy()
    stuck = tree["sampler_variables"].to_dataset()
    stuck["b_raw"] = stuck["b_raw"] + xr.DataArray([0.0, 5.0], dims="chain")  # chains disagree
    tree["sampler_variables"] = xr.DataTree(stuck)
    report = diagnose(tree)
    assert report.worst_rhat.startswith("b_raw[") and report.worst_rhat.endswith(
        "(sampler variable of m, rho, t)"
    )
    assert any("(sampler variable of m, rho, t)" in f for f in report.failed)


def test_files_with_sampler_variables_in_the_posterior_group_still_load(simulated_fit, tmp_path):
    """A file written before the split (every variable in ``posterior``, no sampler group)
    loads and predicts as it is."""
    from bayesmix.posterior.posterior import Posterior

    tree = simulated_fit.posterior.tree.copy()
    merged = xr.merge(
        [tree["posterior"].to_dataset(), tree["sampler_variables"].to_dataset()],
        combine_attrs="override",
    )
    old = {name: tree[name].to_dataset() for name in tree.children if name != "sampler_variables"}
    old["posterior"] = merged
    legacy = xr.DataTree.from_dict(old)
    legacy.attrs.update(tree.attrs)
    path = tmp_path / "unsplit.nc"
    legacy.to_netcdf(path, engine="h5netcdf")
    back = Posterior.load(path)
    assert "sampler_variables" not in back.tree.children and "b_raw" in back.tree["posterior"]
    mix = {"u": dict.fromkeys(back.train_domains, 0.25)}
    np.testing.assert_allclose(
        back.predict(mix).mean.values, simulated_fit.posterior.predict(mix).mean.values
    )
