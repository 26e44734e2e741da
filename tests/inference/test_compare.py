"""Comparing laws: the stored log-likelihood, PSIS-LOO tables, K-fold by runs, ``bayesmix compare``.

MCMC is kept small and shared: the session's default-model fit plus one "normal" fit of the same
runs (a second model structure, compiled once); K-fold refits reuse both compiled models.
"""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pymc as pm
import pytest
import xarray as xr

from bayesmix import errors
from bayesmix.cli import main
from bayesmix.inference.compare import (
    COMPARE_COLUMNS,
    IncomparableError,
    compare,
    compare_laws,
    data_difference,
    kfold,
    make_folds,
)
from bayesmix.inference.fitting import fit
from bayesmix.model.model import build_model, prepare_data
from bayesmix.posterior.groups import all_draws
from bayesmix.posterior.posterior import Posterior

#: The second law's fit: as small as the brief allows, shared by the module.
NORMAL_KW = {"draws": 200, "tune": 200, "chains": 2, "random_seed": 12}
#: K-fold refits: tiny (only finiteness and plumbing are tested).
KFOLD_KW = {"k": 2, "draws": 100, "tune": 100, "chains": 1, "random_seed": 1}


@pytest.fixture(scope="module")
def post(simulated_fit) -> Posterior:
    return simulated_fit.posterior


@pytest.fixture(scope="module")
def normal(simulated_fit) -> Posterior:
    return fit(simulated_fit.runs, "normal", warn=False, **NORMAL_KW)


def with_fit_data(post: Posterior, table) -> Posterior:
    """A copy of ``post`` claiming to be fitted to ``table`` (log-likelihood recomputed)."""
    from bayesmix.posterior.storage import encode_fit_data

    tree = post.tree.copy(deep=True)
    del tree["log_likelihood"]
    tree["fit_data"] = xr.DataTree(encode_fit_data(table))
    return Posterior(tree)


def changed_loss(runs, delta=0.1):
    """``runs`` with the first Github loss shifted by ``delta`` nats."""
    from bayesmix.data.table import RunTable

    tidy = runs.to_tidy()
    tidy.loc[0, "loss.Github"] += delta
    return RunTable.from_frame(tidy, source="changed")


@pytest.fixture(scope="module")
def files(post, normal, saved_posterior, tmp_path_factory):
    """default.nc (the session's file), normal.nc and other.nc (default, one loss changed)."""
    d = tmp_path_factory.mktemp("compare")
    normal.save(d / "normal.nc")
    with_fit_data(post, changed_loss(post.fit_data())).save(d / "other.nc")
    return {"default": saved_posterior, "normal": d / "normal.nc", "other": d / "other.nc"}


# ------------------------------------------------------------------------ log-likelihood group
@pytest.mark.slow
def test_log_likelihood_group_is_stored_with_named_dims(post):
    ll = post.tree["log_likelihood"]
    observed = post.tree["observed_data"]["loss"]
    n_obs = int(observed.notnull().sum())
    assert ll["loss"].dims == ("chain", "draw", "obs")
    assert ll["run_loss"].dims == ("chain", "draw", "run")
    assert ll.sizes["obs"] == n_obs and ll.sizes["chain"] == 2 and ll.sizes["draw"] == 300
    assert list(ll["run"].values) == list(observed["run"].values)
    assert "nats per token" in ll["loss"].attrs["units"]
    assert np.isfinite(ll["loss"].values).all()
    # obs follows the observed (run, eval_domain) pairs, row-major: the model's order
    runs, doms = np.nonzero(observed.notnull().values)
    assert list(ll["obs_run"].values) == list(observed["run"].values[runs])
    assert list(ll["obs_eval_domain"].values) == list(observed["eval_domain"].values[doms])
    # run_loss is the sum of a run's losses (same terms, possibly summed in another order)
    by_run = ll["loss"].groupby(ll["obs_run"].rename("run")).sum().sel(run=ll["run"])
    np.testing.assert_allclose(
        ll["run_loss"].values, by_run.transpose(*ll["run_loss"].dims), rtol=1e-12
    )


