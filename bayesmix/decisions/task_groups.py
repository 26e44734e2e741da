"""Decisions over groups of downstream tasks: the weighted mean of groups, the worst group, and
what a mixture buys per group and per task.

A posterior of many tasks (``laws/tasks.py``; any law whose validation domains are tasks) is
judged through groups of its tasks: :class:`TaskGroups` holds each group's weights over the
tasks (a row summing to 1; by default the tasks' families, equal weight per task within a
group). Then

* **weighted mean**: :meth:`TaskGroups.weights` is the task weights of a weighted mean of group
  means, for :func:`bayesmix.decide`'s ``weights`` (any objective: mean, quantile, CVaR, ...);
* **worst group**: :func:`worst_group` minimises the largest expected change of a group's mean
  loss against a baseline (the minimax of :mod:`bayesmix.decisions.epigraph` with groups for
  domains);
* **per-task guarantees**: the chance constraints of :mod:`bayesmix.decisions.guarantees`
  already hold per validation domain, i.e. per task (``"no-worse:all=0.01@0.9"``: every task
  no worse than the baseline by more than 0.01, each with probability 0.9);
* **trade-offs**: :func:`task_changes` gives each task's and group's change against a baseline
  per draw summarised (mean, interval, probability of improving): what a mixture buys at the
  cost of which tasks;
* **in benchmark points**: :func:`accuracy_changes` states a mixture's (or a decision's) effect
  on the tasks that have a fitted loss-to-accuracy link
  (:mod:`bayesmix.decisions.accuracy_link`) in accuracy: each draw's expected loss through the
  link, so the interval is the loss posterior's, the link taken as known.

Directions: tasks where higher is better enter the run table as ``ceiling - value``
(:func:`bayesmix.data.downstream.load_tasks`), so "lower" is "better" here for every task.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bayesmix import errors
from bayesmix.data.constraints import Constraints
from bayesmix.decisions.draws import predict_draws, unpack_draws
from bayesmix.decisions.epigraph import DomainValues, minimise_max_from, worst_piece
from bayesmix.decisions.feasible import centre, feasible_points
from bayesmix.laws.tasks import task_families
from bayesmix.posterior.prediction import add_shift


@dataclass(frozen=True)
class TaskGroups:
    """Groups of tasks as rows of weights: ``names`` (G,), ``matrix`` (G, K) over
    ``eval_domains``, each row summing to 1."""

    names: tuple[str, ...]
    matrix: np.ndarray
    eval_domains: tuple[str, ...]

    @classmethod
    def build(
        cls,
        eval_domains: Sequence[str],
        groups: Mapping[str, Sequence[str] | str] | None = None,
        task_weights: Mapping[str, float] | None = None,
    ) -> TaskGroups:
        """Groups over ``eval_domains``: ``groups`` maps a group to task names or globs (a
        task may be in several); None: each task's family (``laws/tasks.py``).
        ``task_weights`` weighs tasks within a group (default 1 each). ObjectiveError naming
        a group that holds no task."""
        tasks = tuple(eval_domains)
        if groups is None:
            fams = task_families(tasks)
            groups = {f: [t for t in tasks if fams[t] == f] for f in dict.fromkeys(fams.values())}
        tw = np.array([float((task_weights or {}).get(t, 1.0)) for t in tasks])
        rows = []
        for name, members in groups.items():
            pats = [members] if isinstance(members, str) else list(members)
            hit = np.array([any(fnmatch.fnmatchcase(t, p) for p in pats) for t in tasks])
            row = hit * tw
            if row.sum() <= 0:
                raise errors.ObjectiveError(
                    f"task group {name!r} holds no task with weight > 0",
                    hint="name tasks of the posterior or globs that match some",
                )
            rows.append(row / row.sum())
        return cls(tuple(groups), np.array(rows), tasks)

    def weights(self, group_weights: Mapping[str, float] | None = None) -> dict[str, float]:
        """Task weights of the weighted mean of group means (``group_weights``: default 1
        per group), normalised to sum to 1: ``decide(post, weights=groups.weights())``."""
        gw = np.array([float((group_weights or {}).get(g, 1.0)) for g in self.names])
        if (gw < 0).any() or gw.sum() <= 0:
            raise errors.ObjectiveError("group weights must be >= 0 and not all 0")
        w = gw @ self.matrix / gw.sum()
        return dict(zip(self.eval_domains, w.tolist(), strict=True))


@dataclass(frozen=True)
class WorstGroupDecision:
    """The worst-group mixture: ``mixture`` {train domain: share}, ``worst`` its largest
    expected group change against the ``baseline`` (loss units), ``changes`` per group and
    task (:func:`task_changes`)."""

    mixture: dict[str, float]
    worst: float
    baseline: dict[str, float]
    changes: pd.DataFrame


def _baseline(baseline, train_domains) -> np.ndarray:
    if baseline is None:
        return np.full(len(train_domains), 1.0 / len(train_domains))
    if isinstance(baseline, pd.Series):
        baseline = baseline.to_dict()
    if isinstance(baseline, Mapping):
        return np.array([float(baseline.get(d, 0.0)) for d in train_domains])
    return np.asarray(baseline, float)


def worst_group(
    source,
    groups: TaskGroups | Mapping | None = None,
    *,
    constraints: Constraints | None = None,
    baseline=None,
    random_seed: int = 0,
    ci_prob: float = 0.9,
) -> WorstGroupDecision:
    """The mixture minimising the worst group's expected change of its mean loss against
    ``baseline`` (default uniform), over ``constraints`` (default the simplex); ``groups`` a
    :class:`TaskGroups` or what :meth:`TaskGroups.build` takes (default the families)."""
    law, params, inputs = unpack_draws(source)
    draws = _names(source)
    groups = _groups(groups, draws[1])
    cons = constraints or Constraints.build(list(draws[0]))
    base = _baseline(baseline, draws[0])
    dv = DomainValues(law, params, inputs, groups.matrix)
    base_value = dv.at(base)[:, 0, :].mean(axis=0)

    def pieces(r):
        f, g = dv(r)
        return f.mean(axis=0) - base_value, g.mean(axis=0)

    starts = [base, centre(cons), *feasible_points(cons, 2, random_seed)]
    r = minimise_max_from(pieces, cons, starts)
    changes = task_changes(source, r, baseline=base, groups=groups, ci_prob=ci_prob)
    return WorstGroupDecision(
        dict(zip(draws[0], r.tolist(), strict=True)),
        worst_piece(pieces, r),
        dict(zip(draws[0], base.tolist(), strict=True)),
        changes,
    )


def task_changes(
    source,
    mixture,
    *,
    baseline=None,
    groups: TaskGroups | Mapping | None = None,
    ci_prob: float = 0.9,
) -> pd.DataFrame:
    """Per task, then per group: the change of the expected loss from ``baseline`` (default
    uniform) to ``mixture`` over the draws: mean, interval (``ci_prob``, equal-tailed) and
    the probability that it improves (change < 0). Columns: kind ("task"/"group"), name,
    change, lower, upper, p_better, sorted within kind from most improved."""
    law, params, inputs = unpack_draws(source)
    train, evals = _names(source)
    groups = _groups(groups, evals)
    r = np.stack([_baseline(mixture, train), _baseline(baseline, train)])
    losses = predict_draws(law, params, r, inputs)  # (S, 2, K)
    diff = losses[:, 0, :] - losses[:, 1, :]  # (S, K)
    q = [(1 - ci_prob) / 2, (1 + ci_prob) / 2]
    frames = []
    for kind, names, values in (
        ("task", evals, diff),
        ("group", groups.names, diff @ groups.matrix.T),
    ):
        lo, hi = np.quantile(values, q, axis=0)
        frame = pd.DataFrame(
            {
                "kind": kind,
                "name": list(names),
                "change": values.mean(axis=0),
                "lower": lo,
                "upper": hi,
                "p_better": (values < 0).mean(axis=0),
            }
        )
        frames.append(frame.sort_values("change", kind="stable"))
    return pd.concat(frames, ignore_index=True)


def accuracy_changes(
    source,
    mixture,
    links: Mapping,
    *,
    baseline=None,
    ci_prob: float = 0.9,
) -> pd.DataFrame:
    """A mixture's effect in benchmark points on the tasks with a loss-to-accuracy link.

    ``mixture``: shares (mapping, Series or array in the source's training-domain order) or a
    :class:`~bayesmix.decisions.decision_report.DecisionReport`, whose recommended mixture and
    baseline are taken (``baseline`` then must be None); ``links``: task name ->
    :class:`~bayesmix.decisions.accuracy_link.AccuracyLink`; ``baseline``: default uniform.
    Per draw, each task's expected loss at both mixtures goes through its link. Columns: task,
    accuracy_baseline, accuracy (posterior means, the link's units), change (points; > 0
    better), lower, upper (``ci_prob``, equal-tailed; the link's bootstrap uncertainty
    included, :meth:`~bayesmix.decisions.accuracy_link.AccuracyLink.draw_accuracy`),
    p_better, link_rmse (the scatter of single evaluations around the link); sorted from most
    improved. A decision report's inputs (its target
    scale) are used. A nested-pipeline posterior's imputation shifts are added draw by draw, as
    its predictions add them (pass the Posterior, not its LawDraws). An unknown task is an
    OptionError."""
    train, evals = _names(source)
    report_inputs: dict = {}
    if hasattr(mixture, "recommendation"):  # a DecisionReport: its mixture and its baseline
        if baseline is not None:
            raise errors.OptionError("give baseline=None with a decision report: it has its own")
        report_inputs = dict(getattr(mixture, "inputs", None) or {})  # its target scale
        shares = mixture.recommendation.set_index("train_domain")
        mixture, baseline = shares["share"], shares["baseline"]
    unknown = [t for t in links if t not in evals]
    if unknown:
        raise errors.OptionError(
            f"links name tasks the posterior does not have: {', '.join(map(str, unknown))}",
            hint=f"tasks: {', '.join(evals[:5])}{', ...' if len(evals) > 5 else ''}",
        )
    if not links:
        raise errors.OptionError("links is empty: give at least one task's AccuracyLink")
    law, params, inputs = unpack_draws(source)
    inputs = {**inputs, **report_inputs}
    r = np.stack([_baseline(mixture, train), _baseline(baseline, train)])
    losses = predict_draws(law, params, r, inputs)  # (S, 2, K)
    shift = getattr(source, "imputation_shift", None)  # a pipeline posterior's, per draw
    if shift is not None and len(losses) == source.n_samples:
        # the link is not linear: absolute losses matter, so the shift of each draw enters
        losses = add_shift(losses, shift)
    q = [(1 - ci_prob) / 2, (1 + ci_prob) / 2]
    rows = []
    for task, link in links.items():
        k = evals.index(task)
        new, old = (link.draw_accuracy(losses[:, j, k]) for j in (0, 1))
        lo, hi = np.quantile(new - old, q)
        rows.append(
            {
                "task": task,
                "accuracy_baseline": float(old.mean()),
                "accuracy": float(new.mean()),
                "change": float((new - old).mean()),
                "lower": float(lo),
                "upper": float(hi),
                "p_better": float((new > old).mean()),
                "link_rmse": float(link.rmse),
            }
        )
    frame = pd.DataFrame(rows)
    return frame.sort_values("change", ascending=False, kind="stable", ignore_index=True)


def accuracy_text(changes: pd.DataFrame, ci_prob: float) -> list[str]:
    """A table of :func:`accuracy_changes` as text lines in percentage points (accuracy x
    100): task, the baseline's and the mixture's accuracy, the change with its interval,
    P(better), the link's rmse."""
    rows = [
        {
            "task": r.task,
            "baseline": f"{100 * r.accuracy_baseline:.2f}",
            "recommended": f"{100 * r.accuracy:.2f}",
            f"change [{ci_prob:.0%} interval]": f"{100 * r.change:+.2f} "
            f"[{100 * r.lower:+.2f}, {100 * r.upper:+.2f}]",
            "P(better)": f"{r.p_better:.3f}",
            "link rmse": f"{100 * r.link_rmse:.2f}",
        }
        for r in changes.itertuples()
    ]
    return [
        "Accuracy in percentage points (each task's expected loss through its fitted link; "
        f"{ci_prob:.0%} equal-tailed intervals; the link's rmse not propagated)",
        pd.DataFrame(rows).to_string(index=False),
        "",
    ]


def _names(source) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return tuple(source.train_domains), tuple(source.eval_domains)


def _groups(groups, eval_domains) -> TaskGroups:
    if isinstance(groups, TaskGroups):
        if groups.eval_domains != tuple(eval_domains):
            raise errors.ObjectiveError("task groups were built for other tasks")
        return groups
    return TaskGroups.build(eval_domains, groups)
