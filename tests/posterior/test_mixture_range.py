"""The mixture-space extrapolation check shared by predict, decide and propose."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import bayesmix as bm
from bayesmix import errors
from bayesmix.posterior.mixture_range import SHARE_MARGIN, MixtureRange


def _fitted(seed: int = 0) -> pd.DataFrame:
    """40 runs that never give 'enron' much (Dirichlet 5, 5, 0.3)."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(rng.dirichlet([5, 5, 0.3], 40), columns=["web", "code", "enron"])


def test_share_range_and_distance_checks():
    fitted = _fitted()
    mr = MixtureRange.of(fitted)
    np.testing.assert_allclose(mr.high, fitted.max().to_numpy())
    # every fitted run is inside its own range
    assert mr.check(fitted)["inside"].all()
    edge = fitted.loc[[fitted["enron"].idxmax()]].copy()
    edge["enron"] += SHARE_MARGIN / 2  # on the edge of the range, within the margin
    edge["web"] -= SHARE_MARGIN / 2
    assert mr.check(edge)["inside"].all()
    new = pd.DataFrame(
        [[0.1, 0.1, 0.8], fitted.iloc[0].to_numpy()],
        index=["enron-heavy", "a fitted run"],
        columns=fitted.columns,
    )
    check = mr.check(new)
    assert list(check["inside"]) == [False, True]
    assert "enron" in check.loc[0, "outside"].split(", ") and check.loc[0, "far"]
    (note,) = mr.notes(new)
    high = fitted["enron"].max()
    assert "'enron-heavy' lies outside the fitted runs: web 0.100 below the smallest" in note
    assert f"enron 0.800 above the largest fitted {high:.3f}" in note
    assert "nearest fitted run" in note


@pytest.mark.slow
def test_predict_warns_and_decide_notes_outside_the_fitted_runs(simulated_fit):
    post = simulated_fit.posterior
    domains = list(post.train_domains)
    inside = simulated_fit.runs.mixtures.iloc[:2]
    with warnings.catch_warnings():
        warnings.simplefilter("error", errors.ExtrapolationWarning)
        post.predict(inside)  # the fitted runs themselves: no warning
    pure = pd.DataFrame(np.eye(len(domains))[:1], columns=domains, index=["pure"])
    with pytest.warns(errors.ExtrapolationWarning, match="'pure' lies outside the fitted runs"):
        post.predict(pure)
    # decide: a constraint that forces the recommendation beyond the fitted shares
    top = float(simulated_fit.runs.mixtures[domains[0]].max())
    cons = bm.Constraints.build(domains, min_share={domains[0]: min(0.99, top + 0.05)})
    rep = bm.decide(post, constraints=cons, per_draw=False, random_seed=0)
    assert any("the recommended mixture 'recommended' lies outside" in n for n in rep.notes)
