"""Issue 12: hostile inputs and faults, one test per item (named after it), plus property-based
tests (hypothesis) of the loaders, ``validate`` and the constrained optimiser.

No MCMC here: posteriors are assembled from draws around a simulated law
(:meth:`Posterior.from_fit`), so the whole file runs in seconds. CLI tests call
``bayesmix.cli.main(argv)`` and check: exit status 2, one line on stderr, no traceback, and the
input files byte for byte unchanged.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import stat
import string
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from conftest import m4_posterior
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bayesmix import errors
from bayesmix.cli import main
from bayesmix.data.constraints import Constraints
from bayesmix.data.loaders import load
from bayesmix.data.table import MAX_LOSS, RunTable
from bayesmix.decisions.draws import LawDraws
from bayesmix.decisions.optimize import minimize_objective
from bayesmix.model.simulation import simulate
from bayesmix.posterior.posterior import Posterior

DOMAINS = ("web", "code", "books")


# ---------------------------------------------------------------------------------- helpers
def digest(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_one_line_error(code: int, err: str, *fragments: str) -> str:
    """Exit 2, exactly one line on stderr, no traceback, every fragment in it."""
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


def fake_posterior(n_runs: int = 12, seed: int = 3, chains: int = 2, draws: int = 60):
    """A default-model (M4) Posterior whose draws scatter around a simulated law, with the
    simulated runs as its fit data: every reader works on it, and no sampler runs."""
    runs, truth = simulate(list(DOMAINS), n_runs=n_runs, random_seed=seed)
    rng = np.random.default_rng(seed)
    k, m = len(DOMAINS), len(DOMAINS)
    shape = (chains, draws)
    t = truth["t"][None, None] + rng.normal(0, 0.01, shape + (k, m))
    t -= t.mean(-1, keepdims=True)  # rows sum to zero, like the fitted law's
    level = truth["m"] * (1 + rng.normal(0, 0.005, shape + (k,)))
    rho = np.clip(truth["rho"] + rng.normal(0, 0.01, shape + (k,)), 0.05, 0.95)
    return m4_posterior(level, rho, t, runs, sigma=0.02, train=DOMAINS, evals=DOMAINS), runs


@pytest.fixture(scope="module")
def posterior_files(tmp_path_factory):
    """A saved posterior, its runs CSV, mixtures CSV/JSON and a weights file."""
    d = tmp_path_factory.mktemp("hostile")
    post, runs = fake_posterior()
    post.save(d / "post.nc")
    runs.to_tidy().to_csv(d / "runs.csv", index=False)
    mixtures = pd.DataFrame(
        {"mixture": ["a", "b"], "web": [0.5, 0.2], "code": [0.3, 0.3], "books": [0.2, 0.5]}
    )
    mixtures.to_csv(d / "mixtures.csv", index=False)
    (d / "weights.json").write_text(json.dumps({"web": 0.5, "code": 0.3, "books": 0.2}))
    return d


def write_tidy(path: Path, rows: list[str], header: str = "run,mix.a,mix.b,loss.a,loss.b"):
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def ye_line(run: str, step, domain: str, loss) -> str:
    return (
        f"ckpts/Pile100B//{run}/{step}\tdata/pythia-pile.valid.domains//"
        f"pythia-pile.valid.{domain}.bin\t{loss}"
    )


# ---------------------------------------------------------------------------------- losses
def test_loss_of_1e308_is_refused_by_validate_fit_and_every_loader(tmp_path, capsys):
    runs = write_tidy(tmp_path / "runs.csv", ["r1,0.5,0.5,2.0,1e308", "r2,0.3,0.7,2.1,2.2"])
    before = digest(runs)
    for argv in (["validate", runs], ["fit", runs, "-o", tmp_path / "p.nc"]):
        code, _, err = cli(capsys, *argv)
        assert_one_line_error(
            code, err, "runs.csv", "row 2", "column 'loss.b'", "1e+308", "--max-loss"
        )
    assert digest(runs) == before and not (tmp_path / "p.nc").exists()
    # RegMix pair: the loss file, its row and its own column name
    (tmp_path / "rm").mkdir()
    (tmp_path / "rm" / "train_mixture_1m.csv").write_text("index,train_a,train_b\n1,0.5,0.5\n")
    (tmp_path / "rm" / "train_pile_loss_1m.csv").write_text(
        "index,metric/a_val_loss,metric/b_val_loss\n1,2.0,1e308\n"
    )
    with pytest.raises(
        errors.ImplausibleLossError,
        match=r"train_pile_loss_1m.csv, row 2.*"
        r"'metric/b_val_loss'",
    ):
        load(tmp_path / "rm")
    # Ye et al. logs: the line of the loss
    ye = tmp_path / "70M.txt"
    ye.write_text(
        ye_line("70M_1-0.2-0.2-0.2-0.2-0.2", 1000, "Github", 2.0)
        + "\n"
        + ye_line("70M_1-0.2-0.2-0.2-0.2-0.2", 1000, "ArXiv", 1e308)
        + "\n"
    )
    with pytest.raises(errors.ImplausibleLossError, match="70M.txt, row 2, column 'loss'"):
        load(ye)
    # the bound is the user's to raise (within a sane limit), and a raised bound is honoured
    high = write_tidy(tmp_path / "high.csv", ["r1,0.5,0.5,2.0,150", "r2,0.3,0.7,2.1,2.2"])
    with pytest.raises(errors.ImplausibleLossError, match=f"maximum of {MAX_LOSS:g}"):
        load(high)
    assert load(high, max_loss=200).n_runs == 2
    assert cli(capsys, "validate", high, "--max-loss", "200")[0] == 0
    for bad in ("inf", "nan", "0", "-1", "1e309"):
        code, _, err = cli(capsys, "validate", high, "--max-loss", bad)
        assert_one_line_error(code, err, "--max-loss")


def test_nan_cells_are_missing_and_inf_cells_are_errors_in_every_loader(tmp_path):
    # tidy CSV: empty and nan (any spelling) are missing; inf and -inf are errors
    ok = write_tidy(
        tmp_path / "ok.csv",
        ["r1,0.5,0.5,2.0,", "r2,0.3,0.7,nan,2.2", "r3,0.2,0.8,NaN,2.4", "r4,0.1,0.9,2.5,NA"],
    )
    assert load(ok).summary()["missing_losses"] == 4
    for cell in ("inf", "-inf", "Infinity"):
        bad = write_tidy(tmp_path / "bad.csv", ["r1,0.5,0.5,2.0,2.1", f"r2,0.3,0.7,{cell},2.2"])
        with pytest.raises(errors.NonFiniteLossError, match="row 3.*'loss.a'"):
            load(bad)
    # Parquet (a DataFrame's NaN and inf)
    frame = pd.DataFrame(
        {
            "run": ["r1", "r2"],
            "mix.a": [0.5, 0.3],
            "mix.b": [0.5, 0.7],
            "loss.a": [2.0, np.nan],
            "loss.b": [2.1, 2.2],
        }
    )
    frame.to_parquet(tmp_path / "ok.parquet")
    assert load(tmp_path / "ok.parquet").summary()["missing_losses"] == 1
    frame.loc[1, "loss.a"] = np.inf
    frame.to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(errors.NonFiniteLossError):
        load(tmp_path / "bad.parquet")
    # Ye et al.: a nan line is a missing loss (noted), an inf line an error
    run = "70M_1-0.2-0.2-0.2-0.2-0.2"
    ye = tmp_path / "70M.txt"
    ye.write_text(
        "\n".join(
            [
                ye_line(run, 1000, "Github", 2.0),
                ye_line(run, 1000, "ArXiv", "nan"),
                ye_line(run, 2000, "Github", 1.9),
                ye_line(run, 2000, "ArXiv", 2.4),
            ]
        )
        + "\n"
    )
    notes: list[str] = []
    table = load(ye, report=notes)
    assert table.summary()["missing_losses"] == 1
    assert any("nan loss read as missing" in n for n in notes)
    ye.write_text(
        ye_line(run, 1000, "Github", 2.0) + "\n" + ye_line(run, 1000, "ArXiv", "inf") + "\n"
    )
    with pytest.raises(errors.NonFiniteLossError, match="row 2"):
        load(ye)


def test_validate_tolerance_nan_negative_or_inf_is_refused(tmp_path, capsys):
    runs = write_tidy(tmp_path / "runs.csv", ["r1,0.9,0.6,2.0,2.1"])  # sums to 1.5
    before = digest(runs)
    for value in ("nan", "-0.1", "inf"):
        code, _, err = cli(capsys, "validate", runs, "--tolerance", value)
        assert_one_line_error(code, err, "--tolerance", "finite number >= 0")
    code, _, err = cli(capsys, "validate", runs)  # and the 1.5 sum is still caught
    assert_one_line_error(code, err, "sum to 1.5")
    with pytest.raises(errors.OptionError):
        load(runs, tolerance=float("nan"))
    with pytest.raises(errors.OptionError):
        RunTable.from_frame(pd.read_csv(runs), tolerance=-1.0)
    assert digest(runs) == before


# ---------------------------------------------------------------------------------- outputs
def test_fit_output_onto_its_input_is_refused(tmp_path, capsys):
    runs = write_tidy(tmp_path / "in.csv", ["r1,0.5,0.5,2.0,2.1", "r2,0.3,0.7,2.1,2.2"])
    before = digest(runs)
    os.symlink(runs, tmp_path / "link.nc")
    os.link(runs, tmp_path / "hard.nc")
    for out in (runs, tmp_path / "link.nc", tmp_path / "hard.nc"):
        code, _, err = cli(capsys, "fit", runs, "-o", out, "--force")  # --force never helps
        assert_one_line_error(code, err, "would overwrite input")
    # a run folder given as input: no output inside it either
    code, _, err = cli(capsys, "fit", tmp_path, "-o", tmp_path / "p.nc")
    assert_one_line_error(code, err, "would overwrite input")
    assert digest(runs) == before and not (tmp_path / "p.nc").exists()


def test_predict_output_onto_an_input_is_refused(posterior_files, capsys):
    d = posterior_files
    for target in ("mixtures.csv", "weights.json"):
        hashes = {p: digest(p) for p in d.iterdir()}
        code, _, err = cli(
            capsys,
            "predict",
            d / "post.nc",
            d / "mixtures.csv",
            "--weights",
            d / "weights.json",
            "-o",
            d / target,
            "--force",
        )
        assert_one_line_error(code, err, "would overwrite input", target)
        assert {p: digest(p) for p in d.iterdir()} == hashes


def test_existing_results_are_not_overwritten_without_force(posterior_files, tmp_path, capsys):
    d = posterior_files
    out = tmp_path / "intervals.csv"
    out.write_text("an earlier result\n")
    before = digest(out)
    commands = [
        ["predict", d / "post.nc", d / "mixtures.csv", "-o", out],
        ["optimize", d / "post.nc", "--quiet", "-o", out],
        ["fit", d / "runs.csv", "-o", out],
        ["pipeline", d / "runs.csv", "--n-params", "1B", "--steps", "10", "-o", out],
        ["compare", d / "post.nc", d / "post.nc", "-o", out],
        [
            "critical-share",
            d / "post.nc",
            "--original",
            "web",
            "--new",
            "code",
            "--start-loss",
            "3",
            "-o",
            out,
        ],
    ]
    for argv in commands:
        code, _, err = cli(capsys, *argv)
        assert_one_line_error(code, err, "already exists", "--force")
        assert digest(out) == before
    code, _, err = cli(capsys, "predict", d / "post.nc", d / "mixtures.csv", "-o", out, "--force")
    assert code == 0, err
    assert pd.read_csv(out).columns[0] == "mixture"


@pytest.fixture
def unwritable_dir(tmp_path, monkeypatch):
    """A folder this process cannot create files in (chmod 555; as root, where permissions do
    not bind, the folder's write probe is made to fail the way the kernel would)."""
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    if os.geteuid() == 0:
        import bayesmix.io as bio

        real = bio._probe
        monkeypatch.setattr(
            bio, "_probe", lambda f: "Permission denied" if Path(f) == folder else real(f)
        )
    yield folder
    folder.chmod(0o755)


def test_output_into_an_unwritable_folder_fails_before_computing(
    posterior_files, unwritable_dir, capsys, monkeypatch
):
    d = posterior_files
    import bayesmix.decisions.decision as report

    def never(*args, **kwargs):
        raise AssertionError("computed before checking the output folder")

    monkeypatch.setattr(report, "decide", never)
    monkeypatch.setattr(Posterior, "intervals", never)
    for argv in (
        ["optimize", d / "post.nc", "--quiet", "-o", unwritable_dir / "r.json"],
        ["predict", d / "post.nc", d / "mixtures.csv", "-o", unwritable_dir / "i.csv"],
    ):
        code, _, err = cli(capsys, *argv)
        assert_one_line_error(code, err, "cannot write in folder", "Permission denied")
    assert list(unwritable_dir.iterdir()) == []


def test_write_errors_are_one_line_and_leave_the_old_file(
    posterior_files, tmp_path, capsys, monkeypatch
):
    d = posterior_files
    out = tmp_path / "intervals.csv"
    out.write_text("an earlier result\n")
    before = digest(out)
    import bayesmix.io as bio

    def full_disk(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(bio.os, "replace", full_disk)
    code, _, err = cli(capsys, "predict", d / "post.nc", d / "mixtures.csv", "-o", out, "--force")
    assert_one_line_error(code, err, "intervals.csv", "No space left on device")
    assert digest(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["intervals.csv"]  # no temporary left


def test_one_atomic_writer_gives_files_the_umask_mode(tmp_path):
    from bayesmix.cli._output import write_table
    from bayesmix.decisions.decision import decide
    from bayesmix.io import atomic_write_text

    post, _ = fake_posterior()
    old = os.umask(0o027)
    try:
        paths = [
            atomic_write_text(tmp_path / "a.txt", "x"),
            write_table(pd.DataFrame({"a": [1]}), tmp_path / "t.csv"),
            post.save(tmp_path / "p.nc"),
            decide(post, per_draw=False).save(tmp_path / "r.json"),
        ]
    finally:
        os.umask(old)
    for path in paths:
        assert stat.S_IMODE(path.stat().st_mode) == 0o640, path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "p.nc", "r.json", "t.csv"]


# ---------------------------------------------------------------------------------- weights
def test_predict_huge_weights_are_normalised_without_overflow(posterior_files, capsys):
    d = posterior_files
    huge = d / "huge.json"
    huge.write_text(json.dumps({"web": 1e308, "code": 6e307, "books": 4e307}))
    code, out_huge, err = cli(
        capsys, "predict", d / "post.nc", d / "mixtures.csv", "--weights", huge, "--kind", "mean"
    )
    assert code == 0, err
    code, out_plain, _ = cli(
        capsys,
        "predict",
        d / "post.nc",
        d / "mixtures.csv",
        "--weights",
        d / "weights.json",
        "--kind",
        "mean",
    )
    overall = [ln for ln in out_huge.splitlines() if "overall" in ln]
    assert len(overall) == 2 and "0.0000" not in " ".join(overall)
    assert overall == [ln for ln in out_plain.splitlines() if "overall" in ln]


def test_weight_keys_differing_only_in_case_are_an_error_naming_both(posterior_files, capsys):
    d = posterior_files
    bad = d / "case.json"
    bad.write_text(json.dumps({"web": 0.3, "WEB": 0.3, "code": 0.2, "books": 0.2}))
    for argv in (
        ["predict", d / "post.nc", d / "mixtures.csv", "--weights", bad],
        ["optimize", d / "post.nc", "--quiet", "--weights", bad],
    ):
        before = digest(bad)
        code, _, err = cli(capsys, *argv)
        assert_one_line_error(code, err, "'web'", "'WEB'", "case or punctuation")
        assert digest(bad) == before


def test_predict_json_with_missing_domains_is_refused_like_csv(posterior_files, capsys):
    d = posterior_files
    js = d / "partial.json"
    js.write_text(json.dumps({"a": {"web": 0.5, "code": 0.5}}))
    csv = d / "partial.csv"
    csv.write_text("mixture,web,code,books\na,0.5,0.5,\n")
    for path in (js, csv):
        before = digest(path)
        code, _, err = cli(capsys, "predict", d / "post.nc", path)
        line = assert_one_line_error(code, err, path.name, "books")
        assert "missing" in line or "no share" in line
        assert digest(path) == before


# ---------------------------------------------------------------------------------- names
@pytest.mark.parametrize("name", ["bo,oks", "bo=oks"])
def test_domain_names_with_comma_or_equals_are_refused_by_validate(tmp_path, capsys, name):
    runs = tmp_path / "runs.csv"
    pd.DataFrame({"run": ["r1"], f"mix.{name}": [0.5], "mix.web": [0.5], "loss.web": [2.0]}).to_csv(
        runs, index=False
    )
    before = digest(runs)
    code, _, err = cli(capsys, "validate", runs)
    assert_one_line_error(code, err, f"column 'mix.{name}'", repr(name[2]))
    assert digest(runs) == before


# ---------------------------------------------------------------------------------- posteriors
def damaged_copy(src: Path, dst: Path, change) -> Path:
    tree = xr.open_datatree(src, engine="h5netcdf").load()
    change(tree)
    tree.to_netcdf(dst, engine="h5netcdf")
    return dst


def test_damaged_posteriors_are_named_errors(posterior_files, tmp_path, capsys):
    d = posterior_files
    src = d / "post.nc"

    def wrong_type(tree):
        tree.attrs["bayesmix_diagnostics"] = 5

    def not_json(tree):
        tree.attrs["bayesmix_diagnostics"] = "{broken"

    def deleted(tree):
        tree["posterior"] = xr.DataTree(tree["posterior"].to_dataset().drop_vars("t"))

    def no_fit_data(tree):
        del tree["fit_data"]

    cases = {
        "wrong_type.nc": (wrong_type, "'bayesmix_diagnostics'"),
        "not_json.nc": (not_json, "'bayesmix_diagnostics' is not valid JSON"),
        "deleted.nc": (deleted, "variable 't' of group 'posterior' is missing"),
        "no_fit_data.nc": (no_fit_data, "group 'fit_data' is missing"),
    }
    for name, (change, fragment) in cases.items():
        path = damaged_copy(src, tmp_path / name, change)
        before = digest(path)
        for command in ("diagnose", "predict"):
            argv = [command, path] + ([d / "mixtures.csv"] if command == "predict" else [])
            code, _, err = cli(capsys, *argv)
            assert_one_line_error(code, err, name, "damaged", fragment)
        assert digest(path) == before


def test_posterior_with_nan_draws_fails_diagnose_and_predict(posterior_files, tmp_path, capsys):
    d = posterior_files

    def poison(tree):
        ds = tree["posterior"].to_dataset()
        m = ds["m"].values.copy()
        m[0, :5, 0] = np.nan
        tree["posterior"] = xr.DataTree(ds.assign(m=(ds["m"].dims, m)))

    path = damaged_copy(d / "post.nc", tmp_path / "nan.nc", poison)
    before = digest(path)
    code, out, err = cli(capsys, "diagnose", path)
    assert code == 1  # fails loudly, like a failed gate
    assert "WARNING" in err and "m (5 values) are NaN or inf" in err
    code, out, err = cli(capsys, "diagnose", path, "--json")
    assert code == 1 and json.loads(out)["ok"] is False
    for argv in (["predict", path, d / "mixtures.csv"], ["optimize", path, "--quiet"]):
        code, _, err = cli(capsys, *argv)
        assert_one_line_error(code, err, "nan.nc", "m (5 values) are NaN or inf")
    assert digest(path) == before


def test_byte_flipped_posterior_says_damaged_and_names_the_file(posterior_files, tmp_path, capsys):
    data = bytearray((posterior_files / "post.nc").read_bytes())
    for offset in (0, 64):  # the signature, then the superblock's addresses
        flipped = bytearray(data)
        for i in range(offset, offset + 24):
            flipped[i] ^= 0xFF
        path = tmp_path / f"flipped{offset}.nc"
        path.write_bytes(bytes(flipped))
        code, _, err = cli(capsys, "diagnose", path)
        line = assert_one_line_error(code, err, f"flipped{offset}.nc", "cannot read NetCDF")
        assert "damaged" in line
        assert "AttributeError" not in line or "the file is damaged" in line


def test_future_version_posterior_asks_for_an_upgrade(posterior_files, tmp_path, capsys):
    def future(tree):
        tree.attrs["bayesmix_format"] = "bayesmix-posterior/7"

    path = damaged_copy(posterior_files / "post.nc", tmp_path / "future.nc", future)
    code, _, err = cli(capsys, "diagnose", path)
    line = assert_one_line_error(
        code, err, "future.nc", "written by a newer bayesmix format bayesmix-posterior/7", "upgrade"
    )
    assert "missing format attribute" not in line


# ---------------------------------------------------------------------------------- fit, predict
def test_fit_on_too_few_runs_says_how_many_the_law_needs(tmp_path, capsys):
    runs = write_tidy(tmp_path / "one.csv", ["r1,0.5,0.5,2.0,2.1"])
    before = digest(runs)
    code, _, err = cli(capsys, "fit", runs, "-o", tmp_path / "p.nc", "--quiet")
    assert_one_line_error(code, err, "law 'm4' needs at least 4 runs", "1 given")
    assert digest(runs) == before and not (tmp_path / "p.nc").exists()


def test_predict_on_many_mixtures_is_chunked_with_identical_results(monkeypatch):
    import bayesmix.posterior.posterior as posterior_module

    post, _ = fake_posterior()
    mix = np.random.default_rng(0).dirichlet(np.ones(3), 40)
    weights = {"web": 1.0, "code": 1.0, "books": 2.0}
    whole = post.intervals(mix, weights=weights, random_seed=5)

    def same(table):
        # same noise draws per mixture; the law's matrix products may round differently for
        # another batch shape (last bits only), so the printed table is identical
        assert table[["mixture", "eval_domain"]].equals(whole[["mixture", "eval_domain"]])
        np.testing.assert_allclose(
            table.iloc[:, 2:].to_numpy(), whole.iloc[:, 2:].to_numpy(), rtol=1e-13, atol=0
        )
        assert table.to_csv(float_format="%.6f") == whole.to_csv(float_format="%.6f")

    for size in (1, 7, 40):
        same(post.intervals(mix, weights=weights, random_seed=5, chunk_size=size))
    # the default chunk follows CHUNK_BYTES: a tiny budget gives one mixture per chunk
    monkeypatch.setattr(posterior_module, "CHUNK_BYTES", 1)
    same(post.intervals(mix, weights=weights, random_seed=5))
    # and the unchunked Prediction has the same draws
    pred = post.predict(mix, random_seed=5).intervals(0.9, kind="predictive")
    np.testing.assert_allclose(
        pred["median"].to_numpy(),
        whole[whole["eval_domain"] != "overall"]["median"].to_numpy(),
        rtol=1e-13,
    )


# ---------------------------------------------------------------------------------- properties
NAME = st.text(alphabet=string.ascii_letters + string.digits + "_-.,= /é", min_size=0, max_size=6)
CELL = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-5, 5).map(str),
    st.sampled_from(
        ["", "nan", "inf", "-inf", "NA", "x", "1e308", "0.5", "1,5", '"', "é", "0x10", " 2 "]
    ),
)
ENCODING = st.sampled_from(["utf-8", "utf-8-sig", "latin-1", "utf-16", "cp1252"])


