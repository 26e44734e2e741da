"""Initial designs on the constrained simplex and random selection from a pool."""

from __future__ import annotations

import numpy as np
import pytest

from bayesmix.data.constraints import Constraints
from bayesmix.errors import DesignError, InfeasibleError
from bayesmix.loop.design import DEFAULT_MIN_DISTANCE, initial_design, select_random

DOMAINS = ["web", "code", "books", "math", "wiki"]


def pairwise_min(x: np.ndarray) -> float:
    d = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    return d[np.triu_indices(len(x), 1)].min()


@pytest.mark.parametrize("method", ["sobol", "dirichlet"])
def test_design_respects_every_constraint_type(method):
    # code is capped by availability: 2e9 tokens * 2 epochs / 1e10 target tokens = 0.4
    c = Constraints.build(
        DOMAINS,
        min_share={"web": 0.2},
        max_share={"books": 0.15},
        fixed={"math": 0.1},
        tokens_available={"code": 2e9},
        max_epochs=2,
        target_tokens=1e10,
    )
    x = initial_design(c, 64, random_seed=7, method=method)
    assert x.shape == (64, 5)
    np.testing.assert_allclose(x.sum(axis=1), 1.0, atol=1e-12)
    assert (x >= 0).all()
    assert (x[:, 0] >= 0.2).all()  # minimum
    assert (x[:, 2] <= 0.15).all()  # maximum
    np.testing.assert_allclose(x[:, 3], 0.1, atol=1e-12)  # fixed
    assert (x[:, 1] <= 0.4 + 1e-12).all()  # token cap
    assert c.contains(x).all()
    assert pairwise_min(x) >= DEFAULT_MIN_DISTANCE
    # the caps bind somewhere: the design reaches near the edges of the box, not just the middle
    assert x[:, 1].max() > 0.3 and x[:, 2].max() > 0.1


@pytest.mark.parametrize("method", ["sobol", "dirichlet"])
def test_design_is_reproducible_with_a_seed(method):
    c = Constraints.build(DOMAINS, max_share={"web": 0.5})
    a = initial_design(c, 20, random_seed=3, method=method)
    b = initial_design(c, 20, random_seed=3, method=method)
    other = initial_design(c, 20, random_seed=4, method=method)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, other)


def test_min_distance_and_existing_runs_are_respected():
    c = Constraints.unconstrained(["a", "b", "c"])
    existing = initial_design(c, 30, random_seed=1)
    x = initial_design(c, 40, random_seed=2, min_distance=0.08, existing=existing)
    assert pairwise_min(x) >= 0.08
    d = np.sqrt(((x[:, None, :] - existing[None, :, :]) ** 2).sum(-1))
    assert d.min() >= 0.08


def test_sobol_design_is_uniform_on_the_simplex():
    # Dirichlet(1) marginals are Beta(1, 3) with mean 1/4; for 512 iid points the standard error
    # of a mean is 0.19/sqrt(512) = 0.0085, and a Sobol design is closer still: 0.02 is > 2 s.e.
    x = initial_design(
        Constraints.unconstrained(["a", "b", "c", "d"]), 512, random_seed=0, min_distance=0
    )
    np.testing.assert_allclose(x.mean(axis=0), 0.25, atol=0.02)
    # P(share > 0.5) = (1 - 0.5)^3 = 0.125 under Beta(1, 3); s.e. 0.015 for iid points
    np.testing.assert_allclose((x > 0.5).mean(axis=0), 0.125, atol=0.03)


def test_rejection_keeps_the_distribution_inside_a_loose_box():
    # About 29% of uniform simplex points satisfy these maxima, so the design uses rejection and
    # must follow the uniform distribution restricted to the box. Reference: plain Monte Carlo
    # with numpy's Dirichlet sampler (400k draws, s.e. < 0.002). P(a > 0.25) is 0.77 there,
    # while a bounded stick-breaking fill gives about 0.68; the design's s.e. for 400 points is
    # at most 0.021 (iid), so 0.04 separates the two.
    c = Constraints.build(["a", "b", "c", "d"], max_share={"a": 0.9, "b": 0.2, "c": 0.5, "d": 0.5})
    ref = np.random.default_rng(99).dirichlet(np.ones(4), size=400_000)
    ref = ref[c.contains(ref)]
    x = initial_design(c, 400, random_seed=5, min_distance=0)
    assert c.contains(x).all()
    assert abs((x[:, 0] > 0.25).mean() - (ref[:, 0] > 0.25).mean()) < 0.04
    np.testing.assert_allclose(x.mean(axis=0), ref.mean(axis=0), atol=0.015)


