"""The fitted posterior: predictions, interval tables, weights, the NetCDF file and ArviZ on it."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from conftest import SHARED_DATA, SIM_DOMAINS

from bayesmix import errors
from bayesmix.posterior.posterior import Posterior

#: Every test here runs MCMC (or uses a fitted fixture): `make test-fast` skips them.
pytestmark = pytest.mark.slow

UNIFORM = dict.fromkeys(SIM_DOMAINS, 0.25)
MIXTURES = {
    "uniform": UNIFORM,
    "code_heavy": {"Github": 0.7, "Books3": 0.1, "Pile-CC": 0.1, "ArXiv": 0.1},
    "no_code": {"Github": 0.0, "Books3": 0.3, "Pile-CC": 0.4, "ArXiv": 0.3},
}
COLUMNS = ["mixture", "eval_domain", "mean", "median", "lower", "upper"]


@pytest.fixture(scope="module")
def post(simulated_fit) -> Posterior:
    return simulated_fit.posterior


# ------------------------------------------------------------------------------ predict
def test_predict_returns_named_draws_per_mixture_and_domain(post):
    pred = post.predict(MIXTURES)
    for da in (pred.mean, pred.predictive):
        assert da.dims == ("chain", "draw", "mixture", "eval_domain")
        assert list(da.mixture.values) == list(MIXTURES)
        assert list(da.eval_domain.values) == list(SIM_DOMAINS)
        assert da.sizes["chain"] == 2 and da.sizes["draw"] == 300
        assert da.attrs["units"] == "nats per token"
        assert np.isfinite(da.values).all()
    # the mean is the law evaluated draw by draw: check one draw by hand
    p = post.law_params(flat=False)
    r = np.array([MIXTURES["code_heavy"][d] for d in post.train_domains])
    m, rho, t = p["m"][1, 7], p["rho"][1, 7], p["t"][1, 7]
    expected = m * (1 - rho + rho * np.exp(t @ r))
    np.testing.assert_allclose(
        pred.mean.sel(mixture="code_heavy").values[1, 7], expected, rtol=1e-12
    )
    # the predictive adds noise: wider than the mean, centred on it
    spread = pred.predictive.std(("chain", "draw")) / pred.mean.std(("chain", "draw"))
    assert float(spread.min()) > 1.0
    diff = (pred.predictive - pred.mean).mean(("chain", "draw"))
    assert float(abs(diff).max()) < 0.01  # noise sd ~0.02 / sqrt(600) x a few


def test_predictive_draws_follow_the_seed(post):
    a = post.predict(MIXTURES, random_seed=3).predictive
    b = post.predict(MIXTURES, random_seed=3).predictive
    c = post.predict(MIXTURES, random_seed=4).predictive
    np.testing.assert_array_equal(a.values, b.values)
    assert not np.array_equal(a.values, c.values)


def test_mixture_inputs_are_validated(post):
    with pytest.raises(errors.DomainNameError, match="'PileCC'.*did you mean 'Pile-CC'"):
        post.predict({"x": {"Github": 0.5, "Books3": 0.2, "PileCC": 0.2, "ArXiv": 0.1}})
    with pytest.raises(errors.ProportionSumError, match="sum to 0.8"):
        post.predict({"x": {"Github": 0.5, "Books3": 0.1, "Pile-CC": 0.1, "ArXiv": 0.1}})
    with pytest.raises(errors.FormatError, match="3 shares.*4 training domains"):
        post.predict(np.array([[0.2, 0.3, 0.5]]))


# ------------------------------------------------------------------------------ intervals
def test_interval_table_is_tidy_and_ordered(post):
    table = post.intervals(MIXTURES, 0.9)
    assert list(table.columns) == COLUMNS
    assert len(table) == len(MIXTURES) * len(SIM_DOMAINS)
    assert list(table["mixture"]) == [m for m in MIXTURES for _ in SIM_DOMAINS]
    assert list(table["eval_domain"]) == list(SIM_DOMAINS) * len(MIXTURES)
    assert (table["lower"] <= table["median"]).all() and (table["median"] <= table["upper"]).all()
    assert (table["lower"] < table["mean"]).all() and (table["mean"] < table["upper"]).all()
    # the numbers are quantiles of the predictive draws (seed 0 is the default)
    draws = post.predict(MIXTURES, random_seed=0).predictive.sel(
        mixture="no_code", eval_domain="ArXiv"
    )
    row = table.set_index(["mixture", "eval_domain"]).loc[("no_code", "ArXiv")]
    assert row["lower"] == pytest.approx(np.quantile(draws.values, 0.05))
    assert row["upper"] == pytest.approx(np.quantile(draws.values, 0.95))


def test_mixtures_named_like_domains_keep_their_order(post):
    named = {"ArXiv": {"ArXiv": 1.0, "Github": 0, "Books3": 0, "Pile-CC": 0}, "b": UNIFORM}
    table = post.intervals(named, weights={"ArXiv": 1.0})
    assert list(table["mixture"]) == ["ArXiv"] * 5 + ["b"] * 5
    assert list(table["eval_domain"]) == [*SIM_DOMAINS, "overall"] * 2


def test_intervals_widen_with_probability_and_with_noise(post):
    narrow = post.intervals(MIXTURES, 0.5)
    wide = post.intervals(MIXTURES, 0.95)
    assert ((wide["upper"] - wide["lower"]) > (narrow["upper"] - narrow["lower"])).all()
    mean = post.intervals(MIXTURES, 0.9, kind="mean")
    pred = post.intervals(MIXTURES, 0.9, kind="predictive")
    assert ((pred["upper"] - pred["lower"]) > (mean["upper"] - mean["lower"])).all()
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(errors.BayesmixError, match="probability"):
            post.intervals(MIXTURES, bad)
    with pytest.raises(errors.BayesmixError, match="kind"):
        post.intervals(MIXTURES, kind="median")


def test_overall_rows_are_the_weighted_sum_of_draws(post):
    weights = {"Github": 1.0, "Books3": 2.0, "Pile-CC": 3.0, "ArXiv": 4.0}
    table = post.intervals(MIXTURES, 0.8, weights=weights, random_seed=5)
    assert len(table) == len(MIXTURES) * (len(SIM_DOMAINS) + 1)
    overall = table[table["eval_domain"] == "overall"].set_index("mixture")
    draws = post.predict(MIXTURES, random_seed=5).predictive  # (chain, draw, mixture, eval_domain)
    w = np.array([1.0, 2.0, 3.0, 4.0]) / 10.0
    by_hand = np.einsum("cdmk,k->cdm", draws.values, w).reshape(-1, len(MIXTURES))
    for i, name in enumerate(MIXTURES):
        assert overall.loc[name, "mean"] == pytest.approx(by_hand[:, i].mean(), rel=1e-12)
        assert overall.loc[name, "median"] == pytest.approx(np.median(by_hand[:, i]), rel=1e-12)
        assert overall.loc[name, "lower"] == pytest.approx(
            np.quantile(by_hand[:, i], 0.1), rel=1e-12
        )
        assert overall.loc[name, "upper"] == pytest.approx(
            np.quantile(by_hand[:, i], 0.9), rel=1e-12
        )
    # per-domain rows are unchanged by adding weights
    plain = post.intervals(MIXTURES, 0.8, random_seed=5)
    pd.testing.assert_frame_equal(
        table[table["eval_domain"] != "overall"].reset_index(drop=True), plain
    )


def test_pile_weights_file_applies_to_the_matching_domains(post):
    path = SHARED_DATA / "mixinglaws" / "pipeline" / "valid_weight.json"
    if not path.is_file():
        pytest.skip(
            "real data absent: ../shared/data/mixinglaws/pipeline/valid_weight.json "
            "(relative to the repository root) is needed for this test"
        )
    shares = json.loads(path.read_text())
    with pytest.raises(errors.DomainNameError, match="allow_subset="):
        post.intervals(MIXTURES, weights=path)  # 22 Pile domains, the posterior has 4
    table = post.intervals(MIXTURES, 0.9, weights=path, allow_subset=True, random_seed=2)
    w = np.array([shares[d] for d in SIM_DOMAINS])
    w = w / w.sum()  # renormalised over the 4 domains present
    draws = post.predict(MIXTURES, random_seed=2).predictive.values
    by_hand = np.einsum("cdmk,k->cdm", draws, w).reshape(-1, len(MIXTURES)).mean(axis=0)
    overall = table[table["eval_domain"] == "overall"]["mean"].to_numpy()
    np.testing.assert_allclose(overall, by_hand, rtol=1e-12)


# ------------------------------------------------------------------------------ the file
def test_netcdf_round_trip_in_another_process(post, saved_posterior, tmp_path):
    out = tmp_path / "draws.npz"
    code = textwrap.dedent("""
        import json, sys
        import numpy as np
        from bayesmix.posterior.posterior import Posterior
        p = Posterior.load(sys.argv[1])
        pred = p.predict(json.loads(sys.argv[2]), random_seed=9)
        np.savez(sys.argv[3], mean=pred.mean.values, predictive=pred.predictive.values,
                 table=p.intervals(json.loads(sys.argv[2]), 0.9, random_seed=9)[
                     ["mean", "median", "lower", "upper"]].to_numpy())
        print(json.dumps({"spec": p.spec.to_json(), "settings": p.settings,
                          "diagnostics": p.diagnostics.to_json(),
                          "domains": [p.train_domains, p.eval_domains]}))
    """)
    done = subprocess.run(
        [sys.executable, "-c", code, str(saved_posterior), json.dumps(MIXTURES), str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    facts = json.loads(done.stdout)
    got = np.load(out)
    pred = post.predict(MIXTURES, random_seed=9)
    np.testing.assert_array_equal(got["mean"], pred.mean.values)
    np.testing.assert_array_equal(got["predictive"], pred.predictive.values)
    table = post.intervals(MIXTURES, 0.9, random_seed=9)[["mean", "median", "lower", "upper"]]
    np.testing.assert_array_equal(got["table"], table.to_numpy())
    assert facts["spec"] == post.spec.to_json()
    assert facts["settings"] == post.settings
    assert facts["diagnostics"] == post.diagnostics.to_json()
    assert facts["domains"] == [list(post.train_domains), list(post.eval_domains)]


def test_arviz_reads_the_file_directly(post, saved_posterior, tmp_path):
    import arviz_stats
    import matplotlib

    matplotlib.use("Agg")
    import arviz_plots

    tree = xr.open_datatree(saved_posterior, engine="h5netcdf")
    assert {"posterior", "sample_stats", "observed_data", "log_likelihood", "fit_data"} <= set(
        tree.children
    )
    summary = arviz_stats.summary(tree, var_names=["m", "t"], round_to="none")
    assert "m[Pile-CC]" in summary.index and "t[Github, ArXiv]" in summary.index
    assert summary.loc["m[Books3]", "mean"] == pytest.approx(
        float(post.tree["posterior"]["m"].sel(eval_domain="Books3").mean()), rel=1e-12
    )
    assert {"ess_bulk", "r_hat"} <= set(summary.columns)
    az = pytest.importorskip("arviz")
    assert az.summary(tree, var_names=["rho"], round_to="none").shape[0] == len(SIM_DOMAINS)
    pc = arviz_plots.plot_forest(tree, var_names=["t"], backend="matplotlib")
    pc.savefig(tmp_path / "forest.png")
    assert (tmp_path / "forest.png").stat().st_size > 1000
    tree.close()


def test_fit_data_round_trips_to_the_same_table(simulated_fit, saved_posterior):
    expected = simulated_fit.runs.to_tidy()
    pd.testing.assert_frame_equal(simulated_fit.posterior.fit_data().to_tidy(), expected)
    loaded = Posterior.load(saved_posterior).fit_data()
    pd.testing.assert_frame_equal(loaded.to_tidy(), expected)
    assert loaded.train_domains == simulated_fit.runs.train_domains
    assert loaded.eval_domains == simulated_fit.runs.eval_domains


def test_save_replaces_atomically(post, tmp_path):
    path = tmp_path / "p.nc"
    path.write_text("old content")
    post.save(path)
    assert Posterior.load(path).n_samples == post.n_samples
    assert [p.name for p in tmp_path.iterdir()] == ["p.nc"]  # no temporary file left behind
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # not the temp file's 0600


def test_damaged_or_foreign_files_are_posterior_file_errors(saved_posterior, tmp_path):
    text = tmp_path / "notes.nc"
    text.write_text("not a netcdf file\n")
    cut = tmp_path / "cut.nc"
    data = saved_posterior.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    foreign = tmp_path / "foreign.nc"
    xr.Dataset({"x": ("a", np.arange(3.0))}).to_netcdf(foreign, engine="h5netcdf")
    for path, message in (
        (tmp_path / "missing.nc", "file not found"),
        (text, "cannot read NetCDF"),
        (cut, "cannot read NetCDF"),
        (foreign, "not a bayesmix posterior"),
    ):
        with pytest.raises(errors.PosteriorFileError, match=message) as err:
            Posterior.load(path)
        assert str(path) in str(err.value)


def test_flipped_bytes_in_the_draws_are_refused_by_their_checksums(simulated_fit, tmp_path):
    """Every numeric array is stored with HDF5's fletcher32 checksum: 200 flipped bytes inside
    the draws make the file refused, not used (a silent change of the posterior)."""
    path = simulated_fit.posterior.save(tmp_path / "post.nc")
    data = bytearray(path.read_bytes())
    first = simulated_fit.posterior.tree["posterior"]["m"].values.ravel()[0]
    at = bytes(data).find(np.float64(first).tobytes())
    assert at > 0  # the draws are stored as they are (no compression), so they are found
    for i in range(at + 8, at + 208):
        data[i] ^= 0xFF
    bad = tmp_path / "flipped.nc"
    bad.write_bytes(bytes(data))
    with pytest.raises(errors.PosteriorFileError, match="its checksums do not match"):
        Posterior.load(bad)
    assert Posterior.load(path).tree["posterior"]["m"].shape  # the intact file still loads