@st.composite
def tables(draw):
    """A CSV text that looks more or less like a tidy run table."""
    n_mix = draw(st.integers(0, 3))
    n_loss = draw(st.integers(0, 3))
    header = (
        (["run"] if draw(st.booleans()) or n_mix == 0 else ["id"])
        + [f"mix.{draw(NAME)}" for _ in range(n_mix)]
        + [f"loss.{draw(NAME)}" for _ in range(n_loss)]
        + draw(st.lists(st.sampled_from(["step", "n_params", "tokens", "extra"]), max_size=2))
    )
    rows = draw(
        st.lists(st.lists(CELL, min_size=len(header), max_size=len(header) + 1), max_size=5)
    )
    lines = [",".join(header)] + [",".join(str(c) for c in row) for row in rows]
    return "\n".join(lines) + draw(st.sampled_from(["\n", "", "\r\n"]))


@st.composite
def near_valid_tables(draw):
    """A valid tidy table (2-3 runs, domains named from NAME) with a few cells, a name or a
    line ending spoilt: reaches the checks behind the parser."""
    names = draw(st.lists(NAME, min_size=2, max_size=2))
    header = ["run", *[f"mix.{n}" for n in names], *[f"loss.{n}" for n in names]]
    if draw(st.booleans()):
        header.insert(1, draw(st.sampled_from(["step", "n_params", "tokens"])))
    rows = []
    for i in range(draw(st.integers(1, 3))):
        share = draw(st.floats(0, 1))
        cells = {
            "run": f"r{i}",
            "step": str(1000 * (i + 1)),
            "n_params": "7e7",
            "tokens": str(1e9 * (i + 1)),
            f"mix.{names[0]}": repr(share),
            f"mix.{names[1]}": repr(1 - share),
        }
        row = [cells.get(c, repr(draw(st.floats(0.5, 5)))) for c in header]
        rows.append(row)
    for _ in range(draw(st.integers(0, 2))):  # spoil a cell
        row = draw(st.integers(0, len(rows) - 1))
        col = draw(st.integers(0, len(header) - 1))
        rows[row][col] = str(draw(CELL))
    lines = [",".join(header)] + [",".join(r) for r in rows]
    return "\n".join(lines) + "\n"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.one_of(tables(), near_valid_tables()), encoding=ENCODING)
