"""The loss-to-accuracy link, validated on simulated (loss, accuracy) pairs from a known
sigmoid (the swarm has no accuracies)."""

from __future__ import annotations

import numpy as np
import pytest

from bayesmix import errors
from bayesmix.decisions.accuracy_link import AccuracyLink, fit_link

TRUE = AccuracyLink(floor=0.25, ceiling=0.85, midpoint=1.6, width=0.12)


def _pairs(n=80, noise=0.01, seed=0):
    rng = np.random.default_rng(seed)
    loss = rng.uniform(1.2, 2.0, n)
    return loss, np.clip(TRUE(loss) + noise * rng.standard_normal(n), 0, 1)


@pytest.mark.parametrize("floor", [None, 0.25])
def test_the_link_recovers_a_known_sigmoid(floor):
    loss, acc = _pairs()
    link = fit_link(loss, acc, floor=floor)
    # 80 pairs with accuracy noise 0.01 across the whole transition: the curve is pinned to
    # about the noise level everywhere (checked on a grid), its parameters to a few percent
    grid = np.linspace(1.2, 2.0, 50)
    assert np.abs(link(grid) - TRUE(grid)).max() < 0.02
    assert link.midpoint == pytest.approx(1.6, abs=0.03)
    assert link.rmse == pytest.approx(0.01, abs=0.004)


def test_loss_draws_become_accuracy_changes_in_points():
    link = fit_link(*_pairs(), floor=0.25)
    draws = np.array([1.55, 1.6, 1.65])
    change = link.change(draws, 1.6)
    # lower loss, higher accuracy; at the midpoint the slope is (0.85 - 0.25) / (4 x 0.12)
    assert change[0] > 0 > change[2]
    assert change[0] == pytest.approx(0.05 * 0.6 / (4 * 0.12), rel=0.1)


def test_too_few_pairs_or_percentages_are_refused():
    with pytest.raises(errors.OptionError, match="mmlu: 3 .* pairs"):
        fit_link([1, 2, 3], [0.3, 0.4, 0.5], task="mmlu")
    with pytest.raises(errors.OptionError, match="accuracies must be in \\[0, 1\\]"):
        fit_link(np.arange(6.0), np.full(6, 50.0))
