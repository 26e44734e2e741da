"""The exact-absence term (bayesmix.laws.absence): its formula in NumPy and PyTensor, the wrapped
law's registry name, its gradient and face rule for decisions, and a small fit that finds a jump
at share 0 that the base law cannot bend to."""

from __future__ import annotations

import itertools
import pickle

import numpy as np
import pytest

from bayesmix.errors import SpecError
from bayesmix.laws import get_law
from bayesmix.laws.absence import PRESENT_SHARE, AbsentLaw, absence_term

RNG = np.random.default_rng(0)


def m4_params(s: int, k: int, m: int) -> dict:
    t = RNG.normal(0, 1, (s, k, m))
    return {
        "m": RNG.uniform(2, 3, (s, k)),
        "rho": RNG.uniform(0.2, 0.8, (s, k)),
        "t": t - t.mean(-1, keepdims=True),
        "a": RNG.normal(0, 0.5, (s, k, m)),
    }


def test_the_wrapped_law_is_registered_by_name_and_pickles_to_itself():
    law = get_law("m4+absent")
    assert isinstance(law, AbsentLaw) and law is get_law("m4+absent")
    assert law.param_names == ("m", "rho", "t", "a")
    assert {"absent_loc", "absent_scale"} <= set(law.priors) and "b_mu" in law.priors
    assert pickle.loads(pickle.dumps(law)) is law
    with pytest.raises(SpecError, match="unknown law 'nolaw'"):
        get_law("nolaw+absent")


def test_the_term_adds_a_exactly_where_a_share_is_zero_in_numpy_and_pytensor():
    import pytensor.tensor as pt

    law, base = get_law("m4+absent"), get_law("m4")
    p = m4_params(2, 3, 4)
    r = np.array([[0.5, 0.5, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25], [1e-9, 0.0, 0.5, 0.5 - 1e-9]])
    got = law.predict(r, p)  # (2, 3 runs, 3 eval domains)
    want = base.predict(r, p) + np.einsum("nm,skm->snk", (r == 0).astype(float), p["a"])
    np.testing.assert_allclose(got, want, rtol=1e-12)
    # the uniform mixture has no absent domain, and a share of 1e-9 is present
    np.testing.assert_allclose(got[:, 1], base.predict(r, p)[:, 1], rtol=1e-12)
    sym = law.mean({"r": pt.as_tensor(r)}, {k: pt.as_tensor(v) for k, v in p.items()}, pt)
    np.testing.assert_allclose(sym.eval(), got, rtol=1e-10)
    np.testing.assert_allclose(absence_term(r, p["a"])[:, 0], p["a"][:, :, 2] + p["a"][:, :, 3])


def test_value_grad_is_the_base_gradient_with_the_value_of_the_term():
    law, base = get_law("m4+absent"), get_law("m4")
    p = m4_params(3, 2, 3)
    r = np.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])
    w = np.array([0.7, 0.3])
    f, g = law.value_grad(r, p, w)
    fb, gb = base.value_grad(r, p, w)
    np.testing.assert_allclose(g, gb)
    np.testing.assert_allclose(f[:, 0], fb[:, 0] + p["a"][:, :, 2] @ w)
    np.testing.assert_allclose(f[:, 1], fb[:, 1])
    np.testing.assert_allclose(f, (law.predict(r, p) * w).sum(-1), rtol=1e-10)


def test_an_optimum_keeps_a_zero_share_only_where_absence_lowers_the_loss():
    r = np.array([[0.6, 0.4, 0.0, 0.0], [0.6, 0.4, 0.0, 0.0]])
    a = np.zeros((2, 1, 4))
    a[0, 0, 2], a[0, 0, 3] = 0.5, -0.5  # draw 0: absence of 2 costs, of 3 helps
    a[1, 0, 2] = 0.5  # draw 1: costs, but the upper bound keeps domain 2 out
    upper = np.array([[1, 1, 1, 1], [1, 1, 0, 1]], float)
    out = AbsentLaw.settle_faces(r, {"a": a}, np.array([1.0]), upper)
    np.testing.assert_allclose(out[0], [0.6 - PRESENT_SHARE, 0.4, PRESENT_SHARE, 0.0])
    np.testing.assert_allclose(out[1], r[1])
    np.testing.assert_allclose(out.sum(1), 1.0)


# ---------------------------------------------------------------------------------- a small fit
JUMP = 0.6  # nats: what leaving "code" out adds to the code loss beyond M4's smooth limit


@pytest.fixture(scope="module")
def jump_fit():
    """M4 runs on a 1/4 lattice over 3 domains (15 mixtures, twice), with the code loss raised
    by JUMP wherever code is exactly absent, fitted with the ``absent`` model."""
    import bayesmix as bm

    grid = [c for c in itertools.product(range(5), repeat=3) if sum(c) == 4]
    mix = np.array(grid * 2, float) / 4
    runs, _ = bm.simulate(["web", "code", "books"], design=mix, random_seed=3)
    tidy = runs.to_tidy()
    tidy.loc[tidy["mix.code"] == 0, "loss.code"] += JUMP
    runs = bm.RunTable.from_frame(tidy)
    post = bm.fit(runs, "absent", warn=False, draws=200, tune=300, chains=2, random_seed=5)
    return runs, post


def test_the_fit_finds_the_jump_at_exact_absence(jump_fit):
    _, post = jump_fit
    a = post.tree.posterior["a"].sel(eval_domain="code", train_domain="code").values
    # 2 x 200 draws: the posterior mean is within a few posterior sds (~0.05 at 30 runs,
    # noise sd 0.02) of the jump; the loose band tolerates the smooth part taking some of it
    assert 0.3 < a.mean() < 0.9
    # the web loss sees no jump when code is absent: its coefficient stays well below it
    web = post.tree.posterior["a"].sel(eval_domain="web", train_domain="code").values
    assert abs(web.mean()) < 0.3


def test_prediction_and_decide_use_the_term(jump_fit):
    import bayesmix as bm

    runs, post = jump_fit
    mixes = np.array([[0.5, 0.0, 0.5], [0.5, 0.01, 0.49]])
    pred = post.predict(mixes, random_seed=0).mean.mean(("chain", "draw"))
    code = pred.sel(eval_domain="code").values
    assert code[0] - code[1] > 0.3  # the step at exact absence, not a smooth 1% change
    result = bm.decide(post, weights={"code": 1.0}, per_draw=False)
    assert result.mixture["code"] > 0  # not the face where code is absent
    assert result.mixture.sum() == pytest.approx(1.0)


def test_a_saved_posterior_reads_back_with_its_wrapped_law(jump_fit, tmp_path):
    import bayesmix as bm

    runs, post = jump_fit
    back = bm.Posterior.load(post.save(tmp_path / "absent.nc"))
    assert back.law is post.law and back.spec.law == "m4+absent"
    mixes = runs.mixtures.iloc[:3]
    np.testing.assert_allclose(
        back.predict(mixes, random_seed=0).mean.values,
        post.predict(mixes, random_seed=0).mean.values,
    )