def test_random_tables_through_loaders_and_validate_raise_only_bayesmix_errors(text, encoding):
    try:
        data = text.encode(encoding)
    except UnicodeEncodeError:
        data = text.encode("utf-8")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "runs.csv"
        path.write_bytes(data)
        try:
            table = load(path)
        except errors.BayesmixError as err:
            assert "\n" not in str(err)
        else:  # what loads obeys the rules
            loss = table.losses.to_numpy(dtype=float)
            assert np.all(np.isnan(loss) | ((loss > 0) & (loss <= MAX_LOSS)))
            sums = table.mixtures.to_numpy(dtype=float).sum(axis=1)
            assert np.all(np.abs(sums - 1) <= 0.01 + 1e-12)
        try:
            code = main(["validate", str(path), "--json"])
        except SystemExit as exit_:  # argparse only, never for a file's content
            pytest.fail(f"validate exited {exit_.code}")
        assert code in (0, 2)


@settings(max_examples=60, deadline=None)
@given(
    frame=st.lists(
        st.tuples(st.text(max_size=3), st.floats(), st.floats(), st.floats()),
        min_size=0,
        max_size=4,
    ),
    fmt=st.sampled_from(["parquet", "regmix", "ye"]),
)
def test_random_parquet_regmix_and_ye_files_raise_only_bayesmix_errors(frame, fmt):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if fmt == "parquet":
            df = pd.DataFrame(frame, columns=["run", "mix.a", "mix.b", "loss.a"])
            df.to_parquet(tmp / "runs.parquet")
            paths = [tmp / "runs.parquet"]
        elif fmt == "regmix":
            mix = "index,train_a,train_b\n" + "".join(f"{r},{a},{b}\n" for r, a, b, _ in frame)
            loss = "index,metric/a_val_loss\n" + "".join(f"{r},{c}\n" for r, _, _, c in frame)
            (tmp / "train_mixture_1m.csv").write_text(mix)
            (tmp / "train_pile_loss_1m.csv").write_text(loss)
            paths = [tmp / "train_mixture_1m.csv", tmp / "train_pile_loss_1m.csv"]
        else:
            lines = [
                ye_line(f"70M_{i}-{abs(a):g}-{abs(b):g}", 1000, name or "x", c)
                for i, (name, a, b, c) in enumerate(frame)
            ]
            (tmp / "70M.txt").write_text("\n".join(lines) + "\n")
            paths = [tmp / "70M.txt"]
        try:
            load(paths)
        except errors.BayesmixError as err:
            assert "\n" not in str(err)


