"""The joint law over model size, tokens and mixture (``scaling``): every checkpoint enters the
fit, run effects, recovery, prediction at a larger held-out scale, extrapolation limits, the
decision at a target scale, and the CLI (``fit --model scaling``, ``predict``/``optimize
--n-params --tokens``). One small fit per session (2 chains x 300 draws, compiled once)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from bayesmix import errors
from bayesmix.cli import main
from bayesmix.decisions.draws import LawDraws
from bayesmix.laws import get_law
from bayesmix.model.model import prepare_data, select_for_fit
from bayesmix.model.simulation import LawTruth, simulate_checkpoints

DOMAINS = ("a", "b", "c")
#: A tame truth in Chinchilla's orders of magnitude (n_ref 5e7 parameters, d_ref 5e9 tokens);
#: each domain's reducible loss shrinks at its own rate.
TRUTH = {
    "E": np.array([1.5, 2.0, 2.5]),
    "A": np.array([0.8, 0.6, 0.7]),
    "alpha": np.array([0.35, 0.3, 0.4]),
    "B": np.array([0.5, 0.4, 0.45]),
    "beta": np.array([0.37, 0.35, 0.3]),
    "t": np.array([[-1.0, 0.5, 0.5], [0.5, -1.0, 0.5], [0.3, 0.3, -0.6]]),
    "n_ref": np.array(5e7),
    "d_ref": np.array(5e9),
}
SIZES = (2e7, 5e7, 1e8)
STEPS = (2000, 4000, 8000, 16000)
TOKENS_PER_STEP = 2**20
NOISE, RUN_SD = 0.01, 0.01


def truth() -> LawTruth:
    return LawTruth(get_law("scaling"), "scaling", TRUTH, np.full(3, NOISE), DOMAINS, DOMAINS)


def proxy_runs(seed: int = 1, n_mix: int = 12):
    rng = np.random.default_rng(seed)
    mix = rng.dirichlet(np.ones(3), n_mix)
    return simulate_checkpoints(truth(), mix, SIZES, STEPS, random_seed=seed, run_sd=RUN_SD)


@pytest.fixture(scope="session")
def scaling_fit():
    from bayesmix.inference.fitting import fit

    runs = proxy_runs()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 2 x 300 draws do not pass the gate's ESS floor
        post = fit(runs, "scaling", draws=300, tune=300, chains=2, random_seed=1)
    return runs, post


@pytest.fixture(scope="session")
def scaling_path(scaling_fit, tmp_path_factory):
    return scaling_fit[1].save(tmp_path_factory.mktemp("scaling") / "scaling.nc")


# ------------------------------------------------------------------------- data, no MCMC
def test_a_law_over_tokens_takes_every_checkpoint_and_others_the_last():
    runs = proxy_runs()
    all_records = select_for_fit(runs, law="scaling")
    assert len(all_records) == len(runs) == 36 * 4
    assert len(select_for_fit(runs, law="scaling", max_step=4000)) == 36 * 2
    data = prepare_data(all_records, "scaling")
    assert data.multi_record and data.record_dim == "record"
    assert len(data.run_ids) == 36 and data.r.shape == (144, 3)
    assert data.runs[0].endswith("@2000")
    assert np.all(
        np.asarray(data.run_ids)[data.record_run] == [label.split("@")[0] for label in data.runs]
    )
    # a law without tokens: one record per run, and several sizes are refused
    with pytest.raises(errors.FormatError, match="several model sizes"):
        select_for_fit(runs, law="m4")
    one = select_for_fit(runs.select([r for r in runs.runs if r.startswith("20M")]), law="m4")
    assert len(one) == 12 and not prepare_data(one, "m4").multi_record


def test_simulated_checkpoints_follow_the_truth():
    """Noise-free (run_sd 0, tiny noise) checkpoints equal the law's value at that scale."""
    t = LawTruth(get_law("scaling"), "scaling", TRUTH, np.full(3, 1e-9), DOMAINS, DOMAINS)
    runs = simulate_checkpoints(t, np.array([[0.2, 0.3, 0.5]]), [1e8], [1000, 3000], random_seed=0)
    tidy = runs.to_tidy()
    expect = t.true_loss(
        np.array([[0.2, 0.3, 0.5]] * 2),
        n_params=1e8,
        tokens=np.array([1000, 3000]) * TOKENS_PER_STEP,
    )
    np.testing.assert_allclose(tidy[["loss.a", "loss.b", "loss.c"]].to_numpy(), expect, atol=1e-6)


