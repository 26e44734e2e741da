"""The Experiment API (bayesmix.loop.experiment): the whole active-learning loop without the shell,
concurrent proposers, a proposer killed between the ledger write and the hand-off file, output
checks, posterior paths relative to the ledger, acquisition on other laws, cost-aware
Thompson sampling / random selection, and single-scale strategies with a proxy menu (planned at
its largest entry, launched by bayesmix run with that size and steps).

One session fixture fits (default model, 2 x 100 draws) inside an experiment; tests that need
a posterior work on copies of its folder (the posterior path is stored relative to the ledger,
so copies find it and reuse it without fitting).
"""

from __future__ import annotations

import importlib
import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import SIM_DOMAINS, run_cli, simulate_runs, train_simulated

from bayesmix import errors
from bayesmix.data.constraints import Constraints
from bayesmix.decisions.decision import DecisionReport
from bayesmix.loop import acquire
from bayesmix.loop.experiment import Experiment
from bayesmix.loop.ledger import Ledger
from bayesmix.model.simulation import simulate
from bayesmix.posterior.diagnostics import ConvergenceWarning

#: 2 x 100 draws rarely pass the gate; the tests check the warning where it matters.
pytestmark = pytest.mark.filterwarnings("ignore::bayesmix.posterior.diagnostics.ConvergenceWarning")
MIX = [f"mix.{d}" for d in SIM_DOMAINS]
FIT = {"draws": 100, "tune": 150, "chains": 2, "random_seed": 3}


train = train_simulated


def pairwise_min(x: np.ndarray) -> float:
    d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    return float(d.min())


def copy_experiment(src, dst):
    shutil.copytree(src, dst)
    return dst / "exp.db"


@pytest.fixture
def no_fit(monkeypatch):
    """Any MCMC fit inside the test fails it: the posterior must be reused."""
    fit_module = importlib.import_module("bayesmix.inference.fitting")

    def forbidden(*args, **kwargs):
        raise AssertionError("a fit was started; the saved posterior should have been reused")

    monkeypatch.setattr(fit_module, "fit", forbidden)


