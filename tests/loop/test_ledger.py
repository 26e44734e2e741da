"""The experiment ledger: schema, proposals, statuses, results, crash and concurrency safety."""

from __future__ import annotations

import hashlib
import json
import signal
import sqlite3
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from bayesmix import errors
from bayesmix.data.constraints import Constraints
from bayesmix.data.table import RunTable
from bayesmix.loop.ledger import Ledger, write_proposals

TRAIN = ["web", "code", "books"]
EVAL = ["web", "code"]


@pytest.fixture
def ledger(tmp_path):
    c = Constraints.build(TRAIN, max_share={"code": 0.5})
    with Ledger.create(
        tmp_path / "exp.db", TRAIN, EVAL, c, {"target_weights": {"web": 1.0}}
    ) as led:
        yield led


def results(runs, mixes, losses, steps=None, source="results.csv", **extra) -> RunTable:
    """A RunTable with one record per (run, [step]); losses is a list of (web, code)."""
    frame = pd.DataFrame({"run": runs})
    if steps is not None:
        frame["step"] = steps
    for k, v in extra.items():
        frame[k] = v
    mixes = np.asarray(mixes, float)
    for j, d in enumerate(TRAIN):
        frame[f"mix.{d}"] = mixes[:, j]
    losses = np.asarray(losses, float)
    for j, d in enumerate(EVAL):
        frame[f"loss.{d}"] = losses[:, j]
    return RunTable.from_frame(frame, source=source)


MIX = np.array([[0.5, 0.3, 0.2], [0.2, 0.2, 0.6], [0.4, 0.1, 0.5]])


# ---------------------------------------------------------------------------------- create / open
def test_create_refuses_to_overwrite(tmp_path, ledger):
    before = ledger.path.read_bytes()
    with pytest.raises(errors.LedgerError, match="refusing to overwrite"):
        Ledger.create(ledger.path, TRAIN, EVAL)
    assert ledger.path.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # no temp files left


def test_create_validates_domains_and_constraints(tmp_path):
    with pytest.raises(errors.DomainNameError, match="listed twice"):
        Ledger.create(tmp_path / "a.db", ["web", "web"], EVAL)
    with pytest.raises(errors.DomainNameError, match="differ only in case"):
        Ledger.create(tmp_path / "a.db", ["Web", "web"], EVAL)
    with pytest.raises(errors.DomainNameError, match="constraints are over"):
        Ledger.create(tmp_path / "a.db", TRAIN, EVAL, Constraints.unconstrained(["x", "y"]))
    with pytest.raises(errors.LedgerError, match="JSON"):
        Ledger.create(tmp_path / "a.db", TRAIN, EVAL, settings={"x": object()})
    assert not (tmp_path / "a.db").exists()
    # constraints over the same domains in another order are aligned by name
    c = Constraints.build(["books", "web", "code"], max_share={"code": 0.3})
    with Ledger.create(tmp_path / "b.db", TRAIN, EVAL, c) as led:
        assert led.constraints.domains == tuple(TRAIN)
        np.testing.assert_allclose(led.constraints.upper, [1.0, 0.3, 1.0])


def test_open_errors(tmp_path, ledger):
    with pytest.raises(errors.LedgerError, match="no ledger file"):
        Ledger.open(tmp_path / "missing.db")
    assert not (tmp_path / "missing.db").exists()  # opening never creates a file
    text = tmp_path / "runs.csv"
    text.write_text("run,mix.a\n")
    with pytest.raises(errors.LedgerError, match="not an SQLite database"):
        Ledger.open(text)
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(errors.LedgerError, match="not a bayesmix ledger"):
        Ledger.open(other)
    ledger.close()
    con = sqlite3.connect(ledger.path)
    con.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    con.commit()
    con.close()
    with pytest.raises(errors.LedgerError, match="schema version 99"):
        Ledger.open(ledger.path)


def test_reopen_keeps_domains_constraints_settings(ledger):
    ledger.close()
    with Ledger.open(ledger.path) as led:
        assert led.train_domains == tuple(TRAIN) and led.eval_domains == tuple(EVAL)
        np.testing.assert_allclose(led.constraints.upper, [1.0, 0.5, 1.0])
        assert led.settings == {"target_weights": {"web": 1.0}}


