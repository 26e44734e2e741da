"""Every decision path works for every law: optimum, per-draw optima, acquisition, the report.

Draws are synthetic (no MCMC). For a registered law they come from the law's own PyMC block
(:func:`bayesmix.model.model.build_model` with a specification naming the law; prior draws of its
parameters), so a law added to ``bayesmix/laws/`` is covered here automatically. A prior draw
is a whole law, and a prior's draws differ wildly; to look like a posterior (draws near one
law) they are pulled towards one typical draw: ``(1 - LAMBDA) centre + LAMBDA draw``. A convex
combination of two valid parameter values is valid for every constraint a law's parameters have
here (intervals, positivity, rows on the simplex, zero-sum rows), so this needs no knowledge of
the law.

Laws defined in this file check the generic paths: M4 without its exact per-draw solver
(projected gradients), M4 with the default PyTensor gradient, M4 scaled by a model-size factor
(an extra input), and a non-convex double-well law (multi-start, fragile optima).
"""

from __future__ import annotations

import functools

import numpy as np
import pymc as pm
import pytest
from conftest import check_objective_gradients
from scipy import optimize as sopt
from scipy import special

from bayesmix import errors
from bayesmix.data.constraints import Constraints
from bayesmix.decisions.decision import decide
from bayesmix.decisions.draws import LawDraws, aggregate_loss
from bayesmix.decisions.objectives import DrawValues, Objective
from bayesmix.decisions.optimize import (
    DEFAULT_STARTS,
    NONCONVEX_STARTS,
    draw_optima,
    minimize_objective,
)
from bayesmix.laws import Law, Param, available_laws, get_law
from bayesmix.laws.m4 import M4
from bayesmix.loop import acquire
from bayesmix.loop.design import initial_design
from bayesmix.model.model import ModelData, build_model
from bayesmix.model.spec import load_spec

LAWS = sorted(available_laws())
#: Pull of each prior draw towards the centre draw (see the module docstring).
LAMBDA = 0.25
LATTICE = 200  # shares in steps of 0.005
STEP = 1.0 / LATTICE


# ------------------------------------------------------------------------------ test laws
class GenericM4(M4):
    """M4 without its exact per-draw solver: draw_optima takes the projected-gradient path."""

    name = "m4-generic-test"

    def draw_optima(self, params, weights, lower, upper, x0=None):
        return None


class PyTensorM4(GenericM4):
    """M4 with the default (PyTensor-compiled) gradient instead of the analytic one."""

    name = "m4-pytensor-test"
    value_grad = Law.value_grad


class SizedM4(PyTensorM4):
    """M4 times a model-size factor ``1 + (n_params / 1e9)^-0.1``: an extra input. The factor
    is the same positive number for every mixture, so every optimum equals M4's."""

    name = "m4-sized-test"
    inputs = ("r", "n_params")

    def mean(self, inputs, params, xp=np):
        factor = 1.0 + (inputs["n_params"] / 1e9) ** -0.1  # (..., n)
        return super().mean(inputs, params, xp) * factor[..., None]


class TwoWells(Law):
    """A non-convex law: a tilted double well in the share that ``p_i`` points along,

    ``L_i(r) = m_i + c_i (g(x) + e_i x)``, ``x = p_i . r``, ``g(x) = (x - 0.1)^2 (x - 0.7)^2``.
    With ``c > 0`` and ``e < 0`` small, both wells are local minima and the one at x = 0.7 is
    the deeper (by 0.6 c |e|); the barrier sits near x = 0.4 + e / g''(0.4) = 0.39, so the
    centre of the simplex (x = 1/3) lies in the basin of the shallow well and a single start
    from it finds the wrong optimum, while a Dirichlet(1) start has x > 0.39 with probability
    0.61^2 = 0.37.
    """

    name = "two-wells-test"
    description = "tilted double well (test law)"
    params = (
        Param("m", ("eval_domain",)),
        Param("c", ("eval_domain",)),
        Param("e", ("eval_domain",)),
        Param("p", ("eval_domain", "train_domain")),
    )
    convex = False

    def mean(self, inputs, params, xp=np):
        x = xp.matmul(inputs["r"], xp.swapaxes(params["p"], -1, -2))  # (..., n, K)
        g = (x - 0.1) ** 2 * (x - 0.7) ** 2
        return params["m"][..., None, :] + params["c"][..., None, :] * (
            g + params["e"][..., None, :] * x
        )

    def build(self, ctx):
        raise NotImplementedError("decided on from given draws only, never fitted")


