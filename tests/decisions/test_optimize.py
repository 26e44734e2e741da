"""Choosing the mixture: feasibility, agreement with brute force and scipy, errors, the report.

Draws are synthetic M4 draws (no MCMC): a "true" law plus per-draw jitter, so every property
here is checked against an independent computation (a lattice, scipy's SLSQP, the law itself).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import check_objective_gradients
from scipy import optimize as sopt
from scipy import special

from bayesmix import errors
from bayesmix.data.constraints import Constraints
from bayesmix.decisions.decision import DecisionReport, decide
from bayesmix.decisions.draws import LawDraws, aggregate_loss, check_draws, exp_terms
from bayesmix.decisions.inputs import resolve_baseline, resolve_weights
from bayesmix.decisions.objectives import DrawValues, Objective
from bayesmix.decisions.optimize import (
    draw_optima,
    minimize_objective,
    optima_dataarray,
    optimum_spread,
)
from bayesmix.laws import get_law, m4
from bayesmix.laws.solvers import project


def make_draws(s, k, m, seed=0, t_scale=1.5, jitter=0.3):
    """M4 draws: a fixed law per (k, m) plus draw-to-draw noise; rows of t sum to 0."""
    rng = np.random.default_rng(seed)
    t = rng.normal(0, t_scale, (k, m)) + rng.normal(0, jitter, (s, k, m))
    t -= t.mean(axis=-1, keepdims=True)
    mm = 2.5 + rng.normal(0, 0.3, k) + rng.normal(0, 0.02, (s, k))
    rho = special.expit(rng.normal(-1, 0.5, k) + rng.normal(0, 0.1, (s, k)))
    return {"m": mm, "rho": rho, "t": t}


def domains(m):
    return [f"d{j}" for j in range(m)]


def simplex_lattice(n):
    """Every mixture of 3 domains with shares in multiples of 1/n: ((n+1)(n+2)/2, 3)."""
    i, j = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
    keep = i + j <= n
    i, j = i[keep], j[keep]
    return np.stack([i, j, n - i - j], axis=1) / n


def scipy_draw_optimum(a, t, lo, hi):
    """Reference: SLSQP on one draw's sum of exponentials, tight tolerance."""
    m = t.shape[1]
    res = sopt.minimize(
        lambda r: (a * np.exp(t @ r)).sum(),
        np.full(m, 1 / m),
        jac=lambda r: t.T @ (a * np.exp(t @ r)),
        method="SLSQP",
        bounds=list(zip(lo, hi)),
        constraints=[{"type": "eq", "fun": lambda r: r.sum() - 1}],
        options={"ftol": 1e-15, "maxiter": 1000},
    )
    return res.x, res.fun


# ------------------------------------------------------------------------------ building blocks
def test_exp_terms_reproduce_the_m4_law():
    # The optimiser's sum-of-exponentials form must equal m4.mean_loss aggregated with w.
    d = make_draws(50, 4, 6, seed=1)
    w = np.array([0.1, 0.2, 0.3, 0.4])
    r = np.random.default_rng(2).dirichlet(np.ones(6), size=7)
    const, a, t = exp_terms(d, w)
    mine = const[:, None] + (a[:, None, :] * np.exp(np.einsum("skm,nm->snk", t, r))).sum(-1)
    np.testing.assert_allclose(mine, aggregate_loss(d, r, w), rtol=1e-12)
    np.testing.assert_allclose(aggregate_loss(d, r, w), m4.mean_loss(r, d) @ w, rtol=1e-12)