# ---------------------------------------------------------------------------------- proposals
def test_add_proposals_ids_and_exact_mixtures(ledger, tmp_path):
    posterior = tmp_path / "post.nc"
    posterior.write_bytes(b"some posterior bytes")
    ids = ledger.add_proposals(
        MIX[:2], "thompson", 1, posterior=posterior, n_params=7e7, steps=[1000, 2000]
    )
    assert ids == ["r0001", "r0002"]
    ledger.close()
    led = Ledger.open(ledger.path)
    ids2 = led.add_proposals(
        pd.DataFrame(MIX[2:], columns=["books", "code", "web"][::-1]), "random", 2
    )
    assert ids2 == ["r0003"]
    runs = led.runs()
    assert runs["run"].tolist() == ["r0001", "r0002", "r0003"]
    np.testing.assert_array_equal(runs[["mix.web", "mix.code", "mix.books"]].to_numpy(), MIX)
    assert runs["status"].tolist() == ["proposed"] * 3
    assert runs["round"].tolist() == [1, 1, 2] and led.current_round() == 2
    expected_hash = "sha256:" + hashlib.sha256(b"some posterior bytes").hexdigest()
    assert runs["posterior_hash"].tolist()[:2] == [expected_hash] * 2
    assert runs["posterior"][0] == str(posterior) and runs["posterior"].isna()[2]
    assert runs["n_params"].tolist()[:2] == [7e7, 7e7] and runs["steps"].tolist()[:2] == [
        1000,
        2000,
    ]
    pd.testing.assert_frame_equal(
        led.pending(),
        pd.DataFrame(
            MIX,
            index=pd.Index(ids + ids2, name="run"),
            columns=pd.Index(TRAIN, name="train_domain"),
        ),
    )
    led.close()


def test_add_proposals_is_all_or_nothing(ledger, tmp_path):
    bad = np.vstack([MIX[:2], [[0.2, 0.7, 0.1]]])  # code 0.7 > its maximum 0.5
    with pytest.raises(errors.InfeasibleError, match="proposal 3.*'code' 0.7, above its maximum"):
        ledger.add_proposals(bad, "x", 0)
    with pytest.raises(errors.InfeasibleError, match="sums to 0.9"):
        ledger.add_proposals([[0.5, 0.2, 0.2]], "x", 0)
    with pytest.raises(errors.PosteriorFileError, match="not found"):
        ledger.add_proposals(MIX, "x", 0, posterior=tmp_path / "nope.nc")
    with pytest.raises(errors.LedgerError, match="round"):
        ledger.add_proposals(MIX, "x", -1)
    with pytest.raises(errors.LedgerError, match="shape"):
        ledger.add_proposals(np.ones((2, 4)) / 4, "x", 0)
    assert len(ledger.runs()) == 0
    assert ledger.add_proposals(MIX[:1], "x", 0) == ["r0001"]  # no id was used up


def test_generated_ids_skip_imported_ones(ledger):
    ledger.import_runs(results(["r0002"], MIX[:1], [[3.0, 2.0]]))
    assert ledger.add_proposals(MIX, "x", 1) == ["r0001", "r0003", "r0004"]


# ---------------------------------------------------------------------------------- statuses
# The specification, written out independently of bayesmix.loop.ledger.TRANSITIONS.
ALLOWED = {
    "proposed": {"running", "failed", "abandoned"},
    "running": {"proposed", "failed", "abandoned"},
    "failed": {"proposed"},
    "abandoned": {"proposed"},
    "completed": set(),
}


def _bring_to(led: Ledger, run: str, status: str, mix) -> None:
    if status == "completed":
        led.record_results(results([run], [mix], [[3.0, 2.0]]))
    elif status != "proposed":
        led.set_status(run, status)


