"""The repetition component (bayesmix.laws.repetition): the identity where nothing repeats, its
formula (epochs, effective data, data cost) in NumPy and PyTensor, its gradient, the run table's
unique-token columns and their errors, and decisions at a token budget (on known draws and on a
small fit)."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

import bayesmix as bm
from bayesmix import errors
from bayesmix.decisions.draws import LawDraws
from bayesmix.decisions.scale import proxy_scale
from bayesmix.laws import get_law
from bayesmix.laws.repetition import RepeatLaw, effective_mixture, effective_shares
from bayesmix.model.model import prepare_data

DOMAINS = ("web", "code", "wiki")
UNIQUE = np.array([1e13, 1e12, 1e9])  # wiki: small
TARGET = 2e11  # wiki at share 0.1 is 20 epochs here


def truth(s: int = 1, r_star: float = 15.4) -> dict:
    """A law where wiki helps every validation domain: M4 on its own wants a lot of it."""
    t = np.eye(3) * -3.0
    t[:, 2] += -1.0
    t = t - t.mean(1, keepdims=True)
    return {
        "m": np.tile([3.2, 2.0, 2.8], (s, 1)),
        "rho": np.full((s, 3), 0.05),
        "t": np.tile(t, (s, 1, 1)),
        "r_star": np.full(s, r_star),
        "unique_tokens": np.tile(UNIQUE, (s, 1)),
        "data_term": np.full(s, 0.34),
        "data_exponent": np.full(s, 0.28),
    }


def test_the_wrapped_law_is_registered_by_name_and_pickles_to_itself():
    law = get_law("m4+repeat")
    assert isinstance(law, RepeatLaw) and law is get_law("m4+repeat")
    assert law.param_names[-4:] == ("r_star", "unique_tokens", "data_term", "data_exponent")
    assert law.inputs == ("r", "tokens") and law.budget_inputs == ("tokens",)
    assert pickle.loads(pickle.dumps(law)) is law
    # a base law over tokens keeps its own data term: no extra one, tokens not a budget only
    scaling = get_law("scaling+repeat")
    assert "data_term" not in scaling.param_names and scaling.budget_inputs == ()
    # stacked with the absence term either way round
    assert get_law("m4+repeat+absent").budget_inputs == ("tokens",)
    assert get_law("m4+absent+repeat").param_names[3] == "a"


def test_without_repetition_the_law_is_exactly_the_base_law_in_numpy_and_pytensor():
    import pytensor.tensor as pt

    law, base = get_law("m4+repeat"), get_law("m4")
    p = truth(2)
    rng = np.random.default_rng(0)
    r = rng.dirichlet(np.ones(3), 6)
    r[0] = [0.0, 0.0, 1.0]  # wiki alone: exactly one epoch at 1e9 tokens
    got = law.predict(r, p, tokens=np.full(6, 1e9))
    np.testing.assert_array_equal(got, base.predict(r, p))  # exact: fits are unchanged
    inputs = {"r": pt.as_tensor(r), "tokens": pt.as_tensor(np.full(6, 1e9))}
    sym = law.mean(inputs, {k: pt.as_tensor(v[0]) for k, v in p.items()}, pt)
    np.testing.assert_allclose(sym.eval(), got[0], rtol=1e-12)


def test_epochs_effective_data_and_the_cost_of_wasted_tokens():
    law, base = get_law("m4+repeat"), get_law("m4")
    p = truth()
    r = np.array([[0.5, 0.4, 0.1]])
    np.testing.assert_allclose(law.epochs(r, p, {"tokens": TARGET}), [[1e-2, 8e-2, 20.0]])
    assert law.epochs(r, p, {}) is None
    # wiki: R = 19 repetitions, D' = U (1 + R* (1 - e^{-R/R*})) effective tokens
    d_wiki = 1e9 * (1 + 15.4 * (1 - np.exp(-19 / 15.4)))
    eff = effective_shares(r, TARGET, UNIQUE[None], np.array([15.4]))
    np.testing.assert_allclose(eff[0, 0], [0.5, 0.4, d_wiki / TARGET], rtol=1e-12)
    comp, kept = effective_mixture(r, TARGET, UNIQUE[None], np.array([15.4]))
    s = 0.9 + d_wiki / TARGET
    np.testing.assert_allclose(kept[0, 0], s, rtol=1e-12)
    np.testing.assert_allclose(comp[0, 0], eff[0, 0] / s, rtol=1e-12)
    cost = 0.34 * (TARGET / 1e11) ** -0.28 * (s**-0.28 - 1)
    want = base.predict(comp[0], p) + cost
    np.testing.assert_allclose(law.predict(r, p, tokens=TARGET), want, rtol=1e-12)
    assert 1 - s > 0.04 and cost > 0.003  # 4% of the budget lost to repetition costs 0.003


def test_value_grad_matches_finite_differences_where_a_domain_repeats():
    law = get_law("m4+repeat")
    p = truth(2)
    p["r_star"] = np.array([15.4, 6.0])
    w = np.array([0.5, 0.2, 0.3])
    r = np.array([[0.5, 0.4, 0.1], [0.3, 0.69, 0.01]])  # 20 epochs of wiki, and 2
    f, g = law.value_grad(r, p, w, tokens=TARGET)
    np.testing.assert_allclose(f, (law.predict(r, p, tokens=TARGET) * w).sum(-1), rtol=1e-10)
    h = 1e-6
    for j in range(3):
        step = np.zeros(3)
        step[j] = h
        fd = (law.value_grad(r + step, p, w, tokens=TARGET)[0] - f) / h
        np.testing.assert_allclose(g[..., j], fd, rtol=1e-4, atol=1e-6)


def test_decide_at_a_budget_stops_at_fewer_epochs_and_reports_them():
    law_draws = LawDraws(truth(4), DOMAINS, DOMAINS, law="m4+repeat", inputs={"tokens": TARGET})
    base = {k: v for k, v in truth(4).items() if k in ("m", "rho", "t")}
    naive = bm.decide(LawDraws(base, DOMAINS, DOMAINS), per_draw=False, random_seed=0)
    aware = bm.decide(law_draws, random_seed=0)
    wiki_naive = naive.mixture["wiki"] * TARGET / 1e9
    rec = aware.recommendation.set_index("train_domain")
    # M4 alone wants 2/3 of the budget on wiki (133 epochs); the budget-aware decision (the
    # true optimum of this law) 40, and it is the better mixture under the truth
    assert wiki_naive > 100 and 20 < rec.at["wiki", "epochs"] < 60
    assert rec.at["wiki", "epochs"] == pytest.approx(rec.at["wiki", "share"] * TARGET / 1e9)
    assert rec.at["web", "baseline_epochs"] == pytest.approx(TARGET / 3 / 1e13)
    truth_loss = law_draws.mean_loss(np.vstack([aware.mixture, naive.mixture])).mean(-1)
    assert (truth_loss[:, 0] < truth_loss[:, 1] - 0.01).all()
    text = aware.to_text()
    assert "epochs" in text and "baseline epochs" in text
    frame = aware.to_frame()
    assert set(frame.loc[frame["section"] == "epochs", "mixture"]) == {"recommended", "baseline"}


def test_decide_without_a_budget_names_tokens():
    law_draws = LawDraws(truth(2), DOMAINS, DOMAINS, law="m4+repeat")
    with pytest.raises(errors.OptionError, match="needs tokens"):
        bm.decide(law_draws, per_draw=False)


# ------------------------------------------------------------------ the run table's columns
def frame(n: int = 6, tokens: float = 1e9, unique=UNIQUE) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    r = rng.dirichlet(np.ones(3), n)
    out = pd.DataFrame({"run": [f"r{i}" for i in range(n)], "tokens": tokens})
    for j, d in enumerate(DOMAINS):
        out[f"mix.{d}"] = r[:, j]
    for j, d in enumerate(DOMAINS):
        if unique is not None:
            out[f"unique.{d}"] = unique[j]
        out[f"loss.{d}"] = 3.0 + 0.1 * r[:, j]
    return out


def test_a_run_table_carries_unique_tokens_through_its_views():
    runs = bm.RunTable.from_frame(frame())
    assert runs.unique_tokens() == dict(zip(DOMAINS, UNIQUE.tolist(), strict=True))
    assert bm.RunTable.from_frame(runs.to_tidy()).unique_tokens() == runs.unique_tokens()
    assert bm.RunTable.from_frame(frame(unique=None)).unique_tokens() is None
    data = prepare_data(runs, "m4+repeat")
    np.testing.assert_array_equal(data.law_data["unique_tokens_data"], UNIQUE)
    assert len(data.runs) == 6 and data.tokens is not None


def test_runs_with_checkpoints_enter_once_at_their_last_budget():
    from bayesmix.model.model import select_for_fit

    early, late = frame(), frame()
    early["step"], early["tokens"] = 500, 5e8
    late["step"] = 1000
    runs = bm.RunTable.from_frame(pd.concat([early, late], ignore_index=True))
    table = select_for_fit(runs, law="m4+repeat")  # tokens are a budget: no checkpoint fit
    data = prepare_data(table, "m4+repeat")
    assert len(data.runs) == 6 and data.record_run is None
    np.testing.assert_array_equal(data.tokens, 1e9)


@pytest.mark.parametrize(
    ("change", "error", "words"),
    [
        ({"unique.wiki": -5.0}, errors.NonNumericError, "column 'unique.wiki': unique tokens"),
        ({"unique.wiki": 0.0}, errors.NonNumericError, "must be a finite number > 0"),
        ({"unique.wikipedia": 1e9}, errors.FormatError, "'unique.wikipedia' names no training"),
    ],
)
def test_bad_unique_tokens_are_one_line_errors_naming_the_column(change, error, words):
    f = frame()
    for col, v in change.items():
        f[col] = v
    with pytest.raises(error, match=words) as got:
        bm.RunTable.from_frame(f, source="runs.csv")
    assert "\n" not in str(got.value) and "runs.csv" in str(got.value)


def test_unique_tokens_that_differ_between_rows_are_refused_at_the_row():
    f = frame()
    f.loc[3, "unique.code"] = 2e12
    with pytest.raises(errors.FormatError, match="row 5, run 'r3', column 'unique.code'"):
        bm.RunTable.from_frame(f, source="runs.csv")


def test_fitting_the_law_without_unique_tokens_names_the_missing_column():
    f = frame().drop(columns=["unique.wiki"])
    runs = bm.RunTable.from_frame(f, source="runs.csv")
    with pytest.raises(errors.FormatError, match="column 'unique.wiki' is missing") as got:
        prepare_data(runs, "m4+repeat")
    assert "\n" not in str(got.value) and "unique.<domain>" in str(got.value)
    with pytest.raises(errors.FormatError, match="needs tokens for every run"):
        prepare_data(bm.RunTable.from_frame(frame().drop(columns=["tokens"])), "m4+repeat")


def test_a_domain_map_drops_the_old_domains_unique_tokens():
    runs = bm.RunTable.from_frame(frame())
    notes: list[str] = []
    merged = runs.remap({"merge": {"text": ["web", "wiki"]}}, report=notes)
    assert merged.unique_tokens() is None and any("unique" in n for n in notes)


# -------------------------------------------------------------------------------- a small fit
@pytest.fixture(scope="module")
def proxy_fit():
    """24 proxy runs of 1e9 tokens (no domain repeats) from :func:`truth`, noise sd 0.01,
    fitted with the ``repeat`` specification (2 x 200 draws)."""
    rng = np.random.default_rng(2)
    f = frame(24)
    r = rng.dirichlet(np.ones(3), 24)
    law = get_law("m4+repeat")
    loss = law.predict(r, truth(), tokens=np.full(24, 1e9))[0] + rng.normal(0, 0.01, (24, 3))
    for j, d in enumerate(DOMAINS):
        f[f"mix.{d}"], f[f"loss.{d}"] = r[:, j], loss[:, j]
    runs = bm.RunTable.from_frame(f)
    return bm.fit(runs, "repeat", draws=200, tune=300, chains=2, random_seed=3, warn=False)


@pytest.mark.slow
def test_a_fit_without_repetition_keeps_the_prior_of_r_star(proxy_fit):
    r_star = proxy_fit.law_params()["r_star"]
    # no run repeats: the likelihood is flat in R*, so 400 draws of LogNormal(log 15.4, 0.5)
    # have a median within ~10% of 15.4 (the median's sd is ~0.03 on the log scale)
    assert 12 < np.median(r_star) < 20
    np.testing.assert_array_equal(proxy_fit.law_params()["unique_tokens"][0], UNIQUE)


@pytest.mark.slow
def test_decide_on_a_fitted_posterior_at_a_budget_stops_at_sensible_epochs(proxy_fit, tmp_path):
    # 200x the proxies' tokens: a budget, not an extrapolation the scale check refuses
    aware = bm.decide(proxy_fit, inputs={"tokens": TARGET}, per_draw=False, random_seed=0)
    epochs = aware.recommendation.set_index("train_domain")["epochs"]
    # the truth's optimum repeats wiki 40 times; M4 alone asks for 133 epochs of it: the
    # fitted component must stop well short of that (the band allows the fitted slopes'
    # error, a few hundredths of a share at 24 runs with noise 0.01; measured: 39)
    assert epochs["wiki"] < 80
    assert not any("outside the fitted range" in n for n in aware.notes)
    # the HTML report shows the epochs; without a decision it draws at the proxies' budget
    # (runs with tokens but no model size)
    assert proxy_scale(proxy_fit) == pytest.approx({"tokens": 1e9})
    html = aware.to_html(proxy_fit, tmp_path / "report.html").read_text()
    assert "baseline epochs" in html
    back = bm.Posterior.load(proxy_fit.save(tmp_path / "repeat.nc"))
    assert back.law is proxy_fit.law and back.spec.law == "m4+repeat"
    mix = pd.DataFrame([[0.4, 0.4, 0.2]], columns=list(DOMAINS))  # inside the fitted runs
    np.testing.assert_allclose(
        back.predict(mix, tokens=TARGET, random_seed=0).mean.values,
        proxy_fit.predict(mix, tokens=TARGET, random_seed=0).mean.values,
    )
