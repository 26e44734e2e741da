"""Downstream evaluations as targets: a swarm's mixture file and metrics file joined into one
run table whose validation domains are tasks, with each task's family and direction.

Olmix's swarms (and any pair in the same layout) come as two CSVs joined on ``run``: the mixture
file (``run``, optional ``name``/``index``/unnamed row numbers, one column per training domain)
and the metrics file (the same id columns, one column per evaluation, e.g.
``arc_easy:rc::olmes`` in bits per byte). Each evaluation becomes a validation domain
``loss.<task>``.

* **Choosing tasks**: ``select`` takes task names, shell globs (``mmlu_*``) or family heads;
  the union enters, in file order.
* **Families** are the model's business (``laws/tasks.py``, the ``tasks`` specification's
  ``[hierarchy.families]``); a family head here (``mmlu``) selects the tasks whose name before
  its first ``:`` is it or starts with it and ``_``.
* **Direction**: a loss is lower-is-better. A task named in ``higher_is_better`` (accuracy,
  pass rate) enters as ``ceiling - value`` (``ceiling`` 1 for values in [0, 1], else 100), so
  the fit and every decision minimise it; :meth:`Tasks.to_metric` maps predictions back.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bayesmix import errors
from bayesmix.data.table import RunTable
from bayesmix.data.validation import LOSS_PREFIX, MIX_PREFIX

#: Columns that identify a run rather than hold a share or a metric.
ID_COLUMNS = ("run", "name", "index")


@dataclass(frozen=True)
class Tasks:
    """A run table of downstream tasks and what each task is.

    ``table``: the runs (``loss.<task>`` the value to minimise); ``higher_is_better``: task ->
    the ceiling its values were subtracted from (tasks absent are lower-is-better, entered as
    they are); ``order``: the runs' ``index`` when the files had
    one (NaN otherwise), by run id."""

    table: RunTable
    higher_is_better: dict[str, float] = field(default_factory=dict)
    order: dict[str, float] = field(default_factory=dict)

    @property
    def names(self) -> tuple[str, ...]:
        return self.table.eval_domains

    def to_metric(self, task: str, values):
        """Values of ``loss.<task>`` back in the metric's own units and direction."""
        values = np.asarray(values, float)
        ceiling = self.higher_is_better.get(task)
        return values if ceiling is None else ceiling - values

    def runs_by_index(self) -> list[str]:
        """Run ids sorted by ``index`` (file order where there is none)."""
        runs = list(self.table.runs)
        return sorted(runs, key=lambda r: (self.order.get(r, np.nan), runs.index(r)))


def in_family(task: str, family: str) -> bool:
    """Whether ``family`` is a head of ``task``'s name before its first ``:`` (``mmlu`` of
    ``mmlu_anatomy:rc::olmes``; the tasks a family of ``laws/tasks.py`` holds by default)."""
    stem = task.split(":", 1)[0]
    return stem == family or stem.startswith(family + "_")


def select_names(names: Sequence[str], select: Iterable[str] | str | None) -> list[str]:
    """The tasks of ``names`` that ``select`` (names, globs, family heads) picks, in order;
    DomainNameError for an entry that picks nothing."""
    if select is None:
        return list(names)
    if isinstance(select, str):
        select = [select]
    chosen: set[str] = set()
    for pattern in select:
        hit = {
            n
            for n in names
            if n == pattern or fnmatch.fnmatchcase(n, pattern) or in_family(n, pattern)
        }
        if not hit:
            raise errors.DomainNameError(
                f"task selection {pattern!r} matches no task",
                hint="give a task name, a glob such as 'mmlu_*' or a family name",
            )
        chosen |= hit
    return [n for n in names if n in chosen]


def _read(path) -> tuple[pd.DataFrame, str]:
    if isinstance(path, pd.DataFrame):
        return path.copy(), "frame"
    path = Path(path)
    try:
        frame = pd.read_csv(path)
    except (OSError, pd.errors.ParserError) as exc:
        raise errors.UnreadableFileError(f"cannot read: {exc}", source=str(path)) from None
    frame = frame.loc[:, [not str(c).startswith("Unnamed:") for c in frame.columns]]
    if "run" not in frame.columns:
        raise errors.FormatError(
            "no 'run' column", source=str(path), hint="both files need the run id in 'run'"
        )
    return frame, str(path)


def _data_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c not in ID_COLUMNS]


def _ceiling(values: np.ndarray, task: str, source: str) -> float:
    finite = values[np.isfinite(values)]
    if finite.size and (finite.min() < 0 or finite.max() > 100):
        raise errors.FormatError(
            "a higher-is-better task must lie in [0, 1] or [0, 100]",
            source=source,
            column=task,
            hint="leave it lower-is-better or rescale it",
        )
    return 1.0 if finite.size == 0 or finite.max() <= 1.0 else 100.0


def load_tasks(
    mixtures,
    metrics,
    *,
    select: Iterable[str] | str | None = None,
    higher_is_better: Iterable[str] = (),
    max_loss: float | None = None,
) -> Tasks:
    """Read a swarm's mixture and metrics files (paths or DataFrames) into :class:`Tasks`.

    ``select``: task names, globs or family heads to keep (all by default);
    ``higher_is_better``: tasks (names or globs) entered as ``ceiling -
    value``. Runs missing from either file are a FormatError naming the run."""
    mix, mix_src = _read(mixtures)
    met, met_src = _read(metrics)
    for frame, other, src in ((mix, met, mix_src), (met, mix, met_src)):
        missing = sorted(set(frame["run"].astype(str)) - set(other["run"].astype(str)))
        if missing:
            raise errors.FormatError(
                "run has no row in the other file",
                source=src,
                run=missing[0],
                hint="the mixture and metrics files must hold the same runs",
            )
    names = _data_columns(met)
    chosen = select_names(names, select)
    flip = set(select_names(chosen, list(higher_is_better))) if higher_is_better else set()
    met = met.set_index(met["run"].astype(str))
    runs = mix["run"].astype(str)
    columns = {"run": runs.to_numpy()}
    for dom in _data_columns(mix):
        columns[MIX_PREFIX + str(dom)] = mix[dom].to_numpy(float)
    ceilings = {}
    for task in chosen:
        values = met.loc[runs, task].to_numpy(float)
        if task in flip:
            ceilings[task] = _ceiling(values, task, met_src)
            values = ceilings[task] - values
        columns[LOSS_PREFIX + task] = values
    tidy = pd.DataFrame(columns)
    if max_loss is None:
        table = RunTable.from_frame(tidy, source=met_src, renormalize=True)
    else:
        table = RunTable.from_frame(tidy, source=met_src, renormalize=True, max_loss=max_loss)
    order = {}
    if "index" in mix.columns:
        order = dict(zip(runs, mix["index"].to_numpy(float), strict=True))
    return Tasks(table, ceilings, order)
