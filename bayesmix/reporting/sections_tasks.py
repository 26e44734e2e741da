"""The report's section on downstream tasks (a posterior of the ``tasks`` law): per-task
predictions at the starting mixture against the uniform mixture, and the task trade-offs.

* **Per task**: each task's expected change of loss from the uniform mixture to the view's
  mixture (the recommendation, else the posterior-mean optimum), with its interval, sorted, one
  colour per family: what the mixture buys (left of 0) at the cost of which tasks (right).
* **Trade-offs between families**: for each family, the mixture best for that family's mean
  loss; a heatmap of what that mixture does to every family's mean (change against the uniform
  mixture). Read a row as "favouring this family costs (red) or also helps (blue) these".
"""

from __future__ import annotations

import numpy as np

from bayesmix.decisions.optimize import minimize_objective
from bayesmix.decisions.task_groups import TaskGroups, task_changes
from bayesmix.reporting.figures import embed_figure, esc, html_table, new_figure, tick_fontsize
from bayesmix.reporting.view import View

#: Shown when the posterior's law is one of these.
TASK_LAWS = ("tasks",)


def section_tasks(view: View) -> tuple[str, str, str] | None:
    """Per-task changes and the family trade-off heatmap, or None for other laws."""
    if view.post.law.name not in TASK_LAWS:
        return None
    groups = TaskGroups.build(view.eval)
    uniform = np.full(len(view.train), 1.0 / len(view.train))
    changes = task_changes(
        view.draws, view.mixture, baseline=uniform, groups=groups, ci_prob=view.prob
    )
    parts = [
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
    return ("tasks", "Downstream tasks", "\n".join(parts))


def _per_task_figure(changes, groups: TaskGroups) -> str:
    tasks = changes[changes["kind"] == "task"].reset_index(drop=True)
    family = {
        t: groups.names[int(np.argmax(groups.matrix[:, i]))]
        for i, t in enumerate(groups.eval_domains)
    }
    colours = {g: f"C{i % 10}" for i, g in enumerate(groups.names)}
    k = len(tasks)
    fig = new_figure(7.5, max(2.5, 0.12 * k + 1.0))
    ax = fig.subplots()
    y = np.arange(k)
    c = [colours[family[t]] for t in tasks["name"]]
    ax.errorbar(
        tasks["change"],
        y,
        xerr=[tasks["change"] - tasks["lower"], tasks["upper"] - tasks["change"]],
        fmt="none",
        ecolor=c,
        lw=0.8,
    )
    ax.scatter(tasks["change"], y, c=c, s=8, zorder=3)
    ax.axvline(0.0, color="black", lw=0.6)
    ax.set_yticks(y, tasks["name"], fontsize=tick_fontsize(k))
    ax.invert_yaxis()
    ax.set_xlabel("change of expected loss vs the uniform mixture")
    return embed_figure(fig, "task_changes", "per-task change of expected loss, by family")


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
