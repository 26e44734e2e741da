"""A corpus of malformed inputs: each raises its own named error naming the file, row and column.

Every case writes small files into ``tmp_path`` and loads them with ``bayesmix.data.loaders.load``;
the test checks the error class, the location fragments in the message, that the message is one
line, and that a failed load wrote nothing (no new files, no report lines).
"""

from __future__ import annotations

import pandas as pd
import pytest

from bayesmix import errors
from bayesmix.data.loaders import load

HEADER = "run,mix.a,mix.b,loss.a,loss.b"
OK1 = "r1,0.5,0.5,2.0,3.0"
OK2 = "r2,0.25,0.75,2.5,2.9"


def write(path, text: str | bytes):
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def csv(tmp, *lines, name="runs.csv"):
    return [write(tmp / name, "\n".join(lines) + "\n")]


def ye_line(run: str, step, domain: str, loss, group: str = "Pile100B") -> str:
    """One Ye et al. log line; ``run`` like ``70M_3-0.2-0.2-0.2-0.2-0.2``."""
    return (
        f"ckpts/{group}//{run}/{step}\tdata/pythia-pile.valid.domains//"
        f"pythia-pile.valid.{domain}.bin\t{loss}"
    )


def ye(tmp, *lines, name="70M.txt"):
    return [write(tmp / name, "\n".join(lines) + "\n")]


MIX5 = "70M_1-0.2-0.2-0.2-0.2-0.2"
REG_MIX = "index,train_the_pile_github,train_the_pile_pile_cc"
REG_LOSS = "index,metric/the_pile_github_val_loss,metric/the_pile_pile_cc_val_loss"


def regmix(tmp, mix_lines, loss_lines):
    m = write(tmp / "train_mixture_1m.csv", "\n".join([REG_MIX, *mix_lines]) + "\n")
    l_ = write(tmp / "train_pile_loss_1m.csv", "\n".join([REG_LOSS, *loss_lines]) + "\n")
    return [m, l_]


def parquet(tmp, frame, name="runs.parquet"):
    path = tmp / name
    frame.to_parquet(path)
    return [path]


