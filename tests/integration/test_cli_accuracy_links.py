"""A decision in benchmark points from the command line: ``bayesmix optimize --accuracy-links``
and ``bayesmix report --accuracy-links`` on a small ``tasks`` posterior (draws around a known
truth, no sampler) with (loss, accuracy) pairs from a known link."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from bayesmix.cli import main
from bayesmix.decisions.accuracy_link import AccuracyLink, read_links
from bayesmix.decisions.task_groups import accuracy_changes
from bayesmix.posterior.posterior import Posterior
from bayesmix.reporting.html_report import figure_names, load_decision
from tests.conftest import family_posterior

#: The link the pairs are drawn from: its transition spans the fixture's losses (1.3 to 3.4).
TRUE = AccuracyLink(floor=0.25, ceiling=0.85, midpoint=2.0, width=0.3)
LINKED = ("a_task0", "b_task1")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The saved posterior and a links file: each linked task's 40 run losses, with accuracies
    from :data:`TRUE` plus noise 0.005."""
    runs, _, post = family_posterior(seed=0)
    rng = np.random.default_rng(0)  # the accuracies' noise
    folder = tmp_path_factory.mktemp("accuracy")
    losses = runs.losses
    rows = [
        {"task": task, "loss": x, "accuracy": TRUE(x) + 0.005 * rng.standard_normal()}
        for task in LINKED
        for x in losses[task]
    ]
    pd.DataFrame(rows).to_csv(folder / "pairs.csv", index=False)
    return post.save(folder / "post.nc"), folder / "pairs.csv"


def cli(capsys, *argv):
    code = main([*map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_optimize_states_the_decision_in_benchmark_points(files, tmp_path, capsys):
    post, pairs = files
    out_json = tmp_path / "decision.json"
    code, out, err = cli(capsys, "optimize", post, "--accuracy-links", pairs, "-o", out_json)
    assert code == 0, err
    assert "Accuracy in percentage points" in out
    saved = pd.DataFrame(json.loads(out_json.read_text())["accuracy_changes"])
    assert set(saved["task"]) == set(LINKED)
    # the same table as the Python API gives for the saved decision and the file's links
    report = load_decision(out_json)
    expected = accuracy_changes(Posterior.load(post), report, read_links(pairs))
    pd.testing.assert_frame_equal(saved, expected, check_exact=False, rtol=1e-9)
    # the mean-loss optimum lowers both tasks' loss (uniform 1.9-2.0 -> 1.6-1.7, around the
    # link's midpoint 2.0): both gain points for sure; the CLI's line shows them x 100
    assert (saved["change"] > 0).all() and (saved["p_better"] == 1.0).all()
    section = out[out.index("Accuracy in percentage points") :].splitlines()
    line = next(s for s in section if s.strip().startswith(LINKED[0] + " "))
    row = saved.set_index("task").loc[LINKED[0]]
    assert f"{100 * row['change']:+.2f} [{100 * row['lower']:+.2f}" in line
    # the CSV report carries the same numbers in its section "accuracy"
    out_csv = tmp_path / "decision.csv"
    assert cli(capsys, "optimize", post, "--accuracy-links", pairs, "-o", out_csv)[0] == 0
    frame = pd.read_csv(out_csv)
    acc = frame[frame["section"] == "accuracy"].set_index(["domain", "statistic"])["value"]
    assert acc[(LINKED[0], "change")] == pytest.approx(row["change"])
    # --json prints the same table; the links file is an input, never an output
    code, out, _ = cli(capsys, "optimize", post, "--accuracy-links", pairs, "--json", "--quiet")
    assert (
        code == 0
        and json.loads(out)["accuracy_changes"]
        == json.loads(out_json.read_text())["accuracy_changes"]
    )
    copy = tmp_path / "pairs.json"
    copy.write_text(pairs.read_text())
    code, _, err = cli(capsys, "optimize", post, "--accuracy-links", copy, "-o", copy, "--force")
    assert code == 2 and "would overwrite input" in err


def _bad(frame: pd.DataFrame, case: str) -> pd.DataFrame:
    if case == "column":
        return frame.drop(columns="loss")
    if case == "task":
        return frame.assign(task=frame["task"].where(frame.index != 40, "c_task9"))
    return frame.iloc[[0, 1, 2, 40, 41, 42, 43, 44]]  # three pairs of a_task0


@pytest.mark.parametrize(
    "case,message",
    [
        ("missing", "nope.csv: file not found"),
        ("column", "bad.csv, row 1: no column 'loss'"),
        ("task", "bad.csv, row 42, column 'task': task 'c_task9' is not in the posterior"),
        ("pairs", "bad.csv, row 2, column 'task': task 'a_task0' has 3 (loss, accuracy) pairs"),
    ],
)
@pytest.mark.parametrize("command", ["optimize", "report"])
def test_bad_links_are_one_line_exit_2_and_nothing_written(
    files, tmp_path, capsys, command, case, message
):
    post, pairs = files
    path = tmp_path / ("nope.csv" if case == "missing" else "bad.csv")
    if case != "missing":
        _bad(pd.read_csv(pairs), case).to_csv(path, index=False)
    out = tmp_path / ("decision.json" if command == "optimize" else "report.html")
    code, stdout, err = cli(capsys, command, post, "--accuracy-links", path, "-o", out, "--quiet")
    assert code == 2 and stdout == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"bayesmix {command}: error: ")
    assert message in lines[0]
    assert not out.exists()


def _tasks_section(page: str) -> str:
    start = page.index('<section id="tasks">')
    return page[start : page.index("</section>", start)]


def test_the_report_shows_the_accuracy_changes(files, tmp_path, capsys):
    post, pairs = files
    decision = tmp_path / "decision.json"
    assert cli(capsys, "optimize", post, "--accuracy-links", pairs, "-o", decision)[0] == 0
    html = tmp_path / "from_decision.html"
    assert cli(capsys, "report", post, "--decision", decision, "-o", html, "--quiet")[0] == 0
    page = html.read_text()
    assert "accuracy_changes" in figure_names(page)
    section = _tasks_section(page)
    saved = json.loads(decision.read_text())["accuracy_changes"]
    for rec in saved:  # each linked task's row, in percentage points
        assert f"<td>{rec['task']}</td><td>{100 * rec['accuracy_baseline']:.2f}</td>" in section
    # links given with a saved decision replace its table: here one task's links only
    one = tmp_path / "one.csv"
    pd.read_csv(pairs).query(f"task == '{LINKED[1]}'").to_csv(one, index=False)
    relinked = tmp_path / "relinked.html"
    argv = ("report", post, "--decision", decision, "--accuracy-links", one, "-o", relinked)
    assert cli(capsys, *argv, "--quiet")[0] == 0
    section = _tasks_section(relinked.read_text())
    assert f"<td>{LINKED[1]}</td>" in section and f"<td>{LINKED[0]}</td>" not in section
    # links given to the report: the decision is computed there and stated in points too
    here = tmp_path / "here.html"
    code, _, err = cli(capsys, "report", post, "--accuracy-links", pairs, "-o", here, "--quiet")
    assert code == 0, err
    assert "accuracy_changes" in figure_names(here.read_text())
    # without links, no accuracy plot
    plain = tmp_path / "plain.html"
    assert cli(capsys, "report", post, "--decide", "-o", plain, "--quiet")[0] == 0
    assert "accuracy_changes" not in figure_names(plain.read_text())
