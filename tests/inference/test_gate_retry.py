"""bayesmix.inference.gate_retry: the policy after a failed diagnostics gate (a pure function), the
driver that samples again within a time budget (a fake sampler and a fake clock: no MCMC), and one
tiny
real fit that must retry, store its attempts in the file and obey ``max_time=0``."""

from __future__ import annotations

import warnings
from dataclasses import replace

import pytest
import xarray as xr
from conftest import FIT_KW, simulate_runs

from bayesmix import errors
from bayesmix.inference.gate_retry import (
    DEFAULT_MAX_TIME,
    MAX_ATTEMPTS,
    MAX_DRAWS,
    MAX_TUNE,
    SamplerSettings,
    attempt_seed,
    check_max_time,
    next_settings,
    record_line,
    sample_to_gate,
)
from bayesmix.posterior.diagnostics import ConvergenceWarning, Diagnostics

BASE = SamplerSettings(draws=1000, tune=1000, target_accept=0.95, chains=4)


#: ``draws`` of a :func:`report` that :class:`FakeSampler` replaces by the draws asked for.
AS_ASKED = -1


def report(**kw) -> Diagnostics:
    """A gate report of 4 chains (draws: as the attempt asked); passing unless ``kw`` says
    otherwise (``failed`` is filled with one entry per changed figure, as the gate would)."""
    good = {
        "chains": 4,
        "draws": AS_ASKED,
        "divergences": 0,
        "treedepth_hits": 0,
        "min_bfmi": 0.9,
        "max_rhat": 1.002,
        "min_ess_bulk": 900.0,
        "min_ess_tail": 900.0,
    }
    failed = [f"{k} {v}" for k, v in kw.items() if k in good and k != "draws" and v != good[k]]
    return Diagnostics(**{**good, **kw}, failed=failed)


# ------------------------------------------------------------------------------ the policy
def test_passing_gate_needs_nothing():
    assert next_settings(report(), BASE) is None


def test_divergences_raise_target_accept_and_tuning():
    new, why = next_settings(report(divergences=3), BASE)
    assert new == replace(BASE, target_accept=0.98, tune=1500)
    assert "3 divergences" in why and "target_accept 0.95 -> 0.98" in why
    new, _ = next_settings(report(divergences=3), new)
    assert new.target_accept == 0.99 and new.tune == 2250
    # the pipeline's stages start at 0.9
    assert (
        next_settings(report(divergences=1), replace(BASE, target_accept=0.9))[0].target_accept
        == 0.95
    )


def test_divergences_at_the_top_of_the_ladder_leave_nothing_to_do():
    assert next_settings(report(divergences=2), replace(BASE, target_accept=0.99)) is None


def test_tree_depth_and_low_bfmi_double_the_tuning():
    for bad in ({"treedepth_hits": 12}, {"min_bfmi": 0.2}):
        new, why = next_settings(report(**bad), BASE)
        assert new == replace(BASE, tune=2000), bad
        assert "tune 1000 -> 2000" in why


def test_low_ess_scales_the_draws_by_the_shortfall():
    floor = 400  # 100 per chain x 4 chains
    cases = {
        # ESS just short: at least x1.5
        350.0: 1500,
        # 1.2 x 400 / 200 = 2.4
        200.0: 2400,
        # 1.2 x 400 / 50 = 9.6: capped at x4
        50.0: 4000,
    }
    for ess, draws in cases.items():
        assert ess < floor
        new, why = next_settings(report(min_ess_bulk=ess), BASE)
        assert new == replace(BASE, draws=draws, tune=1500), ess
        assert f"draws 1000 -> {draws}" in why
    # the tail ESS counts too (the smaller one decides)
    new, _ = next_settings(report(min_ess_tail=200.0), BASE)
    assert new.draws == 2400