@pytest.mark.slow
@pytest.mark.parametrize("which", ["post", "normal"])
def test_log_likelihood_matches_pymc(which, request):
    """NumPy (scipy.stats) against PyMC's own log-likelihood of the model, same draws."""
    p = request.getfixturevalue(which)
    table = p.fit_data()
    model = build_model(
        p.spec, table.train_domains, table.eval_domains, prepare_data(table, p.spec.law)
    )
    tree = xr.DataTree.from_dict({"posterior": all_draws(p.tree)})  # PyMC needs every variable
    ref = pm.compute_log_likelihood(
        tree, model=model, var_names=["loss"], extend_inferencedata=False, progressbar=False
    )["loss"]
    ours = p.tree["log_likelihood"]["loss"]
    assert ref.dims == ours.dims and ref.shape == ours.shape
    # Same float64 formula up to rounding: PyTensor writes the Student-t log density with
    # gammaln terms in another order; measured differences ~1e-9 on values of order 3.
    np.testing.assert_allclose(ours.values, ref.values, rtol=0, atol=1e-8)


@pytest.mark.slow
def test_groups_computed_in_blocks_of_draws_equal_whole_ones(post, monkeypatch):
    """The log-likelihood and posterior-predictive groups are computed over blocks of draws
    (docs/performance.md); one draw per block gives the same numbers as one block for all
    (the same operations per draw, and the noise drawn from one stream in the same order)."""
    from bayesmix.posterior import data_groups as groups_module

    table = post.fit_data()
    groups = {}
    for block in (1, 10**9):
        monkeypatch.setattr(groups_module, "BLOCK_ELEMENTS", block)
        ll = post.log_likelihood(table)
        pp = groups_module.data_groups(
            post.tree["posterior"].to_dataset(),
            post.law,
            post.spec.likelihood,
            table,
            random_seed=3,
        )["posterior_predictive"]
        groups[block] = (ll, pp)
    (ll_1, pp_1), (ll_all, pp_all) = groups[1], groups[10**9]
    assert ll_1["loss"].shape == ll_all["loss"].shape
    np.testing.assert_allclose(ll_1["loss"].values, ll_all["loss"].values, rtol=1e-12)
    np.testing.assert_allclose(ll_1["run_loss"].values, ll_all["run_loss"].values, rtol=1e-12)
    np.testing.assert_allclose(pp_1["loss"].values, pp_all["loss"].values, rtol=1e-12)


@pytest.mark.slow
def test_log_likelihood_survives_save_and_load(post, saved_posterior):
    stored = xr.open_datatree(saved_posterior, engine="h5netcdf")
    assert "log_likelihood" in stored.children
    assert stored["log_likelihood"]["run_loss"].dims == ("chain", "draw", "run")
    stored.close()
    loaded = Posterior.load(saved_posterior)
    xr.testing.assert_identical(
        loaded.tree["log_likelihood"].to_dataset(), post.tree["log_likelihood"].to_dataset()
    )


@pytest.mark.slow
def test_files_without_the_group_get_it_on_load(post, tmp_path):
    tree = post.tree.copy(deep=True)
    del tree["log_likelihood"]
    tree.to_netcdf(tmp_path / "old.nc", engine="h5netcdf")  # as written before the group
    loaded = Posterior.load(tmp_path / "old.nc")
    xr.testing.assert_identical(
        loaded.tree["log_likelihood"].to_dataset(), post.tree["log_likelihood"].to_dataset()
    )


@pytest.mark.slow
def test_arviz_loo_reads_the_file_with_a_var_name(saved_posterior):
    import arviz_stats

    tree = xr.open_datatree(saved_posterior, engine="h5netcdf")
    with pytest.raises(TypeError, match="several log likelihood arrays"):
        arviz_stats.loo(tree)  # two variables: ArviZ has no default, name one
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # ArviZ's high-k warning (small fit)
        by_run = arviz_stats.loo(tree, var_name="run_loss")
        by_loss = arviz_stats.loo(tree, var_name="loss")
    assert by_run.n_data_points == 40 and by_loss.n_data_points == 160
    assert np.isfinite(by_run.elpd) and np.isfinite(by_loss.elpd)
    tree.close()