@pytest.mark.parametrize("old", list(ALLOWED))
def test_status_transitions(ledger, old):
    for new in ["proposed", "running", "completed", "failed", "abandoned"]:
        (run,) = ledger.add_proposals(MIX[:1], "x", 0)
        _bring_to(ledger, run, old, MIX[0])
        if new == old:
            ledger.set_status(run, new)  # a no-op, not an error
        elif new in ALLOWED[old]:
            ledger.set_status(run, new)
        else:
            with pytest.raises(errors.LedgerError, match=f"run '{run}'"):
                ledger.set_status(run, new)
        runs = ledger.runs().set_index("run")
        assert runs.loc[run, "status"] == (new if new == old or new in ALLOWED[old] else old)


def test_set_status_errors(ledger):
    ledger.add_proposals(MIX[:1], "x", 0)
    with pytest.raises(errors.LedgerError, match="no such run.*did you mean 'r0001'"):
        ledger.set_status("r001", "running")
    with pytest.raises(errors.LedgerError, match="unknown status 'done'"):
        ledger.set_status("r0001", "done")
    with pytest.raises(errors.LedgerError, match="cannot mark a run completed by hand"):
        ledger.set_status("r0001", "completed")


# ---------------------------------------------------------------------------------- results
def test_record_results_is_idempotent_and_completes_runs(ledger):
    ids = ledger.add_proposals(MIX, "x", 0)
    ledger.set_status(ids[1], "running")
    table = results(ids[:2], MIX[:2], [[3.0, 2.0], [3.2, np.nan]])
    s = ledger.record_results(table)
    assert s.completed == ids[:2] and s.losses_added == 3 and s.checkpoints_added == 2
    assert s.losses_unchanged == 0 and s.added_runs == []
    again = ledger.record_results(table)
    assert again.completed == [] and again.losses_added == 0 and again.losses_unchanged == 3
    assert not again.changed
    assert ledger.runs()["status"].tolist() == ["completed", "completed", "proposed"]
    out = ledger.run_table()
    assert out.runs == tuple(ids[:2])
    np.testing.assert_array_equal(out.losses.to_numpy(), [[3.0, 2.0], [3.2, np.nan]])
    # the missing loss can be supplied later; stored values are not counted twice
    s = ledger.record_results(results(ids[1:2], MIX[1:2], [[3.2, 2.5]]))
    assert s.losses_added == 1 and s.losses_unchanged == 1 and s.completed == []
    assert ledger.summary()["recorded_losses"] == 4


def test_conflicting_values_are_refused_atomically_or_replaced(ledger):
    ids = ledger.add_proposals(MIX, "x", 0)
    ledger.record_results(results(ids[:1], MIX[:1], [[3.0, 2.0]]))
    # r0002 is new and fine, r0001's web loss conflicts: nothing at all may be written
    clash = results(ids[:2], MIX[:2], [[3.1, 2.0], [3.3, 2.2]])
    with pytest.raises(
        errors.LedgerError,
        match=r"conflicting values, nothing recorded: run 'r0001' loss.web: "
        r"ledger has 3, results.csv has 3.1",
    ):
        ledger.record_results(clash)
    assert ledger.runs()["status"].tolist() == ["completed", "proposed", "proposed"]
    assert ledger.summary()["recorded_losses"] == 2
    s = ledger.record_results(clash, on_conflict="replace")
    assert s.values_replaced == 1 and s.losses_added == 2 and s.completed == [ids[1]]
    assert ledger.run_table().losses.loc["r0001", "web"] == 3.1


