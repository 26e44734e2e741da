"""The proxy runs the nested pipeline reads: checkpoints to fit, mixtures across model sizes.

:func:`proxy_records` keeps the checkpoints stage 1 fits (step > 0, up to ``max_step``, model
sizes present); :func:`mixture_design` groups runs into mixtures by their proportions, so stage
2 fits one size curve per mixture; :func:`check_target` checks the target size and step.
Input the pipeline cannot use raises :class:`PipelineError` (one line, naming the column).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bayesmix import errors
from bayesmix.data.table import RunTable, as_run_table


class PipelineError(errors.BayesmixError):
    """Input the nested pipeline cannot use (no steps or sizes, one size, a target step below
    the fitted checkpoints, ...)."""


@dataclass(frozen=True)
class Design:
    """The proxy runs grouped into mixtures: ``run_mixture`` (run -> mixture label),
    ``run_size`` (run -> n_params), ``mixtures`` (DataFrame, index mixture label, columns
    training domains) of the mixtures present at >= 2 sizes, their ``sizes``, and ``dropped``
    (labels present at one size only)."""

    run_mixture: dict
    run_size: dict
    mixtures: pd.DataFrame
    sizes: tuple[float, ...]
    dropped: tuple[str, ...]


def proxy_records(runs: RunTable, max_step: float | None) -> tuple[RunTable, list[str]]:
    """The checkpoints stage 1 fits: step > 0 (and <= ``max_step``), model size present."""
    notes: list[str] = []
    runs = as_run_table(runs)
    if not runs.has_steps:
        raise PipelineError(
            "the runs have no 'step' column: the step law needs checkpoints",
            source=runs.source,
            column="step",
            hint="add the training step of every record",
        )
    if runs.column("n_params") is None:
        raise PipelineError(
            "the runs have no 'n_params' column: the size law needs model sizes",
            source=runs.source,
            column="n_params",
            hint="add the model size of every run",
        )
    tidy = runs.to_tidy()
    keep = tidy["step"].to_numpy() > 0
    if (~keep).any():
        notes.append(
            f"left out {int((~keep).sum())} records at step 0 (a power law in steps "
            "is undefined there)"
        )
    if max_step is not None:
        if not max_step > 0:
            raise PipelineError(f"max_step={max_step:g} is not positive", param="max_step")
        late = keep & (tidy["step"].to_numpy() > max_step)
        if late.any():
            notes.append(f"left out {int(late.sum())} records after step {max_step:g}")
        keep &= tidy["step"].to_numpy() <= max_step
    if not keep.any():
        raise PipelineError(
            "no checkpoint left to fit"
            + (f" at steps <= max_step={max_step:g}" if max_step is not None else ""),
            source=runs.source,
            column="step",
            hint="raise the last step fitted" if max_step is not None else None,
            param="max_step" if max_step is not None else None,
        )
    sel = tidy[keep]
    table = RunTable(sel, runs.train_domains, runs.eval_domains, source=runs.source)
    return table, notes


def mixture_design(table: RunTable) -> Design:
    """Group runs into mixtures by identical proportions (to 1e-6) across model sizes.

    A mixture's label is the part of its run ids after the first ``_`` when its runs agree on
    it and it is unique (Ye et al.'s ``70M_3`` -> ``3``), else ``mix<i>``. Mixtures present at
    fewer than 2 sizes cannot inform a size law: they are listed in ``dropped``.
    """
    mix = table.mixtures
    sizes_by_run = table.to_tidy().drop_duplicates("run").set_index("run")["n_params"].astype(float)
    keys = [tuple(np.round(row, 6)) for row in mix.to_numpy(dtype=float)]
    groups: dict[tuple, list[str]] = {}
    for run, key in zip(mix.index, keys):
        groups.setdefault(key, []).append(str(run))
    suffixes = []
    for members in groups.values():
        tails = {r.split("_", 1)[1] if "_" in r else None for r in members}
        suffixes.append(tails.pop() if len(tails) == 1 else None)
    if None in suffixes or len(set(suffixes)) != len(suffixes):
        labels = [f"mix{i}" for i in range(len(groups))]
    else:
        labels = [str(s) for s in suffixes]  # no None here
    run_mixture: dict = {}
    run_size: dict = {}
    kept: list = []
    dropped: list = []
    for label, members in zip(labels, groups.values()):
        for r in members:
            run_mixture[r] = label
            run_size[r] = float(sizes_by_run[r])
        n_sizes = len({run_size[r] for r in members})
        (kept if n_sizes >= 2 else dropped).append((label, members[0]))
    frame = mix.loc[[first for _, first in kept]]
    frame.index = pd.Index([label for label, _ in kept], name="mixture")
    sizes = tuple(
        sorted({run_size[r] for label, _ in kept for r in run_mixture if run_mixture[r] == label})
    )
    return Design(
        run_mixture=run_mixture,
        run_size=run_size,
        mixtures=frame,
        sizes=sizes,
        dropped=tuple(label for label, _ in dropped),
    )


def check_target(name: str, value) -> float:
    """``value`` as a float when it is a positive finite number; PipelineError naming the
    parameter (``name=``) otherwise."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not (math.isfinite(number) and number > 0):
        raise PipelineError(f"{name}={value!r} is not a positive finite number", param=name)
    return number
