"""Schedule decisions (bayesmix.decisions.schedule) on a known law of phased runs: no gain over
a static mixture without binding constraints, the annealing gain under a whole-run token bound,
every bound honoured, the optimum not beaten by random feasible schedules, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import phased_m4_draws

from bayesmix import errors
from bayesmix.data.constraints import Constraints
from bayesmix.decisions.schedule import (
    decide_schedule,
    project_schedule,
    schedule_loss,
)

DOMAINS = ("web", "code", "hq")
FRACTIONS = (0.8, 0.2)


def decide(**kw):
    return decide_schedule(
        "m4+phases", FRACTIONS, params=phased_m4_draws(kw.pop("gamma", 1.5)), **kw
    )


def test_without_binding_constraints_a_schedule_gains_nothing_over_one_mixture():
    free = decide(constraints=Constraints.build(DOMAINS))
    # the loss depends on the schedule only through r_eff, which one mixture reaches too
    assert abs(free.gain) < 1e-6
    np.testing.assert_allclose(free.effective, free.static, atol=1e-3)


def test_a_whole_run_token_bound_makes_the_annealing_phase_worth_it():
    whole = Constraints.build(DOMAINS, max_share={"hq": 0.06})
    phases = [Constraints.build(DOMAINS), Constraints.build(DOMAINS, max_share={"hq": 0.3})]
    chosen = decide(constraints=phases, whole=whole)
    mix = chosen.mixtures.to_numpy()
    assert chosen.whole["hq"] <= 0.06 + 1e-6 and mix[1, 2] <= 0.3 + 1e-9
    assert mix[1, 2] > 0.29 and mix[0, 2] < 0.01  # all of hq in the annealing phase
    assert chosen.static["hq"] == pytest.approx(0.06, abs=1e-6)
    assert chosen.gain > 0.01  # measured 0.04 nats: hq counts 2.4x in the last phase
    # no random feasible schedule beats it (the objective is convex: one optimum)
    rng = np.random.default_rng(0)
    lo, hi = np.zeros((2, 3)), np.array([[1.0, 1.0, 1.0], [1.0, 1.0, 0.3]])
    w = np.full(3, 1 / 3)
    best = schedule_loss("m4+phases", phased_m4_draws(), FRACTIONS, mix, w)[0]
    for _ in range(200):
        x = project_schedule(rng.dirichlet(np.ones(3), 2), lo, hi, np.array(FRACTIONS), whole)
        assert schedule_loss("m4+phases", phased_m4_draws(), FRACTIONS, x, w)[0] >= best - 1e-7


def test_without_late_emphasis_the_order_of_phases_does_not_matter():
    whole = Constraints.build(DOMAINS, max_share={"hq": 0.06})
    chosen = decide(gamma=0.0, whole=whole)
    assert abs(chosen.gain) < 1e-6  # r_eff = the whole-run mixture: nothing to schedule


def test_bad_requests_are_named_errors():
    with pytest.raises(errors.OptionError, match="phase fractions"):
        decide_schedule("m4+phases", (0.5, 0.6), params=phased_m4_draws())
    with pytest.raises(errors.OptionError, match="m4\\+phases"):
        decide_schedule("m4", FRACTIONS, params=phased_m4_draws())
    with pytest.raises(errors.OptionError, match="3 phase constraints for 2 phases"):
        decide(constraints=[Constraints.build(DOMAINS)] * 3)
    need = [Constraints.build(DOMAINS, min_share={"hq": 0.5})] * 2
    with pytest.raises(errors.InfeasibleError, match="whole-run"):
        decide(constraints=need, whole=Constraints.build(DOMAINS, max_share={"hq": 0.1}))
