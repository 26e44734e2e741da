"""Phased runs to train next (bayesmix.loop.phase_design): valid run-table rows within the
per-phase and whole-run bounds, pairs of a schedule and its static twin, drawn around the
chosen schedule."""

from __future__ import annotations

import numpy as np
from conftest import phased_m4_draws

import bayesmix as bm
from bayesmix.data.constraints import Constraints
from bayesmix.decisions.schedule import decide_schedule
from bayesmix.loop.phase_design import design_phase_runs

DOMAINS = ("web", "code", "hq")


def test_designed_phase_runs_pair_a_schedule_with_its_static_twin_within_the_bounds():
    whole = Constraints.build(DOMAINS, max_share={"hq": 0.06})
    phases = [Constraints.build(DOMAINS), Constraints.build(DOMAINS, max_share={"hq": 0.3})]
    chosen = decide_schedule(
        "m4+phases", (0.8, 0.2), constraints=phases, whole=whole, params=phased_m4_draws()
    )
    design = design_phase_runs(chosen, 8, constraints=phases, whole=whole, random_seed=1)
    # valid run-table rows once losses are measured
    table = bm.RunTable.from_frame(design.assign(**{f"loss.{d}": 3.0 for d in DOMAINS}))
    frac, mixes = table.phases()
    assert table.n_runs == 8
    assert (table.mixtures["hq"] <= 0.06 + 1e-6).all()  # the whole-run bound, every run
    assert (mixes[:, 1, 2] <= 0.3 + 1e-9).all()
    phased = frac[:, 1] > 0
    # pairs: a schedule, then the static run of the same tokens (when that one is feasible)
    assert phased[0] and not phased[1]
    np.testing.assert_allclose(table.mixtures.iloc[1], table.mixtures.iloc[0])
    assert np.abs(mixes[phased, 1, 2] - 0.3).max() < 0.15  # drawn around the chosen schedule