SHARE = st.one_of(st.floats(-0.2, 1.2), st.sampled_from([0.0, 1.0, float("nan")]))


@settings(max_examples=60, deadline=None)
@given(
    mins=st.dictionaries(st.sampled_from(DOMAINS), SHARE, max_size=3),
    maxs=st.dictionaries(st.sampled_from(DOMAINS), SHARE, max_size=3),
    fixed=st.dictionaries(st.sampled_from(DOMAINS), SHARE, max_size=2),
    tokens=st.dictionaries(
        st.sampled_from(DOMAINS), st.one_of(st.floats(0, 1e12), st.just(float("nan"))), max_size=2
    ),
    objective=st.sampled_from(["mean", "quantile:0.9", "cvar:0.8"]),
)
def test_random_constraints_give_a_feasible_mixture_or_a_named_conflict(
    mins, maxs, fixed, tokens, objective
):
    draws = _law_draws()
    try:
        constraints = Constraints.build(
            DOMAINS,
            min_share=mins,
            max_share=maxs,
            fixed=fixed,
            tokens_available=tokens,
            target_tokens=1e11,
        )
    except errors.InfeasibleError as err:
        assert str(err) and "\n" not in str(err)
        return
    opt = minimize_objective(draws, constraints, np.ones(3), objective, n_starts=2)
    assert constraints.contains(opt.mixture)
    assert math.isfinite(opt.value)


