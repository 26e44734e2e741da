"""Acquisition strategies (bayesmix.loop.acquire): constraints, batches, pending runs, costs, and
whether Thompson sampling finds the optimum. Most tests use the suite's one fitted posterior
(conftest ``simulated_fit``) or draws built directly around a known law (no MCMC)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bayesmix import errors
from bayesmix.data.constraints import Constraints
from bayesmix.decisions.optimize import draw_optima
from bayesmix.loop import acquire
from bayesmix.loop.design import initial_design
from bayesmix.loop.information import robust_values
from bayesmix.loop.ledger import Ledger
from bayesmix.model.simulation import simulate

STRATEGIES = acquire.STRATEGIES


@pytest.fixture(scope="module")
def belief(simulated_fit):
    """The fitted posterior's draws, objective = equal weights over the 4 validation domains."""
    return acquire.Belief.from_posterior(simulated_fit.posterior)


@pytest.fixture(scope="module")
def constraints(belief):
    """Every kind of constraint at once: minimum, maximum, fixed share and a token cap
    (Books3: 3e9 tokens x 1 epoch / 1e10 target tokens = 0.3)."""
    return Constraints.build(
        belief.train_domains,
        min_share={"Github": 0.1},
        max_share={"Pile-CC": 0.5},
        fixed={"ArXiv": 0.05},
        tokens_available={"Books3": 3e9},
        max_epochs=1.0,
        target_tokens=1e10,
    )


@pytest.fixture(scope="module")
def pool_frame(constraints):
    """A candidate pool: 120 feasible mixtures and 60 unconstrained Dirichlet ones (most of
    which break some constraint)."""
    feasible = initial_design(constraints, 120, random_seed=3)
    rng = np.random.default_rng(4)
    free = rng.dirichlet(np.ones(4), 60)
    mix = np.vstack([feasible, free])
    frame = pd.DataFrame(mix, columns=[f"mix.{d}" for d in constraints.domains])
    frame.insert(0, "run", [f"c{i:03d}" for i in range(len(mix))])
    return frame


def _pairwise_min(x):
    d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    return d.min()


def _min_to(x, y):
    return np.sqrt(((x[:, None] - y[None]) ** 2).sum(-1)).min()


# --------------------------------------------------------------------------- constraints
@pytest.mark.slow
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_continuous_proposals_respect_every_constraint(belief, constraints, strategy):
    batch = acquire.propose(
        belief, 6, strategy=strategy, constraints=constraints, random_seed=1, n_candidates=512
    )
    assert batch.mixtures.shape == (6, 4)
    assert constraints.contains(batch.mixtures).all()
    x = batch.mixtures
    np.testing.assert_allclose(x.sum(axis=1), 1.0, atol=1e-9)
    np.testing.assert_allclose(x[:, 3], 0.05, atol=1e-9)  # ArXiv fixed
    assert (x[:, 0] >= 0.1 - 1e-9).all()  # Github minimum
    assert (x[:, 2] <= 0.5 + 1e-9).all()  # Pile-CC maximum
    assert (x[:, 1] <= 0.3 + 1e-9).all()  # Books3 token cap


@pytest.mark.slow
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_pool_proposals_are_feasible_pool_rows(belief, constraints, pool_frame, strategy):
    pool = acquire.Candidates.pool(pool_frame, belief.train_domains, constraints=constraints)
    inside = constraints.contains(pool_frame.iloc[:, 1:].to_numpy())
    assert len(pool) == inside.sum() < len(pool_frame)
    assert any("violate the constraints" in n for n in pool.notes)
    batch = acquire.propose(
        belief, 5, strategy=strategy, constraints=constraints, pool=pool, random_seed=2
    )
    assert constraints.contains(batch.mixtures).all()
    rows = pool_frame.set_index("run").loc[batch.ids].to_numpy()
    np.testing.assert_allclose(batch.mixtures, rows)  # exactly the pool rows
    assert len(set(batch.ids)) == 5


@pytest.mark.slow
def test_a_single_feasible_mixture_is_proposed_once_then_refused(belief):
    """All shares fixed: the cloud collapses to one point; a second run would duplicate it."""
    pinned = Constraints.build(
        belief.train_domains, fixed={"Github": 0.4, "Books3": 0.3, "Pile-CC": 0.2, "ArXiv": 0.1}
    )
    batch = acquire.propose(belief, 1, strategy="thompson", constraints=pinned)
    np.testing.assert_allclose(batch.mixtures[0], [0.4, 0.3, 0.2, 0.1], atol=1e-9)
    with pytest.raises(errors.DesignError, match="found only 1 of 2"):
        acquire.propose(belief, 2, strategy="bald", constraints=pinned)