def test_results_are_checked_against_the_ledger(ledger):
    ids = ledger.add_proposals(MIX, "x", 0)
    with pytest.raises(
        errors.InconsistentMixtureError, match="'web' is 0.45 but the ledger proposed 0.5"
    ):
        ledger.record_results(results(ids[:1], [[0.45, 0.35, 0.2]], [[3.0, 2.0]]))
    # rounding to 4 decimals is within MIXTURE_ATOL
    ledger.record_results(results(ids[2:], [[0.4, 0.1, 0.5]], [[3.0, 2.0]]))
    with pytest.raises(errors.LedgerError, match=r"1 run\(s\) not in the ledger, first 'r0009'"):
        ledger.record_results(results(["r0009"], MIX[:1], [[3.0, 2.0]]))
    ledger.set_status(ids[1], "failed")
    with pytest.raises(errors.LedgerError, match="marked failed.*set it back to proposed"):
        ledger.record_results(results(ids[1:2], MIX[1:2], [[3.0, 2.0]]))
    frame = (
        results(ids[:1], MIX[:1], [[3.0, 2.0]]).to_tidy().rename(columns={"loss.code": "loss.cod"})
    )
    with pytest.raises(errors.DomainNameError, match="unknown validation domain 'cod'.*'code'"):
        ledger.record_results(RunTable.from_frame(frame))
    frame = pd.DataFrame({"run": ["r0001"], "mix.web": [0.7], "mix.code": [0.3], "loss.web": [3.0]})
    with pytest.raises(
        errors.DomainNameError, match="no proportion column for training domain 'books'"
    ):
        ledger.record_results(RunTable.from_frame(frame))
    assert ledger.summary()["recorded_losses"] == 2


def test_unknown_runs_can_be_imported_as_external(ledger):
    ledger.add_proposals(MIX[:1], "x", 0)
    ledger.add_proposals(MIX[1:2], "x", 3)
    s = ledger.record_results(results(["ext1"], MIX[2:], [[3.0, 2.0]]), unknown="import")
    assert s.added_runs == ["ext1"] and s.completed == []
    run = ledger.runs().set_index("run").loc["ext1"]
    assert (run["status"], run["strategy"], run["round"], run["external"]) == (
        "completed",
        "external",
        3,
        True,
    )


def test_steps_checkpoints_and_layout(ledger):
    ids = ledger.add_proposals(MIX[:2], "x", 0)
    t1 = results(
        [ids[0], ids[0], ids[1]],
        [MIX[0], MIX[0], MIX[1]],
        [[3.5, 2.5], [3.0, 2.0], [3.4, 2.4]],
        steps=[1000, 2000, 1000],
        tokens=[1e9, 2e9, 1e9],
        n_params=[7e7, 7e7, 7e7],
    )
    s = ledger.record_results(t1)
    assert s.checkpoints_added == 3 and s.losses_added == 6
    s = ledger.record_results(results([ids[1]], [MIX[1]], [[3.1, 2.1]], steps=[2000]))
    assert s.checkpoints_added == 1 and s.completed == []
    out = ledger.run_table()
    assert out.has_steps
    tidy = out.to_tidy()
    assert tidy[["run", "step"]].values.tolist() == [
        [ids[0], 1000],
        [ids[0], 2000],
        [ids[1], 1000],
        [ids[1], 2000],
    ]
    assert tidy["n_params"].tolist() == [7e7] * 4
    assert tidy["tokens"].tolist()[:3] == [1e9, 2e9, 1e9] and np.isnan(tidy["tokens"][3])
    assert ledger.runs()["checkpoints"].tolist() == [2, 2]
    with pytest.raises(errors.LedgerError, match="per step but the results have no 'step'"):
        ledger.record_results(results([ids[1]], [MIX[1]], [[3.1, 2.1]]))
    with pytest.raises(
        errors.LedgerError, match="n_params: ledger has 70000000, results.csv has 160000000"
    ):
        ledger.record_results(
            results([ids[1]], [MIX[1]], [[3.1, 2.1]], steps=[2000], n_params=[1.6e8])
        )


def test_results_without_steps_take_the_planned_steps(ledger):
    # a ledger recording steps (the first results had a step column) ...
    first = ledger.add_proposals(MIX[:1], "x", 0)
    ledger.record_results(results(first, [MIX[0]], [[3.5, 2.5]], steps=[1000]))
    # ... accepts a result without one for a run proposed with its planned steps
    (planned,) = ledger.add_proposals(MIX[1:2], "x", 1, steps=[3000])
    s = ledger.record_results(results([planned], [MIX[1]], [[3.0, 2.0]]))
    assert s.completed == [planned]
    tidy = ledger.run_table().to_tidy()
    assert tidy.loc[tidy["run"] == planned, "step"].tolist() == [3000.0]
    # without planned steps the error says both ways out
    (unplanned,) = ledger.add_proposals(MIX[2:3], "x", 2)
    with pytest.raises(errors.LedgerError, match=r"add a 'step' column .* planned steps"):
        ledger.record_results(results([unplanned], [MIX[2]], [[3.1, 2.1]]))