@pytest.mark.parametrize(
    "lower,upper",
    [
        (np.zeros(6), np.ones(6)),
        (np.array([0.1, 0, 0, 0.2, 0, 0]), np.array([1, 0.05, 1, 0.2, 0.5, 1.0])),
        (np.array([0.3, 0.1, 0.1, 0.1, 0.1, 0.3]), np.array([0.3, 0.1, 0.1, 0.1, 0.1, 0.3])),
    ],
)
def test_project_matches_a_quadratic_program_and_is_exactly_feasible(lower, upper):
    y = np.random.default_rng(3).normal(0.15, 0.4, (20, 6))
    x = project(y, lower, upper)
    assert np.all(x >= lower) and np.all(x <= upper)
    np.testing.assert_allclose(x.sum(axis=1), 1.0, atol=1e-14)
    for i in range(5):  # reference: the projection as a QP solved by SLSQP
        free = upper > lower
        if not free.any():
            ref = lower
        else:
            ref = sopt.minimize(
                lambda z, yi=y[i]: 0.5 * ((z - yi) ** 2).sum(),
                (lower + upper) / 2,
                jac=lambda z, yi=y[i]: z - yi,
                method="SLSQP",
                bounds=list(zip(lower, upper)),
                constraints=[{"type": "eq", "fun": lambda z: z.sum() - 1}],
                options={"ftol": 1e-15},
            ).x
        np.testing.assert_allclose(x[i], ref, atol=1e-7)  # SLSQP's own accuracy
    np.testing.assert_allclose(project(x, lower, upper), x, atol=1e-15)  # idempotent


def test_criterion_gradients_match_finite_differences():
    d = make_draws(300, 3, 4, seed=4)
    values = DrawValues(get_law("m4"), check_draws(d), np.ones(3) / 3)
    check_objective_gradients(values, "m4")


# ------------------------------------------------------------------------------ feasibility
CONSTRAINT_CASES = {
    "simplex": {},
    "min": {"min_share": {"d0": 0.3, "d3": 0.1}},
    "max": {"max_share": {"d1": 0.02, "d2": 0.05, "d4": 0.1}},
    "fixed": {"fixed": {"d2": 0.25}},
    "caps": {"tokens_available": {"d1": 1e9, "d4": 3e9}, "max_epochs": 2, "target_tokens": 1e11},
    "combined": {
        "min_share": {"d0": 0.1},
        "max_share": {"d3": 0.2},
        "fixed": {"d5": 0.15},
        "tokens_available": {"d1": 2e9},
        "max_epochs": 4,
        "target_tokens": 1e11,
    },
    "tight": {"min_share": {d: 0.16 for d in domains(6)}},
}


@pytest.mark.parametrize("case", sorted(CONSTRAINT_CASES))
@pytest.mark.parametrize("objective", ["mean", "quantile:0.9", "cvar:0.9", "beat-baseline"])
def test_every_output_is_feasible(case, objective):
    d = make_draws(400, 5, 6, seed=5)
    c = Constraints.build(domains(6), **CONSTRAINT_CASES[case])
    w = np.full(5, 0.2)
    best = minimize_objective(d, c, w, objective, baseline=np.full(6, 1 / 6), n_starts=4)
    optima, ok = draw_optima(d, c, w)
    for x in (best.mixture[None, :], optima):
        assert c.contains(x, atol=1e-12).all()
        assert np.all(x >= c.lower) and np.all(x <= c.upper)  # bounds hold exactly
        fixed = c.lower == c.upper
        np.testing.assert_array_equal(
            x[:, fixed], np.broadcast_to(c.lower[fixed], x[:, fixed].shape)
        )
    assert ok.all()


def test_binding_constraints_move_the_optimum_onto_their_bound():
    d = make_draws(400, 5, 6, seed=5)
    w = np.full(5, 0.2)
    free = minimize_objective(d, Constraints.build(domains(6)), w).mixture
    j = int(np.argmax(free))  # the domain the unconstrained optimum likes most
    cap = free[j] / 2
    capped = minimize_objective(d, Constraints.build(domains(6), max_share={f"d{j}": cap}), w)
    assert capped.mixture[j] == pytest.approx(cap, abs=1e-9)
    assert capped.value >= minimize_objective(d, Constraints.build(domains(6)), w).value - 1e-12


def test_a_single_feasible_point_is_returned_as_is():
    d = make_draws(100, 2, 3, seed=6)
    c = Constraints.build(domains(3), fixed={"d0": 0.5, "d1": 0.3, "d2": 0.2})
    best = minimize_objective(d, c, [0.5, 0.5])
    np.testing.assert_array_equal(best.mixture, [0.5, 0.3, 0.2])


# ------------------------------------------------------------------------------ brute force
LATTICE = 200  # shares in steps of 0.005


def _hd_quantile(values, q):
    """Harrell-Davis quantile over axis 0 - the same smooth estimator the optimiser uses."""
    n = values.shape[0]
    w = np.diff(special.betainc(q * (n + 1), (1 - q) * (n + 1), np.arange(n + 1) / n))
    return w @ np.sort(values, axis=0)


