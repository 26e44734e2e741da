"""Learning-rate schedules: the areas S1/S2, the run-table columns, the annealing-aware step law."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import bayesmix as bm
from bayesmix import errors
from bayesmix.cli import main
from bayesmix.data.schedules import (
    MOMENTUM,
    Schedule,
    ScheduleError,
    declare,
    features,
    resolve_target,
)
from bayesmix.scaling.pipeline import fit_step_law, predict_curves


# ------------------------------------------------------------------------------ the areas
def test_constant_rate_gives_the_step_and_no_annealing():
    s1, s2 = Schedule().areas([10, 1000, 12345])
    np.testing.assert_array_equal(s1, [10, 1000, 12345])
    np.testing.assert_array_equal(s2, 0.0)


def test_cosine_rates_and_forward_area():
    sched = Schedule("cosine", total_steps=10_000, warmup_steps=1000)
    rates = sched.rates(np.array([500, 1000, 5500, 10_000]))
    # warm-up is linear to the peak; half-way through the decay cosine is at (1 + 0.1) / 2
    np.testing.assert_allclose(rates, [0.5, 1.0, 0.55, 0.1], atol=1e-3)
    s1, _ = sched.areas([10_000])
    # warm-up area 500, decay area 9000 x mean rate 0.55 (Riemann sum: within one step)
    assert s1[0] == pytest.approx(500 + 9000 * 0.55, abs=2.0)


def test_annealing_area_of_one_drop_is_a_geometric_sum():
    # wsd with a one-step decay: the rate falls from 1 to 0.5 at step 1000 and stays there,
    # so m_i = 0.5 lam^(i - 1000) and S2(1000 + n) = 0.5 (1 - lam^(n + 1)) / (1 - lam)
    sched = Schedule("wsd", total_steps=1000, decay_steps=1, min_lr_ratio=0.5)
    n = np.array([0, 10, 500, 3000])
    _, s2 = sched.areas(1000 + n)
    expected = 0.5 * (1 - MOMENTUM ** (n + 1)) / (1 - MOMENTUM)
    np.testing.assert_allclose(s2, expected, rtol=1e-9)
    _, before = sched.areas([999])
    assert before[0] == 0.0  # nothing anneals during the stable phase


def test_parse_and_its_errors():
    sched = Schedule.parse("cosine,warmup=200,min_lr=0", total_steps=3000)
    assert (sched.kind, sched.total_steps, sched.warmup_steps, sched.final_ratio) == (
        "cosine",
        3000.0,
        200.0,
        0.0,
    )
    assert Schedule.parse("wsd,total=100,decay=20").decay_steps == 20.0
    for bad, fragment in (
        ("sawtooth", "unknown learning-rate schedule"),
        ("cosine,warm=3", "cannot read"),
        ("cosine", "needs total_steps"),
        ("wsd,total=100", "needs decay_steps"),
        ("linear,total=100,warmup=100", "below total_steps"),
        ("cosine,total=100,min_lr=2", "min_lr_ratio"),
    ):
        with pytest.raises(ScheduleError, match=fragment):
            Schedule.parse(bad)


# ------------------------------------------------------------------------------ run tables
def _frame(**cols):
    base = {
        "run": ["a", "a", "b"],
        "n_params": [1e8, 1e8, 1e8],
        "step": [100.0, 200.0, 200.0],
        "mix.x": [1.0, 1.0, 1.0],
        "loss.x": [3.0, 2.9, 2.8],
    }
    return pd.DataFrame({**base, **cols})


def test_run_table_reads_schedule_columns_and_features_use_them():
    runs = bm.RunTable.from_frame(
        _frame(schedule=["Cosine", "cosine", ""], total_steps=[200.0, 200.0, None])
    )
    tidy = runs.to_tidy()
    assert list(tidy["schedule"].fillna("-")) == ["cosine", "cosine", "-"]
    # round trip through the documented layout
    again = bm.RunTable.from_frame(tidy)
    pd.testing.assert_frame_equal(again.to_tidy(), tidy)
    s1, s2, notes = features(tidy)
    expect1, expect2 = Schedule("cosine", total_steps=200).areas([100, 200])
    np.testing.assert_allclose(s1[:2], expect1)
    np.testing.assert_allclose(s2[:2], expect2)
    assert s1[2] == 200.0 and s2[2] == 0.0  # run b: unknown, a constant rate
    assert any("1 run(s) without a schedule (b)" in n for n in notes)


@pytest.mark.parametrize(
    ("cols", "error", "fragment"),
    [
        ({"schedule": ["cosine", "cosine", "warp"]}, errors.FormatError, "row 4, run 'b'"),
        (
            {"schedule": ["cosine"] * 3, "total_steps": [200, "lots", 200]},
            errors.NonNumericError,
            "column 'total_steps'",
        ),
        ({"total_steps": [200, 200, 200]}, errors.FormatError, "without a 'schedule' column"),
        (
            {"schedule": ["cosine", "linear", "cosine"], "total_steps": [200] * 3},
            errors.InconsistentMixtureError,
            "schedule differs between checkpoints",
        ),
        ({"schedule": ["cosine"] * 3}, errors.FormatError, "needs total_steps"),
    ],
)
def test_bad_schedule_columns_are_named(cols, error, fragment):
    with pytest.raises(error, match=fragment):
        bm.RunTable.from_frame(_frame(**cols), source="runs.csv")


def test_declare_fills_unknown_runs_and_ends_each_at_its_last_checkpoint():
    tidy = _frame(schedule=["linear", "linear", None], total_steps=[400.0, 400.0, np.nan])
    out = declare(tidy, "cosine,warmup=10")
    assert list(out["schedule"]) == ["linear", "linear", "cosine"]
    assert list(out["total_steps"]) == [400.0, 400.0, 200.0]  # b's last checkpoint
    assert bm.RunTable.from_frame(out).n_runs == 2  # what declare writes validates
    with pytest.raises(ScheduleError, match="unknown"):
        declare(tidy, "triangle")


def test_target_schedule_is_given_assumed_or_constant_and_says_so():
    with_sched = bm.RunTable.from_frame(
        _frame(schedule=["cosine"] * 3, total_steps=[200.0] * 3, warmup_steps=[20.0] * 3)
    ).to_tidy()
    sched, notes = resolve_target(None, with_sched, 5000.0, learned=True)
    assert sched == Schedule("cosine", total_steps=5000.0, warmup_steps=20.0)
    assert notes and "target schedule assumed" in notes[0]
    sched, notes = resolve_target("linear,warmup=5", with_sched, 800.0, learned=True)
    assert (sched.kind, sched.total_steps, notes) == ("linear", 800.0, [])
    plain = bm.RunTable.from_frame(_frame()).to_tidy()
    assert resolve_target(None, plain, 800.0, learned=False) == (None, [])
    _, notes = resolve_target("cosine", plain, 800.0, learned=False)
    assert "cannot be learned" in notes[0]
    with pytest.raises(TypeError, match="target_schedule"):
        resolve_target(3.0, plain, 800.0, learned=False)


def test_cli_refuses_a_bad_schedule_in_one_line(tmp_path, capsys):
    runs = tmp_path / "runs.csv"
    _frame(n_params=[1e8, 1e8, 2e8]).to_csv(runs, index=False)
    code = main(["backtest", str(runs), "--schedule", "cosine,warm=2"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--schedule" in err and "cannot read" in err and "\n" not in err
    out = tmp_path / "t.nc"
    code = main(
        [
            "pipeline",
            str(runs),
            "--n-params",
            "1B",
            "--steps",
            "1000",
            "-o",
            str(out),
            "--target-schedule",
            "spiral",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--target-schedule" in err and not out.exists()


# ------------------------------------------------------------------ the annealing-aware law
E = {"a": 2.0, "b": 2.6}
A = {1e8: 60.0, 2e8: 50.0}
C = {"a": 1.2e-4, "b": 1.6e-4}  # about 0.1 nats gained by the end of the proxies' cosine
PROXY = Schedule("cosine", total_steps=20_000, warmup_steps=500)
TARGET = PROXY.ending_at(40_000)


def _law(s1, s2, size, dom):
    """Tissue et al.'s form: E + A S1^-0.5 - C S2 (nats per token)."""
    return E[dom] + A[size] * s1**-0.5 - C[dom] * s2