def test_rhat_alone_asks_for_draws_by_how_far_it_is_from_its_bound():
    # R-hat - 1 shrinks about as 1 / draws: 1.012 -> x1.5 (the least), 1.02 -> 1.2 x 2 = x2.4,
    # 1.03 -> 1.2 x 3 = x3.6, 1.05 -> capped at x4
    for rhat, draws in ((1.012, 1500), (1.02, 2400), (1.03, 3600), (1.05, 4000)):
        new, why = next_settings(report(max_rhat=rhat), BASE)
        assert new == replace(BASE, draws=draws, tune=1500), rhat
        assert f"R-hat {rhat:.3f}" in why


def test_several_failures_take_the_largest_change_of_each_setting():
    new, why = next_settings(report(divergences=1, treedepth_hits=5, min_ess_bulk=200.0), BASE)
    assert new == SamplerSettings(draws=2400, tune=2000, target_accept=0.98, chains=4)
    assert "divergences" in why and "tree-depth" in why and "ESS" in why


def test_settings_at_their_bounds_leave_nothing_to_do():
    top = replace(BASE, draws=MAX_DRAWS, tune=MAX_TUNE)
    assert next_settings(report(min_ess_bulk=100.0), top) is None
    # near the bounds: capped, not exceeded
    near = replace(BASE, draws=MAX_DRAWS - 10, tune=MAX_TUNE - 10)
    new, _ = next_settings(report(min_ess_bulk=100.0), near)
    assert (new.draws, new.tune) == (MAX_DRAWS, MAX_TUNE)


# ------------------------------------------------------------------------------ the driver
class FakeSampler:
    """``sample_once`` for :func:`sample_to_gate`: attempt i returns tree i (the check maps it
    to ``reports[i]``) and advances a fake clock by ``rate`` seconds per draw, tuning
    included."""

    def __init__(self, reports, rate=0.01):
        self.reports, self.rate, self.now, self.calls = list(reports), rate, 0.0, []

    def clock(self) -> float:
        return self.now

    def __call__(self, settings: SamplerSettings, seed):
        self.calls.append((settings, seed))
        self.now += self.rate * settings.total_draws
        i = len(self.calls) - 1
        return i, f"extra {i}"

    def check(self, tree) -> Diagnostics:
        r = self.reports[tree]
        return replace(r, draws=self.calls[tree][0].draws) if r.draws == AS_ASKED else r


def drive(fake: FakeSampler, first=BASE, **kw):
    """The driver on a fake sampler; attempts are not pooled unless ``pool`` is given (the
    fake's trees are numbers)."""
    kw.setdefault("max_time", 1e9)
    kw.setdefault("seed", 5)
    kw.setdefault("pool", None)
    return sample_to_gate(fake, first, check=fake.check, clock=fake.clock, **kw)


class PoolingFake(FakeSampler):
    """A fake whose pooled trees ("pool", i, j) get ``pooled`` as their report."""

    def __init__(self, reports, pooled: Diagnostics):
        super().__init__(reports)
        self.pooled, self.pools = pooled, []

    def pool(self, a, b):
        self.pools.append((a, b))
        return ("pool", a, b)

    def check(self, tree) -> Diagnostics:
        return self.pooled if isinstance(tree, tuple) else super().check(tree)


def test_a_retry_for_rhat_is_judged_with_the_previous_attempts_chains():
    # both attempts fail on R-hat alone; their 8 chains together pass: attempt 2 is used with
    # the pooled tree, and the fit's settings say 8 chains of the shorter attempt's draws
    fake = PoolingFake(
        [report(max_rhat=1.015), report(max_rhat=1.0104)] + [report()] * 4,
        pooled=replace(report(), chains=8, draws=1000),
    )
    result = drive(fake, pool=fake.pool)
    assert len(fake.calls) == 2 and fake.pools == [(0, 1)]
    assert result.tree == ("pool", 0, 1) and result.diagnostics.ok
    assert result.used.number == 2 and "chains of attempts 1-2 pooled" in result.used.pooled
    settings = result.settings(60.0)
    assert (settings["chains"], settings["draws"]) == (8, 1000)
    assert "attempts 1-2 pooled (8 x 1000 draws): passed" in record_line(result.records()[1])