def _draws(params: dict, s: int = 4) -> LawDraws:
    rep = {k: np.repeat(np.asarray(v, float)[None], s, axis=0) for k, v in params.items()}
    return LawDraws(rep, DOMAINS, DOMAINS, None, "test", get_law("scaling"))


def test_the_optimum_moves_with_scale_only_when_domains_scale_differently():
    """Same exponents and same A/B ratio in every domain: every reducible part shrinks by the
    same factor, so the best mixture stays put. Different exponents: it moves."""
    from bayesmix.data.constraints import Constraints
    from bayesmix.decisions.scale import scale_shift

    w = np.full(3, 1 / 3)
    c = Constraints.build(list(DOMAINS))
    small, big = {"n_params": 2e7, "tokens": 2e9}, {"n_params": 1e10, "tokens": 1e12}
    same = {**TRUTH, "alpha": np.full(3, 0.35), "beta": np.full(3, 0.35), "B": 0.6 * TRUTH["A"]}
    flat = scale_shift(_draws(same), c, w, target=big, proxy=small)
    assert flat.max_share_change < 1e-3 and not flat.changes and flat.p_moves == 0.0
    moving = {**TRUTH, "alpha": np.array([0.1, 0.6, 0.6]), "beta": np.array([0.1, 0.6, 0.6])}
    shift = scale_shift(_draws(moving), c, w, target=big, proxy=small)
    assert shift.changes and shift.p_moves == 1.0
    # at the target, the target's optimum is at least as good as the proxies' (same draws)
    assert shift.cost_mean >= 0 and shift.p_target_better == 1.0
    # domain a's reducible loss shrinks slowest: at scale the optimum gives it more share
    mix = shift.mixtures.set_index("train_domain")
    assert mix.loc["a", "target"] > mix.loc["a", "proxy"]


# ------------------------------------------------------------------------- the fit
@pytest.mark.slow
def test_joint_fit_recovers_the_truth(scaling_fit):
    """Tolerances: 2 x 300 draws on 144 checkpoints with noise 0.01 pin E, A, B within a few
    hundredths (posterior sds measured 0.02-0.03) and the exponents within 0.05 (sds about
    0.015); the mixture slopes within 0.15."""
    _, post = scaling_fit
    p = post.law_params()
    for name, tol in (("E", 0.1), ("A", 0.1), ("B", 0.1), ("alpha", 0.05), ("beta", 0.05)):
        np.testing.assert_allclose(p[name].mean(0), TRUTH[name], atol=tol, err_msg=name)
    np.testing.assert_allclose(p["t"].mean(0), TRUTH["t"], atol=0.15)
    assert p["n_ref"][0] == pytest.approx(np.exp(np.mean(np.log(SIZES))))
    # checkpoints of one run share an effect; the posterior knows every run
    post_ds = post.tree["posterior"]
    assert post_ds["run_effect"].dims[-2:] == ("run", "eval_domain")
    assert post_ds.sizes["run"] == 36
    assert 0.003 < float(post_ds["run_sigma"].mean()) < 0.03  # truth 0.01
    ll = post.tree["log_likelihood"]
    assert set(ll.data_vars) == {"run_loss"} and ll.sizes["run"] == 36


@pytest.mark.slow
def test_prediction_at_a_larger_held_out_scale_is_covered(scaling_fit):
    """30 unseen mixtures trained at 4e8 parameters (4x the largest proxy) for 32k steps (2x
    the longest): the 90% predictive intervals should cover about 90% of the 90 (run, domain)
    losses; at least 75% allows for binomial noise (sd 3%) and a small fit."""
    _, post = scaling_fit
    rng = np.random.default_rng(99)
    mix = rng.dirichlet(np.ones(3), 30)
    held = simulate_checkpoints(truth(), mix, [4e8], [32000], random_seed=5, run_sd=RUN_SD)
    with pytest.warns(errors.ExtrapolationWarning, match="4x above the largest fitted"):
        pred = post.predict(mix, n_params=4e8, tokens=32000 * TOKENS_PER_STEP)
    lo, hi = pred.predictive.quantile([0.05, 0.95], ("chain", "draw")).values
    obs = held.losses.to_numpy()
    coverage = ((lo <= obs) & (obs <= hi)).mean()
    assert coverage >= 0.75, coverage
    # and the intervals are informative: narrower than the spread of losses across mixtures
    assert np.median(hi - lo) < obs.std(axis=0).mean()