@pytest.mark.slow
def test_log_likelihood_rejects_runs_of_other_domains(post):
    from bayesmix.model.simulation import simulate

    other, _ = simulate(["Github", "Books3", "ArXiv"], n_runs=5, random_seed=1)
    with pytest.raises(errors.DomainNameError, match="other domains"):
        post.log_likelihood(other)


# ------------------------------------------------------------------------ PSIS-LOO table
@pytest.mark.slow
def test_compare_ranks_by_elpd_with_the_documented_columns(post, normal):
    import arviz_stats

    posts = {"default": post, "normal": normal}
    table = compare(posts)
    assert list(table.columns) == COMPARE_COLUMNS
    assert sorted(table["model"]) == ["default", "normal"]
    assert list(table["rank"]) == [0, 1]
    assert table["elpd_loo"].is_monotonic_decreasing
    assert table.loc[0, "elpd_diff"] == 0 and table.loc[0, "dse"] == 0
    best = table.loc[0, "elpd_loo"]
    np.testing.assert_allclose(table["elpd_diff"], table["elpd_loo"] - best, atol=1e-9)
    assert table["weight"].sum() == pytest.approx(1.0)
    assert dict(zip(table["model"], table["spec"])) == {"default": "default", "normal": "normal"}
    assert table.attrs["var_name"] == "run_loss" and table.attrs["n_units"] == 40
    for _, row in table.iterrows():  # the numbers are ArviZ's, on the stored group
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            ref = arviz_stats.loo(posts[row["model"]].tree, var_name="run_loss", pointwise=True)
        assert row["elpd_loo"] == pytest.approx(ref.elpd, rel=1e-12)
        assert row["se"] == pytest.approx(ref.se, rel=1e-12)
        k = np.asarray(ref.pareto_k)
        assert row["n_high_pareto_k"] == int((k > ref.good_k).sum())
        assert row["max_pareto_k"] == pytest.approx(k.max())
        assert ("Pareto k" in row["warning"]) == (row["n_high_pareto_k"] > 0)
        # 2 x 300 or 2 x 200 draws cannot pass the ESS gate, and the table says so
        assert "diagnostics" in row["warning"]
    by_loss = compare(posts, var_name="loss")
    assert by_loss.attrs["n_units"] == 160


@pytest.mark.slow
def test_compare_refuses_other_data_and_bad_arguments(post, normal):
    runs = post.fit_data()
    changed = with_fit_data(post, changed_loss(runs))
    with pytest.raises(
        IncomparableError,
        match="default and changed were fitted to different data .values of 'loss.Github'",
    ):
        compare({"default": post, "changed": changed})
    fewer = with_fit_data(post, runs.select(runs.runs[:30]))
    with pytest.raises(IncomparableError, match="runs differ .40 vs 30 runs"):
        compare({"normal": normal, "fewer": fewer})
    assert data_difference(runs, runs.select(reversed(runs.runs))) == (
        "the same runs in another order"
    )
    assert data_difference(runs, post.fit_data()) is None
    with pytest.raises(errors.BayesmixError, match="at least two"):
        compare({"default": post})
    with pytest.raises(errors.OptionError, match="unknown log-likelihood variable"):
        compare({"default": post, "normal": normal}, var_name="y")


# ------------------------------------------------------------------------ K-fold
def test_folds_are_a_seeded_partition_of_the_runs():
    ids = [f"r{i:02d}" for i in range(11)]
    folds = make_folds(ids, 3, random_seed=4)
    assert folds == make_folds(ids, 3, random_seed=4)
    assert folds != make_folds(ids, 3, random_seed=5)
    assert sorted(r for f in folds for r in f) == ids
    assert sorted(len(f) for f in folds) == [3, 4, 4]
    for bad in (1, 12):
        with pytest.raises(errors.OptionError, match=f"k={bad} is not a number of folds") as info:
            make_folds(ids, bad)
        assert info.value.param == "k"
    with pytest.warns(FutureWarning, match="`seed` is deprecated, use `random_seed`"):
        assert make_folds(ids, 3, seed=4) == folds


