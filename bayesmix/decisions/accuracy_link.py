"""A fitted link from a task's loss to its accuracy, so a decision can be stated in benchmark
points.

Accuracy falls with the loss along a sigmoid (the shape of the loss-to-accuracy maps of CAMEL
and of the OLMo / Llama downstream-scaling work):

    acc(L) = floor + (ceiling - floor) * sigmoid(-(L - midpoint) / width)

``floor`` is chance accuracy (given: 1 / number of choices, or fitted), ``ceiling`` the best
reachable accuracy (at most 1). :func:`fit_link` fits the free parameters to paired (loss,
accuracy) values of one task by least squares (the runs of a swarm that report both);
:meth:`AccuracyLink.__call__` maps loss draws to accuracy draws, so any posterior quantity in
loss (a task's loss at a mixture, a change against a baseline) becomes one in points.
The link's own uncertainty is propagated: :func:`fit_link` also refits it to bootstrap
resamples of the pairs (:attr:`AccuracyLink.draws`), and :meth:`AccuracyLink.draw_accuracy`
maps posterior draw s through bootstrap link s (cycling), so an interval of a change in points
holds both the posterior's and the link's uncertainty. :attr:`AccuracyLink.rmse` says how far
the fitted accuracies were from the measured ones (the scatter of a single evaluation).

:func:`read_links` fits one link per task from a CSV of paired values (``bayesmix optimize
--accuracy-links``): columns ``task``, ``loss``, ``accuracy`` and optionally ``floor``, one row
per (run, task); every problem is one line naming the file, row and column.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import least_squares
from scipy.special import expit

from bayesmix import errors
from bayesmix.data.file_reading import read_csv_table

#: Columns of a links file of paired values (:func:`read_links`); ``floor`` is optional.
LINK_COLUMNS = ("task", "loss", "accuracy")
#: Columns of a links file of fitted links (:func:`read_links`): one row per task.
FITTED_COLUMNS = ("task", "floor", "ceiling", "midpoint", "width")
#: Fewest (loss, accuracy) pairs :func:`fit_link` fits a link to.
MIN_PAIRS = 5
#: Bootstrap refits of a link (:func:`fit_link`): enough for a 90% interval's ends to move
#: by a few percent of its width between seeds, and about 0.5 s per task.
N_BOOT = 100


@dataclass(frozen=True)
class AccuracyLink:
    """``acc(L) = floor + (ceiling - floor) sigmoid(-(L - midpoint) / width)``; ``rmse`` the
    fit's root mean squared error in accuracy units."""

    floor: float
    ceiling: float
    midpoint: float
    width: float
    rmse: float = float("nan")
    #: (B, 4) bootstrap refits (floor, ceiling, midpoint, width), or None (a fixed link).
    draws: np.ndarray | None = field(default=None, compare=False, repr=False)

    def __call__(self, loss):
        """Accuracy of ``loss`` (any shape) at the point estimate."""
        return _sigmoid(
            np.asarray(loss, float), self.floor, self.ceiling, self.midpoint, self.width
        )

    def draw_accuracy(self, loss):
        """Accuracy of ``loss`` (S, ...): draw s through bootstrap link s mod B, so the
        link's uncertainty joins the draws' (the point estimate without :attr:`draws`)."""
        loss = np.asarray(loss, float)
        if self.draws is None or loss.ndim == 0:
            return self(loss)
        p = self.draws[np.arange(len(loss)) % len(self.draws)]
        p = p.reshape(p.shape + (1,) * (loss.ndim - 1))
        return _sigmoid(loss, p[:, 0], p[:, 1], p[:, 2], p[:, 3])

    def change(self, loss, baseline_loss):
        """Accuracy change (points of the accuracy's units) from ``baseline_loss`` to
        ``loss`` at the link's point estimate (:meth:`draw_accuracy` adds its uncertainty)."""
        return self(loss) - self(baseline_loss)


def _sigmoid(loss, floor, ceiling, midpoint, width):
    return floor + (ceiling - floor) * expit(-(loss - midpoint) / width)


