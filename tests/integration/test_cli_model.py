"""``bayesmix fit / predict / diagnose`` end to end.

One CLI fit runs in a real subprocess (``cli_fit``: the entry point, a new process loading the
compiled model); predict, diagnose and bad input run in-process through the CLI's ``main``
(conftest.run_cli: exit code, stdout, stderr as a subprocess gives them), and the other
``fit`` options through ``main`` too, where the session's compiled model is reused.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import SIM_DOMAINS, run_cli

from bayesmix.cli import main
from bayesmix.inference.fitting import compiled_count
from bayesmix.model.simulation import simulate
from bayesmix.model.spec import load_spec
from bayesmix.posterior.diagnostics import Diagnostics
from bayesmix.posterior.posterior import Posterior

#: Every test here runs MCMC (or uses a fitted fixture): `make test-fast` skips them.
pytestmark = pytest.mark.slow


def bayesmix(*args) -> subprocess.CompletedProcess:
    return run_cli(*args)


def bayesmix_process(*args, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bayesmix", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_one_line_error(done: subprocess.CompletedProcess, *fragments: str) -> None:
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr and lines[0].startswith("bayesmix ")
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture(scope="module")
def files(simulated_fit, tmp_path_factory):
    """Run table, mixtures (CSV and JSON) and weights written as a user would."""
    d = tmp_path_factory.mktemp("cli")
    simulated_fit.runs.to_tidy().to_csv(d / "runs.csv", index=False)
    mix = pd.DataFrame(
        {
            "mixture": ["uniform", "code_heavy", "no_books"],
            "Github": [0.25, 0.7, 0.4],
            "Books3": [0.25, 0.1, 0.0],
            "Pile-CC": [0.25, 0.1, 0.3],
            "ArXiv": [0.25, 0.1, 0.3],
        }
    )
    mix.to_csv(d / "mixtures.csv", index=False)
    (d / "mixtures.json").write_text(
        json.dumps({row["mixture"]: {k: row[k] for k in SIM_DOMAINS} for _, row in mix.iterrows()})
    )
    (d / "weights.json").write_text(
        json.dumps({"Github": 1, "Books3": 1, "Pile-CC": 2, "ArXiv": 0, "Wikipedia_en": 5})
    )
    return d


@pytest.fixture(scope="module")
def cli_fit(files):
    """The suite's one CLI fit: 2 x 100 draws, which cannot pass the gate (ESS floor 200)."""
    out = files / "posterior.nc"
    done = bayesmix_process(
        "fit",
        files / "runs.csv",
        "-o",
        out,
        "--draws",
        100,
        "--tune",
        100,
        "--chains",
        2,
        "--seed",
        5,
        "--quiet",
    )
    return out, done


# ------------------------------------------------------------------------------ fit
def test_fit_saves_the_posterior_and_prints_a_summary(cli_fit, simulated_fit):
    out, done = cli_fit
    assert done.returncode == 0, done.stderr
    post = Posterior.load(out)
    assert post.n_samples == 200 and post.settings["seed"] == 5
    assert post.spec.name == "default"
    pd.testing.assert_frame_equal(post.fit_data().to_tidy(), simulated_fit.runs.to_tidy())
    text = done.stdout
    assert "model:       default" in text
    assert "runs used:   40 of 40 loaded, 4 training x 4 validation domains, 160 losses" in text
    assert post.diagnostics.table() in text  # the stored diagnostics table, verbatim
    assert f"saved:       {out}" in text
    assert "Traceback" not in done.stderr


def test_fit_failing_the_gate_warns_loudly_and_stores_the_report(cli_fit):
    out, done = cli_fit
    post = Posterior.load(out)
    assert not post.diagnostics.ok
    assert done.returncode == 0  # the posterior is saved; the warning is not an error
    assert f"WARNING: {post.diagnostics_warning}" in done.stderr
    assert "WARNING" not in done.stdout