@pytest.mark.slow
def test_far_extrapolation_is_refused_with_numbers(scaling_fit):
    _, post = scaling_fit
    with pytest.raises(errors.ExtrapolationError, match=r"model size .*above the largest"):
        post.predict([[0.3, 0.3, 0.4]], n_params=1e11, tokens=1e10)
    assert post.check_scale(n_params=5e7, tokens=5e9) == []
    msgs = post.check_scale(n_params=1e9, tokens=1e10, max_extrapolation=float("inf"))
    assert len(msgs) == 1 and "10x above" in msgs[0]
    # the joint law is retired beyond the proxies: the message sends users to the pipeline
    assert "retired for targets beyond the proxies" in msgs[0] and "bayesmix pipeline" in msgs[0]
    with pytest.raises(errors.OptionError, match="needs tokens"):
        post.predict([[0.3, 0.3, 0.4]], n_params=1e8)


# ------------------------------------------------------------------------- CLI
@pytest.mark.slow
def test_cli_predict_and_optimize_at_a_target_scale(scaling_path, tmp_path, capsys):
    mixtures = tmp_path / "mix.csv"
    mixtures.write_text("mixture,a,b,c\nm1,0.2,0.3,0.5\nm2,0.6,0.2,0.2\n")
    out = tmp_path / "intervals.csv"
    code = main(
        [
            "predict",
            str(scaling_path),
            str(mixtures),
            "--n-params",
            "2e8",
            "--tokens",
            "3e10",
            "-o",
            str(out),
        ]
    )
    text, err = capsys.readouterr()
    assert code == 0, err
    assert "target scale: 2e+08 parameters, 3e+10 tokens" in text
    assert "2x above the largest fitted" in err  # n_params 2e8 vs 1e8 fitted
    import pandas as pd

    table = pd.read_csv(out)
    assert len(table) == 6 and (table["lower"] < table["upper"]).all()

    code = main(
        ["optimize", str(scaling_path), "--n-params", "1e8", "--tokens", "1.6e10", "--quiet"]
    )
    text, err = capsys.readouterr()
    assert code == 0, err
    assert "Recommended mixture at the proxies' scale" in text and "P(a draw's optimum" in text


@pytest.mark.slow
@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--n-params", "1e8"], "give --tokens"),
        ([], "give --n-params and --tokens"),
        (["--n-params", "1e12", "--tokens", "1e10"], "more than 10x outside"),
        (["--n-params", "-5", "--tokens", "1e10"], "must be a positive number"),
    ],
)
def test_cli_scale_errors_are_one_line(scaling_path, tmp_path, capsys, argv, fragment):
    mixtures = tmp_path / "mix.csv"
    mixtures.write_text("a,b,c\n0.2,0.3,0.5\n")
    code = main(["predict", str(scaling_path), str(mixtures), *argv])
    _, err = capsys.readouterr()
    assert code == 2
    assert fragment in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_cli_scale_options_on_a_law_without_scale(tmp_path, capsys, simulated_fit):
    path = simulated_fit.posterior.save(tmp_path / "m4.nc")
    mixtures = tmp_path / "mix.csv"
    mixtures.write_text("Github,Books3,Pile-CC,ArXiv\n0.25,0.25,0.25,0.25\n")
    code = main(["predict", str(path), str(mixtures), "--n-params", "1e9", "--tokens", "1e11"])
    _, err = capsys.readouterr()
    assert code == 2 and "law 'm4' has no n_params input" in err


@pytest.mark.slow
def test_cli_fit_takes_every_checkpoint_of_several_sizes(tmp_path, capsys, scaling_fit):
    """``fit --model scaling --size 20M,50M --max-step 8000`` (tiny MCMC) on 18 mixtures at the
    three sizes: the two sizes kept hold the session fit's 36 runs, so the fit reuses its
    compiled model (the number of runs sizes the run effects: another number would compile a
    second model)."""
    assert scaling_fit[1].tree["posterior"].sizes["run"] == 36
    runs = proxy_runs(n_mix=18)
    path = tmp_path / "runs.csv"
    runs.to_tidy().to_csv(path, index=False)
    out = tmp_path / "post.nc"
    code = main(
        [
            "fit",
            str(path),
            "-o",
            str(out),
            "--model",
            "scaling",
            "--size",
            "20M,50M",
            "--max-step",
            "8000",
            "--draws",
            "20",
            "--tune",
            "20",
            "--chains",
            "1",
            "--seed",
            "1",
            "--quiet",
        ]
    )
    text, _ = capsys.readouterr()
    assert code == 0
    assert "model size:  20M, 50M" in text
    assert "checkpoints: 108 records, steps 2000 to 8000" in text
    code = main(
        [
            "fit",
            str(path),
            "-o",
            str(tmp_path / "x.nc"),
            "--model",
            "scaling",
            "--step",
            "2000",
            "--max-step",
            "8000",
        ]
    )
    _, err = capsys.readouterr()
    assert code == 2 and "exclude each other" in err