@pytest.fixture(scope="session")
def fitted(tmp_path_factory):
    """create -> propose (initial design) -> ingest 10 of 12 -> propose (fits): the folder and
    what each step returned."""
    folder = tmp_path_factory.mktemp("experiment")
    cons = Constraints.build(SIM_DOMAINS, max_share={"Pile-CC": 0.6}, min_share={"ArXiv": 0.05})
    exp = Experiment.create(
        folder / "exp.db", SIM_DOMAINS, constraints=cons, target={"Pile-CC": 1.0}, **FIT
    )
    first = exp.propose(12, out=True, random_seed=1)
    summary = exp.ingest(train(first, first["run"][:10], seed=0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        second = exp.propose(4, out=True, random_seed=2)
    conv = [w for w in caught if issubclass(w.category, ConvergenceWarning)]
    return {
        "folder": folder,
        "first": first,
        "second": second,
        "ingest": summary,
        "warnings": conv,
        "constraints": cons,
    }


# --------------------------------------------------------------------------- the whole loop
@pytest.mark.slow
def test_experiment_cycle_without_the_cli(fitted, tmp_path, no_fit):
    folder, first, second = fitted["folder"], fitted["first"], fitted["second"]
    # round 0: an initial design, written for the training jobs, no posterior
    assert first.attrs["round"] == 0 and first.attrs["strategy"] == "initial-sobol"
    assert first.attrs["posterior"] is None and len(first) == 12
    written = pd.read_csv(folder / "exp-round0.csv")
    assert written["run"].tolist() == first["run"].tolist()
    np.testing.assert_array_equal(written[MIX].to_numpy(), first[MIX].to_numpy())
    assert fitted["ingest"].completed == first["run"][:10].tolist()

    # round 1: fitted, recorded with the posterior and its record; the warning matches the gate
    record = second.attrs["fit"]
    assert second.attrs["round"] == 1 and (second["strategy"] == "thompson").all()
    assert record["reused"] is False and record["n_runs"] == 10
    assert record["posterior"] == "exp.posterior-round1.nc"  # relative to the ledger
    assert "draw_objective" in second.columns
    assert bool(fitted["warnings"]) == (not record["diagnostics_ok"])
    if fitted["warnings"]:
        assert str(fitted["warnings"][0].message) == record["diagnostics_warning"]
    assert fitted["constraints"].contains(second[MIX].to_numpy()).all()
    everything = np.vstack([first[MIX].to_numpy(), second[MIX].to_numpy()])
    assert (
        np.sqrt(
            ((second[MIX].to_numpy()[:, None] - first[MIX].to_numpy()[None]) ** 2).sum(-1)
        ).min()
        >= 0.05
    )

    # on a copy: no new result -> the posterior is reused (a fit would fail the test)
    exp = Experiment(copy_experiment(folder, tmp_path / "copy"), **FIT)
    third = exp.propose(3, "optimum-info", out=True)
    assert third.attrs["round"] == 2 and third.attrs["fit"]["reused"] is True
    assert "information" in third.columns
    assert not list((tmp_path / "copy").glob("*round2*.nc"))
    x = third[MIX].to_numpy()
    d = np.sqrt(((x[:, None] - everything[None]) ** 2).sum(-1))
    assert d.min() >= 0.05 and pairwise_min(x) >= 0.05
    with Ledger.open(tmp_path / "copy" / "exp.db") as led:
        records = led.fit_records()
        runs = led.runs()
    assert records[2]["posterior_hash"] == records[1]["posterior_hash"]
    assert (runs.loc[runs["round"] == 2, "posterior_hash"] == records[1]["posterior_hash"]).all()

    report = exp.recommend(per_draw=False)
    assert isinstance(report, DecisionReport)
    assert fitted["constraints"].contains(report.mixture.to_numpy()[None])[0]
    # compared with the best run already trained (Pile-CC is the ledger's target)
    with Ledger.open(tmp_path / "copy" / "exp.db") as led:
        done = led.run_table()
    best = done.losses["Pile-CC"].idxmin()
    assert report.baseline_label.startswith(f"best trained run {best} ")
    base = report.recommendation.set_index("train_domain")["baseline"]
    np.testing.assert_allclose(base[list(done.train_domains)], done.mixtures.loc[best], atol=1e-9)
    weights = report.losses.drop_duplicates("eval_domain").set_index("eval_domain")["weight"]
    assert weights["Pile-CC"] == 1.0 and weights[["Github", "Books3", "ArXiv"]].eq(0).all()
    status = exp.status()
    assert status["by_status"]["completed"] == 10 and status["by_status"]["proposed"] == 9
    assert status["missing_handoffs"] == {}


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["thompson", "random"])
def test_single_scale_strategies_plan_runs_at_the_menus_largest_entry(
    fitted, tmp_path, no_fit, strategy
):
    """With a proxy menu in the ledger, a strategy that chooses mixtures only plans every run
    at the menu's largest entry (the largest size, at its most steps: not the entry with the
    most steps, nor the dearest), says so in a note the CLI prints, and lists the size, steps,
    tokens and cost; the ledger and the hand-off file hold them for {n_params} and {steps}."""
    path = copy_experiment(fitted["folder"], tmp_path / "copy")
    menu = ["--menu", "2@200,3@300,3@400,1@900", "--target-scale", "5@4000"]
    argv = ["propose", "--ledger", "exp.db", "-n", 3, "--strategy", strategy, "--quiet"]
    fit = ["--draws", FIT["draws"], "--tune", FIT["tune"], "--chains", FIT["chains"]]
    done = run_cli(*argv, *fit, *menu, "--tokens-per-step", 256, cwd=path.parent)
    assert done.returncode == 0, done.stderr
    assert (
        f"note: {strategy} chooses mixtures, not sizes: every run is planned at the menu's "
        "largest entry 3@400 (target-info chooses among the entries)"
    ) in done.stdout
    table = done.stdout.splitlines()[-4:]
    header = table[0].split()
    assert header[0] == "run" and header.index("size") + 1 == header.index("steps")
    at = header.index("size")
    # cost relative to the cheapest entry: 3 x 400 / (2 x 200) = 3
    rows = [line.split()[at : at + 4] for line in table[1:]]
    assert rows == [["3", "400", "1.024e+05", "3"]] * 3, table
    with Ledger.open(path) as led:
        runs = led.runs()
        record = led.fit_records()[2]
    assert record["reused"] is True and record["strategy"] == strategy
    new = runs[runs["round"] == 2]
    assert len(new) == 3 and (new["strategy"] == strategy).all()
    assert new[["n_params", "steps", "tokens"]].drop_duplicates().values.tolist() == [
        [3, 400, 400 * 256]
    ]
    handoff = pd.read_csv(path.parent / "exp-round2.csv")
    assert handoff["n_params"].tolist() == [3] * 3 and handoff["steps"].tolist() == [400] * 3


SIZED_TRAINER = textwrap.dedent(
    """
    import json, sys
    run, mixture_file, out, n_params, steps, log = sys.argv[1:]
    mix = json.load(open(mixture_file))
    open(log, "a").write(f"{run} {n_params} {steps}\\n")
    names = sorted(mix)
    head = ["run"] + ["mix." + d for d in names] + ["loss." + d for d in names]
    row = [run] + [repr(mix[d]) for d in names] + [repr(2.0 + mix[d]) for d in names]
    open(out, "w").write(",".join(head) + "\\n" + ",".join(map(str, row)) + "\\n")
    """
)


@pytest.mark.slow
def test_run_launches_a_single_scale_batch_at_the_menus_largest_entry(fitted, tmp_path, no_fit):
    """bayesmix run with a menu and thompson: the batch it proposes (posterior reused) is
    planned at the menu's largest entry, the note is said, and the command gets {n_params}
    and {steps}."""
    path = copy_experiment(fitted["folder"], tmp_path / "copy")
    exp = Experiment(path, **FIT)
    waiting = exp.runs("proposed")["run"].tolist()
    exp.set_statuses(dict.fromkeys(waiting, "abandoned"))  # run proposes a new batch
    (tmp_path / "trainer.py").write_text(SIZED_TRAINER)
    log = tmp_path / "launched.txt"
    command = (
        f"{sys.executable} {tmp_path / 'trainer.py'} {{run}} {{mixture_file}} {{out}} "
        f"{{n_params}} {{steps}} {log}"
    )
    menu = ["--menu", "2@200,3@300,3@400,1@900", "--target-scale", "5@4000"]
    fit = ["--draws", FIT["draws"], "--tune", FIT["tune"], "--chains", FIT["chains"]]
    done = run_cli(
        "run", "--ledger", "exp.db", "--command", command, "-n", 2, "--no-recommend",
        *fit, *menu, cwd=path.parent,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (
        "note: thompson chooses mixtures, not sizes: every run is planned at the menu's "
        "largest entry 3@400"
    ) in done.stderr
    launched = sorted(line.split() for line in log.read_text().splitlines())
    new = exp.runs()
    new = new[new["round"] == 2]
    assert launched == [[r, "3", "400"] for r in sorted(new["run"])]
    assert (new["status"] == "completed").all() and len(new) == 2
    assert new["n_params"].tolist() == [3, 3] and new["steps"].tolist() == [400, 400]


@pytest.mark.slow
def test_new_results_trigger_a_refit_and_only_then(fitted, tmp_path, monkeypatch):
    """Ingesting a result changes the digest: the next posterior() fits (counted, not run)."""
    fit_module = importlib.import_module("bayesmix.inference.fitting")

    exp = Experiment(copy_experiment(fitted["folder"], tmp_path / "copy"), **FIT)
    calls = []
    real_fit = fit_module.fit

    def counting(*args, **kwargs):
        calls.append(args[0].n_runs)
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(fit_module, "fit", counting)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        exp.posterior()
        assert calls == []  # unchanged: reused
        first = fitted["first"]
        exp.ingest(train(first, first["run"][10:12], seed=1))
        post = exp.posterior()
        assert calls == [12] and post.fit_data().n_runs == 12
        exp.posterior()
        assert calls == [12]  # the new fit is reused in turn
    names = sorted(p.name for p in (tmp_path / "copy").glob("*.nc"))
    assert names == ["exp.posterior-round1.nc", "exp.posterior-round2.nc"]


@pytest.mark.slow
def test_posterior_paths_are_relative_to_the_ledger(fitted, tmp_path, monkeypatch, no_fit):
    moved = copy_experiment(fitted["folder"], tmp_path / "moved")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    exp = Experiment("../moved/exp.db", **FIT)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        exp.posterior()  # found from another directory
    runs = exp.runs()
    posterior = tmp_path / "moved" / "exp.posterior-round1.nc"
    assert set(runs.loc[runs["round"] == 1, "posterior"]) == {str(posterior)}

    # an entry written by an older version: relative to the working directory of the time
    con = sqlite3.connect(moved)
    record = json.loads(con.execute("SELECT value FROM meta WHERE key = 'fit:last'").fetchone()[0])
    record["posterior"] = "moved/exp.posterior-round1.nc"
    con.execute("UPDATE meta SET value = ? WHERE key = 'fit:last'", (json.dumps(record),))
    con.commit()
    con.close()
    for cwd in (tmp_path, tmp_path / "elsewhere"):  # cwd-relative, then next to the ledger
        monkeypatch.chdir(cwd)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            Experiment(moved, **FIT).posterior()
    with Ledger.open(moved) as led:
        assert led.resolve_path("moved/exp.posterior-round1.nc") == posterior
        assert led.resolve_path("gone.nc") is None
        assert led.resolve_path("exp.posterior-round1.nc", "sha256:0") is None


# --------------------------------------------------------------------------- concurrency
def _barrier_on_first_call(monkeypatch, name):
    """Wrap acquire.<name> so each thread's first call waits for the other thread: both
    proposers have read the ledger before either records its batch."""
    barrier = threading.Barrier(2, timeout=60)
    seen = set()
    real = getattr(acquire, name)

    def wrapped(*args, **kwargs):
        batch = real(*args, **kwargs)
        me = threading.get_ident()
        if me not in seen:
            seen.add(me)
            barrier.wait()
        return batch

    monkeypatch.setattr(acquire, name, wrapped)


def _run_two(experiments, **kwargs):
    results, failures = [None, None], []

    def work(i):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                results[i] = experiments[i].propose(**kwargs)
        except BaseException as err:  # noqa: BLE001 - reported by the test
            failures.append(err)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not failures, failures
    return results


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["initial", "posterior"])
def test_two_concurrent_proposers(fitted, tmp_path, monkeypatch, stage, no_fit):
    """Two proposers with the same seed read the same ledger, choose the same batch, and
    record at the same time: the second is re-chosen around the first; no round is shared,
    no run lost, every distance respected, each round's file lists exactly its runs."""
    if stage == "initial":
        path = tmp_path / "exp.db"
        Experiment.create(path, SIM_DOMAINS)
        _barrier_on_first_call(monkeypatch, "initial_batch")
    else:
        path = copy_experiment(fitted["folder"], tmp_path / "copy")
        _barrier_on_first_call(monkeypatch, "propose")
    with Ledger.open(path) as led:
        before = led.runs()
        start = led.next_round()
    logs: list[str] = []
    exps = [Experiment(path, log=logs.append, **FIT), Experiment(path, log=logs.append, **FIT)]
    frames = _run_two(exps, n=4, strategy="thompson", out=True, random_seed=5, min_distance=0.05)
    # same seed, same ledger: the same batch, so the second writer had to choose again
    assert sum("choosing again with them pending" in line for line in logs) == 1

    rounds = sorted(f.attrs["round"] for f in frames)
    assert rounds == [start, start + 1]
    late = next(f for f in frames if f.attrs["round"] == start + 1)
    assert any("another proposer recorded round" in n for n in late.attrs["notes"])
    with Ledger.open(path) as led:
        runs = led.runs()
        assert led.missing_handoffs() == {}
    new = runs[~runs["run"].isin(before["run"])]
    assert len(new) == 8 and new["run"].is_unique
    assert sorted(new["run"]) == sorted(frames[0]["run"].tolist() + frames[1]["run"].tolist())
    for f in frames:
        assert (new.loc[new["run"].isin(f["run"]), "round"] == f.attrs["round"]).all()
        handoff = pd.read_csv(path.with_name(f"exp-round{f.attrs['round']}.csv"))
        assert handoff["run"].tolist() == f["run"].tolist()
    x = new[MIX].to_numpy()
    assert pairwise_min(x) >= 0.05
    others = runs[
        runs["run"].isin(before["run"]) & runs["status"].isin(["proposed", "running", "completed"])
    ][MIX].to_numpy()
    if len(others):
        assert np.sqrt(((x[:, None] - others[None]) ** 2).sum(-1)).min() >= 0.05


def test_ledger_refuses_a_batch_too_close_to_runs_recorded_meanwhile(tmp_path):
    with Ledger.create(tmp_path / "exp.db", ["a", "b"], ["a"]) as led:
        led.add_proposals([[0.5, 0.5]], "x", None, min_distance=0.05)
        with pytest.raises(
            errors.LedgerError,
            match=r"0\.0002828 from run 'r0001'.*nothing "
            r"recorded.*propose again",
        ):
            led.add_proposals([[0.2, 0.8], [0.5002, 0.4998]], "x", None, min_distance=0.05)
        with pytest.raises(errors.LedgerError, match="closer than the minimum distance"):
            led.add_proposals([[0.2, 0.8], [0.2001, 0.7999]], "x", None, min_distance=0.05)
        assert led.add_proposals([[0.2, 0.8]], "x", None, min_distance=0.05) == ["r0002"]
        assert led.runs()["round"].tolist() == [0, 1]


# --------------------------------------------------------------------------- hand-off files
KILLED = textwrap.dedent("""
    import os, signal, sys
    import bayesmix.loop.proposing as proposing
    from bayesmix.loop.experiment import Experiment

    def die(*args, **kwargs):            # the window between the ledger write and the file
        os.kill(os.getpid(), signal.SIGKILL)
    proposing.write_proposals = die
    Experiment(sys.argv[1]).propose(5, out=True, random_seed=2)
""")


def bayesmix(*args, cwd) -> subprocess.CompletedProcess:
    """The command in-process (conftest.run_cli); the killed writer above is a real process."""
    return run_cli(*args, cwd=cwd)


def test_killed_before_the_handoff_file_then_export(tmp_path):
    Experiment.create(tmp_path / "exp.db", ["web", "code", "books"], ["web", "code"])
    script = tmp_path / "killed.py"
    script.write_text(KILLED)
    proc = subprocess.run(
        [sys.executable, str(script), "exp.db"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not (tmp_path / "exp-round0.csv").exists()
    exp = Experiment(tmp_path / "exp.db")
    assert exp.status()["missing_handoffs"] == {"0": "exp-round0.csv"}
    runs = exp.runs()
    assert runs["run"].tolist() == [f"r{i:04d}" for i in range(1, 6)]

    # status says so; export writes it again from the ledger, in propose's format
    done = bayesmix("status", "--ledger", "exp.db", cwd=tmp_path)
    assert "round 0: proposals file exp-round0.csv was never written" in done.stdout
    done = bayesmix("export", "--ledger", "exp.db", "--round", 0, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "round 0: wrote 5 runs (r0001 to r0005) to exp-round0.csv" in done.stdout
    back = pd.read_csv(tmp_path / "exp-round0.csv")
    assert back["run"].tolist() == runs["run"].tolist()
    assert list(back.columns) == ["run", "round", "strategy", "mix.web", "mix.code", "mix.books"]
    np.testing.assert_array_equal(
        back[["mix.web", "mix.code", "mix.books"]].to_numpy(),
        runs[["mix.web", "mix.code", "mix.books"]].to_numpy(),
    )
    assert exp.status()["missing_handoffs"] == {}
    nxt = exp.propose(3, out=True, random_seed=4)  # nothing left to recover
    assert nxt.attrs["round"] == 1 and not any("never written" in n for n in nxt.attrs["notes"])
    # a file propose wrote and its export are the same bytes
    done = bayesmix("export", "--ledger", "exp.db", "--round", 1, "-o", "again.csv", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "again.csv").read_bytes() == (tmp_path / "exp-round1.csv").read_bytes()
    # refusals: an existing file without --force, a round without proposals
    done = bayesmix("export", "--ledger", "exp.db", "--round", 1, cwd=tmp_path)
    assert done.returncode == 2 and "already exists" in done.stderr and "--force" in done.stderr
    assert (
        bayesmix("export", "--ledger", "exp.db", "--round", 1, "--force", cwd=tmp_path).returncode
        == 0
    )
    done = bayesmix("export", "--ledger", "exp.db", "--round", 7, cwd=tmp_path)
    assert done.returncode == 2 and "round 7 has no proposed runs" in done.stderr
    assert "rounds with proposals: 0, 1" in done.stderr


def test_output_is_checked_before_any_work(tmp_path):
    exp = Experiment.create(tmp_path / "exp.db", ["web", "code"], ["web"])
    exp.propose(2, out=True)  # exp-round0.csv
    (tmp_path / "folder.csv").mkdir()
    pd.DataFrame({"web": [0.1, 0.9], "code": [0.9, 0.1]}).to_csv(tmp_path / "pool.csv", index=False)
    cases = [
        ({"out": tmp_path / "exp-round0.csv"}, "already exists"),
        ({"out": tmp_path / "folder.csv"}, "is a folder"),
        ({"out": tmp_path / "pool.csv", "pool": tmp_path / "pool.csv"}, "an input"),
        ({"out": tmp_path / "no" / "x.csv"}, "does not exist"),
    ]
    for kwargs, fragment in cases:
        with pytest.raises(errors.OptionError, match=fragment):
            exp.propose(2, **kwargs)
    assert len(exp.runs()) == 2  # nothing recorded
    done = bayesmix(
        "propose", "--ledger", "exp.db", "-n", 2, "--out", "exp-round0.csv", cwd=tmp_path
    )
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "already exists" in done.stderr and "--force" in done.stderr
    done = bayesmix(
        "propose", "--ledger", "exp.db", "-n", 2, "--out", "exp-round0.csv", "--force", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert pd.read_csv(tmp_path / "exp-round0.csv")["round"].tolist() == [1, 1]


def test_a_failed_write_after_recording_names_the_way_back(tmp_path, monkeypatch):
    import bayesmix.loop.proposing as proposing

    exp = Experiment.create(tmp_path / "exp.db", ["web", "code"], ["web"])

    def fail(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(proposing, "write_proposals", fail)
    with pytest.raises(
        errors.LedgerError,
        match=r"r0001 to r0002 are recorded as round 0 "
        r"but.*Experiment.export\(0\) \(the export command\)",
    ):
        exp.propose(2, out=True)
    assert exp.status()["missing_handoffs"] == {"0": "exp-round0.csv"}


# --------------------------------------------------------------------------- other laws
@pytest.mark.slow
@pytest.mark.parametrize("model", ["logshare"])
def test_propose_on_another_law(tmp_path, model):
    """propose (Thompson and BALD) and recommend on an M4 + log-share posterior."""
    runs, _ = simulate_runs(n_runs=20)
    cons = Constraints.build(SIM_DOMAINS, max_share={"Pile-CC": 0.6})
    exp = Experiment.create(tmp_path / "exp.db", runs=runs, constraints=cons, model=model, **FIT)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ts = exp.propose(3, "thompson", out=True)
        bald = exp.propose(3, "bald")
        assert exp.posterior().spec.law == "m4log"
    assert ts.attrs["round"] == 1 and bald.attrs["round"] == 2
    assert bald.attrs["fit"]["reused"] is True
    x = np.vstack([ts[MIX].to_numpy(), bald[MIX].to_numpy()])
    assert cons.contains(x).all() and pairwise_min(x) >= 0.05
    assert np.isfinite(ts["draw_objective"]).all() and (bald["information"] > 0).all()


# --------------------------------------------------------------------------- costs
def _belief(seed=21):
    """Draws around a known 4-domain law (no MCMC)."""
    _, truth = simulate(4, n_runs=4, random_seed=seed)
    rng = np.random.default_rng(0)
    m = truth["m"] * (1 + 0.01 * rng.standard_normal((100, 4)))
    rho = np.clip(truth["rho"] + 0.01 * rng.standard_normal(m.shape), 0.05, 0.95)
    t = truth["t"] + 0.01 * rng.standard_normal((100, *truth["t"].shape))
    t -= t.mean(axis=-1, keepdims=True)
    return acquire.Belief(
        {"m": m, "rho": rho, "t": t},
        np.full(m.shape, 0.01),
        np.ones(4),
        truth["train_domains"],
        truth["eval_domains"],
    )


def test_cost_aware_thompson_prefers_cheap_runs_when_values_tie():
    belief = _belief()
    domains = belief.train_domains
    best = belief.optima(Constraints.unconstrained(domains)).mean(axis=0)
    far = np.full(4, 0.25)
    frame = pd.DataFrame(
        {
            "run": ["big", "small", "far"],
            "n_params": [4e6, 1e6, 1e6],
            "tokens": [1e9, 1e9, 1e9],
            **{f"mix.{d}": [best[j], best[j], far[j]] for j, d in enumerate(domains)},
        }
    )
    pool = acquire.Candidates.pool(frame, domains)
    assert np.all(belief.loss(pool.mixtures)[:, 0] < belief.loss(pool.mixtures)[:, 2])
    worse = np.array([[0.7, 0.1, 0.1, 0.1]])
    for existing in (None, worse):  # no run yet; a worse run already done
        for seed in range(5):
            aware = acquire.propose(
                belief, 1, strategy="thompson", pool=pool, random_seed=seed, existing=existing
            )
            blind = acquire.propose(
                belief,
                1,
                strategy="thompson",
                pool=pool,
                random_seed=seed,
                existing=existing,
                cost_power=0.0,
            )
            assert aware.ids == ["small"] and aware.cost[0] == 1.0
            assert blind.ids == ["big"]  # the cost-blind rule keeps the first listed
    # a batch of two: the cheap run, then (its dear replicate being too close) the far one
    batch = acquire.propose(
        belief, 2, strategy="thompson", pool=pool, existing=worse, min_distance=0.01
    )
    assert batch.ids == ["small", "far"]


def test_cost_weighted_random_selection():
    """Pool rows drawn with probability ~ 1/cost: 20 cheap and 20 4x dearer rows -> a cheap
    first pick with probability 0.8 (0.5 when costs are ignored)."""
    rng = np.random.default_rng(0)
    mix = rng.dirichlet(np.ones(3), 40)
    frame = pd.DataFrame(
        {
            "mix.a": mix[:, 0],
            "mix.b": mix[:, 1],
            "mix.c": mix[:, 2],
            "n_params": np.repeat([1e6, 4e6], 20),
            "tokens": 1e9,
        }
    )
    pool = acquire.Candidates.pool(frame, ["a", "b", "c"])
    belief = None
    picks = {}
    for power in (1.0, 0.0):
        strat = acquire.get_strategy("random", cost_power=power)
        cheap = [
            strat.propose(belief, pool, 1, random_seed=s, min_distance=0.0).index[0] < 20
            for s in range(2000)
        ]
        picks[power] = float(np.mean(cheap))
    # binomial sd over 2000 seeds: 0.009 (p = 0.8), 0.011 (p = 0.5)
    assert 0.77 < picks[1.0] < 0.83 and 0.465 < picks[0.0] < 0.535, picks
    # the initial design from a pool is cost-weighted the same way
    first = [
        acquire.initial_batch(
            Constraints.unconstrained(["a", "b", "c"]), 1, pool=pool, random_seed=s
        ).index[0]
        < 20
        for s in range(300)
    ]
    assert np.mean(first) > 0.7


def test_the_next_propose_writes_a_handoff_file_a_killed_propose_never_wrote(tmp_path):
    """Killed between recording its runs and writing their file: the next propose writes the
    file from the ledger before going on, so no proposed run is in no file (issue 30)."""
    Experiment.create(tmp_path / "exp.db", ["web", "code", "books"], ["web", "code"])
    (tmp_path / "killed.py").write_text(KILLED)
    proc = subprocess.run(
        [sys.executable, "killed.py", "exp.db"], cwd=tmp_path, capture_output=True, timeout=300
    )
    assert proc.returncode == -signal.SIGKILL and not (tmp_path / "exp-round0.csv").exists()
    exp = Experiment(tmp_path / "exp.db")
    nxt = exp.propose(3, out=True, random_seed=4)
    assert nxt.attrs["round"] == 1
    assert any(
        "round 0's runs were recorded but their file was never written" in n
        for n in nxt.attrs["notes"]
    )
    back = pd.read_csv(tmp_path / "exp-round0.csv")
    assert back["run"].tolist() == [f"r{i:04d}" for i in range(1, 6)]
    assert exp.status()["missing_handoffs"] == {}
    assert (tmp_path / "exp-round1.csv").is_file()


def test_domains_given_as_one_string_are_refused(tmp_path):
    for kw in ({"train_domains": "abc"}, {"train_domains": ["web"], "eval_domains": "web"}):
        with pytest.raises(errors.OptionError, match="is one string, not a list"):
            Experiment.create(tmp_path / "exp.db", **kw)
    assert not (tmp_path / "exp.db").exists()