@pytest.mark.parametrize("constrained", [False, True])
@pytest.mark.parametrize("objective", ["mean", "quantile:0.9", "beat-baseline"])
def test_three_domain_optimum_agrees_with_a_lattice(objective, constrained):
    d = make_draws(500, 3, 3, seed=7, t_scale=1.0, jitter=0.5)
    w = np.array([0.5, 0.3, 0.2])
    c = Constraints.build(domains(3), max_share={"d0": 0.3} if constrained else None)
    base = np.array([0.2, 0.2, 0.6])
    best = minimize_objective(d, c, w, objective, baseline=base, n_starts=6)
    grid = simplex_lattice(LATTICE)
    grid = grid[c.contains(grid)]
    losses = aggregate_loss(d, grid, w)  # (S, n)
    obj = Objective.parse(objective)
    if obj.kind == "mean":
        score, mine = losses.mean(axis=0), best.value
    elif obj.kind == "quantile":
        score, mine = _hd_quantile(losses, 0.9), best.value
    else:  # the smooth surrogate the optimiser maximises, negated, at its own temperature
        base_loss = aggregate_loss(d, base, w)
        score = -special.expit((base_loss - losses) / best.temperature).mean(axis=0)
        mine = -special.expit(
            (base_loss - aggregate_loss(d, best.mixture, w)) / best.temperature
        ).mean()
    # Never worse than the best lattice point (the continuum optimum can only be better).
    assert mine <= score.min() + 1e-10
    # Close to the lattice's best point: within a few lattice steps (0.005 each); the objective
    # is flat near its optimum, so the lattice argmin can sit a couple of steps away.
    assert np.abs(grid[np.argmin(score)] - best.mixture).max() <= 0.02
    if obj.kind == "quantile":  # the plain sample quantile agrees too, within its resolution
        plain = np.quantile(losses, 0.9, axis=0)
        assert np.quantile(aggregate_loss(d, best.mixture, w), 0.9) <= plain.min() + 2e-3


def test_risk_aware_objectives_trade_mean_for_tail():
    d = make_draws(1000, 3, 4, seed=8, jitter=0.6)
    c = Constraints.build(domains(4))
    w = np.ones(3) / 3
    mean_opt = minimize_objective(d, c, w, "mean").mixture
    q_opt = minimize_objective(d, c, w, "quantile:0.95").mixture
    lm, lq = aggregate_loss(d, np.vstack([mean_opt, q_opt]), w).T
    assert lm.mean() <= lq.mean() + 1e-12  # each optimum wins on its own criterion
    assert _hd_quantile(lq[:, None], 0.95)[0] <= _hd_quantile(lm[:, None], 0.95)[0] + 1e-12
    assert np.abs(mean_opt - q_opt).max() > 1e-3  # and they do differ on this posterior


# ------------------------------------------------------------------------------ per-draw optima
@pytest.mark.parametrize(
    "k,m,case", [(6, 5, "max"), (13, 17, "simplex"), (1, 6, "min"), (3, 6, "combined")]
)
def test_per_draw_optima_agree_with_scipy(k, m, case):
    d = make_draws(200, k, m, seed=9)
    names = domains(m)
    spec = {
        key: {n: v for n, v in val.items() if n in names} if isinstance(val, dict) else val
        for key, val in CONSTRAINT_CASES[case].items()
    }
    c = Constraints.build(names, **spec)
    w = np.ones(k) / k
    optima, ok = draw_optima(d, c, w)
    assert ok.all()
    _, a, t = exp_terms(d, w)
    for s in range(0, 200, 40):
        ref_x, ref_f = scipy_draw_optimum(a[s], t[s], c.lower, c.upper)
        mine = (a[s] * np.exp(t[s] @ optima[s])).sum()
        assert mine <= ref_f + 1e-10 * abs(ref_f)  # at least as good as SLSQP
        if k >= m:  # strictly convex: the optimum is unique, so locations agree
            np.testing.assert_allclose(optima[s], ref_x, atol=1e-5)