# ------------------------------------------------------------------------- batches, pending
@pytest.mark.slow
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("mode", ["continuous", "pool"])
def test_batches_have_no_near_duplicates_and_avoid_pending(
    belief, constraints, pool_frame, simulated_fit, strategy, mode
):
    pool = None
    if mode == "pool":
        pool = acquire.Candidates.pool(pool_frame, belief.train_domains, constraints=constraints)
        pending = pool.mixtures[:10]  # pending runs are pool rows: never proposed again
    else:
        pending = initial_design(constraints, 10, random_seed=9)
    existing = simulated_fit.runs.mixtures.to_numpy()
    dist = 0.08
    batch = acquire.propose(
        belief,
        6,
        strategy=strategy,
        constraints=constraints,
        pool=pool,
        pending=pending,
        existing=existing,
        min_distance=dist,
        random_seed=5,
        n_candidates=512,
    )
    assert _pairwise_min(batch.mixtures) >= dist - 1e-12
    assert _min_to(batch.mixtures, pending) >= dist - 1e-12
    assert _min_to(batch.mixtures, existing) >= dist - 1e-12


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["bald", "optimum-info"])
def test_pending_runs_lower_the_information_near_them(belief, strategy):
    """Conditioning (not only the distance guard): a pending run removes information at its own
    mixture and far less at a distant one. With 40 runs the posterior variance is below the
    noise variance, so one more noisy run removes a fraction r / (1 + r) (r = variance / noise)
    of the information there: about 15 % at this fairly extreme mixture."""
    strat = acquire.get_strategy(strategy)
    cons = Constraints.unconstrained(belief.train_domains)
    near, far = np.array([0.9, 0.05, 0.03, 0.02]), np.array([0.1, 0.1, 0.1, 0.7])
    cands = acquire.Candidates(np.vstack([near, far]), belief.train_domains, constraints=cons)
    before = strat.scores(belief, cands, random_seed=0)
    after = strat.scores(belief, cands, pending=near[None], random_seed=0)
    assert before.min() > 0
    drop = 1 - after / before
    assert drop[0] > 0.1, drop
    assert drop[0] > 4 * abs(drop[1]), drop
    if strategy == "bald":
        # exact Gaussian value: variance v -> v n / (v + n) at the observed mixture (v of the
        # Winsorised draws the score reads)
        v = robust_values(belief.domain_loss(near))[:, 0].var(axis=0)
        n = belief.noise_var()
        assert after[0] == pytest.approx(np.sum(0.5 * np.log1p(v / (v + n))), rel=1e-9)


# --------------------------------------------------------------------------------- costs
@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["bald", "optimum-info"])
def test_cost_aware_choice_prefers_the_cheaper_run(belief, strategy):
    """Two candidates with the same mixture (hence exactly the same information) but 4x
    different cost (n_params x tokens): the cost-aware choice takes the cheap one, the
    cost-blind one (cost_power=0) takes the first listed, the expensive one."""
    mix = np.array([0.5, 0.2, 0.2, 0.1])
    frame = pd.DataFrame(
        {
            "run": ["big", "small", "other"],
            "n_params": [4e6, 1e6, 1e6],
            "tokens": [1e9, 1e9, 1e9],
            **{f"mix.{d}": [mix[j], mix[j], 0.25] for j, d in enumerate(belief.train_domains)},
        }
    )
    pool = acquire.Candidates.pool(frame, belief.train_domains)
    np.testing.assert_allclose(pool.cost, [4.0, 1.0, 1.0])
    scores = acquire.get_strategy(strategy).scores(belief, pool)
    assert scores[0] == scores[1] and scores[0] > 0
    aware = acquire.propose(belief, 1, strategy=strategy, pool=pool)
    blind = acquire.propose(belief, 1, strategy=strategy, pool=pool, cost_power=0.0)
    assert aware.ids == ["small"] and aware.planned("n_params")[0] == 1e6
    assert blind.ids == ["big"]


# ------------------------------------------------------------------------------ Thompson
def _sharp_belief(truth, n_draws=200, jitter=0.005, seed=0):
    """Draws tightly around a known law: the posterior of a very well measured experiment."""
    rng = np.random.default_rng(seed)
    m = truth["m"] * (1 + jitter * rng.standard_normal((n_draws, len(truth["m"]))))
    rho = np.clip(truth["rho"] + jitter * rng.standard_normal(m.shape), 0.05, 0.95)
    t = truth["t"] + jitter * rng.standard_normal((n_draws, *truth["t"].shape))
    t -= t.mean(axis=-1, keepdims=True)
    sigma = np.full(m.shape, 0.01)
    return acquire.Belief(
        {"m": m, "rho": rho, "t": t},
        sigma,
        np.ones(len(truth["m"])),
        truth["train_domains"],
        truth["eval_domains"],
    )