def test_fit_in_process_selects_a_size_and_reuses_the_compiled_model(
    tmp_path, capsys, simulated_fit
):
    runs, _ = simulate(list(SIM_DOMAINS), n_runs=12, random_seed=3, sizes=[7e7, 1.6e8])
    runs.to_tidy().to_csv(tmp_path / "sized.csv", index=False)
    args = [
        "fit",
        str(tmp_path / "sized.csv"),
        "-o",
        str(tmp_path / "p.nc"),
        "--draws",
        "50",
        "--tune",
        "50",
        "--chains",
        "2",
        "--seed",
        "1",
        "--quiet",
    ]
    assert main(args) == 2  # two sizes and no --size: one line naming the way out
    err = capsys.readouterr().err
    assert "several model sizes (7e+07, 1.6e+08)" in err and "--size" in err
    compiled_before = compiled_count()
    assert main([*args, "--size", "160M"]) == 0
    captured = capsys.readouterr()
    assert "runs used:   12 of 24 loaded" in captured.out and "model size:  160M" in captured.out
    post = Posterior.load(tmp_path / "p.nc")
    assert set(post.fit_data().column("n_params")) == {1.6e8}
    assert compiled_count() == compiled_before  # same structure as the session's fixture
    assert main([*args, "--size", "1B", "--force"]) == 2  # p.nc exists now: --force
    assert "no runs of size 1B (sizes present: 70M, 160M)" in capsys.readouterr().err


