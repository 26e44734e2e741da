"""The learned extrapolation error (bayesmix.posterior.extrapolation): its grid posterior recovers a
known spread factor and discrepancy from backtest-like residuals, and applied to predictions it
widens intervals with the distance, keeps the mean's centre, and survives save/load.

No MCMC: residuals are simulated, and the posterior-level tests reuse the session's fitted
fixture from conftest.py.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from bayesmix.errors import BayesmixError
from bayesmix.posterior import extrapolation
from bayesmix.posterior.posterior import Posterior


def residuals(
    kappa, tau, *, tau_mix=0.0, splits=8, runs=6, domains=12, rho=0.0, seed=0
) -> pd.DataFrame:
    """Backtest-like residuals: per split a distance in [0.3, 1.5], per (run, domain) an own
    sd in [0.01, 0.03]; error = kappa * own + u * (an error shared by the split's runs, the
    extrapolation error of one refit, correlated rho across domains + each run's own error
    tau_mix)."""
    rng = np.random.default_rng(seed)
    rows = []
    for b in range(splits):
        u = rng.uniform(0.3, 1.5)
        shared = rng.standard_normal()
        per_domain = np.sqrt(rho) * shared + np.sqrt(1 - rho) * rng.standard_normal(domains)
        delta = tau * u * per_domain  # one refit: the same for every held-out run
        for r in range(runs):
            sd = rng.uniform(0.01, 0.03, domains)
            eta = tau_mix * u * rng.standard_normal(domains)
            err = kappa * sd * rng.standard_normal(domains) + delta + eta
            for k in range(domains):
                rows.append(
                    {
                        "split": f"s{b}",
                        "run": f"r{r}",
                        "eval_domain": f"d{k}",
                        "error": err[k],
                        "sd": sd[k],
                        "distance": u,
                    }
                )
    return pd.DataFrame(rows)


def test_log_distance_counts_only_beyond_the_fitted_maximum():
    ranges = {"n_params": (7e7, 4.1e8), "tokens": (3e9, 3e10)}
    assert extrapolation.log_distance(3e8, 2e10, ranges) == 0.0  # inside both ranges
    u = extrapolation.log_distance(1e9, 1e11, ranges)
    assert u == pytest.approx(np.hypot(np.log(1e9 / 4.1e8), np.log(1e11 / 3e10)))
    # per mixture, and an input the posterior was not fitted over is ignored
    np.testing.assert_allclose(
        extrapolation.log_distance([4.1e8, 8.2e8], None, ranges), [0.0, np.log(2)]
    )
    assert extrapolation.log_distance(1e9, 1e11, {}) == 0.0


def test_learn_recovers_a_known_spread_factor_and_discrepancy():
    true_kappa, true_tau = 0.6, 0.04
    cal = extrapolation.learn(residuals(true_kappa, true_tau, splits=16, seed=1))
    # tau is informed by 16 splits x 12 domains of shared errors, kappa by 1,152 residuals:
    # the 90% intervals hold the truth (seeds 0-19: both held in 16, as two 90% intervals
    # should in about 0.81), and the means are within 25% of it (within 13% at every seed)
    lo, hi = cal.interval("kappa")
    assert lo <= true_kappa <= hi
    lo, hi = cal.interval("tau_size")
    assert lo <= true_tau <= hi
    assert cal.kappa_mean == pytest.approx(true_kappa, rel=0.25)
    assert cal.tau_mean("size") == pytest.approx(true_tau, rel=0.25)
    assert cal.n_splits == 16 and cal.n_residuals == 16 * 6 * 12


def test_no_discrepancy_in_the_residuals_gives_a_small_one():
    cal = extrapolation.learn(residuals(1.0, 0.0, splits=16, seed=2))
    assert cal.kappa_mean == pytest.approx(1.0, rel=0.15)
    # the 95th percentiles are a few thousandths: a shared error of 0.005 nats at distance 1
    # would already show in 192 split-domain means of sd ~0.02 / sqrt(6), a per-mixture one
    # of 0.01 against own errors of sd ~0.02 in 1,152 residuals at varied distances
    assert np.quantile(cal.tau_size, 0.95) < 0.006
    assert np.quantile(cal.tau_mix, 0.95) < 0.012


def test_a_per_mixture_error_is_told_apart_from_the_shared_one():
    cal = extrapolation.learn(residuals(0.8, 0.01, tau_mix=0.03, splits=16, seed=6))
    # distances vary between splits, so a per-mixture error growing with u separates from
    # the own spread: the 90% intervals of tau_mix and kappa hold the truth (seeds 0-11: both
    # held in 10, as two 90% intervals should in about 0.81)
    lo, hi = cal.interval("tau_mix")
    assert lo <= 0.03 <= hi and cal.tau_mix_mean == pytest.approx(0.03, rel=0.35)
    lo, hi = cal.interval("kappa")
    assert lo <= 0.8 <= hi


def test_many_runs_of_one_refit_do_not_pin_the_discrepancy():
    """The held-out runs of a split share its extrapolation error: with 2 splits the
    posterior of tau stays wide however many runs each has."""
    few = extrapolation.learn(residuals(1.0, 0.04, splits=2, runs=3, seed=3))
    many = extrapolation.learn(residuals(1.0, 0.04, splits=2, runs=60, seed=3))
    width = lambda c: np.subtract(*c.interval("tau_size")[::-1])  # noqa: E731
    # 20x the runs: as independent residuals the width would fall by sqrt(20) (to 0.22x);
    # shared by the refit it falls only by what the runs' own noise added (measured 0.46x)
    assert width(many) > 0.35 * width(few)


def test_correlation_across_domains_is_estimated():
    cal = extrapolation.learn(residuals(1.0, 0.05, splits=12, rho=0.8, seed=4))
    # standardised residuals mix the own noise (independent) and the discrepancy (rho 0.8):
    # the estimate lies between, well above the independent case
    assert cal.rho > 0.3
    assert extrapolation.learn(residuals(1.0, 0.05, splits=12, rho=0.0, seed=4)).rho < 0.15


def by_axis(frame: pd.DataFrame, axis: str) -> pd.DataFrame:
    """``frame`` with per-axis distance columns: every split extrapolates along ``axis``."""
    u = frame["distance"]
    size = axis == "size"
    return frame.assign(
        distance_size=u if size else 0.0 * u, distance_tokens=0.0 * u if size else u
    )


def test_size_and_token_extrapolation_errors_are_learned_apart():
    # size splits with a small shared error, token splits with a large one (a step law that
    # misses the schedule's annealing): each tau's 90% interval holds its own truth (seeds
    # 0-9: both held in 9) and they do not mix (the token one is 4x the size one)
    size = by_axis(residuals(0.8, 0.01, splits=12, seed=11), "size")
    tokens = by_axis(residuals(0.8, 0.06, splits=12, seed=12), "tokens")
    tokens["split"] = "t" + tokens["split"]
    cal = extrapolation.learn(pd.concat([size, tokens], ignore_index=True))
    assert cal.learned_axes == ["size", "tokens"]
    lo, hi = cal.interval("tau_size")
    assert lo <= 0.01 <= hi and hi < 0.03
    lo, hi = cal.interval("tau_tokens")
    assert lo <= 0.06 <= hi and lo > 0.03
    assert "log-size ratio" in cal.describe() and "log-token ratio" in cal.describe()
    # an axis no split moved along keeps its prior, and says so
    only = extrapolation.learn(size)
    assert only.learned_axes == ["size"] and "prior only" in only.describe()
    prior_mean = extrapolation.TAU_SCALE * np.sqrt(2 / np.pi)  # HalfNormal(0.05): 0.040
    assert only.tau_mean("tokens") == pytest.approx(prior_mean, rel=0.1)  # 1,000 draws


def test_each_axis_error_grows_with_its_own_distance():
    rng = np.random.default_rng(0)
    mean = np.full((4, 500, 3, 1), 2.5)
    cal = fixed(1.0, 0.0)
    cal.tau_size, cal.tau_tokens = np.full_like(cal.kappa, 0.01), np.full_like(cal.kappa, 0.05)
    pred = mean + 0.0 * rng.standard_normal(mean.shape)
    axes = [(1.0, 0.0), (0.0, 1.0), (1.0, 1.0)]
    m, _ = extrapolation.apply_calibration(mean, pred, cal, axes)
    sd = (m - mean).reshape(-1, 3).std(0)
    # 2,000 draws: sds within 6% of 0.01, 0.05 and sqrt(0.01^2 + 0.05^2)
    np.testing.assert_allclose(sd, [0.01, 0.05, np.hypot(0.01, 0.05)], rtol=0.06)
    share = extrapolation.width_share(cal, 0.02, (0.0, 1.0))
    assert share == pytest.approx(0.05**2 / (0.02**2 + 0.05**2))
    # a calibration stored with one tau reads as equal taus, its distance on the size axis
    old = json.loads(cal.to_json())
    old["tau"] = old.pop("tau_size")
    del old["tau_tokens"], old["target_axes"], old["learned_axes"]
    old["target_distance"] = 1.2
    back = extrapolation.Calibration.from_json(json.dumps(old))
    np.testing.assert_array_equal(back.tau_tokens, back.tau_size)
    assert back.target_axes == [1.2, 0.0] and back.learned_axes == ["joint"]


def test_bad_residuals_are_refused_in_one_line():
    with pytest.raises(BayesmixError, match="lack column 'sd'"):
        extrapolation.learn(pd.DataFrame({"split": ["a"], "error": [0.1], "distance": [1.0]}))
    frame = residuals(1.0, 0.0, splits=1, runs=1, domains=2)
    frame["error"] = np.nan
    with pytest.raises(BayesmixError, match="no finite backtest residual"):
        extrapolation.learn(frame)


def fixed(kappa, tau, rho=0.0, distance=None, tau_mix=0.0) -> extrapolation.Calibration:
    n = extrapolation.N_SAMPLES
    return extrapolation.Calibration(
        kappa=np.full(n, kappa),
        tau_size=np.full(n, tau),
        tau_tokens=np.full(n, tau),
        tau_mix=np.full(n, tau_mix),
        rho=rho,
        n_residuals=1,
        n_splits=1,
        max_distance=1.0,
        target_axes=None if distance is None else [distance, 0.0],
    )


def test_apply_scales_the_own_spread_and_adds_a_shared_discrepancy():
    rng = np.random.default_rng(0)
    mean = np.full((4, 500, 3, 2), 2.5)
    pred = mean + 0.02 * rng.standard_normal(mean.shape)
    m0, p0 = extrapolation.apply_calibration(mean, pred, fixed(1.0, 0.0), (2.0, 0.0))
    np.testing.assert_array_equal(m0, mean)
    np.testing.assert_array_equal(p0, pred)
    m1, p1 = extrapolation.apply_calibration(
        mean, pred, fixed(0.5, 0.03, rho=0.7), [(0.0, 0.0), (1.0, 0.0), (2.0, 0.0)]
    )
    # mixture 0 at distance 0: only the spread factor acts
    np.testing.assert_allclose(p1[:, :, 0] - mean[:, :, 0], 0.5 * (pred - mean)[:, :, 0])
    # the discrepancy's sd is tau * u (2,000 draws: sd within 6%), correlated rho across the
    # two domains (within 0.06), and one direction per draw for every mixture
    delta = (m1 - mean)[:, :, 2].reshape(-1, 2)
    assert delta.std(0) == pytest.approx([0.06, 0.06], rel=0.06)
    assert np.corrcoef(delta.T)[0, 1] == pytest.approx(0.7, abs=0.06)
    np.testing.assert_allclose(m1[:, :, 2] - mean[:, :, 2], 2 * (m1 - mean)[:, :, 1])
    # the same draw's discrepancy enters mean and predictive alike, and again on a new call
    np.testing.assert_allclose(p1 - m1, 0.5 * (pred - mean))
    again, _ = extrapolation.apply_calibration(
        mean, pred, fixed(0.5, 0.03, rho=0.7), [(0.0, 0.0), (1.0, 0.0), (2.0, 0.0)]
    )
    np.testing.assert_array_equal(again, m1)
    # a per-mixture error comes from each mixture's own stream: it does not cancel between
    # mixtures (sd of a difference at u = 1: sqrt(2) * 0.04, within 6%) and a chunk of
    # mixtures gets the same numbers as the whole set
    cal = fixed(1.0, 0.0, tau_mix=0.04)
    whole, _ = extrapolation.apply_calibration(
        mean, pred, cal, (1.0, 0.0), [np.random.default_rng(i) for i in range(3)]
    )
    diff = (whole[:, :, 0] - whole[:, :, 1]).ravel()
    assert diff.std() == pytest.approx(np.sqrt(2) * 0.04, rel=0.06)
    part, _ = extrapolation.apply_calibration(
        mean[:, :, 1:], pred[:, :, 1:], cal, (1.0, 0.0), [np.random.default_rng(i) for i in (1, 2)]
    )
    np.testing.assert_array_equal(part, whole[:, :, 1:])


def test_calibration_round_trips_as_json():
    cal = extrapolation.learn(residuals(0.8, 0.03, splits=6, seed=5)).with_target((1.4, 0.0))
    back = extrapolation.Calibration.from_json(cal.to_json())
    np.testing.assert_allclose(back.kappa, cal.kappa, atol=1e-6)
    np.testing.assert_allclose(back.tau_size, cal.tau_size, atol=1e-6)
    np.testing.assert_array_equal(back.tau_tokens, back.tau_size)  # one tau: no axis columns
    np.testing.assert_allclose(back.tau_mix, cal.tau_mix, atol=1e-6)
    assert back.rho == cal.rho and back.target_distance == 1.4
    text = back.describe()
    assert "shared error" in text and "per-mixture error" in text and "distance 1.40" in text


@pytest.mark.slow
def test_a_calibrated_posterior_widens_with_distance_and_survives_save(simulated_fit, tmp_path):
    post = Posterior(simulated_fit.posterior.tree.copy())
    mixtures = {"a": dict.fromkeys(post.train_domains, 1 / len(post.train_domains))}
    plain = post.intervals(mixtures, 0.9)
    width = lambda t: float((t["upper"] - t["lower"]).mean())  # noqa: E731
    post.with_extrapolation(fixed(1.0, 0.05, rho=0.5, distance=0.0))
    # at distance 0 with kappa 1 the intervals do not move
    np.testing.assert_allclose(post.intervals(mixtures, 0.9)["lower"], plain["lower"])
    post.with_extrapolation(fixed(1.0, 0.05, rho=0.5, distance=1.5))
    far = post.intervals(mixtures, 0.9)
    assert width(far) > width(plain) + 0.1  # +-1.645 * 0.075 in quadrature with the own sd
    assert float(np.abs(far["mean"] - plain["mean"]).max()) < 0.01  # centred
    # "mean" intervals carry it too: the law's expected loss at the target is uncertain
    assert width(post.intervals(mixtures, 0.9, kind="mean")) > 0.2
    path = post.save(tmp_path / "calibrated.nc")
    back = Posterior.load(path)
    assert back.extrapolation is not None and back.extrapolation.target_distance == 1.5
    pd.testing.assert_frame_equal(back.intervals(mixtures, 0.9), far)
    # chunking does not change the numbers (each mixture has its own stream)
    many = {f"m{i}": dict(mixtures["a"]) for i in range(5)}
    whole = back.intervals(many, 0.9)
    pd.testing.assert_frame_equal(back.intervals(many, 0.9, chunk_size=2), whole)
    assert back.with_extrapolation(None).extrapolation is None
    assert simulated_fit.posterior.extrapolation is None  # the shared fixture is untouched


@pytest.mark.slow
def test_decisions_carry_the_per_mixture_error_and_cancel_the_shared_one(simulated_fit):
    from bayesmix.decisions.decision import decide

    def improvement(cal):
        post = Posterior(simulated_fit.posterior.tree.copy()).with_extrapolation(cal)
        rec = decide(post, random_seed=0, per_draw=False)
        row = rec.comparison.set_index("eval_domain").loc["overall"]
        return rec, float(row["improvement_upper"] - row["improvement_lower"])

    plain, width = improvement(None)
    shared, width_shared = improvement(fixed(1.0, 0.05, rho=0.5, distance=1.0))
    # an error shared by both mixtures cancels exactly in their difference ...
    assert width_shared == pytest.approx(width, rel=1e-9)
    pd.testing.assert_frame_equal(shared.recommendation, plain.recommendation)
    # ... but widens each mixture's expected-loss interval
    lo = plain.losses.set_index(["mixture", "eval_domain"])
    hi = shared.losses.set_index(["mixture", "eval_domain"])
    assert float((hi["upper"] - hi["lower"]).min()) > float((lo["upper"] - lo["lower"]).max())
    # a per-mixture error of 0.03 at distance 1, uncorrelated across the 4 equally weighted
    # domains, gives the overall difference an sd of sqrt(2) 0.015 = 0.021, i.e. a 90% width
    # of about 0.07 in quadrature with the law's (measured 0.006 -> 0.069)
    _, width_mix = improvement(fixed(1.0, 0.0, distance=1.0, tau_mix=0.03))
    assert width_mix > width + 0.03