@pytest.mark.slow
def test_kfold_settings_are_checked_before_any_refit(post, normal):
    """compare_laws refuses a bad K, count or interval mass before PSIS-LOO or a refit, naming
    the Python parameter (the CLI shows its flag instead)."""
    posts = {"default": post, "normal": normal}
    for bad in (1, -2, 2.5, "5", True):
        with pytest.raises(errors.OptionError, match=r"kfold=.* is not 'auto', 0") as info:
            compare_laws(posts, kfold=bad)
        assert info.value.param == "kfold"
    with pytest.raises(errors.OptionError, match="draws=0 is not >= 1") as info:
        compare_laws(posts, kfold=2, draws=0)
    assert info.value.param == "draws"
    with pytest.raises(errors.OptionError, match="kfold=41 is more folds than runs"):
        compare_laws(posts, kfold=41)
    with pytest.raises(errors.BayesmixError, match=r"interval probability must be in \(0, 1\)"):
        kfold(posts, k=2, ci_prob=1.5)
    with pytest.raises(errors.OptionError, match="both `prob` and `ci_prob`"):
        kfold(posts, prob=0.9, ci_prob=0.9)


@pytest.mark.slow
def test_compare_laws_without_kfold_is_the_loo_table(post, normal):
    """kfold=0 never refits; "auto" refits only where a Pareto k is high."""
    posts = {"default": post, "normal": normal}
    result = compare_laws(posts, kfold=0)
    pd.testing.assert_frame_equal(result.table, compare(posts))
    assert result.kfold is None and result.k == 0 and not result.auto
    assert result.high_pareto_k == bool((result.loo["n_high_pareto_k"] > 0).any())


@pytest.mark.slow
def test_kfold_gives_finite_metrics_per_law_and_domain(post, normal):
    lines = []
    result = kfold({"default": post, "normal": normal}, log=lines.append, **KFOLD_KW)
    assert len(lines) == 2 * 2 * 2  # start and end line per fold and law
    s = result.summary
    assert list(s.columns) == [
        "model",
        "spec",
        "folds",
        "n_runs",
        "n_obs",
        "mae",
        "spearman",
        "coverage",
        "elpd_kfold",
        "se",
        "failed_fits",
    ]
    assert list(s["model"]) == ["default", "normal"] and (s["n_obs"] == 160).all()
    numbers = s[["mae", "spearman", "coverage", "elpd_kfold", "se"]].to_numpy()
    assert np.isfinite(numbers).all()
    # Losses span about a nat across mixtures, the noise sd is 0.02 nats: a working law has
    # an MAE near the noise (0.016 for Normal noise) and ranks mixtures almost perfectly.
    assert (s["mae"] < 0.05).all() and (s["spearman"] > 0.9).all()
    assert ((s["coverage"] > 0) & (s["coverage"] <= 1)).all()
    d = result.by_domain
    assert len(d) == 2 * 4 and np.isfinite(d[["mae", "spearman", "coverage"]].to_numpy()).all()
    # each run is held out exactly once per law; the per-domain lpd adds up to the total
    points = result.pointwise
    assert (points.groupby("model")["run"].nunique() == 40).all()
    assert sorted(r for f in result.folds for r in f) == sorted(post.fit_data().runs)
    per_obs = points.groupby("model")["lpd"].sum()
    np.testing.assert_allclose(d.groupby("model")["elpd_kfold"].sum(), per_obs, rtol=1e-12)
    assert (points["lower"] < points["mean"]).all() and (points["mean"] < points["upper"]).all()


@pytest.mark.slow
def test_kfold_of_a_specification_needs_runs(post):
    with pytest.raises(errors.BayesmixError, match="needs the runs"):
        kfold({"default": "default"}, k=2)
    with pytest.raises(errors.OptionError, match="k=41 is not a number of folds"):
        kfold({"default": post}, k=41)