def two_wells_draws(s=60, k=2, m=3, seed=0):
    rng = np.random.default_rng(seed)
    p = np.zeros((s, k, m))
    p[..., 0] = 1.0  # every validation domain cares about share 0
    p += rng.normal(0, 0.02, p.shape)
    return {
        "m": 2.5 + rng.normal(0, 0.05, (s, k)),
        "c": 20 + rng.normal(0, 1, (s, k)),
        "e": -0.004 + rng.normal(0, 0.0005, (s, k)),
        "p": p,
    }


# ------------------------------------------------------------------------------ draws of a law
def names(prefix, n):
    return [f"{prefix}{j}" for j in range(n)]


@functools.cache
def _prior_draws(law_name: str, k: int, m: int, n: int, seed: int) -> dict:
    """``n`` prior draws of ``law_name``'s parameters from its PyMC block (cached)."""
    import tempfile
    from pathlib import Path

    law = get_law(law_name)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "spec.toml"
        path.write_text(f'name = "test"\nlaw = "{law_name}"\n')
        spec = load_spec(path)
    runs = 8
    rng = np.random.default_rng(seed)
    extra = {
        key: np.full(runs, 1e8 if key == "n_params" else 1e10) for key in law.inputs if key != "r"
    }
    data = ModelData(
        runs=tuple(names("run", runs)),
        r=rng.dirichlet(np.ones(m), runs),
        y=np.full(runs * k, 2.5),
        run_idx=np.repeat(np.arange(runs), k),
        eval_idx=np.tile(np.arange(k), runs),
        loss_mean=np.full(k, 2.5),
        loss_scale=np.full(k, 0.2),
        log_sigma_loc=float(np.log(0.02)),
        **extra,
    )
    model = build_model(spec, names("d", m), names("v", k), data)
    values = pm.draw([model[p] for p in law.param_names], draws=n, random_seed=seed)
    return dict(zip(law.param_names, (np.asarray(v, float) for v in values)))