def test_import_export_round_trip(ledger):
    rng = np.random.default_rng(1)
    mixes = rng.dirichlet(np.ones(3), size=6)
    table = results(
        [f"old{i}" for i in range(6) for _ in range(2)],
        np.repeat(mixes, 2, 0),
        rng.uniform(2, 4, size=(12, 2)),
        steps=[500, 1000] * 6,
        n_params=[7e7] * 6 + [1.6e8] * 6,
        tokens=[5e8, 1e9] * 6,
        source="past.csv",
    )
    s = ledger.import_runs(table)
    assert len(s.added_runs) == 6 and s.losses_added == 24
    assert not ledger.import_runs(table).changed  # importing twice changes nothing
    runs = ledger.runs()
    assert set(runs["strategy"]) == {"imported"} and set(runs["status"]) == {"completed"}
    assert runs["external"].all() and set(runs["round"]) == {0}
    out = ledger.run_table()
    pd.testing.assert_frame_equal(out.to_tidy(), table.to_tidy())
    assert out.train_domains == table.train_domains and out.eval_domains == table.eval_domains


def test_regmix_round_trip(tmp_path, shared_data):
    regmix = shared_data / "regmix"
    from bayesmix.data.loaders import load

    table = load(
        [regmix / "train_mixture_1m.csv", regmix / "train_pile_loss_1m.csv"], renormalize=True
    )
    with Ledger.create(tmp_path / "r.db", table.train_domains, table.eval_domains) as led:
        led.import_runs(table)
        out = led.run_table()
    assert out.n_runs == 512
    pd.testing.assert_frame_equal(out.to_tidy(), table.to_tidy())


def test_empty_ledger_has_no_run_table(ledger):
    with pytest.raises(errors.LedgerError, match="no recorded results"):
        ledger.run_table()


def test_summary_counts(ledger):
    ids = ledger.add_proposals(MIX, "initial-sobol", 0)
    ledger.set_status(ids[0], "running")
    ledger.set_status(ids[1], "abandoned")
    ledger.add_proposals(MIX[:1], "thompson", 1)
    s = ledger.summary()
    assert s["by_status"] == {
        "proposed": 2,
        "running": 1,
        "completed": 0,
        "failed": 0,
        "abandoned": 1,
    }
    assert s["by_round"] == {
        "0": {"abandoned": 1, "proposed": 1, "running": 1},
        "1": {"proposed": 1},
    }
    assert s["by_strategy"] == {"initial-sobol": 3, "thompson": 1}
    assert s["current_round"] == 1 and s["constraints"]["code"] == {"min": 0.0, "max": 0.5}
    assert json.loads(json.dumps(s)) == s  # JSON-friendly
    assert ledger.runs("proposed")["run"].tolist() == [ids[2], "r0004"]
    assert ledger.pending().index.tolist() == [ids[0], ids[2], "r0004"]


# ---------------------------------------------------------------------------------- proposals file
@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_write_proposals(ledger, tmp_path, suffix):
    mixes = np.vstack([MIX, [[1 / 3, 1 / 7, 1 - 1 / 3 - 1 / 7]]])  # shares without short decimals
    ledger.add_proposals(mixes, "initial-sobol", 0, n_params=7e7)
    path = write_proposals(ledger.runs(), tmp_path / f"props{suffix}")
    back = pd.read_csv(path) if suffix == ".csv" else pd.DataFrame(json.loads(path.read_text()))
    assert list(back.columns) == [
        "run",
        "round",
        "strategy",
        "n_params",
        "mix.web",
        "mix.code",
        "mix.books",
    ]
    np.testing.assert_array_equal(back[["mix.web", "mix.code", "mix.books"]].to_numpy(), mixes)
    assert back["run"].tolist() == ["r0001", "r0002", "r0003", "r0004"]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    with pytest.raises(errors.OptionError, match="name the file .csv or .json"):
        write_proposals(ledger.runs(), tmp_path / "props.txt")
    with pytest.raises(errors.OptionError, match="does not exist"):
        write_proposals(ledger.runs(), tmp_path / "nodir" / "props.csv")