_DRAWS: list = []


def _law_draws() -> LawDraws:
    if not _DRAWS:
        post, _ = fake_posterior(draws=20)
        _DRAWS.append(LawDraws.from_posterior(post))
    return _DRAWS[0]


# ---------------------------------------------------------------------------------- ledger
# Each test names an item of issue 12 about the experiment ledger: the CLI is called through
# main(argv), fails with exit 2 and one line, and the ledger file is byte for byte unchanged.
def lcli(capsys, *argv) -> tuple[int, str]:
    """(exit status, stderr) of ``bayesmix *argv``."""
    code, _, err = cli(capsys, *argv)
    return code, err


def small_ledger(folder: Path, n: int = 3):
    """A ledger over DOMAINS with ``n`` proposed runs (r0001...) and their mixtures."""
    from bayesmix.loop.ledger import Ledger

    mix = np.random.default_rng(0).dirichlet(np.ones(3), size=n)
    path = folder / "exp.db"
    with Ledger.create(path, DOMAINS, DOMAINS) as led:
        ids = led.add_proposals(mix, "initial-sobol", 0)
    return path, ids, mix


def results_csv(path: Path, ids, mix, loss=3.0) -> Path:
    frame = pd.DataFrame({"run": ids})
    for j, d in enumerate(DOMAINS):
        frame[f"mix.{d}"] = mix[:, j]
    for d in DOMAINS:
        frame[f"loss.{d}"] = 3.0
    frame.loc[len(ids) - 1, "loss.code"] = loss
    frame.to_csv(path, index=False)
    return path