def test_optimum_spread_table_and_dataarray():
    d = make_draws(300, 4, 5, seed=10)
    c = Constraints.build(domains(5))
    optima, _ = draw_optima(d, c, np.ones(4) / 4)
    da = optima_dataarray(optima, domains(5))
    assert da.dims == ("sample", "train_domain") and da.shape == (300, 5)
    table = optimum_spread(da, ci_prob=0.8)
    assert list(table.columns) == ["train_domain", "mean", "median", "lower", "upper"]
    np.testing.assert_allclose(table["lower"], np.quantile(optima, 0.1, axis=0))
    np.testing.assert_allclose(table["mean"], optima.mean(axis=0))
    assert (table["lower"] <= table["median"]).all() and (table["median"] <= table["upper"]).all()


# ------------------------------------------------------------------------------ bad input
def test_infeasible_constraints_name_the_conflict():
    with pytest.raises(errors.InfeasibleError, match="'d1'.*minimum share 0.5.*maximum share 0.2"):
        Constraints.build(domains(3), min_share={"d1": 0.5}, max_share={"d1": 0.2})
    with pytest.raises(errors.InfeasibleError, match="sum to 1.2"):
        Constraints.build(domains(3), min_share={"d0": 0.6, "d2": 0.6})
    with pytest.raises(errors.InfeasibleError, match="caps sum to"):
        Constraints.build(
            domains(2), tokens_available={"d0": 1e9, "d1": 1e9}, max_epochs=1, target_tokens=1e11
        )


def test_constraints_over_other_domains_are_rejected():
    draws = LawDraws(make_draws(20, 2, 3), domains(3), ["a", "b"])
    with pytest.raises(errors.DomainNameError, match="constraints are over"):
        decide(draws, constraints=Constraints.build(["x", "y", "z"]), per_draw=False)


@pytest.mark.parametrize(
    "text,match",
    [
        ("median", "unknown objective"),
        ("quantile", "needs a level"),
        ("quantile:1.5", "needs a level"),
        ("quantile:abc", "not a number"),
        ("mean:0.5", "takes no level"),
    ],
)
def test_bad_objectives_are_rejected(text, match):
    with pytest.raises(errors.ObjectiveError, match=match):
        Objective.parse(text)


def test_beat_baseline_needs_a_baseline():
    d = make_draws(20, 2, 3)
    with pytest.raises(errors.ObjectiveError, match="needs a baseline"):
        minimize_objective(d, Constraints.build(domains(3)), [0.5, 0.5], "beat-baseline")


def test_malformed_draws_are_rejected():
    with pytest.raises(errors.FormatError, match="lack the M4 parameter"):
        check_draws({"m": np.ones((3, 2)), "rho": np.ones((3, 2))})
    with pytest.raises(errors.FormatError, match="shapes"):
        check_draws({"m": np.ones((3, 2)), "rho": np.ones((3, 2)), "t": np.ones((3, 3, 4))})


def test_weights_and_target_resolution():
    evals = ["Github", "Pile-CC", "Books3"]
    w, desc = resolve_weights(evals, target="Books3")
    np.testing.assert_array_equal(w, [0, 0, 1])
    with pytest.raises(errors.DomainNameError, match="did you mean 'Books3'"):
        resolve_weights(evals, target="Books")
    with pytest.raises(errors.ObjectiveError, match="not both"):
        resolve_weights(evals, weights={"Github": 1}, target="Books3")
    w, _ = resolve_weights(evals, weights={"github": 1, "pile_cc": 3, "Books3": 4})
    np.testing.assert_allclose(w, [0.125, 0.375, 0.5])  # names match up to case/punctuation
    with pytest.raises(errors.DomainNameError, match="ArXiv"):
        resolve_weights(evals, weights={"Github": 1, "ArXiv": 1})
    w, _ = resolve_weights(evals, weights={"Github": 1, "ArXiv": 1}, allow_subset=True)
    np.testing.assert_allclose(w, [1, 0, 0])
    w, desc = resolve_weights(evals)
    np.testing.assert_allclose(w, 1 / 3)
    assert "equal" in desc