def test_thompson_concentrates_near_the_optimum_with_a_sharp_posterior():
    _, truth = simulate(5, n_runs=4, random_seed=21)
    belief = _sharp_belief(truth)
    cons = Constraints.build(truth["train_domains"], max_share={"d1": 0.6})
    true_params = {k: truth[k][None] for k in ("m", "rho", "t")}
    best = draw_optima(true_params, cons, np.ones(5))[0][0]
    ts = acquire.propose(
        belief, 4, strategy="thompson", constraints=cons, random_seed=3, min_distance=0.01
    )
    rnd = acquire.propose(
        belief, 4, strategy="random", constraints=cons, random_seed=3, min_distance=0.01
    )
    d_ts = np.sqrt(((ts.mixtures - best) ** 2).sum(1))
    d_rnd = np.sqrt(((rnd.mixtures - best) ** 2).sum(1))
    # jitter 0.5% on the parameters moves the per-draw optima by a few hundredths of a share;
    # random Dirichlet mixtures lie ~0.3-0.6 away from any fixed point in 5 domains
    assert d_ts.max() < 0.06, d_ts
    assert d_rnd.mean() > 4 * d_ts.mean()
    # in a finite pool, the first Thompson pick is the pool's truly best row
    pool_mix = initial_design(cons, 200, random_seed=8)
    pool = acquire.Candidates.pool(pool_mix, truth["train_domains"], constraints=cons)
    pick = acquire.propose(belief, 1, strategy="thompson", constraints=cons, pool=pool)
    true_loss = truth.true_loss(pool.mixtures).mean(axis=1)
    assert pick.index[0] == int(np.argmin(true_loss))


# ------------------------------------------------------------------------- entry points
@pytest.mark.slow
def test_initial_batch_continuous_and_pool(constraints, pool_frame, belief):
    pending = initial_design(constraints, 4, random_seed=11)
    batch = acquire.initial_batch(constraints, 8, pending=pending, random_seed=1)
    assert batch.strategy == "initial-sobol" and constraints.contains(batch.mixtures).all()
    assert _min_to(batch.mixtures, pending) >= 0.01
    pool = acquire.Candidates.pool(pool_frame, belief.train_domains, constraints=constraints)
    batch = acquire.initial_batch(constraints, 8, pool=pool, random_seed=1)
    assert batch.strategy == "initial-random" and len(set(batch.ids)) == 8
    assert constraints.contains(batch.mixtures).all()


@pytest.mark.slow
def test_bad_requests_raise_named_errors(belief):
    with pytest.raises(errors.OptionError, match="unknown strategy 'ucb'"):
        acquire.get_strategy("ucb")
    with pytest.raises(errors.OptionError, match="positive integer"):
        acquire.propose(belief, 0)
    tiny = acquire.Candidates.pool(np.full((3, 4), 0.25), belief.train_domains)
    with pytest.raises(errors.DesignError, match="found only 1 of 2"):
        acquire.propose(belief, 2, strategy="bald", pool=tiny)  # three identical rows
    with pytest.raises(errors.DomainNameError, match="unknown training domain"):
        acquire.Candidates.pool(pd.DataFrame({"web": [1.0]}), belief.train_domains)


@pytest.mark.slow
def test_ledger_stores_the_fit_record_with_the_proposals(tmp_path):
    with Ledger.create(tmp_path / "exp.db", ["a", "b"], ["a"]) as ledger:
        record = {"posterior": "p.nc", "diagnostics_warning": "R-hat 1.2", "n_runs": 8}
        ledger.add_proposals(np.array([[0.5, 0.5]]), "thompson", 1, fit=record)
        with pytest.raises(errors.LedgerError, match="not JSON-serialisable"):
            ledger.add_proposals(np.array([[0.2, 0.8]]), "thompson", 2, fit={"x": object()})
        assert ledger.fit_records() == {1: record}
        assert len(ledger.runs()) == 1  # the failed call wrote nothing


def test_a_strategy_accepts_the_old_seed_name_with_a_warning():
    """Strategy.propose is the one interface of every strategy: random_seed, seed deprecated."""
    pool = acquire.Candidates.pool(
        np.random.default_rng(5).dirichlet(np.ones(3), size=30), ["a", "b", "c"]
    )
    strat = acquire.get_strategy("random")
    with pytest.warns(FutureWarning, match=r"Strategy.propose\(\)"):
        old = strat.propose(None, pool, 4, seed=2, min_distance=0.0)
    new = strat.propose(None, pool, 4, random_seed=2, min_distance=0.0)
    np.testing.assert_array_equal(old.index, new.index)
    np.testing.assert_array_equal(new.mixtures, pool.mixtures[new.index])  # pool rows
    assert new.strategy == "random" and len(set(new.ids)) == 4