def test_ingest_of_a_loss_of_1e308_is_refused_and_nothing_stored(tmp_path, capsys):
    from bayesmix.loop.ledger import Ledger

    path, ids, mix = small_ledger(tmp_path)
    res = results_csv(tmp_path / "res.csv", ids, mix, loss=1e308)
    before = digest(path)
    line = assert_one_line_error(
        *lcli(capsys, "ingest", "--ledger", path, res),
        "res.csv",
        "row 4",
        "loss.code",
        "plausible maximum",
    )
    assert "--max-loss" in line
    assert digest(path) == before
    # a loss above the default bound is stored only when --max-loss allows it
    res = results_csv(tmp_path / "res2.csv", ids, mix, loss=250.0)
    assert_one_line_error(*lcli(capsys, "ingest", "--ledger", path, res), "loss.code")
    assert digest(path) == before
    assert cli(capsys, "ingest", "--ledger", path, res, "--max-loss", 300)[0] == 0
    # the ledger checks every loss it stores, whoever built the table
    (tmp_path / "b").mkdir()
    path2, ids2, mix2 = small_ledger(tmp_path / "b")
    table = load(results_csv(tmp_path / "res3.csv", ids2, mix2, loss=500.0), max_loss=1e3)
    with Ledger.open(path2) as led:
        with pytest.raises(errors.ImplausibleLossError, match=f"run '{ids2[-1]}'.*loss.code"):
            led.record_results(table)
        assert led.summary()["recorded_losses"] == 0