def fit_link(
    loss,
    accuracy,
    *,
    floor: float | None = None,
    task: str = "task",
    n_boot: int = N_BOOT,
    random_seed: int = 0,
) -> AccuracyLink:
    """Fit :class:`AccuracyLink` to paired values of one task (1-D arrays, NaN pairs
    dropped); ``floor`` fixed when given (chance accuracy), else fitted; ``n_boot`` refits to
    resamples of the pairs (0: none) give its :attr:`~AccuracyLink.draws`. OptionError with
    fewer than 5 pairs, or accuracies outside [0, 1]."""
    x, y = np.asarray(loss, float), np.asarray(accuracy, float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < MIN_PAIRS:
        raise errors.OptionError(
            f"{task}: {len(x)} (loss, accuracy) pairs; the link needs {MIN_PAIRS}"
        )
    if y.min() < 0 or y.max() > 1:
        raise errors.OptionError(f"{task}: accuracies must be in [0, 1]", hint="divide by 100")
    free_floor = floor is None
    lo0 = float(min(y.min(), 0.25)) if floor is None else float(floor)
    hi0 = float(min(1.0, y.max() + 0.05))
    x0 = [np.log((hi0 - lo0) / max(1e-3, 1.0 - hi0)), np.median(x), np.log(x.std() + 1e-6)]
    if free_floor:
        x0.append(np.log(lo0 + 1e-3) - np.log(1 - lo0 + 1e-3))

    def unpack(p):
        lo = float(expit(p[3])) if free_floor else float(floor)
        hi = lo + (1.0 - lo) * float(expit(p[0]))
        return lo, hi, p[1], float(np.exp(p[2]))

    def resid(p, x, y):
        return _sigmoid(x, *unpack(p)) - y

    def solve(start, x, y):
        return least_squares(resid, start, loss="soft_l1", f_scale=0.05, args=(x, y)).x

    best = solve(np.asarray(x0, float), x, y)
    lo, hi, mid, width = unpack(best)
    rmse = float(np.sqrt(np.mean(resid(best, x, y) ** 2)))
    draws = None
    if n_boot > 0:  # refits to resampled pairs, started at the fit
        rng = np.random.default_rng(random_seed)
        picks = rng.integers(0, len(x), (int(n_boot), len(x)))
        draws = np.array([unpack(solve(best, x[i], y[i])) for i in picks], float)
    return AccuracyLink(lo, hi, float(mid), width, rmse, draws)


def read_links(path: str | Path, *, tasks: Sequence[str] | None = None) -> dict[str, AccuracyLink]:
    """One :class:`AccuracyLink` per task from a CSV file: fitted (:func:`fit_link`) to
    paired values, columns ``task``, ``loss`` (in the posterior's units for that task),
    ``accuracy`` (in [0, 1]) and optionally ``floor`` (chance accuracy, one value per task;
    empty: fitted), rows with an empty loss or accuracy skipped; or links fitted elsewhere,
    columns ``task``, ``floor``, ``ceiling``, ``midpoint``, ``width`` [, ``rmse``], one row
    per task (fixed links: their uncertainty is not known). ``tasks``: the tasks a
    posterior has; a task outside them is refused. Every problem (missing file or column, a
    cell that is not a number, an accuracy outside [0, 1], a task with fewer than
    :data:`MIN_PAIRS` pairs, a link that is not a falling sigmoid in [0, 1]) is one line
    naming the file, row and column."""
    source = str(path)
    frame, lines = read_csv_table(Path(path), "task")
    if "loss" not in frame.columns and all(c in frame.columns for c in FITTED_COLUMNS):
        return _fitted_links(frame, lines, source, tasks)
    for col in LINK_COLUMNS:
        if col not in frame.columns:
            raise errors.FormatError(
                f"no column {col!r}",
                source=source,
                row=1,
                hint="a links file has columns task, loss, accuracy [, floor]: one row "
                "per run and task",
            )
    if frame.empty:
        raise errors.EmptyInputError("no rows", source=source, hint="add (task, loss, accuracy)")
    names = frame["task"].astype("string").str.strip()
    empty = names.isna() | (names == "")
    if empty.any():
        i = int(np.flatnonzero(empty.to_numpy())[0])
        raise errors.MissingValueError(
            "empty task name", source=source, row=int(lines[i]), column="task"
        )
    values = {c: _numbers(frame, c, lines, source) for c in ("loss", "accuracy", "floor")}
    for column, out_of_range, bounds, hint in (
        (
            "accuracy",
            (values["accuracy"] < 0) | (values["accuracy"] > 1),
            "[0, 1]",
            "give accuracies as fractions: divide percentages by 100",
        ),
        (
            "floor",
            (values["floor"] < 0) | (values["floor"] >= 1),
            "[0, 1)",
            "the floor is chance accuracy, 1 / number of choices",
        ),
    ):
        bad = np.flatnonzero(out_of_range)
        if len(bad):
            raise errors.OptionError(
                f"{column} {values[column][bad[0]]:g} is outside {bounds}",
                source=source,
                row=int(lines[bad[0]]),
                column=column,
                hint=hint,
            )
    links = {}
    for task in dict.fromkeys(names):
        rows = np.flatnonzero((names == task).to_numpy())
        _check_task(task, int(lines[rows[0]]), tasks, source)
        links[task] = _fit_rows(task, rows, values, lines, source)
    return links


def _check_task(task: str, row: int, tasks, source: str) -> None:
    """OptionError naming the row when ``task`` is not among the posterior's ``tasks``."""
    if tasks is not None and task not in tasks:
        raise errors.OptionError(
            f"task {task!r} is not in the posterior",
            source=source,
            row=row,
            column="task",
            hint=f"its tasks: {', '.join(tasks[:5])}{', ...' if len(tasks) > 5 else ''}",
        )


def _fitted_links(frame: pd.DataFrame, lines, source: str, tasks) -> dict[str, AccuracyLink]:
    """Links fitted elsewhere (:data:`FITTED_COLUMNS`, optional ``rmse``), one row per task,
    each checked: 0 <= floor < ceiling <= 1, width > 0, every value a finite number."""
    cols = [*FITTED_COLUMNS[1:], "rmse"]
    values = {c: _numbers(frame, c, lines, source) for c in cols}
    links: dict[str, AccuracyLink] = {}
    for i, task in enumerate(frame["task"].astype("string").str.strip()):
        row = int(lines[i])
        floor, ceiling, mid, width, rmse = (values[c][i] for c in cols)
        problem = _link_problem(task, links, floor, ceiling, mid, width)
        if problem is not None:
            raise errors.OptionError(problem[1], source=source, row=row, column=problem[0])
        _check_task(str(task), row, tasks, source)
        links[str(task)] = AccuracyLink(floor, ceiling, mid, width, rmse)
    if not links:
        raise errors.EmptyInputError("no rows", source=source, hint="one row per task")
    return links


def _link_problem(task, links, floor, ceiling, mid, width) -> tuple[str, str] | None:
    """(column, what is wrong) of one row of fitted links, or None."""
    if pd.isna(task) or task == "":
        return "task", "empty task name"
    if task in links:
        return "task", f"task {task!r} is listed twice"
    if not np.isfinite(mid):
        return "midpoint", "midpoint must be a number"
    if not width > 0:
        return "width", "width must be a positive number"
    if not 0 <= floor < 1:
        return "floor", "floor must be in [0, 1)"
    if not floor < ceiling <= 1:
        return "ceiling", "ceiling must be in (floor, 1]"
    return None


def _numbers(frame: pd.DataFrame, column: str, lines, source: str) -> np.ndarray:
    """Column ``column`` as floats (NaN where empty or absent); text is a NonNumericError
    naming its row."""
    if column not in frame.columns:
        return np.full(len(frame), np.nan)
    raw = frame[column]
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float)
    bad = np.flatnonzero(np.isnan(values) & raw.notna().to_numpy())
    if len(bad):
        raise errors.NonNumericError(
            f"{str(raw.iloc[bad[0]])!r} is not a number",
            source=source,
            row=int(lines[bad[0]]),
            column=column,
        )
    return values


def _fit_rows(task: str, rows, values: dict, lines, source: str) -> AccuracyLink:
    """The link of one task's rows; a floor that differs between rows, or too few pairs, is
    an error naming the task's first row."""
    floors = values["floor"][rows]
    given = np.unique(floors[np.isfinite(floors)])
    if len(given) > 1:
        raise errors.OptionError(
            f"task {task!r} has {len(given)} different floors",
            source=source,
            row=int(lines[rows[0]]),
            column="floor",
            hint="give one chance accuracy per task, or leave the column empty to fit it",
        )
    loss, acc = values["loss"][rows], values["accuracy"][rows]
    n = int((np.isfinite(loss) & np.isfinite(acc)).sum())
    if n < MIN_PAIRS:
        raise errors.OptionError(
            f"task {task!r} has {n} (loss, accuracy) pairs; a link needs {MIN_PAIRS}",
            source=source,
            row=int(lines[rows[0]]),
            column="task",
            hint="add runs that report both, or drop the task's rows",
        )
    floor = float(given[0]) if len(given) else None
    return fit_link(loss, acc, floor=floor, task=task)