def test_tight_box_still_fills_n_distinct_points():
    # 17 domains each capped at 0.06: caps sum to 1.02, the box is a sliver of the simplex where
    # rejection from Dirichlet draws almost never lands, so bounded stick-breaking takes over.
    d = [f"d{i}" for i in range(17)]
    c = Constraints.build(d, max_share={k: 0.06 for k in d})
    x = initial_design(c, 30, random_seed=0, min_distance=0.005)
    assert c.contains(x).all()
    assert (x <= 0.06 + 1e-12).all() and (x >= 0.06 - 0.02 - 1e-12).all()
    assert pairwise_min(x) >= 0.005
    np.testing.assert_array_equal(x, initial_design(c, 30, random_seed=0, min_distance=0.005))


def test_single_feasible_mixture():
    c = Constraints.build(["a", "b", "c"], fixed={"a": 0.3, "b": 0.3})
    x = initial_design(c, 1, random_seed=0)
    np.testing.assert_allclose(x, [[0.3, 0.3, 0.4]])
    with pytest.raises(DesignError, match="single feasible mixture"):
        initial_design(c, 2, random_seed=0)


def test_too_tight_for_n_distinct_points_is_a_clear_error():
    c = Constraints.build(["a", "b", "c"], max_share={"a": 0.4, "b": 0.4, "c": 0.4})
    with pytest.raises(DesignError, match=r"found only \d+ of 200 mixtures at least 0.1 apart"):
        initial_design(c, 200, random_seed=0, min_distance=0.1)
    # existing runs count against the room left: the feasible segment is 0.028 long, centred on
    # the existing run, so nothing lies 0.015 away from it
    c2 = Constraints.build(["a", "b"], min_share={"a": 0.5}, max_share={"a": 0.52})
    with pytest.raises(DesignError, match="existing runs"):
        initial_design(c2, 1, random_seed=0, min_distance=0.015, existing=[[0.51, 0.49]])
    assert issubclass(DesignError, InfeasibleError)


def test_infeasible_constraints_are_reported_before_any_design():
    with pytest.raises(InfeasibleError, match="sum to 1.2"):
        Constraints.build(["a", "b"], min_share={"a": 0.6, "b": 0.6})


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n": 0}, "positive integer"),
        ({"n": 2.5}, "positive integer"),
        ({"method": "grid"}, "unknown design method"),
        ({"alpha": -1.0}, "alpha"),
        ({"alpha": [1.0, 2.0]}, "alpha"),
        ({"min_distance": -0.1}, "min_distance"),
        ({"existing": np.ones((2, 2))}, "existing"),
    ],
)
def test_bad_arguments(kwargs, match):
    c = Constraints.unconstrained(["a", "b", "c"])
    args = {"n": 4, **kwargs}
    n = args.pop("n")
    with pytest.raises(DesignError, match=match):
        initial_design(c, n, random_seed=0, **args)


def test_select_random_from_a_pool():
    pool = np.random.default_rng(0).dirichlet(np.ones(4), size=50)
    a = select_random(pool, 10, random_seed=1, exclude=range(20))
    assert len(set(a.tolist())) == 10 and a.min() >= 20 and a.max() < 50
    np.testing.assert_array_equal(a, select_random(pool, 10, random_seed=1, exclude=range(20)))
    assert not np.array_equal(a, select_random(pool, 10, random_seed=2, exclude=range(20)))
    everything = select_random(pool, 30, random_seed=1, exclude=range(20))
    assert sorted(everything.tolist()) == list(range(20, 50))
    with pytest.raises(DesignError, match="only 30 of 50"):
        select_random(pool, 31, random_seed=1, exclude=range(20))
    with pytest.raises(DesignError, match="outside the pool"):
        select_random(pool, 1, random_seed=1, exclude=[50])


def test_the_old_seed_name_warns_and_gives_the_same_design():
    c = Constraints.unconstrained(["a", "b", "c"])
    with pytest.warns(FutureWarning, match="`seed` is deprecated, use `random_seed`"):
        old = initial_design(c, 8, seed=3)
    np.testing.assert_array_equal(old, initial_design(c, 8, random_seed=3))
    pool = np.random.default_rng(0).dirichlet(np.ones(3), size=20)
    with pytest.warns(FutureWarning, match="select_random"):
        picked = select_random(pool, 4, seed=1)
    np.testing.assert_array_equal(picked, select_random(pool, 4, random_seed=1))


def test_too_few_mixtures_names_min_distance_for_the_cli():
    """The library names the parameter; bayesmix init and propose show their flag."""
    from bayesmix.cli import build_parser, error_text

    with pytest.raises(DesignError) as info:
        initial_design(Constraints.unconstrained(["a", "b"]), 50, random_seed=0, min_distance=0.1)
    assert info.value.param == "min_distance" and "lower min_distance=0.1" in str(info.value)
    flags = build_parser().parse_args(["init", "--ledger", "x.db", "--domains", "a,b"]).flags
    assert "lower --min-distance 0.1, or relax" in error_text(info.value, flags)
