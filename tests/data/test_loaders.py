"""Loaders on the real shared data (skipped when absent) and on small files written here."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import bayesmix as bm
from bayesmix import errors
from bayesmix.data.loaders import detect_format, from_dataframe, load
from bayesmix.data.regmix import regmix_domain
from bayesmix.data.validation import SUM_TOLERANCE
from bayesmix.data.ye_logs import TOKENS_PER_STEP, parse_size, size_label, ye_validation_domain
from bayesmix.model.simulation import simulate

FIVE = ("academic", "prose", "dialogue", "symbolic", "internet")


# ------------------------------------------------------------------ RegMix (real data)
@pytest.fixture(scope="module")
def regmix_train(shared_data):
    d = shared_data / "regmix"
    return load([d / "train_mixture_1m.csv", d / "train_pile_loss_1m.csv"])


def test_regmix_train_pair(regmix_train):
    t = regmix_train
    assert (t.n_runs, len(t)) == (512, 512)
    assert len(t.train_domains) == 17 and len(t.eval_domains) == 13
    # validation names match the training names of the same Pile domain
    assert set(t.eval_domains) <= set(t.train_domains)
    assert {"pile_cc", "github", "arxiv", "gutenberg_pg_19"} <= set(t.eval_domains)
    assert t.runs[:2] == ("train_1", "train_2")
    assert not t.losses.isna().any().any()
    sums = t.mixtures.sum(axis=1)
    # RegMix rounds shares to 3 decimals: rows are off by up to ~0.004, within the tolerance
    assert 0.0005 < (sums - 1).abs().max() < SUM_TOLERANCE


def test_regmix_values_join_on_index(shared_data, regmix_train):
    raw_mix = pd.read_csv(shared_data / "regmix" / "train_mixture_1m.csv")
    raw_loss = pd.read_csv(shared_data / "regmix" / "train_pile_loss_1m.csv")
    row = raw_mix.iloc[7]
    run = f"train_{int(row['index'])}"
    assert regmix_train.mixtures.loc[run, "pile_cc"] == row["train_the_pile_pile_cc"]
    loss_row = raw_loss.set_index("index").loc[int(row["index"])]
    assert regmix_train.losses.loc[run, "github"] == loss_row["metric/the_pile_github_val_loss"]


def test_regmix_either_order_and_test_pair(shared_data, regmix_train):
    d = shared_data / "regmix"
    swapped = load([d / "train_pile_loss_1m.csv", d / "train_mixture_1m.csv"])
    pd.testing.assert_frame_equal(swapped.to_tidy(), regmix_train.to_tidy())
    test = load([d / "test_mixture_1m.csv", d / "test_pile_loss_1m.csv"])
    assert (test.n_runs, len(test.train_domains), len(test.eval_domains)) == (256, 17, 13)
    assert test.runs[0] == "test_1"


def test_regmix_directory_pairs_train_and_test(shared_data):
    notes: list[str] = []
    both = load(shared_data / "regmix", report=notes)
    assert both.n_runs == 768
    assert sum(r.startswith("train_") for r in both.runs) == 512
    assert any("LICENSE" in n and "skipped" in n for n in notes)


# ------------------------------------------------------------------ Ye et al. (real data)
@pytest.fixture(scope="module")
def five_mix(shared_data):
    notes: list[str] = []
    return load(shared_data / "mixinglaws" / "5Mix", report=notes), notes


def test_ye_five_domain_set(shared_data, five_mix):
    t, notes = five_mix
    assert t.train_domains == FIVE
    assert len(t.eval_domains) == 22 and {"Github", "Pile-CC", "ArXiv"} <= set(t.eval_domains)
    sizes = t.column("n_params")
    assert sorted(sizes.unique()) == [7e7, 1.6e8, 3.05e8, 4.1e8, 1e9]
    mix = t.mixtures
    proxy_runs = [r for r in t.runs if not r.startswith("1B_")]
    assert len(proxy_runs) == 4 * 26
    proxy_mixtures = {tuple(np.round(v, 8)) for v in mix.loc[proxy_runs].to_numpy()}
    assert len(proxy_mixtures) == 26
    # the 26 mixtures are exactly those listed in 5Mix/proportions.txt
    listed = (shared_data / "mixinglaws" / "5Mix" / "proportions.txt").read_text().split()
    assert proxy_mixtures == {
        tuple(np.round([float(x) for x in ln.split("-")], 8)) for ln in listed
    }
    assert t.n_runs - len(proxy_runs) == 6  # 1B.txt holds 6 runs
    steps = t.column("step")
    assert steps.nunique() >= 10 and steps.min() == 3000 and steps.max() == 100000
    np.testing.assert_array_equal(t.column("tokens"), steps * TOKENS_PER_STEP)
    assert any("proportions.txt" in n for n in notes)


def test_ye_run_ids_and_known_value(shared_data, five_mix):
    t, _ = five_mix
    assert "70M_3" in t.runs and "1B_999" in t.runs
    assert t.mixtures.loc["70M_3"].tolist() == [0.125, 0.0, 0.0, 0.125, 0.75]
    # first line of 5Mix/70M.txt: 70M_3 at step 13000, Github validation loss
    line = (shared_data / "mixinglaws" / "5Mix" / "70M.txt").open().readline().split("\t")
    assert line[0].endswith("70M_3-0.125-0-0-0.125-0.75/13000")
    assert t.losses.loc[("70M_3", 13000.0), "Github"] == float(line[2])


def test_ye_three_domain_sizes_from_file_name(shared_data):
    t = load(shared_data / "mixinglaws" / "3Mix" / "410M.txt")
    assert t.n_runs == 32
    assert set(t.column("n_params")) == {4.1e8}
    assert t.train_domains == ("Github", "Books3", "Pile-CC")
    assert set(t.eval_domains) == set(t.train_domains)
    assert "410M_30" in t.runs
    assert t.mixtures.loc["410M_30"].tolist() == [0.75, 0.0, 0.25]


def test_ye_three_domain_curves_skip_last_and_repeats(shared_data):
    notes: list[str] = []
    t = load(shared_data / "mixinglaws" / "3Mix" / "70M.txt", report=notes)
    assert t.n_runs == 3 and t.column("step").min() == 500
    assert any("'last'" in n for n in notes)
    assert any("repeated lines with identical losses" in n for n in notes)


def test_ye_two_domain_and_format_override(shared_data):
    d = shared_data / "mixinglaws" / "2Mix"
    t = load(sorted(d.glob("*.txt")), format="mixinglaws")
    assert t.n_runs == 10 and t.train_domains == ("Github", "Pile-CC")
    shares = t.mixtures["Github"]
    assert (shares.min(), shares.max()) == (0.25, 0.75)
    assert "70M_base2_1" in t.runs


def test_ye_continual_pretraining_start_checkpoint(shared_data):
    path = shared_data / "mixinglaws" / "ct" / "70M.txt"
    t = load(path)
    assert t.train_domains == ("Pile", "Python")
    assert "Python" in t.eval_domains and len(t.eval_domains) == 23
    start = t.at_step(0)
    assert start.n_runs == t.n_runs == 5
    # every run starts from the same checkpoint: identical losses at step 0
    assert (start.losses.nunique() == 1).all()
    assert set(t.column("tokens")[t.column("step") == 0]) == {0.0}
    # Pile share 0.125 to 0.5 as documented
    assert t.mixtures["Pile"].min() == 0.125 and t.mixtures["Pile"].max() == 0.5
    without = load(path, start_checkpoint=False)
    assert without.column("step").min() == 1000 and len(without) == len(t) - 5


# ------------------------------------------------------------------ name helpers
def test_name_helpers():
    assert regmix_domain("train_the_pile_pile_cc") == "pile_cc"
    assert regmix_domain("metric/the_pile_pile_cc_val_loss") == "pile_cc"
    assert (
        ye_validation_domain("x/pythia-pile.valid.domains//pythia-pile.valid.Pile-CC.bin")
        == "Pile-CC"
    )
    assert ye_validation_domain("x/ct_valid//starcoder.python.valid.bin") == "Python"
    assert parse_size("70M") == 7e7 and parse_size("1B") == 1e9 and parse_size("1.4b") == 1.4e9
    assert size_label(3.05e8) == "305M" and size_label(1e9) == "1B"


# ------------------------------------------------------------------ tidy round trips
@pytest.fixture(scope="module")
def simulated():
    table, _ = simulate(3, 4, 6, random_seed=11, sizes=[7e7, 1.6e8], steps=[1000, 2000])
    tidy = table.to_tidy()
    tidy.loc[3, "loss.d2"] = np.nan  # a missing loss must survive the round trip
    return tidy


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_tidy_round_trip(tmp_path, simulated, suffix):
    path = tmp_path / f"runs.{suffix}"
    if suffix == "csv":
        simulated.to_csv(path, index=False)
    else:
        simulated.to_parquet(path, index=False)
    assert detect_format(path) == "tidy"
    loaded = load(path)
    pd.testing.assert_frame_equal(loaded.to_tidy(), from_dataframe(simulated).to_tidy())
    pd.testing.assert_frame_equal(loaded.to_tidy(), simulated)
    assert np.isnan(loaded.losses.iloc[3]["d2"])


def test_tidy_run_ids_stay_text(tmp_path):
    path = tmp_path / "runs.csv"
    path.write_text("run,mix.a,mix.b,loss.a\n007,0.5,0.5,2.0\n08,0.5,0.5,2.1\n")
    assert load(path).runs == ("007", "08")


def test_tidy_blank_lines_keep_line_numbers(tmp_path):
    path = tmp_path / "runs.csv"
    path.write_text("run,mix.a,mix.b,loss.a\n\nr1,0.5,0.5,2.0\n\nr2,0.5,0.6,2.1\n")
    with pytest.raises(errors.ProportionSumError, match="row 5"):
        load(path)


def test_format_detected_by_content_not_extension(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text(
        "ckpts/Pile100B//70M_1-0.2-0.2-0.2-0.2-0.2/1000\tv/pythia-pile.valid.Github.bin\t2.5\n"
    )
    assert detect_format(path) == "mixinglaws"
    t = load(path, tokens_per_step=1000)
    assert t.runs == ("70M_1",) and t.column("tokens").tolist() == [1e6]
    with pytest.raises(errors.FormatError, match="no 'run' column"):
        load(path, format="tidy")
    with pytest.raises(errors.FormatError, match="unknown format 'csv'"):
        load(path, format="csv")


# ------------------------------------------------------------------ options
def test_renormalize_rescales_and_reports(tmp_path):
    path = tmp_path / "runs.csv"
    path.write_text("run,mix.a,mix.b,loss.a\nr1,0.52,0.5,2.0\nr2,0.25,0.75,2.1\n")
    with pytest.raises(errors.ProportionSumError):
        load(path)
    notes: list[str] = []
    t = load(path, renormalize=True, report=notes)
    np.testing.assert_allclose(t.mixtures.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    assert t.mixtures.loc["r1", "a"] == pytest.approx(0.52 / 1.02)
    assert len(notes) == 1 and "renormalised 1 of 2" in notes[0] and "0.02" in notes[0]


def test_regmix_rounding_within_default_tolerance(tmp_path):
    (tmp_path / "MIXTURES.csv").write_text(
        "index,train_the_pile_github,train_the_pile_pile_cc\n1,0.497,0.499\n2,0.3,0.7\n"
    )
    (tmp_path / "LOSSES.csv").write_text("index,metric/the_pile_github_val_loss\n2,2.5\n1,2.0\n")
    files = [tmp_path / "LOSSES.csv", tmp_path / "MIXTURES.csv"]
    t = load(files)
    assert t.runs == ("1", "2")  # no 'mixture' prefix in the file name: the plain index
    assert t.losses.loc["1", "github"] == 2.0
    with pytest.raises(errors.ProportionSumError, match="MIXTURES.csv, row 2"):
        load(files, tolerance=0.001)


def test_expected_domains(tmp_path):
    path = tmp_path / "runs.csv"
    path.write_text("run,mix.github,mix.web,loss.github\nr1,0.5,0.5,2.0\n")
    load(path, expected_domains=["github", "web", "books"])
    with pytest.raises(errors.DomainNameError, match="training domain 'web'.*did you mean 'webs'"):
        load(path, expected_domains={"train": ["github", "webs"]})


def test_directory_with_nothing_to_load(tmp_path):
    (tmp_path / "notes.txt").write_text("hello\n")
    with pytest.raises(errors.FormatError, match="no run files"):
        load(tmp_path)
    with pytest.raises(errors.EmptyInputError):
        load([])


def test_same_file_twice_is_a_duplicate(tmp_path):
    path = tmp_path / "70M.txt"
    path.write_text(
        "ckpts/Pile100B//70M_1-0.2-0.2-0.2-0.2-0.2/1000\tv/pythia-pile.valid.Github.bin\t2.5\n"
    )
    other = tmp_path / "copy" / "70M.txt"
    other.parent.mkdir()
    other.write_text(path.read_text())
    with pytest.raises(errors.DuplicateRunError, match="also in"):
        load([path, other])


def test_load_and_fit_take_a_tidy_dataframe():
    runs, _ = bm.simulate(["web", "code"], n_runs=6, random_seed=0)
    frame = runs.to_tidy()
    loaded = bm.load(frame)
    assert loaded.source == "DataFrame"
    pd.testing.assert_frame_equal(loaded.to_tidy(), frame)
    # a DataFrame is validated like a file: the error names the row and column
    bad = frame.assign(**{"mix.web": -frame["mix.web"]})
    with pytest.raises(
        bm.errors.NegativeProportionError, match="DataFrame, row 1, run 'r0', column 'mix.web'"
    ):
        bm.load(bad)
    # bm.fit validates a DataFrame before any sampling (no MCMC runs here)
    with pytest.raises(bm.errors.NegativeProportionError, match="column 'mix.web'"):
        bm.fit(bad)
    with pytest.raises(TypeError, match="a pandas DataFrame in the tidy layout"):
        bm.load(3)
    with pytest.raises(TypeError, match="RunTable or a pandas DataFrame"):
        bm.fit([[0.5, 0.5]])


def test_a_loss_written_nan_is_said_per_row(tmp_path):
    """A cell written 'nan' reads as missing like an empty one, but loading says where: a
    diverged run should not pass for one never measured."""
    path = tmp_path / "runs.csv"
    path.write_text(
        "run,mix.web,mix.code,loss.web,loss.code\n"
        "r1,0.5,0.5,2.0,1.0\nr2,0.2,0.8,nan,1.1\nr3,0.8,0.2,,1.2\nr4,0.3,0.7,NA,1.3\nr5,0.4,0.6,2.1,NaN\n"
    )
    report: list[str] = []
    table = bm.load(path, report=report)
    assert table.losses["web"].isna().sum() == 3  # nan, empty and NA: all missing
    web = next(n for n in report if "'loss.web'" in n)
    assert "row(s) 3, 5" in web and str(path) in web  # row 4 (empty) is not named
    assert any("'loss.code'" in n and "row(s) 6" in n for n in report)


def test_written_missing_reads_the_text_it_is_given(tmp_path, monkeypatch):
    """The notes come from the text the loader read once: ``written_missing`` opens no file
    (its path only names the file), and loading a tidy CSV reads its text once."""
    from bayesmix.data import file_reading

    text = "run,mix.a,mix.b,loss.a,loss.b\nr1,0.5,0.5,nan,2.0\nr2,0.4,0.6,1.0,2.1\n"
    absent = tmp_path / "never-written.csv"
    (note,) = file_reading.written_missing(text, absent)
    assert str(absent) in note and "'loss.a'" in note and "row(s) 2" in note
    path = tmp_path / "runs.csv"
    path.write_text(text)
    opened: list[str] = []

    def counting_open(file, mode="r", *args, **kwargs):
        if Path(file) == path and "b" not in mode:
            opened.append(mode)
        return open(file, mode, *args, **kwargs)

    monkeypatch.setattr(file_reading, "open", counting_open, raising=False)
    report: list[str] = []
    bm.load(path, report=report)
    assert opened == ["r"]  # read_text; read_csv_table and written_missing take its text
    assert any("'loss.a'" in n and "row(s) 2" in n for n in report)


@pytest.mark.parametrize(
    "rows, error, message",
    [
        # an empty step cell among a run's checkpoints: refused, not silently dropped
        (
            ["r1,7e7,1000,,3.0", "r1,7e7,,,2.9", "r1,7e7,3000,,2.8"],
            "MissingValueError",
            "row 3, run 'r1', column 'step': step is empty while this run's other records",
        ),
        # tokens that do not rise with the step: another run's record or a typo
        (
            ["r1,7e7,1000,2e9,3.0", "r1,7e7,2000,1e9,2.9", "r1,7e7,3000,6e9,2.8"],
            "FormatError",
            "row 3, run 'r1', column 'tokens': tokens 1e+09 at step 2000 do not rise",
        ),
    ],
)
def test_checkpoints_that_cannot_sit_on_a_learning_curve_are_refused(
    tmp_path, rows, error, message
):
    path = tmp_path / "runs.csv"
    body = "\n".join(
        r.replace(",3.0", ",0.5,0.5,3.0")
        .replace(",2.9", ",0.5,0.5,2.9")
        .replace(",2.8", ",0.5,0.5,2.8")
        for r in rows
    )
    path.write_text("run,n_params,step,tokens,mix.web,mix.code,loss.web\n" + body + "\n")
    with pytest.raises(getattr(bm.errors, error), match=re.escape(message)):
        bm.load(path)