def test_baseline_resolution(tmp_path):
    train = ["a", "b", "c"]
    b, label = resolve_baseline(train)
    np.testing.assert_allclose(b, 1 / 3)
    b, _ = resolve_baseline(train, {"a": 0.25, "c": 0.75})  # unnamed domains get 0
    np.testing.assert_allclose(b, [0.25, 0, 0.75])
    with pytest.raises(errors.DomainNameError, match="'d'"):
        resolve_baseline(train, {"a": 0.5, "d": 0.5})
    with pytest.raises(errors.ProportionSumError, match="sum to 0.8"):
        resolve_baseline(train, {"a": 0.5, "b": 0.3})
    path = tmp_path / "base.json"
    path.write_text(json.dumps({"b": 1.0}))
    b, label = resolve_baseline(train, path)
    np.testing.assert_allclose(b, [0, 1, 0])
    assert str(path) in label
    (tmp_path / "bad.json").write_text("[1, 2")
    with pytest.raises(errors.UnreadableFileError, match="bad.json"):
        resolve_baseline(train, tmp_path / "bad.json")


# ------------------------------------------------------------------------------ the report
@pytest.fixture(scope="module")
def report() -> DecisionReport:
    draws = LawDraws(
        make_draws(800, 3, 4, seed=11),
        domains(4),
        ["Github", "Pile-CC", "Books3"],
        diagnostics_warning="2 divergences",
        source="synthetic",
    )
    c = Constraints.build(draws.train_domains, max_share={"d1": 0.2})
    return decide(
        draws,
        weights={"Github": 0.2, "Pile-CC": 0.5, "Books3": 0.3},
        constraints=c,
        baseline={"d0": 0.1, "d1": 0.2, "d2": 0.3, "d3": 0.4},
        ci_prob=0.8,
    )


def test_report_numbers_match_an_independent_computation(report):
    draws = make_draws(800, 3, 4, seed=11)
    w = np.array([0.2, 0.5, 0.3])
    rec = report.mixture.to_numpy()
    base = np.array([0.1, 0.2, 0.3, 0.4])
    lr, lb = aggregate_loss(draws, np.vstack([rec, base]), w).T
    assert report.p_beats_baseline == pytest.approx(np.mean(lr < lb))
    overall = report.losses.set_index(["mixture", "eval_domain"]).loc[("recommended", "overall")]
    assert overall["mean"] == pytest.approx(lr.mean())
    assert overall["lower"] == pytest.approx(np.quantile(lr, 0.1))
    assert report.objective_value == pytest.approx(lr.mean())
    assert lr.mean() < lb.mean()  # the mean-optimal feasible mixture beats a feasible baseline
    cmp = report.comparison.set_index("eval_domain").loc["overall"]
    assert cmp["improvement_mean"] == pytest.approx((lb - lr).mean())
    assert report.constraints.contains(rec, atol=1e-12)
    assert report.draw_optima.shape == (800, 4)


def test_report_text_leads_with_the_diagnostics_warning(report):
    text = report.to_text()
    assert text.splitlines()[1] == "WARNING: 2 divergences"
    assert "P(recommended beats baseline" in text
    for d in ("d0", "d3", "Github", "overall"):
        assert d in text


def test_report_json_and_csv_round_trip(report, tmp_path):
    j = json.loads(report.save(tmp_path / "r.json").read_text())
    assert j["diagnostics_warning"] == "2 divergences"
    assert [r["share"] for r in j["recommendation"]] == pytest.approx(report.mixture.tolist())
    assert "draw_optima" not in j
    j = json.loads(report.save(tmp_path / "r2.json", include_draw_optima=True).read_text())
    assert np.asarray(j["draw_optima"]["shares"]).shape == (800, 4)
    csv = pd.read_csv(report.save(tmp_path / "r.csv"), keep_default_na=False)
    shares = csv.query("section == 'mixture' and mixture == 'recommended'")
    np.testing.assert_allclose(shares["value"].astype(float), report.mixture.to_numpy())
    meta = csv[csv.section == "meta"].set_index("statistic")
    assert meta.loc["diagnostics_warning", "text"] == "2 divergences"
    assert float(meta.loc["p_beats_baseline", "value"]) == pytest.approx(report.p_beats_baseline)
    with pytest.raises(errors.FormatError, match="use a .json or .csv"):
        report.save(tmp_path / "r.txt")


def test_a_saved_report_can_serve_as_the_next_baseline(report, tmp_path):
    path = report.save(tmp_path / "r.json")
    b, _ = resolve_baseline(report.mixture.index, path)
    np.testing.assert_allclose(b, report.mixture.to_numpy())