def test_attempts_that_sampled_differently_are_not_pooled():
    # divergences: the retry raises target_accept, another posterior geometry; no pooling
    fake = PoolingFake([report(divergences=2), report(max_rhat=1.02), report()], report())
    result = drive(fake, pool=fake.pool)
    assert fake.pools == [] and result.used.number == 3 and not result.used.pooled
    # a pool that fails the gate (even with a better R-hat) is not kept: the policy plans the
    # next attempt from the attempt's own report, whose draws are what it asked for (a pool
    # of fewer draws once read as an interrupted sampling and stopped the retries)
    fake = PoolingFake(
        [report(max_rhat=1.015), report(max_rhat=1.02), report()],
        pooled=replace(report(max_rhat=1.012), draws=1000),
    )
    result = drive(fake, pool=fake.pool)
    assert fake.calls[1][0].draws > 1000  # attempt 2 asked for more draws than the pool has
    assert fake.pools == [(0, 1)] and len(fake.calls) == 3
    assert result.tree == 2 and not result.attempts[1].pooled  # attempt 3 passed on its own
    assert result.attempts[1].diagnostics.max_rhat == 1.02
    assert result.attempts[1].next.startswith("retry: R-hat 1.020")


def test_a_retry_that_would_overrun_becomes_a_same_size_attempt_to_pool():
    # Attempt 1: 4 x 2000 draws x 0.01 s = 80 s, R-hat 1.015. The policy's retry (draws x1.8,
    # tune x1.5: 4 x 3300 draws) would take 132 s; 100 s are left, so attempt 2 repeats
    # attempt 1's settings (80 s) and passes pooled with it.
    reports = [report(max_rhat=1.015), report(max_rhat=1.012)]
    fake = PoolingFake(reports, pooled=replace(report(), chains=8, draws=1000))
    result = drive(fake, pool=fake.pool, max_time=180.0)
    assert [c[0] for c in fake.calls] == [BASE, BASE] and fake.pools == [(0, 1)]
    assert result.diagnostics.ok and result.tree == ("pool", 0, 1)
    first = result.attempts[0].next
    assert "would take ~132 s" in first and "a same-size attempt to pool with attempt 1" in first
    # its pool failing too, attempt 2 is not repeated again: with a budget of 200 s and
    # attempt 2 sampling at 0.007 s per draw (56 s), 64 s are left; the policy's retry (92 s)
    # does not fit, a third same-size attempt (56 s) would, but it would pool only with
    # attempt 2, whose pool with attempt 1 already failed: the driver stops
    fake = PoolingFake(reports + [report(max_rhat=1.012)], pooled=report(max_rhat=1.011))
    rates = iter([0.01, 0.007, 0.007])

    def sample(settings, seed):
        fake.rate = next(rates)
        return PoolingFake.__call__(fake, settings, seed)

    result = sample_to_gate(
        sample, BASE, max_time=200.0, seed=5, check=fake.check, clock=fake.clock, pool=fake.pool
    )
    assert [c[0] for c in fake.calls] == [BASE, BASE]
    assert result.attempts[1].next.startswith("stopped: the next attempt (R-hat 1.012")
    # divergences ask for another geometry (a higher target_accept): never pooled, no repeat
    fake = PoolingFake([report(divergences=1)] * 2, pooled=report())
    result = drive(fake, pool=fake.pool, max_time=100.0)
    assert len(fake.calls) == 1 and "would take" in result.attempts[0].next
    # without pooling (pool=None) the overrunning retry stops the driver, as before
    fake = FakeSampler(reports)
    assert len(drive(fake, max_time=180.0).attempts) == 1