def test_list_and_show_models(capsys, tmp_path):
    assert main(["fit", "--list-models"]) == 0
    out = capsys.readouterr().out
    for name in ("default", "normal", "noncentered", "logshare"):
        assert any(line.startswith(name + " ") for line in out.splitlines())
    laws = out.split("laws (")[1]
    for name in ("m4", "m4log"):
        assert any(line.startswith(name + " ") for line in laws.splitlines())
    assert main(["fit", "--show-model", "normal"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("model 'normal'") and "family=normal" in out
    assert "file: " in out and "normal.toml" in out
    # the TOML it prints is a complete specification: it loads back to the same model
    toml_text = out[out.index('name = "normal"') :]
    path = tmp_path / "copy.toml"
    path.write_text(toml_text)
    assert load_spec(path) == load_spec("normal")


# ------------------------------------------------------------------------------ predict
def test_predict_writes_the_interval_table(cli_fit, files):
    out, _ = cli_fit
    table_path = files / "intervals.csv"
    done = bayesmix(
        "predict",
        out,
        files / "mixtures.csv",
        "-o",
        table_path,
        "--prob",
        0.8,
        "--weights",
        files / "weights.json",
        "--weights-subset",
        "--seed",
        4,
    )
    assert done.returncode == 0, done.stderr
    table = pd.read_csv(table_path)
    assert list(table.columns) == ["mixture", "eval_domain", "mean", "median", "lower", "upper"]
    assert list(table["mixture"].unique()) == ["uniform", "code_heavy", "no_books"]
    assert list(table["eval_domain"][:5]) == [*SIM_DOMAINS, "overall"]
    # the same numbers as the library (CSV keeps full precision)
    post = Posterior.load(out)
    mixtures = pd.read_csv(files / "mixtures.csv")
    expected = post.intervals(
        mixtures, 0.8, weights=files / "weights.json", allow_subset=True, random_seed=4
    )
    np.testing.assert_allclose(
        table[["mean", "median", "lower", "upper"]].to_numpy(),
        expected[["mean", "median", "lower", "upper"]].to_numpy(),
        rtol=1e-12,
    )
    # printed readably, and the failed gate announced on stderr
    assert "80% equal-tailed intervals of the posterior predictive loss" in done.stdout
    assert "code_heavy" in done.stdout and "overall" in done.stdout
    assert f"WARNING: {post.diagnostics_warning}" in done.stderr


def test_predict_json_output_and_mean_kind(cli_fit, files):
    out, _ = cli_fit
    done = bayesmix(
        "predict", out, files / "mixtures.json", "-o", files / "iv.json", "--kind", "mean"
    )
    assert done.returncode == 0, done.stderr
    rows = json.loads((files / "iv.json").read_text())
    assert len(rows) == 3 * len(SIM_DOMAINS)
    assert set(rows[0]) == {"mixture", "eval_domain", "mean", "median", "lower", "upper"}
    expected = Posterior.load(out).intervals(pd.read_csv(files / "mixtures.csv"), 0.9, kind="mean")
    np.testing.assert_allclose([r["upper"] for r in rows], expected["upper"], rtol=1e-12)
    assert "posterior mean loss" in done.stdout


# ------------------------------------------------------------------------------ diagnose
def test_diagnose_exit_status_follows_the_gate(cli_fit, simulated_fit, tmp_path):
    out, _ = cli_fit
    failed = bayesmix("diagnose", out)
    assert failed.returncode == 1, failed.stderr
    post = Posterior.load(out)
    assert post.diagnostics.table() in failed.stdout
    for name in (
        "m[Github]",
        "rho[ArXiv]",
        "t[Books3, Pile-CC]",
        "sigma[Github]",
        "c[Books3]",
        "k[ArXiv]",
    ):
        assert name in failed.stdout
    assert "WARNING" in failed.stderr
    # A posterior whose stored report passed: the gate's figures are replaced by passing ones
    # (none of the suite's small fits passes it), the draws are real.
    tree = simulated_fit.posterior.tree.copy()
    d = simulated_fit.posterior.diagnostics
    passing = Diagnostics(
        chains=d.chains,
        draws=d.draws,
        divergences=0,
        treedepth_hits=0,
        min_bfmi=0.9,
        max_rhat=1.001,
        min_ess_bulk=900.0,
        min_ess_tail=800.0,
    )
    tree.attrs["bayesmix_diagnostics"] = passing.to_json()
    Posterior(tree).save(tmp_path / "passed.nc")
    passed = bayesmix("diagnose", tmp_path / "passed.nc", "--json")
    assert passed.returncode == 0, passed.stderr
    report = json.loads(passed.stdout)
    assert report["ok"] is True and report["warning"] is None
    names = [row["parameter"] for row in report["summary"]]
    assert "m[Pile-CC]" in names and "t[ArXiv, Github]" in names
    row = next(r for r in report["summary"] if r["parameter"] == "m[Pile-CC]")
    assert row["mean"] == pytest.approx(
        float(simulated_fit.posterior.tree["posterior"]["m"].sel(eval_domain="Pile-CC").mean())
    )
    assert {"sd", "ess_bulk", "r_hat"} <= set(row)
    assert passed.stderr == ""


# ------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "case",
    [
        "missing posterior",
        "not a posterior",
        "unknown domain",
        "bad extension",
        "missing runs",
        "bad model",
    ],
)
def test_bad_input_is_one_line_and_exit_2(case, cli_fit, files):
    out, _ = cli_fit
    bad_mix = files / "bad_mixtures.csv"
    bad_mix.write_text("mixture,Github,Books3,PileCC,ArXiv\nm1,0.25,0.25,0.25,0.25\n")
    args, fragments = {
        "missing posterior": (
            ["predict", files / "nope.nc", files / "mixtures.csv"],
            ["nope.nc", "file not found"],
        ),
        "not a posterior": (["diagnose", files / "runs.csv"], ["runs.csv", "NetCDF"]),
        "unknown domain": (
            ["predict", out, bad_mix],
            ["bad_mixtures.csv", "'PileCC'", "did you mean 'Pile-CC'"],
        ),
        "bad extension": (
            ["predict", out, files / "mixtures.csv", "-o", files / "x.txt"],
            ["x.txt", ".csv or .json"],
        ),
        "missing runs": (
            ["fit", files / "gone.csv", "-o", files / "p.nc"],
            ["gone.csv", "file not found"],
        ),
        "bad model": (
            ["fit", files / "runs.csv", "-o", files / "p.nc", "--model", "nope"],
            ["unknown model 'nope'", "default"],
        ),
    }[case]
    done = bayesmix(*args)
    assert_one_line_error(done, *fragments)
    assert not (files / "x.txt").exists() and not (files / "p.nc").exists()


def test_bad_options_in_process(cli_fit, files, capsys):
    out, _ = cli_fit
    for args, fragment in (
        (
            ["predict", str(out), str(files / "mixtures.csv"), "--prob", "1.5"],
            "--prob must be between 0 and 1",
        ),
        (
            ["predict", str(out), str(files / "mixtures.csv"), "--weights-subset"],
            "--weights-subset needs --weights",
        ),
        (
            [
                "predict",
                str(out),
                str(files / "mixtures.csv"),
                "--weights",
                str(files / "weights.json"),
            ],
            "'Wikipedia_en'",
        ),
        (["fit", str(files / "runs.csv")], "no output file"),
        (["fit", "-o", str(files / "p.nc")], "no run files"),
        (["fit", str(files / "runs.csv"), "-o", str(files)], "is a directory"),
        (
            ["fit", str(files / "runs.csv"), "-o", str(files / "p.nc"), "--size", "huge"],
            "not a model size",
        ),
        (
            ["fit", str(files / "runs.csv"), "-o", str(files / "p.nc"), "--size", "70M"],
            "no model size",
        ),
    ):
        assert main(args) == 2, args
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and fragment in err, (args, err)
