"""Phased runs to train next: a batch around a chosen schedule that also pins the late emphasis.

:func:`design_phase_runs` returns ``n`` runs in the run table's layout (``run``, ``mix.*``,
``phase_frac.*``, ``mix<k>.*``; no losses yet): pairs of a schedule drawn around the chosen one
(each phase's mixture Dirichlet with mean the chosen phase mixture and concentration
``concentration``, projected onto the constraints) and the static run of the same whole-run
mixture. The two runs of a pair consume the same tokens of every domain in a different order, so
their loss difference measures the late emphasis ``gamma`` of :mod:`bayesmix.laws.phases` and
nothing else; the spread around the schedule measures the law near it. Where a pair's static run
would leave a phase's constraints it is replaced by another schedule draw.

This is a design rule, not the ledger's ``propose``: the runs are not recorded in a ledger or
scored by an acquisition function (docs/phases.md).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bayesmix.data.constraints import Constraints
from bayesmix.data.phases import frac_columns, mix_columns
from bayesmix.decisions.schedule import Schedule, project_schedule


def design_phase_runs(
    schedule: Schedule,
    n: int,
    *,
    constraints: Constraints | list[Constraints] | None = None,
    whole: Constraints | None = None,
    concentration: float = 30.0,
    random_seed: int = 0,
    prefix: str = "phase",
) -> pd.DataFrame:
    """``n`` phased runs (module docstring) around ``schedule`` (a
    :class:`bayesmix.decisions.schedule.Schedule`), within the per-phase ``constraints`` and
    the whole-run bounds ``whole``; run ids ``<prefix>000``... A DataFrame in the run table's
    layout without loss columns, rows in pairs (schedule, its static counterpart)."""
    rng = np.random.default_rng(random_seed)
    mix = schedule.mixtures.to_numpy()
    frac = np.asarray(schedule.fractions, float)
    train = list(schedule.mixtures.columns)
    n_p, n_m = mix.shape
    boxes = (
        [Constraints.build(train)] * n_p
        if constraints is None
        else [constraints] * n_p
        if isinstance(constraints, Constraints)
        else list(constraints)
    )
    lo = np.stack([b.lower for b in boxes])
    hi = np.stack([b.upper for b in boxes])
    rows: list[tuple[np.ndarray, np.ndarray | None]] = []  # (phase mixtures, fracs or None)
    while len(rows) < n:
        alpha = concentration * np.maximum(mix, 1e-3)
        draw = np.stack([rng.dirichlet(a) for a in alpha])
        draw = project_schedule(draw, lo, hi, frac, whole)
        rows.append((draw, frac))
        static = frac @ draw
        if len(rows) < n and all(b.contains(static[None])[0] for b in boxes):
            rows.append((np.broadcast_to(static, (n_p, n_m)), None))
    frame: dict[str, list] = {"run": [f"{prefix}{i:03d}" for i in range(n)]}
    for j, d in enumerate(train):
        frame[f"mix.{d}"] = [float(f @ m[:, j]) if f is not None else m[0, j] for m, f in rows]
    for k, col in enumerate(frac_columns(n_p)):
        frame[col] = [f[k] if f is not None else np.nan for _, f in rows]
    for k, cols in enumerate(mix_columns(n_p, train)):
        for j, col in enumerate(cols):
            frame[col] = [m[k, j] if f is not None else np.nan for m, f in rows]
    return pd.DataFrame(frame)
