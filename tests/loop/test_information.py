"""The information strategies' parts (bayesmix.loop.information): the ensemble's square-root
update, the group-information estimator and k-means, on arrays built in the test (no MCMC)."""

from __future__ import annotations

import numpy as np
import pytest

from bayesmix.loop.information import Ensemble, group_information, kmeans


def test_ensemble_update_is_the_gaussian_posterior_covariance():
    """After observing column j with noise n, the ensemble covariance must equal the Gaussian
    posterior C - c c' / (C_jj + n) (exact for the square-root update, up to rounding)."""
    rng = np.random.default_rng(0)
    values = rng.standard_normal((400, 5)) @ rng.standard_normal((5, 5))
    ens = Ensemble(values, noise=0.3)
    a = ens.anom[..., 0]
    c = a.T @ a / len(a)
    expected = c - np.outer(c[:, 2], c[:, 2]) / (c[2, 2] + 0.3)
    mean_before = ens.mean.copy()
    ens.condition(2)
    a = ens.anom[..., 0]
    np.testing.assert_allclose(a.T @ a / len(a), expected, atol=1e-10)
    np.testing.assert_array_equal(ens.mean, mean_before)  # the believer keeps the mean


def test_group_information_estimator():
    """Tells groups apart where their predictions differ; 0 where they do not; never above the
    entropy of the grouping (here log 2 for two equal groups)."""
    rng = np.random.default_rng(1)
    groups = np.repeat([0, 1], 200)
    separating = np.where(groups == 0, 0.0, 1.0) + 0.05 * rng.standard_normal(400)
    blind = rng.standard_normal(400)
    shifted = np.where(groups == 0, 0.0, 0.1) + 0.05 * rng.standard_normal(400)
    info = group_information(np.column_stack([separating, blind, shifted]), groups, noise=0.01)
    assert info[0] == pytest.approx(np.log(2), rel=1e-6)  # capped at H(g)
    assert info[1] < 0.01
    assert 0.05 < info[2] < info[0]


def test_kmeans_recovers_separated_groups():
    rng = np.random.default_rng(2)
    centres = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]])
    points = np.repeat(centres, 30, axis=0) + 0.01 * rng.standard_normal((90, 3))
    labels = kmeans(points, 3, random_seed=0)
    truth = np.repeat([0, 1, 2], 30)
    # same partition up to renaming of the labels
    assert len(set(zip(labels, truth))) == 3 and len(set(labels)) == 3


def test_group_information_is_not_swamped_by_absurd_draws():
    """A wild posterior (a few draws predicting 1e120 nats) must not turn optimum-information
    into maximum variance: the tie-breaker grows only logarithmically with the variance."""
    rng = np.random.default_rng(0)
    groups = np.repeat([0, 1], 50)
    informative = np.where(groups == 0, 0.0, 1.0) + 0.01 * rng.standard_normal(100)
    wild = 0.01 * rng.standard_normal(100)
    wild[[0, 50]] = 1e120  # one absurd draw in each group: no information about the group
    score = group_information(np.column_stack([informative, wild]), groups, noise=1e-4)
    assert score[0] > 0.5 > score[1]


def test_kmeans_old_seed_name_warns_and_gives_the_same_labels():
    points = np.random.default_rng(3).dirichlet(np.ones(3), size=60)
    with pytest.warns(FutureWarning, match="`seed` is deprecated, use `random_seed`"):
        old = kmeans(points, 4, seed=7)
    np.testing.assert_array_equal(old, kmeans(points, 4, random_seed=7))
