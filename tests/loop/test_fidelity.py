"""Multi-fidelity acquisition (bayesmix.loop.fidelity) and the robust information scores, on
draws of the scaling law built in the test (no MCMC)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bayesmix import errors
from bayesmix.data.constraints import Constraints
from bayesmix.loop.batch import Batch
from bayesmix.loop.belief import Belief
from bayesmix.loop.candidates import Candidates
from bayesmix.loop.fidelity import (
    Menu,
    TargetInfo,
    at_menu_entry,
    check_target_tokens,
    largest_entry,
    menu_candidates,
    menu_text,
    parse_menu,
    parse_scale,
    scaled_objective,
)
from bayesmix.loop.information import BALD, Ensemble, robust_values

DOMAINS = ("a", "b")
TARGET = {"n_params": 1e9, "tokens": 2e10}


def scaling_belief(n_draws=200, seed=0) -> Belief:
    """Two domains. Domain a's reducible loss shrinks with size at a rate the draws disagree
    on (alpha_a ~ U(0.1, 0.6)); domain b's at a known rate. So the target-scale optimum is
    uncertain, and only runs at different sizes tell the draws apart."""
    rng = np.random.default_rng(seed)
    s = n_draws
    alpha = np.column_stack([rng.uniform(0.1, 0.6, s), np.full(s, 0.35)])
    t = np.tile(np.array([[-1.0, 1.0], [1.0, -1.0]]), (s, 1, 1))
    params = {
        "E": np.full((s, 2), 1.8),
        "A": np.full((s, 2), 1.0),
        "alpha": alpha,
        "B": np.full((s, 2), 0.8),
        "beta": np.full((s, 2), 0.35),
        "t": t,
        "n_ref": np.full(s, 1e8),
        "d_ref": np.full(s, 2e9),
    }
    return Belief(
        params, np.full((s, 2), 0.005), np.ones(2), DOMAINS, DOMAINS, law="scaling", inputs=TARGET
    )


def test_menu_costs_default_to_params_times_tokens_and_can_be_set():
    menu = Menu.build([1e7, 1e8], [100, 200], tokens_per_step=1e6)
    assert len(menu) == 4
    np.testing.assert_allclose(menu.cost, menu.n_params * menu.steps * 1e6)
    own = Menu.build([1e7, 1e8], [100, 200], grid=False, cost=[1.0, 3.0])
    np.testing.assert_array_equal(own.cost, [1.0, 3.0])
    frame = pd.DataFrame({"n_params": [1e7, 1e8], "steps": [100, 100], "cost": [2.0, 5.0]})
    assert Menu.from_frame(frame).cost.tolist() == [2.0, 5.0]


def test_menu_errors_name_the_row_and_field():
    bad = pd.DataFrame({"n_params": [1e7, -1.0], "steps": [100, 100]})
    with pytest.raises(errors.NonNumericError, match="n_params") as info:
        Menu.from_frame(bad, source="menu.csv")
    assert "3" in str(info.value)  # the file's line of the bad row (header = line 1)
    with pytest.raises(errors.FormatError, match="steps"):
        Menu.from_frame(pd.DataFrame({"n_params": [1e7]}))


def test_menu_text_gives_sizes_steps_tokens_and_costs():
    menu = parse_menu("70M@10000, 160M@10000,410M@20K", tokens_per_step=1000)
    np.testing.assert_array_equal(menu.n_params, [7e7, 1.6e8, 4.1e8])
    np.testing.assert_array_equal(menu.steps, [1e4, 1e4, 2e4])
    np.testing.assert_array_equal(menu.tokens, [1e7, 1e7, 2e7])
    np.testing.assert_allclose(menu.cost, menu.n_params * menu.tokens)  # the default cost
    own = parse_menu("2@200=1,3@200=1.5,4@400=4")
    np.testing.assert_array_equal(own.cost, [1.0, 1.5, 4.0])
    assert own.tokens[0] == 200 * 1_048_576  # the library's default tokens per step
    # written back in the same form (costs relative to the cheapest), read back the same
    assert menu_text(own) == "2@200=1,3@200=1.5,4@400=4"
    again = parse_menu(menu_text(menu), tokens_per_step=1000)
    # costs are written with 4 significant digits
    np.testing.assert_allclose(again.cost / again.cost[0], menu.cost / menu.cost[0], rtol=1e-3)
    assert parse_scale("1.4B@1e5", tokens_per_step=10) == {"n_params": 1.4e9, "tokens": 1e6}


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("70X@100", "menu='70X@100': size '70X' is not a positive number"),
        ("70M", "menu='70M': not SIZE@STEPS"),
        ("70M@", "menu='70M@': not SIZE@STEPS"),
        ("70M@1.5", "menu='70M@1.5': steps '1.5' is not a positive whole number"),
        ("70M@0", "menu='70M@0': steps '0'"),
        ("-7@10", "menu='-7@10': size '-7'"),
        ("70M@10=free", "menu='70M@10=free': cost 'free' is not a positive number"),
        ("70M@10=-1", "menu='70M@10=-1': cost '-1'"),
        ("70M@10,160M@10,70M@10", "menu='70M@10': size 70M at 10 steps is listed twice"),
        ("70M@10=1,160M@10", "menu='160M@10' has no cost while other entries have one"),
        ("70M@10,,160M@10", "has an empty entry"),
        ("", "lists no entry"),
    ],
)
def test_bad_menu_text_names_the_entry(text, fragment):
    with pytest.raises(errors.OptionError) as info:
        parse_menu(text)
    message = str(info.value)
    assert fragment in message and "\n" not in message
    assert info.value.param == "menu"  # the CLI shows it as --menu


def test_bad_target_scale_and_tokens_per_step():
    with pytest.raises(errors.OptionError, match="target_scale='1B@10=5': the target has no cost"):
        parse_scale("1B@10=5")
    with pytest.raises(errors.OptionError, match="target_scale='1B': not SIZE@STEPS"):
        parse_scale("1B")
    with pytest.raises(errors.OptionError, match="tokens_per_step=0 must be a positive") as info:
        parse_menu("1B@10", tokens_per_step=0)
    assert info.value.param == "tokens_per_step"


def test_a_batch_without_sizes_is_planned_at_the_largest_entry():
    """The largest size at its most steps: not the entry with the most steps (1@900), nor
    another entry of that size (3@300); pool ids and scores kept, a note names the entry."""
    menu = parse_menu("2@200,3@300,3@400,1@900", tokens_per_step=10)
    assert largest_entry(menu) == 2
    cands = Candidates(
        np.array([[0.2, 0.8], [0.6, 0.4], [0.5, 0.5]]),
        DOMAINS,
        ids=("p0", "p1", "p2"),
        constraints=Constraints.build(DOMAINS),
    )
    batch = Batch("thompson", cands.mixtures[[2, 0]], np.array([2, 0]), np.array([1.5, 1.7]), cands)
    planned = at_menu_entry(batch, menu)
    assert planned.ids == ["p2", "p0"] and planned.score.tolist() == [1.5, 1.7]
    frame = planned.frame()
    assert frame[["n_params", "steps", "tokens"]].values.tolist() == [[3, 400, 4000]] * 2
    np.testing.assert_allclose(frame["cost"], 3 * 400 / (2 * 200))  # relative to the cheapest
    assert planned.notes == [
        "thompson chooses mixtures, not sizes: every run is planned at the menu's largest "
        "entry 3@400 (target-info chooses among the entries)"
    ]
    assert batch.planned("n_params") is None and batch.notes == []  # the input is unchanged


def test_target_tokens_must_be_the_target_scales_steps_times_tokens_per_step():
    check_target_tokens(4000 * 256, "5@4000", 256)  # they agree: accepted
    check_target_tokens(1e5 * 1_048_576, "1B@100K")  # the library's default tokens per step
    with pytest.raises(errors.OptionError) as info:
        check_target_tokens(1e11, "1B@100000", names=("--target-tokens", "--target-scale"))
    assert str(info.value) == (
        "--target-tokens 1e+11 disagrees with --target-scale 1B@100000: 100000 steps x "
        "1048576 tokens per step = 1.048576e+11 tokens (make them agree, e.g. "
        "--target-tokens 1.048576e+11)"
    )
    with pytest.raises(errors.OptionError, match="target_scale='1B': not SIZE@STEPS"):
        check_target_tokens(1e11, "1B")  # bad text: the scale's own error


def test_menu_candidates_cross_every_mixture_with_every_entry():
    menu = Menu.build([1e7, 1e8], [100], grid=True, cost=[1.0, 4.0])
    mix = Candidates(
        np.array([[0.2, 0.8], [0.6, 0.4]]), DOMAINS, constraints=Constraints.build(DOMAINS)
    )
    cands = menu_candidates(mix, menu)
    assert len(cands) == 4
    np.testing.assert_array_equal(cands.n_params, [1e7, 1e8, 1e7, 1e8])
    np.testing.assert_array_equal(cands.mixtures[1], [0.2, 0.8])
    np.testing.assert_array_equal(cands.cost, [1.0, 4.0, 1.0, 4.0])  # the user's costs
    np.testing.assert_array_equal(cands.select([1, 2]).cost, [4.0, 1.0])


def test_scaled_objective_follows_the_size():
    belief = scaling_belief()
    r = np.array([[0.5, 0.5]])
    small = scaled_objective(belief, r, 1e7, 2e8)
    large = scaled_objective(belief, r, 1e9, 2e10)
    assert np.all(small > large)  # every draw: bigger and longer runs reach lower loss
    np.testing.assert_allclose(large, belief.loss(r))  # the belief sits at the target


def test_target_info_prefers_the_size_that_tells_the_target_optimum_apart():
    """Same cost everywhere: a run at a size far from the reference (where the draws' alpha
    disagree) tells more about the target optimum than one at the reference size, where every
    draw predicts the same loss (n_params = n_ref makes the alpha term 1 for every draw)."""
    belief = scaling_belief()
    cons = Constraints.build(DOMAINS)
    mix = Candidates(np.array([[0.3, 0.7], [0.5, 0.5], [0.7, 0.3]]), DOMAINS, constraints=cons)
    menu = Menu.build([1e8, 1e9], [1000], tokens_per_step=2e6, cost=[1.0, 1.0])
    cands = menu_candidates(mix, menu)
    strat = TargetInfo(n_groups=4)
    score = strat.scores(belief, cands)
    at_ref, at_large = score[cands.n_params == 1e8], score[cands.n_params == 1e9]
    assert at_large.max() > 10 * max(at_ref.max(), 1e-6)
    batch = strat.propose(belief, cands, 1, min_distance=0.0)
    assert batch.planned("n_params")[0] == 1e9


def test_target_info_trades_information_for_cost_and_mixes_sizes():
    """With the large size 100 times dearer but only a few times as informative, the cost-aware
    pick is the small size; a batch conditions on its own picks, so it does not stack runs on
    one spot."""
    belief = scaling_belief()
    cons = Constraints.build(DOMAINS)
    mix = Candidates.continuous(cons, 64, random_seed=0)
    menu = Menu.build([1e7, 1e9], [1000], tokens_per_step=2e6)
    cands = menu_candidates(mix, menu)
    batch = TargetInfo(n_groups=4).propose(belief, cands, 3, min_distance=0.05)
    assert set(batch.planned("n_params")) == {1e7}
    blind = TargetInfo(n_groups=4, cost_power=0.0).propose(belief, cands, 3, min_distance=0.05)
    assert 1e9 in set(blind.planned("n_params"))


def test_target_info_needs_a_law_over_scale():
    s = 20
    params = {
        "m": np.full((s, 2), 3.0),
        "rho": np.full((s, 2), 0.3),
        "t": np.tile(np.array([[-1.0, 1.0], [1.0, -1.0]]), (s, 1, 1)),
    }
    belief = Belief(params, np.full((s, 2), 0.01), np.ones(2), DOMAINS, DOMAINS, law="m4")
    mix = Candidates(np.array([[0.3, 0.7]]), DOMAINS, constraints=Constraints.build(DOMAINS))
    cands = menu_candidates(mix, Menu.build([1e7], [10]))
    with pytest.raises(errors.OptionError, match="n_params"):
        TargetInfo().propose(belief, cands, 1)


def test_robust_values_clip_absurd_draws_to_the_central_range():
    rng = np.random.default_rng(0)
    values = rng.normal(3.0, 0.1, (100, 2))
    values[:3, 0] = [1e120, np.inf, np.nan]
    clipped = robust_values(values)
    assert np.all(np.isfinite(clipped))
    assert clipped[:, 0].max() < 4.0  # the three absurd draws sit at the 95 % quantile
    # 5 % and 95 % quantiles of 100 normal draws with sd 0.1: within 0.25 of the mean
    assert np.all(np.abs(clipped - 3.0) < 0.25)


def test_bald_robust_score_is_not_led_by_three_absurd_draws():
    """Column 0: every draw agrees except three absurd ones; column 1: the draws disagree
    for real (sd 0.2 nats). The plain score ranks the absurd column first, the robust one the
    real disagreement."""
    rng = np.random.default_rng(1)
    values = np.column_stack([rng.normal(3.0, 0.001, 200), rng.normal(3.0, 0.2, 200)])
    values[:3, 0] = 1e60
    plain = Ensemble(values, 1e-4).variance[:, 0]
    robust = Ensemble(values, 1e-4, robust=True).variance[:, 0]
    assert plain[0] > plain[1]
    assert robust[1] > 100 * robust[0]
    assert BALD().robust and not BALD(robust=False).robust


def test_acquire_front_door_takes_target_info_with_a_menu():
    from bayesmix.loop import acquire

    belief = scaling_belief()
    cons = Constraints.build(DOMAINS)
    mix = Candidates.continuous(cons, 32, random_seed=1)
    cands = acquire.menu_candidates(mix, acquire.Menu.build([1e7, 1e8], [1000], cost=[1, 9]))
    batch = acquire.propose(belief, 2, strategy="target-info", pool=cands, random_seed=3)
    frame = batch.frame()
    assert {"information", "cost", "n_params", "steps"} <= set(frame.columns)
    assert "target-info" not in acquire.STRATEGIES  # the single-scale list stays as it was