def law_draws(law_name: str, s: int = 200, k: int = 3, m: int = 3, seed: int = 0) -> LawDraws:
    """Posterior-like draws of a registered law (module docstring): the centre is the prior
    draw whose loss range over the simplex (corners and centre) is the median one - a typical
    law, neither flat nor extreme."""
    law = get_law(law_name)
    prior = _prior_draws(law_name, k, m, s, seed)
    probe = np.vstack([np.eye(m), np.full(m, 1.0 / m)])
    inputs = {key: 1e8 if key == "n_params" else 1e10 for key in law.inputs if key != "r"}
    loss = law.predict(probe, prior, **{key: np.full(len(probe), v) for key, v in inputs.items()})
    spread = (loss.max(axis=1) - loss.min(axis=1)).mean(axis=1)  # (S,)
    c = int(np.argsort(spread)[len(spread) // 2])
    params = {p: (1 - LAMBDA) * v[c] + LAMBDA * v for p, v in prior.items()}
    return LawDraws(params, names("d", m), names("v", k), law=law, inputs=inputs)


def simplex_lattice(n):
    """Every mixture of 3 domains with shares in multiples of 1/n: ((n+1)(n+2)/2, 3)."""
    i, j = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
    keep = i + j <= n
    i, j = i[keep], j[keep]
    return np.stack([i, j, n - i - j], axis=1) / n


def hd_quantile(values, q):
    """Harrell-Davis quantile over axis 0 - the smooth estimator the optimiser uses."""
    n = values.shape[0]
    w = np.diff(special.betainc(q * (n + 1), (1 - q) * (n + 1), np.arange(n + 1) / n))
    return w @ np.sort(values, axis=0)


def pairwise_min(x):
    d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    return d.min()


def min_to(x, y):
    return np.sqrt(((x[:, None] - y[None]) ** 2).sum(-1)).min()


# ------------------------------------------------------------------------------ (a) lattice
W3 = np.array([0.5, 0.3, 0.2])
BASELINE3 = np.array([0.2, 0.2, 0.6])


@functools.cache
def _lattice_losses(law_name: str) -> tuple[np.ndarray, np.ndarray]:
    """The 0.005 lattice on 3 domains and every draw's aggregate loss there (S, n)."""
    grid = simplex_lattice(LATTICE)
    return grid, aggregate_loss(law_draws(law_name), grid, W3)


def _lattice_score(draws, objective, grid_losses, best):
    """The objective on the lattice (to minimise) and the optimiser's own value, on one scale:
    the mean, the Harrell-Davis quantile, or the negated beat-baseline surrogate at the
    optimiser's temperature."""
    mine = aggregate_loss(draws, best.mixture, W3)[:, 0]
    if objective.kind == "mean":
        return grid_losses.mean(axis=0), mine.mean()
    if objective.kind == "quantile":
        return hd_quantile(grid_losses, objective.level), hd_quantile(
            mine[:, None], objective.level
        )[0]
    base = aggregate_loss(draws, BASELINE3, W3)
    surrogate = lambda f: -special.expit((base - f) / best.temperature).mean(axis=0)  # noqa: E731
    return surrogate(grid_losses), float(surrogate(mine[:, None])[0])


@pytest.mark.parametrize("constrained", [False, True])
@pytest.mark.parametrize("objective", ["mean", "quantile:0.9", "beat-baseline"])
@pytest.mark.parametrize("law_name", LAWS)
def test_optimum_agrees_with_a_lattice_for_every_law(law_name, objective, constrained):
    draws = law_draws(law_name)
    obj = Objective.parse(objective)
    grid, losses = _lattice_losses(law_name)
    free = Constraints.build(draws.train_domains)
    c = free
    if constrained:
        # Cap the domain the unconstrained lattice optimum likes most at half its share (a
        # lattice multiple, so the lattice holds the cap): the cap binds for a convex problem.
        unconstrained = minimize_objective(draws, free, W3, obj, baseline=BASELINE3)
        score, _ = _lattice_score(draws, obj, losses, unconstrained)
        j = int(np.argmax(grid[np.argmin(score)]))
        cap = np.floor(grid[np.argmin(score), j] / 2 / STEP) * STEP
        c = Constraints.build(draws.train_domains, max_share={draws.train_domains[j]: cap})
    best = minimize_objective(draws, c, W3, obj, baseline=BASELINE3)
    assert c.contains(best.mixture, atol=1e-12)
    inside = c.contains(grid, atol=1e-12)
    score, mine = _lattice_score(draws, obj, losses[:, inside], best)
    # 1. Never worse than brute force: the continuum optimum is at least as good as every
    #    lattice point, and SLSQP (ftol 1e-13) reaches it far closer than the lattice's own
    #    discretisation error, so 1e-9 x the objective's scale only absorbs rounding.
    assert mine <= score.min() + 1e-9 * max(1.0, abs(score.min()))
    # 2. In the right place: within 4 lattice steps (0.02) of a lattice point whose score is
    #    within 1e-4 of the objective's range over the feasible set from the lattice minimum.
    #    On a 0.005 lattice the nearest point to the optimum is <= 0.0035 away, where a smooth
    #    objective whose curvature is of the order of its range R exceeds the minimum by about
    #    R x 0.0035^2 ~ 1.2e-5 R; 1e-4 R leaves a factor 8, and a flat optimum (where the
    #    lattice argmin may sit anywhere in a valley) is covered by taking every such point.
    near = grid[inside][score <= score.min() + 1e-4 * (score.max() - score.min())]
    assert min_to(best.mixture[None], near) <= 0.02
    if constrained and obj.kind == "mean" and draws.law.convex:
        assert best.mixture[j] == pytest.approx(cap, abs=1e-7)  # the cap binds
    assert best.n_agree >= 1 and len(best.starts) >= (
        DEFAULT_STARTS if draws.law.convex else NONCONVEX_STARTS
    )


# ------------------------------------------------------------------------------ (b) per-draw
@pytest.mark.parametrize("generic", [GenericM4(), PyTensorM4()], ids=lambda law: law.name)
@pytest.mark.parametrize("case", ["simplex", "constrained", "wide"])
def test_generic_per_draw_optima_agree_with_the_exact_solver_and_scipy(generic, case):
    """The projected-gradient path on M4 (forced by a law without the fast path) against
    M4's exact Newton solver and per-draw SLSQP."""
    k, m = (3, 6) if case == "wide" else (6, 5)
    exact = law_draws("m4", s=150, k=k, m=m, seed=3)
    slow = LawDraws(exact.params, exact.train_domains, exact.eval_domains, law=generic)
    spec = {
        "constrained": {
            "min_share": {"d0": 0.25},
            "max_share": {"d1": 0.02, "d3": 0.1},
            "fixed": {"d4": 0.15},
        }
    }.get(case, {})
    c = Constraints.build(exact.train_domains, **spec)
    w = np.arange(1, k + 1) / np.arange(1, k + 1).sum()
    x_exact, ok_exact = draw_optima(exact, c, w)
    x_pg, ok_pg = draw_optima(slow, c, w)
    assert ok_exact.all() and ok_pg.all()
    assert c.contains(x_pg, atol=1e-12).all()
    f_exact = np.einsum("snk,k->sn", exact.law.predict(x_exact[:, None], exact.params), w)[:, 0]
    f_pg = np.einsum("snk,k->sn", exact.law.predict(x_pg[:, None], exact.params), w)[:, 0]
    # Both stop at first-order stationarity (residual <= 1e-9), where the value is off by
    # O(residual^2); what remains is rounding: a few ulp of the loss (some draws of this
    # constrained case reach hundreds of nats).
    np.testing.assert_allclose(f_pg, f_exact, rtol=1e-14, atol=0)
    if k >= m:  # strictly convex in the free shares: the optimum is unique, locations agree
        np.testing.assert_allclose(x_pg, x_exact, atol=1e-6)
    for s in range(0, 150, 30):  # independent reference: SLSQP on one draw, tight tolerance
        one = {p: v[s] for p, v in exact.params.items()}

        def fun(r, one=one):
            return float(exact.law.predict(r[None], one)[0] @ w)

        ref = sopt.minimize(
            fun,
            np.full(m, 1 / m),
            method="SLSQP",
            bounds=list(zip(c.lower, c.upper)),
            constraints=[{"type": "eq", "fun": lambda r: r.sum() - 1}],
            options={"ftol": 1e-15, "maxiter": 1000},
        )
        # SLSQP with numerical gradients stops ~1e-10 from the optimum; ours may only be better
        assert f_pg[s] <= ref.fun + 1e-9


@pytest.mark.parametrize("law_name", LAWS)
def test_per_draw_optima_of_every_law_are_draw_wise_lattice_optima(law_name):
    draws = law_draws(law_name).select(np.arange(0, 200, 10))  # 20 draws
    c = Constraints.build(draws.train_domains, max_share={"d2": 0.5})
    optima, ok = draw_optima(draws, c, W3)
    assert ok.all() and c.contains(optima, atol=1e-12).all()
    grid = simplex_lattice(LATTICE)
    grid = grid[c.contains(grid)]
    lattice = aggregate_loss(draws, grid, W3)  # (S, n)
    mine = np.einsum("ssk,k->s", draws.mean_loss(optima)[:, :, :], W3)
    # As in the lattice test: never worse than the best lattice point, up to rounding.
    assert np.all(mine <= lattice.min(axis=1) + 1e-9)


# ------------------------------------------------------------------------- non-convex law
def test_a_non_convex_law_gets_multi_start_and_a_fragility_report():
    d = two_wells_draws()
    draws = LawDraws(d, names("d", 3), names("v", 2), law=TwoWells(), source="wells")
    c = Constraints.build(draws.train_domains)
    w = np.array([0.5, 0.5])
    grid = simplex_lattice(LATTICE)
    lattice = aggregate_loss(draws, grid, w)
    best = minimize_objective(draws, c, w, "mean")
    assert best.mixture[0] == pytest.approx(grid[np.argmin(lattice.mean(axis=0))][0], abs=0.02)
    assert best.mixture[0] > 0.6  # the deep well, not the centre's shallow one
    assert len(best.starts) == NONCONVEX_STARTS and not best.convex
    assert 1 <= best.n_agree < best.n_starts and best.fragile  # some starts end in the other
    # One start from the centre finds the shallow well: the multi-start is what finds the deep.
    single = minimize_objective(draws, c, w, "mean", n_starts=1)
    assert single.mixture[0] < 0.3 and single.value > best.value
    # 32 starts per draw: each misses the deep basin with probability 0.63, all 31 random ones
    # with 0.63^31 ~ 6e-7.
    optima, ok = draw_optima(draws, c, w, n_starts=32)
    assert ok.all()
    mine = (draws.mean_loss(optima) * w).sum(-1)[np.arange(60), np.arange(60)]
    # Every draw's optimum is its own lattice optimum (up to rounding); one start per draw from
    # the centre would sit in the shallow well for every draw.
    assert np.all(mine <= lattice.min(axis=1) + 1e-9)
    report = decide(draws, weights=[1, 1], per_draw=True)
    assert any("not convex" in note and "fragile" in note for note in report.notes)
    text = report.to_text()
    assert "optimiser: SLSQP converged at the best start; " in text
    assert "law two-wells-test" in text.splitlines()[0]
    assert report.to_dict()["optimizer_status"] == report.optimizer_status


# ------------------------------------------------------------------------------ (e) gradients
GRADIENT_LAWS = [*LAWS, "pytensor-m4", "two-wells"]


def _draws_for(name):
    if name == "pytensor-m4":
        d = law_draws("m4", s=300, k=3, m=4)
        return LawDraws(d.params, d.train_domains, d.eval_domains, law=PyTensorM4())
    if name == "two-wells":
        return LawDraws(
            two_wells_draws(s=300, k=3, m=4), names("d", 4), names("v", 3), law=TwoWells()
        )
    return law_draws(name, s=300, k=3, m=4)


@pytest.mark.parametrize("name", GRADIENT_LAWS)
def test_every_objective_gradient_matches_finite_differences(name):
    """The optimiser's criterion (built on Law.value_grad) against central differences of its
    own value, for every objective."""
    draws = _draws_for(name)
    values = DrawValues(draws.law, draws.params, np.array([0.2, 0.3, 0.5]), draws.inputs)
    f, _ = values(np.full(4, 0.25))
    np.testing.assert_allclose(
        f, aggregate_loss(draws, np.full(4, 0.25), [0.2, 0.3, 0.5])[:, 0], rtol=1e-12
    )  # value_grad's value is the law's mean, aggregated
    check_objective_gradients(values, name)


# ------------------------------------------------------------------------------ (c) propose
@pytest.fixture(scope="module")
def m4log_belief():
    draws = law_draws("m4log", s=200, k=3, m=4, seed=1)
    sigma = np.full((draws.n_samples, 3), 0.02)
    return acquire.Belief(
        draws.params, sigma, [0.2, 0.3, 0.5], draws.train_domains, draws.eval_domains, law="m4log"
    )


@pytest.mark.parametrize("mode", ["continuous", "pool"])
@pytest.mark.parametrize("strategy", acquire.STRATEGIES)
def test_propose_works_for_a_non_m4_law(m4log_belief, strategy, mode):
    belief = m4log_belief
    assert belief.law.name == "m4log" and not belief.law.convex
    c = Constraints.build(belief.train_domains, min_share={"d0": 0.05}, max_share={"d1": 0.5})
    pool = None
    if mode == "pool":
        pool = acquire.Candidates.pool(
            initial_design(c, 150, random_seed=2), belief.train_domains, constraints=c
        )
        pending = pool.mixtures[:5]
    else:
        pending = initial_design(c, 5, random_seed=3)
    existing = initial_design(c, 6, random_seed=4)
    dist = 0.06
    batch = acquire.propose(
        belief,
        5,
        strategy=strategy,
        constraints=c,
        pool=pool,
        pending=pending,
        existing=existing,
        min_distance=dist,
        random_seed=1,
        n_candidates=512,
    )
    assert batch.mixtures.shape == (5, 4)
    assert c.contains(batch.mixtures, atol=1e-12).all()
    assert pairwise_min(batch.mixtures) >= dist - 1e-12  # no near-duplicates
    assert min_to(batch.mixtures, pending) >= dist - 1e-12
    assert min_to(batch.mixtures, existing) >= dist - 1e-12
    if strategy != "random":
        assert np.all(np.isfinite(batch.score))


def test_belief_uses_the_law_for_losses_and_optima(m4log_belief):
    belief = m4log_belief
    x = np.array([[0.7, 0.1, 0.1, 0.1], [0.0, 0.5, 0.25, 0.25]])
    expected = get_law("m4log").predict(x, belief.params)  # (S, 2, K)
    np.testing.assert_allclose(belief.domain_loss(x), expected, rtol=1e-12)
    np.testing.assert_allclose(belief.loss(x), expected @ belief.weights, rtol=1e-12)
    c = Constraints.build(belief.train_domains)
    optima = belief.optima(c)
    assert optima.shape == (200, 4) and c.contains(optima, atol=1e-12).all()
    # each draw's optimum beats the candidate mixtures for that draw
    own = np.einsum("ssk,k->s", belief.domain_loss(optima), belief.weights)
    assert np.all(own <= belief.loss(x).min(axis=1) + 1e-12)


# ------------------------------------------------------------------------------ decide, CLI
@pytest.mark.parametrize("law_name", LAWS)
def test_decide_reports_any_law(law_name):
    draws = law_draws(law_name, s=200, k=3, m=3)
    c = Constraints.build(draws.train_domains, max_share={"d0": 0.6})
    report = decide(draws, constraints=c, objective="quantile:0.9", ci_prob=0.8)
    rec = report.mixture.to_numpy()
    assert c.contains(rec, atol=1e-12)
    lr, lb = aggregate_loss(draws, np.vstack([rec, np.full(3, 1 / 3)]), np.full(3, 1 / 3)).T
    assert report.p_beats_baseline == pytest.approx(np.mean(lr < lb))
    overall = report.losses.set_index(["mixture", "eval_domain"]).loc[("recommended", "overall")]
    assert overall["mean"] == pytest.approx(lr.mean())
    assert report.law == law_name and report.optimizer_status.startswith("SLSQP")
    assert report.draw_optima.shape == (200, 3)
    meta = report.to_frame().query("section == 'meta'").set_index("statistic")
    assert meta.loc["law", "text"] == law_name


def test_a_law_with_an_extra_input_decides_like_m4():
    """SizedM4 (a test-file law taking n_params) scales every loss by one positive factor, so
    its optimum is M4's and its objective value is M4's times the factor."""
    m4_draws = law_draws("m4", s=200, k=3, m=3, seed=5)
    sized = LawDraws(
        m4_draws.params,
        m4_draws.train_domains,
        m4_draws.eval_domains,
        law=SizedM4(),
        inputs={"n_params": 1e8},
    )
    c = Constraints.build(m4_draws.train_domains, max_share={"d1": 0.3})
    ref = decide(m4_draws, constraints=c, objective="quantile:0.9")
    mine = decide(sized, constraints=c, objective="quantile:0.9")
    factor = 1.0 + 0.1**-0.1
    # SLSQP stops at ftol 1e-13 on both; a flat optimum moves the location by up to ~1e-6
    np.testing.assert_allclose(mine.mixture, ref.mixture, atol=1e-5)
    assert mine.objective_value == pytest.approx(factor * ref.objective_value, rel=1e-9)
    np.testing.assert_allclose(mine.draw_optima.values, ref.draw_optima.values, atol=1e-5)
    with pytest.raises(errors.OptionError, match="needs n_params"):
        decide(
            LawDraws(m4_draws.params, m4_draws.train_domains, m4_draws.eval_domains, law=SizedM4()),
            constraints=c,
        )


# ------------------------------------------------------------------------------ (d) bad draws
def _m4log_params(s=5, k=2, m=3):
    return {
        "m": np.full((s, k), 2.5),
        "rho": np.full((s, k), 0.3),
        "t": np.zeros((s, k, m)),
        "u": np.zeros((s, k, m)),
    }


@pytest.mark.parametrize(
    "change,match",
    [
        (
            lambda p: p.pop("u"),
            r"lack the M4LOG parameter\(s\) u \(law 'm4log' needs draws of "
            "m, rho, t, u",
        ),
        (
            lambda p: p.update(t=np.zeros((5, 2))),
            r"t \(5, 2\).*expected \(S, K\), \(S, K\), "
            r"\(S, K, M\), \(S, K, M\)",
        ),
        (lambda p: p.update(rho=np.full((5, 3), 0.3)), "expected"),
        (lambda p: p.update(u=np.zeros((4, 2, 3))), "one leading sample axis"),
        (lambda p: p.update(m=np.full((5, 2), np.nan)), "draws of m contain NaN or inf"),
        (lambda p: p.update({k: v[:0] for k, v in p.items()}), "no posterior draws"),
    ],
)
def test_law_draws_reject_malformed_draws_in_one_line(change, match):
    params = _m4log_params()
    change(params)
    with pytest.raises(errors.FormatError, match=match) as err:
        LawDraws(params, names("d", 3), names("v", 2), law="m4log")
    assert "\n" not in str(err.value)


def test_law_draws_check_domain_names_and_inputs():
    with pytest.raises(
        errors.FormatError,
        match=r"draws of m are \(2,\) per draw "
        r"\(eval_domain\) but 3 validation x 3 "
        "training domain names",
    ):
        LawDraws(_m4log_params(), names("d", 3), names("v", 3), law="m4log")
    with pytest.raises(errors.SpecError, match="unknown law 'm5'"):
        LawDraws(_m4log_params(), names("d", 3), names("v", 2), law="m5")
    with pytest.raises(errors.OptionError, match="n_params must be a positive number"):
        LawDraws(
            _m4log_params(), names("d", 3), names("v", 2), law="m4log", inputs={"n_params": -1}
        )
    with pytest.raises(errors.FormatError, match=r"sigma draws have shape \(5, 3\)"):
        acquire.Belief(
            _m4log_params(), np.ones((5, 3)), [1, 1], names("d", 3), names("v", 2), law="m4log"
        )
    # a plain dict still means M4, and the M4 draws of an m4log dict are accepted as M4
    plain = LawDraws({k: v for k, v in _m4log_params().items()}, names("d", 3), names("v", 2))
    assert plain.law.name == "m4" and set(plain.params) == {"m", "rho", "t"}


def test_propose_cli_rejects_an_unknown_model_before_fitting(tmp_path):
    """``bayesmix propose --model`` is checked with the other options: no ledger is opened and
    no MCMC starts (the ledger path does not even exist)."""
    import argparse

    from bayesmix.cli import propose

    args = argparse.Namespace(
        n=2,
        draws=10,
        tune=10,
        chains=1,
        candidates=10,
        min_distance=None,
        cost_power=1.0,
        strategy="thompson",
        model="no-such-model",
        ledger=str(tmp_path / "none.db"),
    )
    with pytest.raises(errors.SpecError, match="unknown model 'no-such-model'"):
        propose._check_options(args)
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\nlaw = "m5"\n')
    args.model = str(bad)
    with pytest.raises(errors.SpecError, match="unknown law 'm5'"):
        propose._check_options(args)
    args.model = "logshare"
    propose._check_options(args)  # a shipped non-M4 model passes


def test_report_text_and_json_carry_the_optimizer_status():
    draws = law_draws("m4log", s=200, k=3, m=3)
    report = decide(draws, per_draw=False)
    assert report.optimizer_status.startswith("SLSQP converged")
    assert "(the law is not convex)" in report.optimizer_status
    assert f"optimiser: {report.optimizer_status}" in report.to_text()
    d = report.to_dict()
    assert d["law"] == "m4log" and d["optimizer_status"] == report.optimizer_status