# ---------------------------------------------------------------------------------- crash safety
# Deterministic fault injection: bayesmix.loop.ledger_store._fault_point is called at named points
# inside every write transaction; the writer below kills itself (SIGKILL, no cleanup) at a chosen
# point of its (k+1)-th write, so exactly k writes were committed.
WRITER = textwrap.dedent("""
    import os
    import signal
    import sys
    import numpy as np
    import pandas as pd
    import bayesmix.loop.ledger_store as ledger_store
    from bayesmix.data.table import RunTable
    from bayesmix.loop.ledger import Ledger

    path, mode, batch, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    point, writes = sys.argv[5], int(sys.argv[6])
    seen = {"n": 0}

    def fault(name):
        if name == point:
            seen["n"] += 1
            if seen["n"] > writes:
                os.kill(os.getpid(), signal.SIGKILL)
    ledger_store._fault_point = fault
    led = Ledger.open(path)
    rng = np.random.default_rng(seed)
    for i in range(writes + 1):
        mix = rng.dirichlet(np.ones(3), size=batch)
        if mode == "proposals":
            led.add_proposals(mix, "loop", i)
        else:   # import a batch of external runs, each with two checkpoints
            runs = [f"{seed}-{i}-{k}" for k in range(batch)]
            frame = pd.DataFrame({"run": np.repeat(runs, 2), "step": [1.0, 2.0] * batch})
            for j, d in enumerate(["web", "code", "books"]):
                frame["mix." + d] = np.repeat(mix[:, j], 2)
            frame["loss.web"] = rng.uniform(2, 4, 2 * batch)
            frame["loss.code"] = rng.uniform(2, 4, 2 * batch)
            led.record_results(RunTable.from_frame(frame), unknown="import")
    print("not killed", flush=True)
""")