# (id, builder(tmp) -> paths, load kwargs, error class, fragments the message must contain)
CASES = [
    # ---- tidy CSV
    (
        "empty-file",
        lambda t: [write(t / "runs.csv", b"")],
        {},
        errors.EmptyInputError,
        ["runs.csv", "empty"],
    ),
    (
        "header-only",
        lambda t: csv(t, HEADER),
        {},
        errors.EmptyInputError,
        ["runs.csv", "no data rows"],
    ),
    (
        "missing-file",
        lambda t: [t / "nope.csv"],
        {},
        errors.UnreadableFileError,
        ["nope.csv", "not found"],
    ),
    (
        "binary-file",
        lambda t: [write(t / "runs.csv", b"\x00\xff\xfe\x81garbage\x00")],
        {},
        errors.UnreadableFileError,
        ["runs.csv", "UTF-8"],
    ),
    (
        "text-in-loss",
        lambda t: csv(t, HEADER, OK1, "r2,0.5,0.5,abc,3.0"),
        {},
        errors.NonNumericError,
        ["runs.csv", "row 3", "'loss.a'", "'abc'"],
    ),
    (
        "text-in-proportion",
        lambda t: csv(t, HEADER, "r1,half,0.5,2.0,3.0"),
        {},
        errors.NonNumericError,
        ["runs.csv", "row 2", "'mix.a'"],
    ),
    (
        "negative-proportion",
        lambda t: csv(t, HEADER, OK1, "r2,-0.25,1.25,2.0,3.0"),
        {},
        errors.NegativeProportionError,
        ["runs.csv", "row 3", "'mix.a'"],
    ),
    (
        "sum-not-one",
        lambda t: csv(t, HEADER, OK1, "r2,0.5,0.6,2.0,3.0"),
        {},
        errors.ProportionSumError,
        ["runs.csv", "row 3", "'r2'", "1.1"],
    ),
    (
        "missing-proportion",
        lambda t: csv(t, HEADER, "r1,,1.0,2.0,3.0"),
        {},
        errors.MissingValueError,
        ["runs.csv", "row 2", "'mix.a'"],
    ),
    (
        "infinite-loss",
        lambda t: csv(t, HEADER, OK1, "r2,0.5,0.5,inf,3.0"),
        {},
        errors.NonFiniteLossError,
        ["runs.csv", "row 3", "'loss.a'"],
    ),
    (
        "zero-loss",
        lambda t: csv(t, HEADER, OK1, OK2, "r3,0.5,0.5,2.0,0"),
        {},
        errors.NonPositiveLossError,
        ["runs.csv", "row 4", "'loss.b'"],
    ),
    (
        "negative-loss",
        lambda t: csv(t, HEADER, "r1,0.5,0.5,-2.0,3.0"),
        {},
        errors.NonPositiveLossError,
        ["runs.csv", "row 2", "'loss.a'"],
    ),
    (
        "no-losses",
        lambda t: csv(t, HEADER, OK1, "r2,0.5,0.5,,"),
        {},
        errors.NoLossesError,
        ["runs.csv", "row 3", "'r2'"],
    ),
    (
        "duplicate-run",
        lambda t: csv(t, HEADER, OK1, OK2, "r1,0.5,0.5,2.1,3.1"),
        {},
        errors.DuplicateRunError,
        ["runs.csv", "row 4", "'r1'"],
    ),
    (
        "duplicate-run-step",
        lambda t: csv(
            t,
            "run,step,mix.a,mix.b,loss.a",
            "r1,100,0.5,0.5,2",
            "r1,200,0.5,0.5,1.9",
            "r1,200,0.5,0.5,1.8",
        ),
        {},
        errors.DuplicateRunError,
        ["runs.csv", "row 4", "step 200"],
    ),
    (
        "mixture-changes-between-steps",
        lambda t: csv(t, "run,step,mix.a,mix.b,loss.a", "r1,100,0.5,0.5,2", "r1,200,0.4,0.6,1.9"),
        {},
        errors.InconsistentMixtureError,
        ["runs.csv", "row 2", "'mix.a'", "'r1'"],
    ),
    (
        "misspelt-column",
        lambda t: csv(t, "run,mix.a,mix.b,los.a", "r1,0.5,0.5,2"),
        {},
        errors.FormatError,
        ["runs.csv", "'los.a'", "did you mean 'loss.a'"],
    ),
    (
        "domain-case-clash",
        lambda t: csv(t, "run,mix.a,mix.b,loss.Github,loss.github", "r1,0.5,0.5,2,2"),
        {},
        errors.DomainNameError,
        ["runs.csv", "'loss.github'"],
    ),
    (
        "domain-spelt-two-ways",
        lambda t: csv(
            t,
            "run,mix.a,mix.b,loss.github,loss.githb",
            "r1,0.5,0.5,2,",
            "r2,0.3,0.7,2.1,",
            "r3,0.2,0.8,,2.2",
        ),
        {},
        errors.DomainNameError,
        ["runs.csv", "row 4", "'loss.githb'", "'github'"],
    ),
    (
        "ragged-line",
        lambda t: csv(t, HEADER, OK1, "r2,0.5,0.5,2.0,3.0,9,9"),
        {},
        errors.UnreadableFileError,
        ["runs.csv", "row 3", "7 fields"],
    ),
    (
        "duplicate-column",
        lambda t: csv(t, "run,mix.a,mix.b,loss.a,loss.a", "r1,0.5,0.5,2,2"),
        {},
        errors.FormatError,
        ["runs.csv", "'loss.a'", "twice"],
    ),
    (
        "unknown-format",
        lambda t: csv(t, "name,value", "x,1"),
        {},
        errors.FormatError,
        ["runs.csv", "tidy", "regmix", "mixinglaws"],
    ),
    (
        "tidy-read-as-regmix",
        lambda t: csv(t, HEADER, OK1),
        {"format": "regmix"},
        errors.FormatError,
        ["runs.csv", "'index'"],
    ),
    (
        "expected-domain-misspelt",
        lambda t: csv(t, HEADER, OK1),
        {"expected_domains": {"eval": ["a", "bb"]}},
        errors.DomainNameError,
        ["runs.csv", "'b'", "did you mean 'bb'"],
    ),
    # ---- tidy Parquet: rows are index + 1
    (
        "parquet-text-in-loss",
        lambda t: parquet(
            t,
            pd.DataFrame(
                {
                    "run": ["r1", "r2"],
                    "mix.a": [0.5, 0.5],
                    "mix.b": [0.5, 0.5],
                    "loss.a": ["2.0", "n/a?"],
                }
            ),
        ),
        {},
        errors.NonNumericError,
        ["runs.parquet", "row 2", "'loss.a'"],
    ),
    (
        "parquet-corrupt",
        lambda t: [write(t / "runs.parquet", b"PAR1 this is not parquet")],
        {},
        errors.UnreadableFileError,
        ["runs.parquet", "Parquet"],
    ),
    # ---- RegMix pairs: errors point at the file, row and original column
    (
        "regmix-unmatched-index",
        lambda t: regmix(t, ["1,0.5,0.5", "2,0.3,0.7"], ["1,2.0,3.0", "3,2.1,3.1"]),
        {},
        errors.UnmatchedRunError,
        ["train_pile_loss_1m.csv", "'2'", "train_mixture_1m.csv"],
    ),
    (
        "regmix-duplicate-index",
        lambda t: regmix(t, ["1,0.5,0.5", "2,0.3,0.7"], ["1,2.0,3.0", "2,2.1,3.1", "2,2.1,3.1"]),
        {},
        errors.DuplicateRunError,
        ["train_pile_loss_1m.csv", "row 4", "'index'"],
    ),
    (
        "regmix-text-in-loss",
        lambda t: regmix(t, ["1,0.5,0.5", "2,0.3,0.7"], ["1,2.0,3.0", "2,2.1,oops"]),
        {},
        errors.NonNumericError,
        ["train_pile_loss_1m.csv", "row 3", "'metric/the_pile_pile_cc_val_loss'"],
    ),
    (
        "regmix-bad-sum",
        lambda t: regmix(t, ["1,0.5,0.5", "2,0.3,0.6"], ["2,2.1,3.1", "1,2.0,3.0"]),
        {},
        errors.ProportionSumError,
        ["train_mixture_1m.csv", "row 3", "run '2'"],
    ),
    (
        "regmix-negative-loss",
        lambda t: regmix(t, ["1,0.5,0.5", "2,0.3,0.7"], ["2,2.1,3.1", "1,-2.0,3.0"]),
        {},
        errors.NonPositiveLossError,
        ["train_pile_loss_1m.csv", "row 3", "'metric/the_pile_github_val_loss'"],
    ),
    (
        "regmix-misspelt-loss-domain",
        lambda t: [
            write(t / "train_mixture_1m.csv", REG_MIX + "\n1,0.5,0.5\n"),
            write(t / "train_pile_loss_1m.csv", "index,metric/the_pile_githubb_val_loss\n1,2.0\n"),
        ],
        {},
        errors.DomainNameError,
        ["train_pile_loss_1m.csv", "'metric/the_pile_githubb_val_loss'", "'github'"],
    ),
    (
        "regmix-pairs-disagree-on-domains",
        lambda t: (
            regmix(t, ["1,0.5,0.5"], ["1,2,3"])
            + [
                write(t / "test_mixture_1m.csv", REG_MIX + "\n1,0.5,0.5\n"),
                write(
                    t / "test_pile_loss_1m.csv", "index,metric/the_pile_github_val_loss\n1,2.0\n"
                ),
            ]
        ),
        {},
        errors.DomainNameError,
        ["train_pile_loss_1m.csv", "test_pile_loss_1m.csv", "pile_cc"],
    ),
    (
        "regmix-only-mixtures",
        lambda t: regmix(t, ["1,0.5,0.5"], ["1,2,3"])[:1],
        {},
        errors.FormatError,
        ["train_mixture_1m.csv", "loss file"],
    ),
    # ---- Ye et al. logs: rows are line numbers
    (
        "ye-two-fields",
        lambda t: ye(
            t,
            ye_line(MIX5, 1000, "Github", 2.0),
            "ckpts/Pile100B//70M_1-0.2-0.2-0.2-0.2-0.2/2000\t2.0",
        ),
        {},
        errors.FormatError,
        ["70M.txt", "row 2", "3 tab-separated fields"],
    ),
    (
        "ye-text-loss",
        lambda t: ye(t, ye_line(MIX5, 1000, "Github", 2.0), ye_line(MIX5, 1000, "ArXiv", "two")),
        {},
        errors.NonNumericError,
        ["70M.txt", "row 2", "'loss'", "'two'"],
    ),
    # nan is a missing loss (the data.py rule), inf an error
    (
        "ye-inf-loss",
        lambda t: ye(t, ye_line(MIX5, 1000, "Github", "inf")),
        {},
        errors.NonFiniteLossError,
        ["70M.txt", "row 1", "'loss'"],
    ),
    (
        "ye-only-nan-losses",
        lambda t: ye(t, ye_line(MIX5, 1000, "Github", "nan")),
        {},
        errors.NoLossesError,
        ["70M.txt", "row 1", "'loss'", "missing"],
    ),
    (
        "ye-bad-checkpoint",
        lambda t: ye(
            t, ye_line(MIX5, 1000, "Github", 2.0), ye_line("70M_1-0.2-zero-0.6", 1000, "ArXiv", 2.1)
        ),
        {},
        errors.FormatError,
        ["70M.txt", "row 2", "'checkpoint_path'"],
    ),
    (
        "ye-conflicting-duplicate",
        lambda t: ye(t, ye_line(MIX5, 1000, "Github", 2.0), ye_line(MIX5, 1000, "Github", 2.5)),
        {},
        errors.DuplicateRunError,
        ["70M.txt", "row 2", "Github", "row 1"],
    ),
    (
        "ye-domain-spelt-two-ways",
        lambda t: ye(
            t,
            ye_line(MIX5, 1000, "Github", 2.0),
            ye_line(MIX5, 1000, "ArXiv", 2.5),
            ye_line(MIX5, 2000, "Githb", 1.9),
            ye_line(MIX5, 2000, "ArXiv", 2.4),
        ),
        {},
        errors.DomainNameError,
        ["70M.txt", "row 3", "'loss.Githb'", "spell it 'Github'"],
    ),
    (
        "ye-no-size",
        lambda t: ye(
            t,
            ye_line("1-0.5-0.25-0.25", 3000, "Github", 2.0, group="Github-Books3-PileCC"),
            name="logs.txt",
        ),
        {},
        errors.FormatError,
        ["logs.txt", "row 1", "model size"],
    ),
    (
        "ye-unknown-group",
        lambda t: ye(t, ye_line("70M_1-0.5-0.5", 1000, "Github", 2.0, group="Mystery")),
        {},
        errors.FormatError,
        ["70M.txt", "row 1", "'Mystery'"],
    ),
    (
        "ye-bad-sum",
        lambda t: ye(
            t,
            ye_line(MIX5, 1000, "Github", 2.0),
            ye_line("70M_2-0.5-0.5-0.5-0-0", 1000, "Github", 2.1),
        ),
        {},
        errors.ProportionSumError,
        ["70M.txt", "row 2", "'70M_2'"],
    ),
    (
        "ye-different-domains-across-files",
        lambda t: (
            ye(t, ye_line(MIX5, 1000, "Github", 2.0))
            + ye(t, ye_line("160M_1-0.2-0.2-0.2-0.2-0.2", 1000, "ArXiv", 2.0), name="160M.txt")
        ),
        {},
        errors.DomainNameError,
        ["160M.txt", "70M.txt", "ArXiv", "Github"],
    ),
    (
        "ye-mixture-id-reused",
        lambda t: ye(
            t,
            ye_line(MIX5, 1000, "Github", 2.0),
            ye_line("70M_1-0.6-0.1-0.1-0.1-0.1", 1000, "ArXiv", 2.1),
        ),
        {},
        errors.InconsistentMixtureError,
        ["70M.txt", "row 2", "'70M_1'", "row 1"],
    ),
    # ---- mixing formats
    (
        "mixed-formats",
        lambda t: csv(t, HEADER, OK1) + ye(t, ye_line(MIX5, 1000, "Github", 2)),
        {},
        errors.FormatError,
        ["different formats"],
    ),
]


@pytest.mark.parametrize(
    "build, kwargs, error, fragments", [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_malformed_input_raises_named_error(tmp_path, build, kwargs, error, fragments):
    paths = build(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    report: list[str] = []
    with pytest.raises(error) as info:
        load(paths, report=report, **kwargs)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert "\n" not in message
    assert report == []  # a failed load reports nothing ...
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # ... and writes nothing


def test_corpus_is_large_and_every_case_is_specific():
    assert len(CASES) >= 20
    assert len({c[0] for c in CASES}) == len(CASES)
    # no case settles for the base class: each expects a specific named error
    assert all(c[3] is not errors.BayesmixError for c in CASES)