@pytest.fixture(scope="module")
def cosine_runs():
    """6 runs at each of 2 sizes, checkpoints every 2k steps of a 20k-step cosine schedule,
    a run offset (sd 0.01) and checkpoint noise (sd 0.005) per domain."""
    rng = np.random.default_rng(0)
    steps = np.arange(2000, 20_001, 2000, dtype=float)
    s1, s2 = PROXY.areas(steps)
    rows = []
    for size in A:
        for i in range(6):
            off = rng.normal(0, 0.01, 2)
            for k, st in enumerate(steps):
                rows.append(
                    {
                        "run": f"{int(size / 1e6)}M_{i}",
                        "n_params": size,
                        "step": st,
                        "schedule": "cosine",
                        "total_steps": 20_000.0,
                        "warmup_steps": 500.0,
                        "mix.x": 1.0,
                        **{
                            f"loss.{d}": _law(s1[k], s2[k], size, d) + off[j] + rng.normal(0, 0.005)
                            for j, d in enumerate(E)
                        },
                    }
                )
    return bm.RunTable.from_frame(pd.DataFrame(rows), source="simulated cosine runs")


@pytest.mark.slow
def test_annealing_aware_step_law_predicts_a_longer_cosine_run(cosine_runs):
    fit = fit_step_law(cosine_runs, draws=300, tune=400, random_seed=1, warn=False)
    assert fit.data.annealed and "C" in fit.posterior
    pred = predict_curves(
        fit, 40_000, np.arange(fit.n_samples), np.random.default_rng(1), schedule=TARGET
    )
    t1, t2 = TARGET.areas([40_000])
    for size in A:
        runs = [r for r in pred["run"].values if r.startswith(f"{int(size / 1e6)}M")]
        for d in E:
            truth = _law(t1[0], t2[0], size, d)
            mean = float(pred.sel(run=runs, eval_domain=d).mean())
            # the mean over 6 runs has sd ~0.004 from the run offsets; 0.015 is ~3.5 sd. The
            # plain power law in steps misses these targets by 0.018-0.050 (measured)
            assert abs(mean - truth) < 0.015, (size, d, mean, truth)