def test_ingest_status_set_and_propose_on_a_read_only_ledger(tmp_path, capsys, monkeypatch):
    path, ids, mix = small_ledger(tmp_path)
    res = results_csv(tmp_path / "res.csv", ids, mix)
    before = digest(path)
    import sqlite3

    import bayesmix.loop.ledger_store as ledger_store

    # SQLite's mode=ro is what it does for a write-protected file (chmod does not stop root)
    monkeypatch.setattr(
        ledger_store,
        "_connect",
        lambda p: sqlite3.connect(
            p.resolve().as_uri() + "?mode=ro", uri=True, isolation_level=None
        ),
    )
    for argv in (
        ("ingest", "--ledger", path, res),
        ("status", "--ledger", path, "--set", f"{ids[0]}=running"),
        ("propose", "--ledger", path, "-n", 2, "--quiet"),
    ):
        assert_one_line_error(*lcli(capsys, *argv), str(path), "read-only", "nothing was changed")
        assert digest(path) == before
    assert not list(tmp_path.glob("exp-round*.csv"))


def test_status_set_with_one_bad_change_is_all_or_nothing(tmp_path, capsys):
    from bayesmix.loop.ledger import Ledger

    path, ids, _ = small_ledger(tmp_path)
    before = digest(path)
    for bad in ("missing=failed", f"{ids[1]}=completed", f"{ids[1]}=done"):
        assert_one_line_error(
            *lcli(capsys, "status", "--ledger", path, "--set", f"{ids[0]}=running", "--set", bad),
            "nothing was changed",
        )
        assert digest(path) == before
    with Ledger.open(path) as led:
        assert set(led.runs()["status"]) == {"proposed"}
    code, out, _ = cli(
        capsys,
        "status",
        "--ledger",
        path,
        "--set",
        f"{ids[0]}=running",
        "--set",
        f"{ids[1]}=failed",
    )
    assert code == 0 and f"{ids[0]}: now running" in out
    with Ledger.open(path) as led:
        assert led.runs()["status"].tolist() == ["running", "failed", "proposed"]


def _damage(path: Path, sql: str) -> None:
    import sqlite3

    con = sqlite3.connect(path)
    con.execute(sql)
    con.commit()
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()