def test_pool_chains_keeps_the_fewer_draws_evenly_spaced():
    import numpy as np

    from bayesmix.inference.chains import pool_chains

    def tree(draws, offset):
        x = np.arange(2 * draws, dtype=float).reshape(2, draws) + offset
        post = xr.Dataset({"x": (("chain", "draw"), x)})
        stats = xr.Dataset({"logp": (("chain", "draw"), -x)})
        return xr.DataTree.from_dict({"posterior": post, "sample_stats": stats})

    short, long = tree(5, 0.0), tree(9, 100.0)
    both = pool_chains(short, long)
    x = both["posterior"]["x"]
    assert dict(x.sizes) == {"chain": 4, "draw": 5}
    assert list(x["chain"].values) == [0, 1, 2, 3] and list(x["draw"].values) == list(range(5))
    np.testing.assert_array_equal(x.values[:2], short["posterior"]["x"].values)
    # the longer sampling's draws 0, 2, 4, 6, 8 (first and last kept)
    np.testing.assert_array_equal(x.values[2:], long["posterior"]["x"].values[:, ::2])
    np.testing.assert_array_equal(both["sample_stats"]["logp"].values, -x.values)


def test_driver_stops_at_the_first_pass():
    fake = FakeSampler([report(min_ess_bulk=200.0), report(), report(min_ess_bulk=200.0)])
    lines: list[str] = []
    result = drive(fake, progress=lines.append)
    assert len(fake.calls) == 2
    assert result.tree == 1 and result.extra == "extra 1" and result.diagnostics.ok
    assert [a.used for a in result.attempts] == [False, True]
    # the second attempt used the policy's settings, and the records say why
    assert fake.calls[1][0] == replace(BASE, draws=2400, tune=1500)
    rec = result.records()
    assert rec[0]["next"].startswith("retry: ESS 200 < 400") and rec[1]["next"] == "gate passed"
    assert rec[1]["why"] == rec[0]["next"].removeprefix("retry: ")
    assert rec[0]["failed"] == ["min_ess_bulk 200.0"] and rec[1]["draws"] == 2400
    assert any("attempt 2" in line and "draws 1000 -> 2400" in line for line in lines)
    assert all(record_line(r).startswith(f"attempt {r['attempt']}") for r in rec)


def test_driver_respects_max_time_by_the_predicted_duration():
    # Attempt 1: 4 chains x 2000 draws x 0.01 s = 80 s. The policy (ESS 200: draws x2.4,
    # tune x1.5) asks for 4 x (2400 + 1500) = 15,600 draws: 156 s at the same rate.
    failing = [report(min_ess_bulk=200.0)] * MAX_ATTEMPTS
    fake = FakeSampler(failing)
    result = drive(fake, max_time=80 + 155.9)
    assert len(result.attempts) == 1
    assert "would take ~156 s" in result.attempts[0].next
    fake = FakeSampler(failing)
    result = drive(fake, max_time=80 + 156.1)
    assert len(result.attempts) == 2
    # a 0 budget: one attempt, whatever the gate says
    fake = FakeSampler(failing)
    assert len(drive(fake, max_time=0).attempts) == 1


def test_driver_stops_after_max_attempts_and_when_the_policy_gives_up():
    fake = FakeSampler([report(min_ess_bulk=200.0)] * 10)
    result = drive(fake)
    assert len(result.attempts) == MAX_ATTEMPTS
    assert "attempts made" in result.attempts[-1].next
    top = replace(BASE, target_accept=0.99)
    fake = FakeSampler([report(divergences=4)] * 10)
    result = drive(fake, first=top)
    assert len(result.attempts) == 1 and "nothing left" in result.attempts[0].next


def test_an_interrupted_attempt_is_the_last():
    # Ctrl-C during nutpie's sampling returns the draws so far: 400 of 1000 asked for
    fake = FakeSampler([report(min_ess_bulk=200.0, draws=400)] + [report()] * 3)
    result = drive(fake)
    assert len(fake.calls) == 1 and result.used.number == 1
    assert result.attempts[0].next == "stopped: sampling interrupted (400 of 1000 draws)"


