"""Domain-set versions in the ledger (bayesmix.loop.ledger_versions, bayesmix.loop.ledger_domains):
the upgrade of a schema-1 ledger keeps every row, a change of the domain set records a version
and handles the old set's proposed runs, and every view and fit reads older runs in the current
set through the stored maps (chained).

``ledger_schema1.db`` was written by bayesmix at schema 1 (commit 9a2ac46, before domain-set
versions): 2 imported runs, round 1 of 5 proposals (r0001-r0002 completed with results, r0003
failed after a launch with a job record, r0004 abandoned, r0005 proposed), a fit record and a
hand-off record; domains web, code, books (code <= 0.6), validation web, code.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bayesmix import errors
from bayesmix.data.constraints import Constraints
from bayesmix.data.domain_maps import DomainMap, concat_versions
from bayesmix.data.table import RunTable
from bayesmix.loop import ledger_store
from bayesmix.loop.ledger import Ledger

SCHEMA1 = Path(__file__).resolve().parent / "ledger_schema1.db"
TRAIN = ["web", "code", "books"]
EVAL = ["web", "code"]


def raw(path: Path, sql: str) -> list[tuple]:
    con = sqlite3.connect(path)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def table(runs, domains, mixes, losses, source="results.csv") -> RunTable:
    frame = pd.DataFrame({"run": runs})
    for j, d in enumerate(domains):
        frame[f"mix.{d}"] = np.asarray(mixes, float)[:, j]
    for j, d in enumerate(EVAL):
        frame[f"loss.{d}"] = np.asarray(losses, float)[:, j]
    return RunTable.from_frame(frame, source=source)


@pytest.fixture
def old_ledger(tmp_path):
    path = tmp_path / "old.db"
    shutil.copy(SCHEMA1, path)
    return path


@pytest.fixture
def ledger(tmp_path):
    """Three completed runs (r0001-r0003) and two proposed (r0004-r0005) in web, code, books."""
    cons = Constraints.build(TRAIN, max_share={"code": 0.5}, min_share={"web": 0.1})
    led = Ledger.create(tmp_path / "exp.db", TRAIN, EVAL, cons)
    mix = [[0.5, 0.3, 0.2], [0.2, 0.2, 0.6], [0.4, 0.1, 0.5], [0.3, 0.3, 0.4], [0.2, 0.4, 0.4]]
    ids = led.add_proposals(np.array(mix), "initial-sobol")
    led.record_results(table(ids[:3], TRAIN, mix[:3], [[3.0, 2.0], [3.3, 1.8], [3.1, 2.2]]))
    yield led
    led.close()


# ---------------------------------------------------------------------------------- upgrade
def test_a_schema1_ledger_is_upgraded_keeping_every_row(old_ledger):
    runs_before = raw(old_ledger, "SELECT * FROM runs ORDER BY seq")
    results_before = raw(old_ledger, "SELECT * FROM results ORDER BY run, eval_domain")
    meta_before = dict(raw(old_ledger, "SELECT key, value FROM meta"))
    assert meta_before["schema_version"] == "1" and len(runs_before) == 7

    with Ledger.open(old_ledger) as led:
        assert [s.name for s in led.domain_sets] == ["v1"] and led.domain_set == "v1"
        assert led.domain_sets[0].train_domains == tuple(TRAIN)
        assert led.jobs()["r0003"]["attempts"] == 1  # job records kept
        assert led.last_fit()["results_digest"] == "sha256:1"
        assert list(led.run_table().runs) == ["p1", "p2", "r0001", "r0002"]
        assert led.summary()["domain_sets"][0]["by_status"] == {
            "proposed": 1,
            "completed": 4,
            "failed": 1,
            "abandoned": 1,
        }
    runs_after = raw(old_ledger, "SELECT * FROM runs ORDER BY seq")
    assert [r[:-1] for r in runs_after] == runs_before  # every column as it was
    assert {r[-1] for r in runs_after} == {1}  # every run of version 1
    assert raw(old_ledger, "SELECT * FROM results ORDER BY run, eval_domain") == results_before
    meta_after = dict(raw(old_ledger, "SELECT key, value FROM meta"))
    assert meta_after.pop("schema_version") == "2"
    meta_before.pop("schema_version")
    assert meta_after == meta_before
    (row,) = raw(old_ledger, "SELECT version, name, train_domains, constraints FROM domain_sets")
    assert row == (1, "v1", meta_before["train_domains"], meta_before["constraints"])


def test_an_upgrade_killed_mid_way_leaves_the_schema1_ledger(old_ledger, monkeypatch):
    before = old_ledger.read_bytes()

    def crash(name):
        if name == "upgrade:table":
            raise KeyboardInterrupt  # the process dies between the upgrade's statements

    monkeypatch.setattr(ledger_store, "_fault_point", crash)
    with pytest.raises(KeyboardInterrupt):
        Ledger.open(old_ledger)
    assert raw(old_ledger, "SELECT value FROM meta WHERE key = 'schema_version'") == [("1",)]
    assert not raw(old_ledger, "SELECT name FROM sqlite_master WHERE name = 'domain_sets'")
    monkeypatch.undo()
    with Ledger.open(old_ledger) as led:  # the next open upgrades it whole
        assert len(led.runs()) == 7
    assert before[:16] == old_ledger.read_bytes()[:16]


def test_a_read_only_schema1_ledger_says_what_to_do(old_ledger, monkeypatch):
    before = old_ledger.read_bytes()
    monkeypatch.setattr(ledger_store, "writable_place", lambda p: False)
    with pytest.raises(errors.LedgerError, match="must be upgraded to 2.*read-only") as err:
        Ledger.open(old_ledger)
    assert "\n" not in str(err.value) and "writable" in str(err.value)
    assert old_ledger.read_bytes() == before


# ---------------------------------------------------------------------------------- a change
MERGE_ADD = {"from": "v1", "to": "v2", "merge": {"text": ["web", "books"]}, "add": ["forum"]}


def test_a_change_records_a_version_and_keeps_the_stored_mixtures(ledger):
    stored = raw(ledger.path, "SELECT run, mixture FROM runs ORDER BY seq")
    change = ledger.change_domains(MERGE_ADD)
    assert (change.version, change.name, change.previous) == (2, "v2", "v1")
    assert change.new == ("text", "code", "forum") and ledger.train_domains == change.new
    assert change.abandoned == ["r0004", "r0005"] and change.remapped == []
    assert "abandoned 2 proposed run(s) of v1 (r0004, r0005)" in change.describe()
    # code's bound carried over; text is made by a merge, so web's minimum is not
    assert ledger.constraints.upper.tolist() == [1.0, 0.5, 1.0]
    assert ledger.constraints.lower.tolist() == [0.0, 0.0, 0.0]
    assert any("web" in n and "not carried" in n for n in change.notes)
    v2 = ledger.domain_sets[1]
    assert v2.map == DomainMap.from_dict(MERGE_ADD, source=v2.map.source)
    assert v2.note["abandoned"] == {"r0004": [0.3, 0.3, 0.4], "r0005": [0.2, 0.4, 0.4]}
    # stored mixtures never rewritten; the ledger reopens in the new set
    assert raw(ledger.path, "SELECT run, mixture FROM runs ORDER BY seq") == stored
    with Ledger.open(ledger.path) as again:
        assert again.train_domains == ("text", "code", "forum") and again.domain_set == "v2"
        statuses = dict(zip(again.runs()["run"], again.runs()["status"]))
    assert statuses == dict.fromkeys(["r0001", "r0002", "r0003"], "completed") | {
        "r0004": "abandoned",
        "r0005": "abandoned",
    }


def test_old_runs_are_remapped_into_the_fits_run_table(ledger):
    ledger.change_domains(MERGE_ADD)
    new = table(["n1"], ["text", "code", "forum"], [[0.3, 0.2, 0.5]], [[2.9, 2.1]])
    ledger.record_results(new, unknown="import")
    fit_table = ledger.run_table()
    assert fit_table.train_domains == ("text", "code", "forum")
    expected = pd.DataFrame(
        {
            "run": ["r0001", "r0002", "r0003", "n1"],
            "mix.text": [0.7, 0.8, 0.9, 0.3],  # web + books
            "mix.code": [0.3, 0.2, 0.1, 0.2],
            "mix.forum": [0.0, 0.0, 0.0, 0.5],
            "loss.web": [3.0, 3.3, 3.1, 2.9],
            "loss.code": [2.0, 1.8, 2.2, 2.1],
        }
    )
    pd.testing.assert_frame_equal(fit_table.to_tidy(), expected, check_exact=False, rtol=1e-12)
    # the same as remapping the old version's table by hand and joining the new runs
    by_hand = concat_versions(
        [ledger.run_table(domain_set="v1").remap(MERGE_ADD), ledger.run_table(domain_set="v2")]
    )
    pd.testing.assert_frame_equal(fit_table.to_tidy(), by_hand.to_tidy())
    # one version as stored, in its own domains
    assert ledger.run_table(domain_set=1).train_domains == tuple(TRAIN)
    frame = ledger.runs(domain_set="v1")
    assert frame[["mix.web", "mix.code", "mix.books"]].iloc[0].tolist() == [0.5, 0.3, 0.2]
    summary = ledger.summary()
    assert summary["domain_set"] == "v2"
    assert [(s["name"], s["runs"], s["in_fit"]) for s in summary["domain_sets"]] == [
        ("v1", 5, 3),
        ("v2", 1, 1),
    ]


def test_chained_changes_remap_through_every_map(ledger):
    # v1 -> v2: books split 3:1; v2 -> v3: web and b1 merged, b2 dropped (runs rescaled)
    ledger.change_domains({"split": {"books": {"into": ["b1", "b2"], "tokens": [3.0, 1.0]}}})
    ledger.record_results(
        table(["n2"], ["web", "code", "b1", "b2"], [[0.4, 0.2, 0.2, 0.2]], [[3.2, 1.9]]),
        unknown="import",
    )
    change = ledger.change_domains(
        {"merge": {"wb": ["web", "b1"]}, "drop": ["b2"], "drop_runs": "renormalize"},
        name="third",
    )
    assert [s.name for s in ledger.domain_sets] == ["v1", "v2", "third"]
    assert change.new == ("wb", "code")
    report: list[str] = []
    tidy = ledger.run_table(report=report).to_tidy().set_index("run")
    # r0001 (0.5, 0.3, 0.2): v2 (0.5, 0.3, 0.15, 0.05); v3 (0.65, 0.3) / 0.95
    assert tidy.loc["r0001", ["mix.wb", "mix.code"]].tolist() == pytest.approx(
        [0.65 / 0.95, 0.3 / 0.95], abs=1e-12
    )
    # r0002 (0.2, 0.2, 0.6): v2 (0.2, 0.2, 0.45, 0.15); v3 (0.65, 0.2) / 0.85
    assert tidy.loc["r0002", ["mix.wb", "mix.code"]].tolist() == pytest.approx(
        [0.65 / 0.85, 0.2 / 0.85], abs=1e-12
    )
    # n2 of v2 (0.4, 0.2, 0.2, 0.2): v3 (0.6, 0.2) / 0.8
    assert tidy.loc["n2", ["mix.wb", "mix.code"]].tolist() == pytest.approx([0.75, 0.25])
    assert any(line.startswith("v2 -> third: rescaled 4 runs") for line in report)
    # the same chain by hand
    by_hand = (
        ledger.run_table(domain_set="v1")
        .remap(ledger.domain_sets[1].map)
        .remap(ledger.domain_sets[2].map)
    )
    assert np.allclose(
        tidy.loc[list(by_hand.runs), ["mix.wb", "mix.code"]].to_numpy(),
        by_hand.mixtures[["wb", "code"]].to_numpy(),
        atol=1e-12,
    )


def test_runs_a_map_leaves_out_are_counted_and_not_fitted(ledger):
    ledger.change_domains({"drop": ["books"]})  # drop_runs = "exclude": every old run had books
    with pytest.raises(errors.LedgerError, match="no recorded results"):
        ledger.run_table()
    frame = ledger.runs("completed")
    assert frame[["mix.web", "mix.code"]].isna().all().all()  # not in the current set
    assert ledger.summary()["domain_sets"][0]["in_fit"] == 0


def test_pending_remap_moves_proposed_runs_or_abandons_them(ledger):
    change = ledger.change_domains(
        {"rename": {"books": "lit"}},
        pending="remap",
        constraints=Constraints.build(["web", "code", "lit"], max_share={"code": 0.35}),
    )
    assert change.remapped == ["r0004"] and change.abandoned == ["r0005"]  # code 0.4 > 0.35
    frame = ledger.runs().set_index("run")
    assert frame.loc["r0004", "domain_set"] == "v2" and frame.loc["r0004", "status"] == "proposed"
    assert frame.loc["r0004", ["mix.web", "mix.code", "mix.lit"]].tolist() == [0.3, 0.3, 0.4]
    assert frame.loc["r0005", "status"] == "abandoned" and frame.loc["r0005", "domain_set"] == "v1"
    assert ledger.domain_sets[1].note["remapped"] == {"r0004": [0.3, 0.3, 0.4]}
    # the remapped run takes results in the new set
    got = ledger.record_results(
        table(["r0004"], ["web", "code", "lit"], [[0.3, 0.3, 0.4]], [[3, 2]])
    )
    assert got.completed == ["r0004"]


def test_the_old_sets_runs_stay_in_their_set(ledger):
    ledger.set_status("r0004", "running")
    with pytest.raises(errors.LedgerError, match="running under domain set 'v1'.*r0004"):
        ledger.change_domains(MERGE_ADD)
    assert len(ledger.domain_sets) == 1 and ledger.train_domains == tuple(TRAIN)
    ledger.set_status("r0004", "abandoned")
    ledger.change_domains(MERGE_ADD)
    with pytest.raises(errors.LedgerError, match="domain set 'v1'.*cannot be proposed again"):
        ledger.set_status("r0004", "proposed")
    old = table(["r0001"], TRAIN, [[0.5, 0.3, 0.2]], [[3.0, 2.0]], source="round0.csv")
    with pytest.raises(errors.DomainNameError, match="round0.csv.*domain set 'v1'.*now 'v2'"):
        ledger.record_results(old)
    # proposals keep their distance from the old runs, read in the new set
    with pytest.raises(errors.ProposalConflictError, match="r0001"):
        ledger.add_proposals(np.array([[0.69, 0.31, 0.0]]), "thompson", min_distance=0.05)


@pytest.mark.parametrize(
    ("domain_map", "kind", "match"),
    [
        ({"merge": {"text": ["web", "nope"]}}, errors.DomainNameError, "field 'merge.text'.*nope"),
        ({"from": "v7", "add": ["forum"]}, errors.SpecError, "field 'from' is 'v7'.*'v1'"),
        ({"rename": {"wiki": "x"}}, errors.DomainNameError, "field 'rename.wiki'"),
        ({"split": {"books": {"into": ["a", "b"]}}}, errors.SpecError, "field 'split.books'"),
        ({"drop": ["web", "books"]}, errors.DomainNameError, "1 training domain"),
        ({"colour": 1}, errors.SpecError, "field 'colour'"),
    ],
)
def test_bad_maps_name_the_field_and_change_nothing(ledger, domain_map, kind, match):
    before = raw(ledger.path, "SELECT * FROM runs ORDER BY seq")
    with pytest.raises(kind, match=match) as err:
        ledger.change_domains(domain_map)
    assert "\n" not in str(err.value)
    assert raw(ledger.path, "SELECT * FROM runs ORDER BY seq") == before
    assert raw(ledger.path, "SELECT count(*) FROM domain_sets") == [(1,)]


def test_bad_arguments_change_nothing(ledger):
    with pytest.raises(errors.OptionError, match="name='v1'"):
        ledger.change_domains({"add": ["forum"]}, name="v1")
    with pytest.raises(errors.OptionError, match="pending='keep'"):
        ledger.change_domains({"add": ["forum"]}, pending="keep")
    with pytest.raises(errors.DomainNameError, match="constraints are over"):
        ledger.change_domains({"add": ["forum"]}, constraints=Constraints.unconstrained(TRAIN))
    assert raw(ledger.path, "SELECT count(*) FROM domain_sets") == [(1,)]
    assert ledger.runs()["status"].tolist().count("proposed") == 2


def test_a_change_killed_before_commit_changes_nothing(ledger, monkeypatch):
    before = raw(ledger.path, "SELECT * FROM runs ORDER BY seq")

    def crash(name):
        if name == "change_domains:runs":
            raise KeyboardInterrupt

    monkeypatch.setattr(ledger_store, "_fault_point", crash)
    with pytest.raises(KeyboardInterrupt):
        ledger.change_domains(MERGE_ADD)
    monkeypatch.undo()
    assert raw(ledger.path, "SELECT * FROM runs ORDER BY seq") == before
    with Ledger.open(ledger.path) as again:
        assert again.domain_set == "v1" and again.train_domains == tuple(TRAIN)


def test_a_ledger_opened_before_a_change_elsewhere_writes_nothing(ledger):
    other = Ledger.open(ledger.path)  # another process, opened while the set was v1
    try:
        ledger.change_domains(MERGE_ADD)
        before = raw(ledger.path, "SELECT * FROM runs ORDER BY seq")
        stale = "domain set changed from 'v1' to 'v2' since this ledger was opened"
        with pytest.raises(errors.LedgerError, match=stale):
            other.add_proposals(np.array([[0.3, 0.5, 0.2]]), "thompson")  # chosen in v1
        with pytest.raises(errors.LedgerError, match=stale):
            other.change_domains({"add": ["forum"]})  # would build on v1, not v2
        assert raw(ledger.path, "SELECT * FROM runs ORDER BY seq") == before
        assert raw(ledger.path, "SELECT count(*) FROM domain_sets") == [(2,)]
    finally:
        other.close()


def test_with_every_old_run_left_out_the_loop_starts_a_design_in_the_new_set(ledger):
    from bayesmix.loop.experiment import Experiment

    ledger.change_domains({"drop": ["books"]})  # every completed run had books: none fits
    exp = Experiment(ledger.path)
    assert exp.runs()["status"].tolist().count("completed") == 3  # listed, not fitted
    batch = exp.propose(3, random_seed=0)  # no fit: an initial design in (web, code)
    assert batch.attrs["posterior"] is None and batch.attrs["strategy"].startswith("initial")
    assert [c for c in batch.columns if c.startswith("mix.")] == ["mix.web", "mix.code"]
    assert set(exp.runs("proposed")["domain_set"]) == {"v2"}


def test_a_round_of_an_earlier_set_is_exported_as_it_was_handed_off(ledger):
    ledger.change_domains(MERGE_ADD)
    frame = ledger.handoff_frame(0)  # every run of round 0 is of v1
    assert [c for c in frame.columns if c.startswith("mix.")] == [
        "mix.web",
        "mix.code",
        "mix.books",
    ]
    assert frame["mix.books"].tolist() == [0.2, 0.6, 0.5, 0.4, 0.4]
    new = ledger.add_proposals(np.array([[0.2, 0.3, 0.5]]), "thompson")
    assert ledger.handoff_frame(1)["run"].tolist() == new
    assert "mix.forum" in ledger.handoff_frame(1).columns