@pytest.mark.parametrize("mode, batch", [("proposals", 7), ("results", 40)])
def test_ledger_survives_a_killed_writer(tmp_path, mode, batch):
    path = tmp_path / "exp.db"
    Ledger.create(path, TRAIN, EVAL).close()
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    op = "add_proposals" if mode == "proposals" else "ingest"
    points = [f"{op}:begin", f"{op}:{'inserted'}", f"{op}:commit"]
    committed = 0
    for kill, point in enumerate(points):
        writes = kill + 1  # this many writes commit, the next one dies
        proc = subprocess.run(
            [
                sys.executable,
                str(script),
                str(path),
                mode,
                str(batch),
                str(kill),
                point,
                str(writes),
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr
        committed += writes

        con = sqlite3.connect(path)
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        con.close()
        with Ledger.open(path) as led:
            runs = led.runs()
            assert runs["run"].is_unique
            # exactly the committed writes, each one whole batch; the killed one left nothing
            written = runs[runs["strategy"] != "after"]
            assert len(written) == committed * batch
            np.testing.assert_allclose(
                runs[["mix.web", "mix.code", "mix.books"]].sum(axis=1), 1.0, atol=1e-12
            )
            if mode == "proposals":
                n = len(runs)
                assert runs["run"].tolist() == [f"r{i:04d}" for i in range(1, n + 1)]
                assert (written.groupby("round").size() % batch == 0).all()
                # the id counter moved with the rows: the next id follows on
                assert led.add_proposals(MIX[:1], "after", 99) == [f"r{n + 1:04d}"]
            else:
                assert (runs["checkpoints"] == 2).all()
                table = led.run_table()
                assert len(table) == 2 * len(runs) and table.losses.notna().all().all()


def test_two_writers_ingesting_overlapping_results(tmp_path, monkeypatch):
    """Writer A is stopped inside its transaction (holding the write lock, its rows inserted)
    while writer B starts the same kind of write; B waits for the lock and then sees A's rows:
    every loss is added exactly once. Deterministic: the hook blocks A on an Event."""
    import threading

    import bayesmix.loop.ledger_store as ledger_store
    from bayesmix.data.loaders import load

    path = tmp_path / "exp.db"
    rng = np.random.default_rng(3)
    mixes = rng.dirichlet(np.ones(3), size=60)
    with Ledger.create(path, TRAIN, EVAL) as led:
        ids = led.add_proposals(mixes[:50], "initial-sobol", 0)
    # 10 runs the ledger does not know; both files hold runs 20-39 and external runs 5-9
    names = ids + [f"ext{i}" for i in range(10)]
    frame = pd.DataFrame({"run": names})
    for j, d in enumerate(TRAIN):
        frame[f"mix.{d}"] = mixes[:, j]
    frame["loss.web"] = rng.uniform(2, 4, 60)
    frame["loss.code"] = rng.uniform(2, 4, 60)
    a = frame.iloc[list(range(0, 40)) + list(range(50, 60))]
    b = frame.iloc[list(range(20, 50)) + list(range(55, 60))]
    a.to_csv(tmp_path / "a.csv", index=False)
    b.to_csv(tmp_path / "b.csv", index=False)

    a_inside, release_a, b_starting = threading.Event(), threading.Event(), threading.Event()

    def fault(name):
        if (
            name == "ingest:inserted"
            and threading.current_thread().name == "A"
            and not a_inside.is_set()
        ):
            a_inside.set()
            assert release_a.wait(60)

    monkeypatch.setattr(ledger_store, "_fault_point", fault)
    results: dict[str, list] = {"A": [], "B": []}
    failures: list[BaseException] = []

    def work(file):
        try:
            table = load(tmp_path / file)
            with Ledger.open(path) as led:
                if threading.current_thread().name == "B":
                    assert a_inside.wait(60)  # A holds the lock with its rows written
                    b_starting.set()
                for _ in range(3):
                    s = led.record_results(table, unknown="import")
                    results[threading.current_thread().name].append(
                        [s.losses_added, len(s.added_runs), len(s.completed)]
                    )
        except BaseException as err:  # noqa: BLE001 - reported below
            failures.append(err)

    threads = [
        threading.Thread(target=work, args=(f,), name=n)
        for n, f in (("A", "a.csv"), ("B", "b.csv"))
    ]
    for t in threads:
        t.start()
    assert b_starting.wait(60)
    release_a.set()
    for t in threads:
        t.join(120)
    assert not failures, failures
    # A's first write added everything in a.csv; B then added only what A had not
    assert results["A"][0] == [100, 10, 40]
    assert np.array(results["A"] + results["B"]).sum(axis=0).tolist() == [120, 10, 50]
    with Ledger.open(path) as led:
        runs = led.runs()
        assert len(runs) == 60 and runs["run"].is_unique
        assert (runs["status"] == "completed").all()
        assert runs["external"].sum() == 10
        out = led.run_table()
        assert len(out) == 60
        expected = frame.set_index("run")[["loss.web", "loss.code"]]
        np.testing.assert_array_equal(
            out.losses.loc[expected.index].to_numpy(), expected.to_numpy()
        )
    con = sqlite3.connect(path)
    assert con.execute("SELECT count(*) FROM results").fetchone()[0] == 120
    con.close()


def test_a_ledger_in_a_read_only_folder_is_read_without_write_access(ledger, monkeypatch, capsys):
    """``bayesmix status`` on a read-only share: opened read-only (SQLite's WAL would need to
    create files beside it); a write is one line. Root ignores permissions, so the test
    takes the place as unwritable through ``writable_place``."""
    from bayesmix.cli import main
    from bayesmix.loop import ledger_store

    path = ledger.path
    ledger.add_proposals(np.array([[0.5, 0.3, 0.2]]), "design", 0)
    ledger.close()
    monkeypatch.setattr(ledger_store, "writable_place", lambda p: False)
    assert main(["status", "--ledger", str(path)]) == 0
    assert "r0001" in capsys.readouterr().out
    with Ledger.open(path) as led:
        assert list(led.runs()["run"]) == ["r0001"]
        with pytest.raises(errors.LedgerError):
            led.check_writable()
    assert not path.with_name(path.name + "-wal").exists()  # nothing created beside it