def test_driver_keeps_the_best_attempt_when_none_pass():
    fake = FakeSampler(
        [
            report(max_rhat=1.05, min_ess_bulk=300.0),  # 2 failures
            report(max_rhat=1.03),  # 1 failure, R-hat 1.03
            report(max_rhat=1.02),  # 1 failure, lowest R-hat: the best
            report(divergences=1, max_rhat=1.015),  # 2 failures
        ]
        + [report(divergences=2, max_rhat=1.04)] * (MAX_ATTEMPTS - 4)  # 2 failures each
    )
    result = drive(fake)
    assert len(result.attempts) == MAX_ATTEMPTS
    assert result.tree == 2 and result.extra == "extra 2"
    assert result.used.number == 3 and result.diagnostics.max_rhat == 1.02
    assert [a.used for a in result.attempts] == [False, False, True] + [False] * (MAX_ATTEMPTS - 3)


def test_seeds_are_distinct_deterministic_and_none_stays_none():
    failing = [report(min_ess_bulk=200.0)] * MAX_ATTEMPTS
    fake = FakeSampler(failing)
    drive(fake, seed=5)
    seeds = [seed for _, seed in fake.calls]
    assert seeds[0] == 5 and len(set(seeds)) == MAX_ATTEMPTS
    again = FakeSampler(failing)
    drive(again, seed=5)
    assert [seed for _, seed in again.calls] == seeds
    other = FakeSampler(failing)
    drive(other, seed=6)
    assert set(seed for _, seed in other.calls[1:]).isdisjoint(seeds)
    fresh = FakeSampler(failing)
    drive(fresh, seed=None)
    assert [seed for _, seed in fresh.calls] == [None] * MAX_ATTEMPTS
    assert attempt_seed(5, 2) == seeds[1]


def test_bad_budgets_are_one_line_errors(monkeypatch):
    for bad in (-1, float("nan"), "10", True):
        with pytest.raises(errors.OptionError, match=r"max_time=.* is not a number of seconds"):
            check_max_time(bad)
    with pytest.raises(errors.BayesmixError, match="max_time"):
        sample_to_gate(FakeSampler([report()]), BASE, max_time=-5, seed=1)
    monkeypatch.setenv("BAYESMIX_MAX_TIME", "-3")
    with pytest.raises(errors.BayesmixError, match="BAYESMIX_MAX_TIME(=| must be)"):
        check_max_time(None)
    monkeypatch.setenv("BAYESMIX_MAX_TIME", "")
    assert check_max_time(None) == DEFAULT_MAX_TIME
    monkeypatch.setenv("BAYESMIX_MAX_TIME", "42")
    assert check_max_time(None) == 42.0 and check_max_time(0) == 0.0


def test_stage_fits_get_a_smaller_default_budget(monkeypatch):
    from bayesmix.inference.gate_retry import STAGE_MAX_TIME, stage_max_time

    monkeypatch.delenv("BAYESMIX_MAX_TIME", raising=False)
    assert stage_max_time(None) == STAGE_MAX_TIME < DEFAULT_MAX_TIME
    assert stage_max_time(900) == 900.0  # asked for explicitly
    monkeypatch.setenv("BAYESMIX_MAX_TIME", "0")  # the environment can only lower it
    assert stage_max_time(None) == 0.0
    monkeypatch.setenv("BAYESMIX_MAX_TIME", "5000")
    assert stage_max_time(None) == STAGE_MAX_TIME
    with pytest.raises(errors.BayesmixError, match="max_time"):
        stage_max_time(-1)


