"""Adding a law is one law definition plus one TOML specification, and nothing else.

A small law is defined here, in the test file, registered, named by a specification written to a
temporary folder, and then taken through the whole pipeline: fit -> predict -> decide ->
propose (library and CLI). No other module of bayesmix knows it. It declares no analytic
gradient and no fast optimiser, so the generic paths (PyTensor gradient compiled once, batched
projected-gradient per-draw optima, multi-start SLSQP) are the ones exercised.
"""

from __future__ import annotations

import numpy as np
import pymc as pm
import pytest
from conftest import SIM_DOMAINS, simulate_runs

from bayesmix.data.constraints import Constraints
from bayesmix.decisions.decision import decide
from bayesmix.laws import Law, Param, get_law, register
from bayesmix.loop import acquire
from bayesmix.posterior.posterior import Posterior


class PlaneLaw(Law):
    """A toy: the loss is a plane in the shares, ``L_i(r) = m_i + sum_j b_ij (r_j - 1/M)``.

    ``m_i`` is the loss at the uniform mixture; rows of ``b`` sum to zero (only differences of
    shares matter on the simplex). Linear, so each draw's optimum is a vertex of the feasible
    set - a law nothing in bayesmix was written for.
    """

    name = "toy-plane"
    description = "test law: a plane in the shares"
    params = (
        Param("m", ("eval_domain",), "nats/token", "loss at the uniform mixture"),
        Param("b", ("eval_domain", "train_domain"), "nats/token per share", "slopes"),
    )
    priors = {
        "m": {"dist": "Normal", "mu": "data", "sigma": "data"},
        "b_scale": {"dist": "HalfNormal", "sigma": 1.0},
    }

    def mean(self, inputs, params, xp=np):
        r = inputs["r"]
        centred = r - 1.0 / r.shape[-1]
        return params["m"][..., None, :] + xp.matmul(centred, xp.swapaxes(params["b"], -1, -2))

    def build(self, ctx):
        m = ctx.prior("m", dims="eval_domain", mu=ctx.loss_mean, sigma=ctx.loss_scale)
        z = pm.Normal("b_z", 0.0, 1.0, dims=("eval_domain", "train_domain"))
        b = ctx.prior("b_scale") * (z - z.mean(axis=1, keepdims=True))
        return {"m": m, "b": pm.Deterministic("b", b, dims=("eval_domain", "train_domain"))}


SPEC = """name = "plane"
description = "a plane in the shares (test)"
law = "toy-plane"
[likelihood]
family = "normal"
"""
FIT_KW = {"draws": 200, "tune": 300, "chains": 2, "random_seed": 3}


@pytest.fixture(scope="module")
def plane_fit(tmp_path_factory):
    register(PlaneLaw)
    path = tmp_path_factory.mktemp("plane") / "plane.toml"
    path.write_text(SPEC)
    from bayesmix.inference.fitting import fit

    runs, truth = simulate_runs()
    post = fit(runs, str(path), warn=False, **FIT_KW)
    return path, runs, post


def test_the_registry_finds_the_law_by_name():
    register(PlaneLaw)
    assert isinstance(get_law("toy-plane"), PlaneLaw)


@pytest.mark.slow
def test_fit_and_predict_a_law_defined_outside_the_package(plane_fit, tmp_path):
    path, runs, post = plane_fit
    assert post.spec.law == "toy-plane" and isinstance(post.law, PlaneLaw)
    params = post.law_params()
    assert params["m"].shape == (post.n_samples, len(SIM_DOMAINS))
    assert params["b"].shape == (post.n_samples, len(SIM_DOMAINS), len(SIM_DOMAINS))
    # the fitted plane reproduces the observed losses on average: its in-sample error is far
    # below the spread of the losses across runs (a plane through M4 data is a rough fit, so
    # the bound is loose: half the spread)
    pred = post.predict(runs.mixtures).mean.mean(("chain", "draw")).values
    obs = runs.losses.to_numpy(float)
    assert np.nanmean(np.abs(pred - obs)) < 0.5 * np.nanmean(np.nanstd(obs, axis=0))
    # saved and loaded again (same process: the law is registered)
    again = Posterior.load(post.save(tmp_path / "plane.nc"))
    np.testing.assert_allclose(again.law_params()["b"], params["b"])