@pytest.mark.parametrize(
    "sql, fragments",
    [
        (
            "UPDATE runs SET mixture = '[0.5, 0.5' WHERE run = 'r0002'",
            ["table runs", "run 'r0002'", "column 'mixture'", "not JSON"],
        ),
        (
            "UPDATE meta SET value = '{min: 0}' WHERE key = 'constraints'",
            ["table meta", "key 'constraints'", "not JSON"],
        ),
        (
            "UPDATE runs SET mixture = '[0.5, 0.5]' WHERE run = 'r0003'",
            ["table runs", "run 'r0003'", "column 'mixture'", "2 shares", "3 training domains"],
        ),
        (
            "UPDATE meta SET value = '[\"web\", \"code\"]' WHERE key = 'train_domains'",
            ["table meta", "key 'train_domains'", "domain set 'v1'"],
        ),
        (
            "UPDATE results SET eval_domain = 'wbe' WHERE eval_domain = 'web'",
            ["table results", "'wbe'"],
        ),
    ],
)
def test_hand_edited_or_damaged_ledger_cells_are_named_errors(tmp_path, capsys, sql, fragments):
    path, ids, mix = small_ledger(tmp_path)
    assert (
        cli(capsys, "ingest", "--ledger", path, results_csv(tmp_path / "r.csv", ids[:1], mix[:1]))[
            0
        ]
        == 0
    )
    _damage(path, sql)
    before = digest(path)
    for argv in (
        ("status", "--ledger", path),
        ("status", "--ledger", path, "--json"),
        ("export", "--ledger", path, "--round", 0, "-o", tmp_path / "x.csv"),
        ("propose", "--ledger", path, "-n", 1, "--quiet"),
    ):
        line = assert_one_line_error(*lcli(capsys, *argv), str(path), *fragments)
        assert "edited by hand or damaged" in line
        assert digest(path) == before
    assert not (tmp_path / "x.csv").exists()


@pytest.mark.parametrize(
    "domains, fragment",
    [
        ("a", "at least 2"),
        ("web", "at least 2"),
        ("web,bo,oks", None),
        ("web,bo=oks", "bo=oks"),
        ("web,Web", "Web"),
    ],
)
def test_init_with_fewer_than_two_domains_or_bad_names_is_refused(
    tmp_path, capsys, domains, fragment
):
    argv = ["init", "--ledger", tmp_path / "exp.db", "--domains", domains]
    if fragment is None:  # split on the comma: three fine names
        assert cli(capsys, *argv)[0] == 0
        return
    assert_one_line_error(*lcli(capsys, *argv), fragment)
    assert not (tmp_path / "exp.db").exists()
    from bayesmix.loop.ledger import Ledger

    with pytest.raises(errors.DomainNameError, match="at least 2"):
        Ledger.create(tmp_path / "lib.db", ["a"], ["a"])
    assert_one_line_error(
        *lcli(
            capsys,
            "init",
            "--ledger",
            tmp_path / "e.db",
            "--domains",
            "web,code",
            "--eval-domains",
            "x/y",
        ),
        "x/y",
    )


def test_propose_out_and_export_o_never_overwrite_an_input_or_existing_file(tmp_path, capsys):
    path, ids, _ = small_ledger(tmp_path)
    pool = tmp_path / "pool.csv"
    pd.DataFrame({d: [0.2, 0.3, 0.5] for d in DOMAINS}).to_csv(pool, index=False)
    before, pool_before = digest(path), digest(pool)
    for argv, fragment in (
        (("propose", "--ledger", path, "-n", 1, "--out", path, "--quiet"), ".csv or .json"),
        (
            (
                "propose",
                "--ledger",
                path,
                "-n",
                1,
                "--pool",
                pool,
                "--out",
                pool,
                "--force",
                "--quiet",
            ),
            "input",
        ),
        (("export", "--ledger", path, "--round", 0, "-o", pool), "already exists"),
        (("export", "--ledger", path, "--round", 0, "-o", path), ".csv or .json"),
    ):
        assert_one_line_error(*lcli(capsys, *argv), fragment)
    assert digest(path) == before and digest(pool) == pool_before
    assert cli(capsys, "export", "--ledger", path, "--round", 0, "-o", tmp_path / "r0.csv")[0] == 0
    assert_one_line_error(
        *lcli(capsys, "export", "--ledger", path, "--round", 0, "-o", tmp_path / "r0.csv"),
        "already exists",
        "--force",
    )


def test_ledger_and_proposal_files_get_the_umask_mode(tmp_path):
    from bayesmix.loop.ledger import Ledger, write_proposals

    old = os.umask(0o027)
    try:
        path, _, _ = small_ledger(tmp_path)
        with Ledger.open(path) as led:
            out = write_proposals(led.handoff_frame(0), tmp_path / "props.csv")
    finally:
        os.umask(old)
    for p in (path, out):
        assert stat.S_IMODE(p.stat().st_mode) == 0o640, p
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_init_initial_design_never_replaces_an_existing_round0_file(tmp_path, capsys):
    out = tmp_path / "round0.csv"
    out.write_text("results a user keeps\n")
    before = digest(out)
    argv = [
        "init",
        "--ledger",
        tmp_path / "exp.db",
        "--domains",
        "web,code,books",
        "--initial-design",
        4,
        "--out",
        out,
    ]
    assert_one_line_error(*lcli(capsys, *argv), "already exists", "--force")
    assert digest(out) == before and not (tmp_path / "exp.db").exists()
    assert cli(capsys, *argv, "--force")[0] == 0
    assert digest(out) != before and (tmp_path / "exp.db").exists()
