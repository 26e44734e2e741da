"""The report's section on downstream tasks (a posterior of the ``tasks`` law): per-task
predictions at the starting mixture against the uniform mixture, and the task trade-offs.

* **Per task**: each task's expected change of loss from the uniform mixture to the view's
  mixture (the recommendation, else the posterior-mean optimum), with its interval, sorted, one
  colour per family: what the mixture buys (left of 0) at the cost of which tasks (right).
* **Trade-offs between families**: for each family, the mixture best for that family's mean
  loss; a heatmap of what that mixture does to every family's mean (change against the uniform
  mixture). Read a row as "favouring this family costs (red) or also helps (blue) these".
* **In benchmark points**: when the decision carries accuracy changes (``bayesmix optimize
  --accuracy-links``, or ``DecisionReport.accuracy_changes`` set in Python), each linked task's
  accuracy change from the decision's baseline to its recommendation, in percentage points with
  its interval, as a plot and a table; shown for any law.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bayesmix.decisions.optimize import minimize_objective
from bayesmix.decisions.task_groups import TaskGroups, task_changes
from bayesmix.reporting.figures import embed_figure, esc, html_table, new_figure, tick_fontsize
from bayesmix.reporting.view import View

#: Shown when the posterior's law is one of these.
TASK_LAWS = ("tasks",)
#: Columns of an accuracy-changes table shown in percentage points (accuracy x 100).
POINT_COLUMNS = ("accuracy_baseline", "accuracy", "change", "lower", "upper", "link_rmse")


def section_tasks(view: View) -> tuple[str, str, str] | None:
    """Per-task changes and the family trade-off heatmap of a ``tasks`` posterior, and the
    decision's accuracy changes when it has them; None when there is neither."""
    accuracy = None if view.decision is None else view.decision.accuracy_changes
    has_accuracy = accuracy is not None and len(accuracy) > 0
    is_tasks = view.post.law.name in TASK_LAWS
    if not (is_tasks or has_accuracy):
        return None
    parts = _task_parts(view) if is_tasks else []
    if has_accuracy:
        parts += _accuracy_parts(accuracy, view.decision.prob)
    return ("tasks", "Downstream tasks", "\n".join(parts))


def _task_parts(view: View) -> list[str]:
    groups = TaskGroups.build(view.eval)
    uniform = np.full(len(view.train), 1.0 / len(view.train))
    changes = task_changes(
        view.draws, view.mixture, baseline=uniform, groups=groups, ci_prob=view.prob
    )
    return [
        f"<p>Change of each task's expected loss from the uniform mixture to the "
        f"{esc(view.label)} ({view.prob:.0%} intervals); below 0 the mixture helps the task. "
        f"{len(view.eval)} tasks in {len(groups.names)} families.</p>",
        _per_task_figure(changes, groups),
        html_table(changes[changes["kind"] == "group"].drop(columns="kind")),
        "<p>Trade-offs: each row is the mixture best for one family's mean loss (no "
        "constraints); the cells are the change it makes to each family's mean loss against "
        "the uniform mixture.</p>",
        _tradeoff_figure(view, groups, uniform),
    ]


def _accuracy_parts(accuracy: pd.DataFrame, prob: float) -> list[str]:
    """The decision in benchmark points: a plot of each task's change with its interval and
    the table, both in percentage points (accuracy x 100)."""
    points = accuracy.assign(
        **{c: 100 * accuracy[c] for c in POINT_COLUMNS if c in accuracy.columns}
    )
    colours = np.where(points["lower"] > 0, "C0", np.where(points["upper"] < 0, "C3", "0.4"))
    figure = _change_figure(
        points.rename(columns={"task": "name"}),
        colours,
        "accuracy change, percentage points (recommended vs baseline)",
        ("accuracy_changes", "accuracy change per task, percentage points"),
        size=(0.2, 2.0, 1.0, 14),
    )
    table = points.rename(columns={"accuracy_baseline": "baseline", "accuracy": "recommended"})
    return [
        f"<p>The decision in benchmark points: each linked task's accuracy (its expected loss "
        f"through the task's fitted loss-to-accuracy link) at the decision's baseline and at "
        f"the recommendation, and the change in percentage points with its {prob:.0%} "
        "equal-tailed interval; above 0 the recommendation gains points. The link is taken "
        "as known: its own error (link_rmse, points) is not in the intervals.</p>",
        figure,
        html_table(table, digits=2),
    ]


def _per_task_figure(changes, groups: TaskGroups) -> str:
    tasks = changes[changes["kind"] == "task"].reset_index(drop=True)
    family = {
        t: groups.names[int(np.argmax(groups.matrix[:, i]))]
        for i, t in enumerate(groups.eval_domains)
    }
    colours = {g: f"C{i % 10}" for i, g in enumerate(groups.names)}
    return _change_figure(
        tasks,
        [colours[family[t]] for t in tasks["name"]],
        "change of expected loss vs the uniform mixture",
        ("task_changes", "per-task change of expected loss, by family"),
        size=(0.12, 2.5, 0.8, 8),
    )


def _change_figure(frame, colours, xlabel: str, name: tuple[str, str], size) -> str:
    """Each row's ``change`` with its interval (``lower``, ``upper``), labelled by ``name``,
    first row on top; ``size``: (inches per row, least height, line width, marker size)."""
    per_row, least, lw, marker = size
    k = len(frame)
    fig = new_figure(7.5, max(least, per_row * k + 1.0))
    ax = fig.subplots()
    y = np.arange(k)
    ax.errorbar(
        frame["change"],
        y,
        xerr=[frame["change"] - frame["lower"], frame["upper"] - frame["change"]],
        fmt="none",
        ecolor=colours,
        lw=lw,
    )
    ax.scatter(frame["change"], y, c=colours, s=marker, zorder=3)
    ax.axvline(0.0, color="black", lw=0.6)
    ax.set_yticks(y, frame["name"], fontsize=tick_fontsize(k))
    ax.set_ylim(k - 0.5, -0.5)
    ax.set_xlabel(xlabel)
    return embed_figure(fig, *name)


def _tradeoff_figure(view: View, groups: TaskGroups, uniform) -> str:
    g = len(groups.names)
    rows = []
    for i in range(g):
        best = minimize_objective(view.draws, view.constraints, groups.matrix[i], "mean").mixture
        ch = task_changes(view.draws, best, baseline=uniform, groups=groups, ci_prob=view.prob)
        by_group = ch[ch["kind"] == "group"].set_index("name")["change"]
        rows.append(by_group.reindex(groups.names).to_numpy())
    grid = np.array(rows)
    lim = float(np.nanmax(np.abs(grid))) or 1.0
    cell = min(0.5, max(0.2, 9.0 / g))
    fig = new_figure(max(4.5, cell * g + 2.5), max(3.0, cell * g + 1.5))
    ax = fig.subplots()
    image = ax.imshow(grid, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
    fig.colorbar(image, ax=ax, shrink=0.8, label="change of the family's mean loss")
    ax.set_xticks(range(g), groups.names, rotation=90, fontsize=tick_fontsize(g))
    ax.set_yticks(range(g), groups.names, fontsize=tick_fontsize(g))
    ax.set_xlabel("family affected")
    ax.set_ylabel("mixture best for this family")
    return embed_figure(fig, "task_tradeoffs", "what favouring one family does to the others")