# ------------------------------------------------------------------------------ a real fit
@pytest.mark.slow
def test_a_failing_fit_retries_and_stores_its_attempts(simulated_fit, tmp_path, capsys):
    """The fixture's model structure (compiled once per session), 12 runs, 2 chains x 30
    draws after 100 tuning steps: bulk ESS cannot reach the gate's 200 from 60 draws (the
    estimator caps it at 60 x log10(60) = 107), so the first attempt must fail and retry."""
    from bayesmix.cli.fit import summary
    from bayesmix.inference.fitting import fit
    from bayesmix.posterior.posterior import Posterior

    runs, _ = simulate_runs(seed=41, n_runs=12)
    kw = {"draws": 30, "tune": 100, "chains": 2, "random_seed": FIT_KW["random_seed"]}
    post = fit(runs, warn=False, max_time=120, progressbar=True, **kw)
    attempts = post.settings["attempts"]
    assert len(attempts) >= 2
    assert any("ESS" in f for f in attempts[0]["failed"]) and attempts[0]["draws"] == 30
    assert attempts[1]["draws"] > 30 and attempts[1]["seed"] != attempts[0]["seed"]
    assert attempts[0]["next"].startswith("retry: ")
    assert "gate failed on attempt 1" in capsys.readouterr().err
    # the top-level settings describe the attempt used
    used = [a for a in attempts if a["used"]]
    assert len(used) == 1
    assert (post.settings["draws"], post.settings["tune"], post.settings["seed"]) == (
        used[0]["draws"],
        used[0]["tune"],
        used[0]["seed"],
    )
    assert post.diagnostics.draws == used[0]["draws"]
    assert post.settings["sample_s"] == pytest.approx(
        sum(a["sample_s"] for a in attempts), abs=0.01
    )
    loaded = Posterior.load(post.save(tmp_path / "retried.nc"))
    assert loaded.settings["attempts"] == attempts
    text = summary(loaded, runs.n_runs, tmp_path / "retried.nc")
    assert f"attempts:    {len(attempts)}" in text and "attempt 1: 30 draws" in text

    # max_time=0: exactly one attempt, as before the retries; the warning says so
    with pytest.warns(ConvergenceWarning, match=r"\(1 attempt, max_time 0 s\)"):
        one = fit(runs, max_time=0, **kw)
    assert len(one.settings["attempts"]) == 1
    assert one.settings["draws"] == 30 and one.settings["seed"] == kw["random_seed"]
    assert "attempts:" not in summary(one, runs.n_runs, tmp_path / "x.nc")


def test_bad_max_time_fails_before_sampling(simulated_fit, tmp_path, capsys):
    from bayesmix.cli import main
    from bayesmix.inference.fitting import fit

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing sampled, nothing warned
        with pytest.raises(
            errors.BayesmixError, match=r"max_time=-1 is not a number of seconds >= 0"
        ):
            fit(simulated_fit.runs, max_time=-1)
    runs = tmp_path / "runs.csv"
    simulated_fit.runs.to_tidy().to_csv(runs, index=False)
    for command in (["fit"], ["pipeline", "--n-params", "1B", "--steps", "1000"]):
        args = [*command, str(runs), "-o", str(tmp_path / "p.nc"), "--max-time", "-2"]
        assert main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--max-time -2.0 is not a number of seconds >= 0" in err[0]
    assert not (tmp_path / "p.nc").exists()


# ------------------------------------------------------------------------------ lost chains
def _tree(logp_means, n_draw=50, seed=0):
    """A sampler-like DataTree: 'x' ~ N(0, 1) per chain and a log density near each mean."""
    import numpy as np
    import xarray as xr

    rng = np.random.default_rng(seed)
    n = len(logp_means)
    post = xr.Dataset({"x": (("chain", "draw"), rng.normal(size=(n, n_draw)))})
    logp = np.asarray(logp_means, float)[:, None] + rng.normal(0, 10, (n, n_draw))
    stats = xr.Dataset({"logp": (("chain", "draw"), logp)})
    return xr.DataTree.from_dict({"posterior": post, "sample_stats": stats})