@pytest.mark.slow
def test_decide_on_a_law_defined_outside_the_package(plane_fit):
    _, _, post = plane_fit
    cons = Constraints.build(
        post.train_domains, max_share={"Github": 0.5}, min_share={"ArXiv": 0.1}
    )
    report = decide(post, constraints=cons, target="Pile-CC")
    rec = report.recommendation.set_index("train_domain")["share"].to_numpy()
    assert cons.contains(rec)
    # a plane is minimised at a vertex of the feasible set: the posterior-mean plane's best
    # vertex, found by enumerating the vertices of this box-simplex, is the recommendation
    m = post.law_params()
    w = np.eye(len(post.eval_domains))[list(post.eval_domains).index("Pile-CC")]
    grad = (m["b"] * w[None, :, None]).sum(1).mean(0)  # d mean loss / d r: (M,)
    lo, hi = cons.lower, cons.upper
    best = lo.copy()
    for j in np.argsort(grad):  # fill the cheapest directions first (greedy is exact for LPs
        best[j] += min(hi[j] - lo[j], 1.0 - best.sum())  # on a box-simplex)
    np.testing.assert_allclose(rec, best, atol=2e-3)
    assert report.draw_optima is not None and cons.contains(report.draw_optima.values).all()


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["thompson", "optimum-info", "bald", "random"])
def test_propose_on_a_law_defined_outside_the_package(plane_fit, strategy):
    _, runs, post = plane_fit
    cons = Constraints.build(post.train_domains, max_share={"Pile-CC": 0.6})
    belief = acquire.Belief.from_posterior(post, target="Pile-CC", max_draws=64)
    batch = acquire.propose(
        belief,
        4,
        strategy=strategy,
        constraints=cons,
        existing=runs.mixtures.to_numpy(float),
        random_seed=2,
    )
    assert batch.mixtures.shape == (4, len(SIM_DOMAINS))
    assert cons.contains(batch.mixtures).all()


@pytest.mark.slow
def test_cli_fit_optimize_and_propose_with_the_spec_file(plane_fit, tmp_path, capsys):
    from bayesmix.cli import main

    path, runs, _ = plane_fit
    runs_csv = tmp_path / "runs.csv"
    runs.to_tidy().to_csv(runs_csv, index=False)
    out = tmp_path / "p.nc"
    assert (
        main(
            [
                "fit",
                str(runs_csv),
                "-o",
                str(out),
                "--model",
                str(path),
                "--draws",
                "100",
                "--tune",
                "200",
                "--chains",
                "2",
                "--quiet",
            ]
        )
        == 0
    )
    assert main(["optimize", str(out), "--target", "Pile-CC"]) == 0
    assert "recommended" in capsys.readouterr().out.lower()
    # the experiment loop: a ledger started from the runs, one round proposed with the law
    ledger = tmp_path / "exp.db"
    assert main(["init", "--ledger", str(ledger), "--runs", str(runs_csv)]) == 0
    assert (
        main(
            [
                "propose",
                "--ledger",
                str(ledger),
                "-n",
                "3",
                "--model",
                str(path),
                "--draws",
                "100",
                "--tune",
                "200",
                "--chains",
                "2",
                "--quiet",
                "--target",
                "Pile-CC",
            ]
        )
        == 0
    )
    from bayesmix.loop.ledger import Ledger

    with Ledger.open(ledger) as book:
        proposed = book.runs("proposed")
    assert len(proposed) == 3


@pytest.mark.slow
def test_a_posterior_of_an_unregistered_law_names_the_fix(plane_fit, tmp_path):
    """In a process that never registered the law, loading its posterior says what to do."""
    import subprocess
    import sys

    _, _, post = plane_fit
    path = post.save(tmp_path / "plane.nc")
    code = (
        "import sys\nfrom bayesmix.posterior.posterior import Posterior\n"
        "from bayesmix import errors\n"
        "try:\n    Posterior.load(sys.argv[1])\nexcept errors.PosteriorFileError as e:\n"
        "    print(e)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120
    )
    assert "unknown law 'toy-plane'" in done.stdout and "register" in done.stdout