# ------------------------------------------------------------------------ the command
@pytest.mark.slow
def test_cli_compare_with_kfold_writes_one_row_per_law(files, tmp_path, capsys):
    out = tmp_path / "table.csv"
    code = main(
        [
            "compare",
            str(files["default"]),
            str(files["normal"]),
            "--kfold",
            "2",
            "--draws",
            "100",
            "--tune",
            "100",
            "--chains",
            "1",
            "--seed",
            "1",
            "-o",
            str(out),
            "--quiet",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.err == ""  # --quiet: no progress lines
    text = captured.out
    assert "PSIS-LOO comparison of 2 posteriors" in text and "elpd_loo" in text
    assert "2-fold cross-validation by held-out runs" in text
    assert "per validation domain" in text and "Pile-CC" in text
    table = pd.read_csv(out)
    assert len(table) == 2
    assert set(table["model"]) == {str(files["default"]), str(files["normal"])}
    assert {
        *COMPARE_COLUMNS,
        "kfold_mae",
        "kfold_spearman",
        "kfold_coverage",
        "kfold_elpd_kfold",
    } <= set(table.columns)
    assert np.isfinite(table[["elpd_loo", "kfold_mae", "kfold_coverage"]].to_numpy()).all()


@pytest.mark.slow
def test_cli_compare_runs_kfold_where_pareto_k_is_high(files, capsys, monkeypatch):
    import bayesmix.inference.compare as library

    monkeypatch.setattr(library, "AUTO_KFOLD", 2)  # keep the automatic K-fold small
    code = main(
        [
            "compare",
            str(files["default"]),
            str(files["normal"]),
            "--draws",
            "50",
            "--tune",
            "50",
            "--chains",
            "1",
            "--quiet",
        ]
    )
    text = capsys.readouterr().out
    assert code == 0
    high = (
        compare({"a": Posterior.load(files["default"]), "b": Posterior.load(files["normal"])})[
            "n_high_pareto_k"
        ].sum()
        > 0
    )
    assert ("Pareto k is high: checking with 2-fold" in text) == high
    assert ("2-fold cross-validation by held-out runs" in text) == high
    code = main(["compare", str(files["default"]), str(files["normal"]), "--kfold", "0"])
    text = capsys.readouterr().out
    assert code == 0 and "cross-validation by held-out runs" not in text
    assert ("check with --kfold 2" in text) == high


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, message",
    [
        (["{default}"], "at least two posterior files"),
        (["{default}", "{default}"], "given twice"),
        (["{default}", "{default_dotted}"], "given twice"),  # one file spelled two ways
        (["{default}", "{normal}", "--kfold", "1"], "--kfold 1 is not 'auto', 0 (never)"),
        (["{default}", "{normal}", "--draws", "0"], "--draws 0 is not >= 1"),
        (["{default}", "missing.nc"], "missing.nc: file not found"),
        (["{default}", "{normal}", "-o", "table.txt"], "unknown output format"),
    ],
)
def test_cli_compare_bad_input_is_one_line(files, args, message, capsys):
    names = {k: str(v) for k, v in files.items()}
    names["default_dotted"] = str(Path(files["default"]).parent / "." / Path(files["default"]).name)
    argv = ["compare", *[a.format(**names) for a in args]]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bayesmix compare: error:") and message in err[0]


@pytest.mark.slow
def test_cli_refuses_posteriors_of_different_data(files):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bayesmix",
            "compare",
            str(files["default"]),
            str(files["normal"]),
            str(files["other"]),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert str(files["default"]) in lines[0] and str(files["other"]) in lines[0]
    assert "different data" in lines[0]
    assert done.stdout == ""


@pytest.mark.slow
def test_compare_refuses_a_posterior_whose_elpd_is_not_finite(post, normal):
    broken = post.tree.copy(deep=True)
    ll = broken["log_likelihood"]["run_loss"]
    broken["log_likelihood"]["run_loss"] = ll.where(ll["run"] != ll["run"][0])  # NaN for one run
    with pytest.raises(
        errors.BayesmixError, match="posterior nan: its PSIS-LOO elpd is not finite"
    ):
        compare({"nan": Posterior(broken), "normal": normal})