def test_a_chain_far_below_the_others_is_lost_and_dropped():
    import numpy as np

    from bayesmix.inference.chains import drop_chains, lost_chains

    tree = _tree([910, 912, 908, -1.8e6])
    logp = tree["sample_stats"]["logp"].values
    lost, note = lost_chains(logp)
    assert lost == [3] and "dropped chain(s) 3" in note and "-1.8e+06" in note
    kept = drop_chains(tree, lost)
    assert kept["posterior"].sizes["chain"] == 3
    assert list(kept["posterior"]["chain"].values) == [0, 1, 2]
    np.testing.assert_array_equal(kept["posterior"]["x"].values, tree["posterior"]["x"].values[:3])
    # chains of one posterior differ by far less than 20 spreads: nothing is lost
    assert lost_chains(_tree([910, 905, 915, 900])["sample_stats"]["logp"].values)[0] == []
    # two chains cannot tell which one is lost; never leave fewer than two
    assert lost_chains(_tree([910, -1e6])["sample_stats"]["logp"].values)[0] == []
    assert lost_chains(_tree([910, -1e6, -1e6])["sample_stats"]["logp"].values)[0] == []


def test_the_driver_drops_lost_chains_before_the_gate():
    seen = []

    def sample_once(settings, seed):
        return _tree([910, 912, -5e4, 908]), None

    def check(tree):
        seen.append(tree["posterior"].sizes["chain"])
        return report()

    result = sample_to_gate(sample_once, BASE, max_time=0, seed=1, check=check)
    assert seen == [3]
    (rec,) = result.records()
    assert rec["dropped_chains"].startswith("dropped chain(s) 2")


def test_divergences_of_a_centred_hierarchy_switch_it_to_noncentred():
    """Divergences in a centred hierarchy: the next attempt also takes the noncentred form
    (the same posterior); a law without the choice ("") or a noncentred fit keeps its form."""
    first = SamplerSettings(1000, 1000, 0.95, 4, "centered")
    raised, _ = next_settings(report(divergences=1), first)  # a smaller step first
    assert raised.parameterization == "centered" and raised.target_accept == 0.98
    centred = SamplerSettings(1000, 1000, 0.98, 4, "centered")  # still divergent at 0.98
    new, why = next_settings(report(divergences=1), centred)
    assert new.parameterization == "noncentered" and new.target_accept == 0.99
    assert "hierarchy centered -> noncentered" in why
    assert next_settings(report(divergences=1), BASE)[0].parameterization == ""
    assert next_settings(report(divergences=1), new) is None  # top of the ladder, noncentred
    # R-hat alone is not a funnel's sign: the form stays
    assert next_settings(report(max_rhat=1.05), centred)[0].parameterization == "centered"
    assert new.as_dict()["parameterization"] == "noncentered" and "parameterization" not in (
        BASE.as_dict()
    )


def test_an_attempt_in_the_other_form_is_sampled_on_a_model_built_in_it():
    import pymc as pm

    from bayesmix.inference.fitting import Sampling, with_form
    from bayesmix.model.spec import load_spec

    built = []

    def build(form):
        built.append(form)
        with pm.Model() as model:
            pm.Normal("x", 0.0, 1.0 if form == "centered" else 2.0)
        return model, None  # None: PyMC's sampler, no nutpie compile

    sampling = Sampling(build, "centered", "diag", False)
    tree, _ = sampling(SamplerSettings(5, 5, 0.8, 1, "noncentered"), 1)
    assert built == ["centered", "noncentered"] and sampling.form == "noncentered"
    sampling(SamplerSettings(5, 5, 0.8, 1, "noncentered"), 2)
    assert built == ["centered", "noncentered"]  # the same form is not rebuilt
    assert tree["posterior"]["x"].shape == (1, 5)
    spec = load_spec("default")
    assert with_form(spec, "noncentered").hierarchy["parameterization"] == "noncentered"
    assert with_form(spec, "") is spec and with_form(spec, "centered") is spec
