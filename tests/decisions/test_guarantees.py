"""Decisions with guarantees (bayesmix.decisions.guarantees): chance constraints per validation
domain, minimax, continual pre-training as a special case, and the CLI.

No MCMC: posterior draws are built from known parameters with a little jitter (LawDraws), and
the CLI reads a Posterior assembled from such draws (:meth:`Posterior.from_fit`), so every
check is fast and its answer known.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import m4_posterior

# the continual-pre-training simulator of tests/decisions/test_continual.py (imported, not copied)
from test_continual import EVALS, TRAIN, TRUE_C, TRUE_K, TRUE_T, TRUE_X, simulate_continual

from bayesmix import errors
from bayesmix.cli import main
from bayesmix.data.constraints import Constraints
from bayesmix.decisions.continual import critical_share
from bayesmix.decisions.decision import decide
from bayesmix.decisions.draws import LawDraws
from bayesmix.decisions.guarantees import (
    Guarantee,
    GuaranteeError,
    critical_share_at_prob,
    domain_changes,
    guaranteed_critical_share,
    minimize_guaranteed,
    parse_guarantees,
)
from bayesmix.decisions.optimize import minimize_objective
from bayesmix.laws import m4
from bayesmix.model.simulation import simulate
from bayesmix.posterior.posterior import Posterior

S = 400


def jittered(m, rho, t, n=S, seed=0, sd=(0.01, 0.02, 0.1)):
    """M4 draws (n, ...) scattered around (m, rho, t); t rows kept summing to zero."""
    rng = np.random.default_rng(seed)
    k, mm = np.shape(t)
    out_t = np.asarray(t)[None] + rng.normal(0, sd[2], (n, k, mm))
    out_t -= out_t.mean(-1, keepdims=True)
    return {
        "m": np.asarray(m)[None] * (1 + rng.normal(0, sd[0], (n, k))),
        "rho": np.clip(np.asarray(rho)[None] + rng.normal(0, sd[1], (n, k)), 0.05, 0.95),
        "t": out_t,
    }


def five_draws() -> LawDraws:
    """Draws around a simulated 5 x 5 M4 law (the truth of simulate(seed=1))."""
    _, truth = simulate(5, 5, n_runs=10, random_seed=1)
    p = jittered(truth["m"], truth["rho"], truth["t"])
    return LawDraws(p, truth["train_domains"], truth["eval_domains"], source="five")


@pytest.fixture(scope="module")
def five():
    return five_draws()


def fake_posterior(params: dict, runs, train, evals, chains=2):
    """A default-model Posterior holding ``params`` (S, ...) as its draws, ``runs`` as fit data."""
    shape = (chains, params["m"].shape[0] // chains)
    k, n_train = len(evals), len(train)
    return m4_posterior(
        params["m"].reshape(shape + (k,)),
        params["rho"].reshape(shape + (k,)),
        params["t"].reshape(shape + (k, n_train)),
        runs,
        sigma=0.01,
        train=train,
        evals=evals,
    )


def exact_probs(draws, r, baseline, guarantees):
    """Independent check: fraction of draws meeting each guarantee, from LawDraws.mean_loss."""
    loss = draws.mean_loss(np.vstack([r, baseline]))  # (S, 2, K)
    out = []
    for g in guarantees:
        d = list(draws.eval_domains).index(g.domain)
        x = loss[:, 0, d] - (loss[:, 1, d] + g.bound if g.kind == "no-worse" else g.bound)
        out.append(float((x <= 1e-10).mean()))
    return np.array(out)


# ------------------------------------------------------------------------------ parsing
def test_guarantee_options_parse_and_refuse_nonsense():
    gs = parse_guarantees(["all=0.01@0.9", "d2=0.02"], ["d3=2.5@0.95"])
    assert [g.label() for g in gs] == [
        "no-worse all=0.01@0.9",
        "no-worse d2=0.02@0.9",
        "max-loss d3=2.5@0.95",
    ]
    for bad, match in (
        ("d1", "not DOMAIN=BOUND@PROB"),
        ("d1=x@0.9", "must be numbers"),
        ("d1=0.01@1.5", "probability must be in"),
        ("d1=0.01@", "not DOMAIN"),
    ):
        with pytest.raises(errors.OptionError, match=match) as info:
            parse_guarantees([bad])
        assert str(info.value).startswith(f"no_worse={bad!r}") and info.value.param == "no_worse"
    with pytest.raises(errors.OptionError, match="loss bound must be > 0"):
        parse_guarantees(max_loss=["d1=-1@0.9"])


# ------------------------------------------------------------------------------ chance constraints
def test_chance_constraints_hold_exactly_on_the_draws(five):
    c = Constraints.build(five.train_domains, max_share={"d2": 0.3})
    w = np.eye(5)[0]  # optimise d1 alone: without guarantees all shares go to d1
    base = np.full(5, 0.2)
    free = minimize_objective(five, c, w).mixture
    guarantees = [Guarantee("no-worse", d, 0.01, 0.9) for d in five.eval_domains]
    guarantees.append(Guarantee("max-loss", "d3", 3.2, 0.8))
    assert exact_probs(five, free, base, guarantees).min() < 0.9  # the guarantees bind
    got = minimize_guaranteed(five, c, w, guarantees=guarantees, baseline=base)
    assert c.contains(got.mixture)
    probs = exact_probs(five, got.mixture, base, guarantees)
    np.testing.assert_allclose(probs, got.probs)
    assert np.all(probs >= [g.prob for g in guarantees])
    # on the boundary: the binding guarantee is met by the fewest draws allowed (within 2)
    slack = probs - np.array([g.prob for g in guarantees])
    assert slack.min() <= 2 / S
    # the price: worse than the unguaranteed optimum, better than the baseline
    d1 = five.mean_loss(np.vstack([free, got.mixture, base]))[:, :, 0].mean(axis=0)
    assert d1[0] < d1[1] < d1[2]
    assert got.value == pytest.approx(d1[1]) and got.unguaranteed_value == pytest.approx(d1[0])
    # "all" expands to one guarantee per validation domain
    again = minimize_guaranteed(five, c, w, guarantees=["no-worse:all=0.01@0.9"], baseline=base)
    assert [g.domain for g in again.guarantees] == list(five.eval_domains)
    assert np.all(again.probs >= 0.9)


def test_an_impossible_guarantee_names_itself_and_the_best_probability(five):
    c = Constraints.build(five.train_domains)
    w = np.full(5, 0.2)
    with pytest.raises(
        GuaranteeError,
        match=r"guarantee max-loss d1=0\.5@0\.9 cannot be met: "
        r"the highest probability reachable is 0\.000",
    ):
        minimize_guaranteed(five, c, w, guarantees=["max-loss:d1=0.5@0.9"])
    # a bound some draws can meet but not 90% of them: the best probability is reported, and
    # it is the largest fraction of draws below the bound (at the mixture returned)
    lowest = five.mean_loss(np.eye(5))[:, :, 0].min(axis=1)  # d1's loss at its best corner
    bound = float(np.quantile(lowest, 0.5))
    with pytest.raises(GuaranteeError) as info:
        minimize_guaranteed(five, c, w, guarantees=[f"max-loss:d1={bound}@0.9"])
    err = info.value
    assert err.guarantee.domain == "d1" and 0.3 < err.best_prob < 0.9
    at = five.mean_loss(err.mixture)[:, 0, 0]
    assert err.best_prob == pytest.approx(float((at <= bound + 1e-10).mean()))
    assert len(str(err).splitlines()) == 1 and "d1=" in str(err)
    # decide() raises the same named error
    with pytest.raises(GuaranteeError, match="max-loss d1=0.5@0.9"):
        decide(five, guarantees=["max-loss:d1=0.5@0.9"], per_draw=False)


def test_guarantees_work_for_another_law_at_a_target_scale():
    """The scaling law (generic PyTensor gradient) at a target N, D: exact check holds."""
    rng = np.random.default_rng(2)
    k = m = 3
    t = np.array([[-1.5, 1.0, 0.5], [0.8, -1.6, 0.8], [0.6, 0.4, -1.0]])
    t = t[None] + rng.normal(0, 0.1, (S, k, m))
    params = {
        "E": 1.7 + rng.normal(0, 0.01, (S, k)),
        "A": 0.8 + rng.normal(0, 0.02, (S, k)),
        "alpha": np.full((S, k), 0.3),
        "B": 0.6 + rng.normal(0, 0.02, (S, k)),
        "beta": np.full((S, k), 0.3),
        "t": t - t.mean(-1, keepdims=True),
        "n_ref": np.full(S, 1e8),
        "d_ref": np.full(S, 1e10),
    }
    names = ("web", "code", "books")
    draws = LawDraws(params, names, names, law="scaling", inputs={"n_params": 1e9, "tokens": 1e11})
    c = Constraints.build(names)
    base = np.array([0.6, 0.2, 0.2])
    got = minimize_guaranteed(
        draws, c, np.eye(3)[1], guarantees=["no-worse:all=0.005@0.9"], baseline=base
    )
    gs = got.guarantees
    probs = exact_probs(draws, got.mixture, base, gs)
    assert np.all(probs >= 0.9) and probs.min() <= 0.9 + 2 / S
    # decide() at the target scale reports the guarantees and each domain's change
    rep = decide(
        draws, target="code", guarantees=["no-worse:all=0.005@0.9"], baseline=base, per_draw=False
    )
    assert rep.guarantees["met"].all() and (rep.guarantees["prob_achieved"] >= 0.9).all()
    assert "Guarantees" in rep.to_text() and "P(worse)" in rep.to_text()


# ------------------------------------------------------------------------------ minimax
def test_minimax_on_a_symmetric_problem_returns_the_symmetric_mixture():
    # every draw comes with its two cyclic relabellings: the posterior is symmetric
    base_t = np.array([[-2.0, 1.2, 0.8], [0.8, -2.0, 1.2], [1.2, 0.8, -2.0]])
    p = jittered(np.full(3, 3.0), np.full(3, 0.3), base_t, n=100, seed=4)
    perm = [np.roll(np.arange(3), s) for s in range(3)]
    sym = {
        "m": np.concatenate([p["m"][:, q] for q in perm]),
        "rho": np.concatenate([p["rho"][:, q] for q in perm]),
        "t": np.concatenate([p["t"][:, q][:, :, q] for q in perm]),
    }
    names = ("a", "b", "c")
    draws = LawDraws(sym, names, names)
    c = Constraints.build(names)
    # from an asymmetric start and with unequal weights (minimax uses only which are > 0)
    got = minimize_objective(draws, c, [0.7, 0.2, 0.1], "minimax", extra_starts=[[0.8, 0.1, 0.1]])
    np.testing.assert_allclose(got.mixture, np.full(3, 1 / 3), atol=1e-5)


def test_minimax_balances_the_worst_domains(five):
    c = Constraints.build(five.train_domains)
    w = np.full(5, 0.2)
    base = np.full(5, 0.2)
    mean_opt = minimize_objective(five, c, w).mixture
    mm = minimize_guaranteed(five, c, w, "minimax", baseline=base).mixture
    ch_mean = domain_changes(five, mean_opt, base)["change_mean"].to_numpy()
    ch_mm = domain_changes(five, mm, base)["change_mean"].to_numpy()
    assert ch_mm.max() < ch_mean.max() - 1e-4  # a better worst domain than the mean optimum
    top = np.sort(ch_mm)[-2:]
    assert top[1] - top[0] < 1e-6  # the worst two are balanced at the optimum
    rep = decide(five, objective="minimax", per_draw=False)
    assert rep.objective == "minimax"
    assert rep.objective_value == pytest.approx(ch_mm.max(), abs=1e-6)
    assert set(rep.comparison.columns) >= {"p_better", "p_worse", "improvement_lower"}


# ------------------------------------------------------------------------------ continual
def test_critical_share_from_both_routes_agrees():
    runs = simulate_continual()
    c, k, t = TRUE_C, TRUE_K, TRUE_T
    truth = m4.from_ck(c, k, t)
    p = jittered(truth["m"], truth["rho"], truth["t"], n=S, seed=6, sd=(0.002, 0.01, 0.05))
    post = fake_posterior(p, runs.at_step(10000), TRAIN, EVALS)
    for kw in (
        {},
        {"tolerance": 0.01, "prob": 0.8},
        {"weights": {"Orig": 1.0, "Side": 1.0}, "prob": 0.95},
    ):
        prob = kw.pop("prob", 0.9)
        cs = critical_share(post, original="Orig", new="New", runs=runs, prob=prob, **kw)
        by_draws = critical_share_at_prob(cs, prob)
        by_guarantee = guaranteed_critical_share(
            post, original="Orig", new="New", runs=runs, prob=prob, **kw
        )
        assert by_guarantee.share == pytest.approx(by_draws, abs=1e-7), kw
        assert by_guarantee.prob_achieved >= prob
        assert by_guarantee.original_share == pytest.approx(1 - by_guarantee.share)
        assert abs(by_draws - TRUE_X) < 0.1  # near the truth, below it (a 1 - prob quantile)


# ------------------------------------------------------------------------------ CLI
def saved_posterior(folder):
    """A Posterior of draws around a simulated 4 x 4 M4 law, saved in ``folder``."""
    runs, truth = simulate(["web", "code", "books", "math"], n_runs=12, random_seed=5)
    p = jittered(truth["m"], truth["rho"], truth["t"], n=300, seed=5)
    post = fake_posterior(p, runs, truth["train_domains"], truth["eval_domains"])
    return post.save(folder / "post.nc")


@pytest.fixture(scope="module")
def posterior_file(tmp_path_factory):
    return saved_posterior(tmp_path_factory.mktemp("guarantees"))


def cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_optimize_no_worse_end_to_end(posterior_file, tmp_path, capsys):
    out_path = tmp_path / "report.json"
    code, out, err = cli(
        capsys,
        "optimize",
        posterior_file,
        "--target",
        "code",
        "--no-worse",
        "all=0.01@0.9",
        "--max-loss",
        "web=3.9@0.8",
        "--baseline",
        "web=0.4,code=0.2,books=0.2,math=0.2",
        "-o",
        out_path,
        "--quiet",
    )
    assert code == 0, err
    assert "Guarantees" in out and "price of the guarantees" in out and "P(worse)" in out
    rep = json.loads(out_path.read_text())
    shares = np.array([r["share"] for r in rep["recommendation"]])
    post = Posterior.load(posterior_file)
    draws = LawDraws.from_posterior(post)
    gs = [Guarantee("no-worse", d, 0.01, 0.9) for d in post.eval_domains]
    gs.append(Guarantee("max-loss", "web", 3.9, 0.8))
    probs = exact_probs(draws, shares, np.array([0.4, 0.2, 0.2, 0.2]), gs)
    assert np.all(probs >= [g.prob for g in gs])
    assert [g["prob_achieved"] for g in rep["guarantees"]] == pytest.approx(list(probs))
    assert all(g["met"] for g in rep["guarantees"])
    assert all("p_worse" in row for row in rep["comparison"])
    # an impossible guarantee: one line naming it, exit 2
    code, out, err = cli(
        capsys,
        "optimize",
        posterior_file,
        "--target",
        "code",
        "--max-loss",
        "web=0.5@0.9",
        "--quiet",
    )
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "max-loss web=0.5@0.9 cannot be met" in err and "highest probability" in err
    code, out, err = cli(capsys, "optimize", posterior_file, "--no-worse", "web0.01")
    assert code == 2 and "--no-worse 'web0.01' is not DOMAIN=BOUND@PROB" in err
    code, out, err = cli(capsys, "optimize", posterior_file, "--no-worse", "Web=0.01", "--quiet")
    assert code == 2 and "unknown validation domain 'Web'" in err
