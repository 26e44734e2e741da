"""Domain maps (bayesmix.data.domain_maps): merge, split, add, drop, rename applied to runs of
an old domain set, the new set's order, one-line errors naming the map's field, and tables of
several versions joined."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bayesmix import errors
from bayesmix.data.domain_maps import DomainMap, concat_versions
from bayesmix.data.table import RunTable


def old_runs() -> RunTable:
    return RunTable.from_frame(
        pd.DataFrame(
            {
                "run": ["a", "b", "c"],
                "mix.web": [0.5, 0.2, 0.0],
                "mix.wiki": [0.1, 0.0, 0.3],
                "mix.books": [0.4, 0.6, 0.3],
                "mix.spam": [0.0, 0.2, 0.4],
                "loss.web": [3.0, 3.2, 3.4],
            }
        ),
        source="old.csv",
    )


def test_merge_sums_split_divides_by_tokens_add_is_zero_and_losses_stay():
    m = DomainMap.from_dict(
        {
            "add": ["code"],
            "drop": ["spam"],
            "drop_runs": "renormalize",
            "merge": {"web_all": ["web", "wiki"]},
            "split": {"books": {"into": ["books3", "pg19"], "tokens": [3.0, 1.0]}},
        }
    )
    notes: list[str] = []
    new = old_runs().remap(m, report=notes)
    assert new.train_domains == ("web_all", "books3", "pg19", "code")
    mix = new.mixtures
    # run a: no spam, so nothing rescaled: web + wiki, books split 3:1, code 0
    np.testing.assert_allclose(mix.loc["a"], [0.6, 0.3, 0.1, 0.0])
    # run b: 0.2 of spam dropped, the rest rescaled by 1 / 0.8
    np.testing.assert_allclose(mix.loc["b"], np.array([0.2, 0.45, 0.15, 0.0]) / 0.8)
    assert new.losses["web"].tolist() == [3.0, 3.2, 3.4]
    assert notes == ["rescaled 2 runs' shares after dropping spam"]


def test_dropping_a_domain_leaves_out_the_runs_that_had_it_by_default():
    notes: list[str] = []
    new = old_runs().remap({"drop": ["spam"]}, report=notes)
    assert new.runs == ("a",) and new.train_domains == ("web", "wiki", "books")
    assert notes == ["left out 2 runs with a share of a dropped domain"]


def test_rename_and_the_declared_order_of_the_new_set(tmp_path):
    path = tmp_path / "map.toml"
    path.write_text(
        'from = "v1"\nto = "v2"\ndomains = ["books", "spam", "web", "wikipedia"]\n'
        '[rename]\nwiki = "wikipedia"\n'
    )
    m = DomainMap.from_file(path)
    assert (m.version_from, m.version_to) == ("v1", "v2")
    new = old_runs().remap(path)
    assert new.train_domains == ("books", "spam", "web", "wikipedia")
    np.testing.assert_allclose(new.mixtures.loc["c"], [0.3, 0.4, 0.0, 0.3])


@pytest.mark.parametrize(
    "raw, field",
    [
        ({"merge": {"x": ["web", "nope"]}}, "merge.x"),
        ({"split": {"books": {"into": ["a", "b"], "tokens": [1.0]}}}, "split.books.tokens"),
        ({"split": {"books": {"into": ["a"], "tokens": [1.0]}}}, "split.books.into"),
        ({"split": {"books": ["a", "b"]}}, "split.books"),
        ({"merge": {"x": ["web"]}, "drop": ["web"]}, "drop"),
        ({"merge": {"x": ["web"]}, "add": ["x"]}, "add"),
        ({"add": ["web"]}, "add"),
        ({"drop_runs": "keep"}, "drop_runs"),
        ({"domains": ["web", "wiki", "books", "spam", "extra"]}, "domains"),
        ({"merges": {}}, "merges"),
        ({"rename": {"wiki": ""}}, "rename.wiki"),
    ],
)
def test_a_bad_map_is_one_line_naming_its_field(raw, field):
    with pytest.raises(errors.BayesmixError) as info:
        DomainMap.from_dict(raw, source="map.toml").new_domains(old_runs().train_domains)
    text = str(info.value)
    assert f"'{field}'" in text and text.startswith("map.toml") and "\n" not in text


def test_a_map_file_that_is_not_toml_names_the_file(tmp_path):
    path = tmp_path / "map.toml"
    path.write_text("[merge\n")
    with pytest.raises(errors.UnreadableFileError, match="map.toml: not valid TOML"):
        DomainMap.from_file(path)


def test_runs_of_two_versions_join_with_the_union_of_validation_domains():
    old = old_runs().remap({"add": ["code"]})
    new = RunTable.from_frame(
        pd.DataFrame(
            {
                "run": ["n1"],
                "mix.code": [0.5],
                "mix.web": [0.5],
                "mix.wiki": [0.0],
                "mix.books": [0.0],
                "mix.spam": [0.0],
                "loss.code": [1.5],
            }
        )
    )
    both = concat_versions([old, new])
    assert both.n_runs == 4 and both.eval_domains == ("web", "code")
    assert np.isnan(both.losses.loc["a", "code"]) and np.isnan(both.losses.loc["n1", "web"])
    assert both.mixtures.loc["n1", "code"] == 0.5
    with pytest.raises(errors.DomainNameError, match="remap the older runs first"):
        concat_versions([old_runs(), new])


def test_a_map_stored_as_its_tables_reads_back_the_same():
    """What a ledger stores with a domain-set version (to_dict) gives the same map back: the
    split's fractions (3:1 -> 0.75, 0.25) are exact in binary, so equality is exact."""
    m = DomainMap.from_dict(
        {
            "from": "v1",
            "to": "v2",
            "rename": {"wiki": "wikipedia"},
            "merge": {"academic": ["arxiv", "pubmed"]},
            "split": {"books": {"into": ["b3", "pg19"], "tokens": [300.0, 100.0]}},
            "add": ["forum"],
            "drop": ["dedup"],
            "drop_runs": "renormalize",
        },
        source="m",
    )
    back = DomainMap.from_dict(m.to_dict(), source="m")
    assert back == m
    assert back.split["books"].fractions == (0.75, 0.25)
    old = pd.DataFrame(
        [[0.2, 0.2, 0.1, 0.3, 0.2], [0.5, 0.1, 0.1, 0.3, 0.0]],
        columns=["wiki", "arxiv", "pubmed", "books", "dedup"],
        index=["a", "b"],
    )
    new, keep, note = m.convert(old)
    assert keep.tolist() == [True, True] and note.startswith("rescaled 1 runs")
    assert new.loc["a"].to_dict() == pytest.approx(
        {"wikipedia": 0.25, "academic": 0.375, "b3": 0.28125, "pg19": 0.09375, "forum": 0.0}
    )
