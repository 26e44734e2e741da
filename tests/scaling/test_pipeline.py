"""The nested pipeline (bayesmix.scaling.pipeline, ``bayesmix pipeline``) on simulated runs whose
size and step scaling are known: it must predict a larger, longer run of unseen mixtures with
calibrated intervals, give one ordinary posterior whose predictions carry stages 1-2's
uncertainty, and refuse bad input in one line.

One nested fit (session fixture) serves the library tests; the CLI test refits the same runs
from a CSV, so every model structure compiles once (stage 1, stage 2, the M4 law).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import NESTED_DOMAINS, NESTED_SIZES, NESTED_STEPS, nested_runs

from bayesmix.cli import main
from bayesmix.posterior.posterior import Posterior

DOMAINS, SIZES, STEPS = list(NESTED_DOMAINS), list(NESTED_SIZES), list(NESTED_STEPS)
#: Held out on both axes: 3.2 x the largest proxy size, 2 x the longest proxy step.
TARGET_N, TARGET_S = 4e8, 16000
#: Small MCMC, one compile per structure; J = 4 imputations, 2 chains.
KW = {"imputations": 4, "draws": 250, "tune": 300, "chains": 2, "random_seed": 3}


@pytest.fixture(scope="session")
def sim():
    """14 mixtures x 3 sizes x 4 steps from a known M4 law with power laws in N and D."""
    return nested_runs()


@pytest.fixture(scope="session")
def nested(sim):
    from bayesmix.scaling.pipeline import nested_fit

    runs, _ = sim
    # max_time=0 given explicitly while the environment's default says 600 s: every stage fit
    # must get the argument (one attempt each), which test_pooled_posterior checks
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BAYESMIX_MAX_TIME", "600")
        return nested_fit(
            runs, target_n_params=TARGET_N, target_steps=TARGET_S, warn=False, max_time=0, **KW
        )


@pytest.mark.slow
def test_intervals_cover_held_out_mixtures_at_the_target_scale(sim, nested):
    runs, truth = sim
    rng = np.random.default_rng(11)
    new = rng.dirichlet(np.ones(len(DOMAINS)), 30)
    mean = truth.true_loss(new, n_params=TARGET_N, step=TARGET_S)  # (30, 3)
    observed = mean + rng.normal(0.0, truth["sigma"], mean.shape)  # a run's noise
    iv = nested.intervals(new, 0.9)
    lo = iv["lower"].to_numpy().reshape(mean.shape)
    hi = iv["upper"].to_numpy().reshape(mean.shape)
    coverage = float(((observed >= lo) & (observed <= hi)).mean())
    # 90 observed (mixture, domain) losses, but far from 90 independent chances: an error in an
    # exponent shifts a whole domain at once, so coverage moves in steps of up to 1/3. The
    # predictive is conservative by design (measured with seeds 3, 4, 5: coverage 0.99-1.0,
    # mean width 0.15-0.22 nats, against 0.05 for the same law fitted to the true target-scale
    # runs): each mixture's imputation error (sd 0.03-0.045 here) enters stage 3's noise
    # scale. So the band is one-sided: at least 0.8 (overconfident intervals that miss one
    # domain's shift lose up to a third) and intervals that still say something (width < 0.25
    # nats, predicted means within 0.05 nats where the losses move 0.4 nats from the largest,
    # longest proxy to the target).
    assert coverage >= 0.8, coverage
    assert float((hi - lo).mean()) < 0.25
    pred = iv["mean"].to_numpy().reshape(mean.shape)
    assert float(np.abs(pred - mean).mean()) < 0.05
    proxy_final = truth.true_loss(new, n_params=SIZES[-1], step=STEPS[-1])
    assert float(np.abs(proxy_final - mean).mean()) > 0.3  # the target really is extrapolated


@pytest.mark.slow
def test_target_posterior_is_one_ordinary_posterior(nested, tmp_path):
    post = nested
    assert post.tree["posterior"].sizes["chain"] == KW["chains"]
    assert post.diagnostics.chains == KW["chains"]
    rec = json.loads(post.tree.attrs["bayesmix_pipeline"])
    assert rec["target"]["n_params"] == TARGET_N and rec["target"]["steps"] == TARGET_S
    assert rec["target"]["tokens"] == TARGET_S * 1_048_576
    assert rec["imputations"] == 4 and len(rec["stage2"]) == 4
    assert {"diagnostics", "compile_s", "sample_s", "settings"} <= set(rec["stage1"])
    # every stage fit's report holds its attempts, within nested_fit's max_time (0: one each)
    for stage in [rec["stage1"], *rec["stage2"], rec["stage3"]]:
        assert stage["settings"]["max_time"] == 0
        (attempt,) = stage["settings"]["attempts"]
        assert attempt["used"] and attempt["draws"] == KW["draws"]
        assert attempt["failed"] == stage["diagnostics"]["failed"]
    assert rec["stage3"]["diagnostics"]["failed"] == post.diagnostics.failed
    assert post.settings["imputations"] == 4 and post.settings["target_steps"] == TARGET_S
    # J different imputations; stage 3 fitted the first one moved to their mean level, and
    # the shifts (each imputation's level minus their mean) sum to 0 over imputations
    imputed = post.tree["imputed_data"]["loss"]
    assert imputed.sizes["imputation"] == 4
    assert float(imputed.std("imputation").mean()) > 0
    level = imputed.mean("run")
    shift = post.imputation_shift  # (J, K)
    np.testing.assert_allclose(shift, (level - level.mean("imputation")).values, atol=1e-12)
    np.testing.assert_allclose(shift.sum(axis=0), 0.0, atol=1e-12)
    expected = imputed.isel(imputation=0) - shift[0]
    np.testing.assert_allclose(post.fit_data().losses.to_numpy(), expected.values, rtol=1e-12)


def test_predictions_add_one_shift_per_draw(nested):
    """Posterior draw j's predictions move by shift j mod J for every mixture alike: absolute
    intervals widen by the stages 1-2 spread, differences between mixtures do not move."""
    new = [[0.2, 0.3, 0.5], [0.6, 0.2, 0.2]]
    shift = nested.imputation_shift
    plain = Posterior(nested.tree.copy())
    del plain.tree["imputation_shift"]
    assert plain.imputation_shift is None
    a, b = nested.predict(new), plain.predict(new)
    chains, draws = a.mean.sizes["chain"], a.mean.sizes["draw"]
    idx = np.arange(chains * draws) % len(shift)
    moved = shift[idx].reshape(chains, draws, 1, -1)
    np.testing.assert_allclose(a.mean.values, b.mean.values + moved, atol=1e-12)
    np.testing.assert_allclose(a.predictive.values, b.predictive.values + moved, atol=1e-12)
    diff = a.mean.isel(mixture=0) - a.mean.isel(mixture=1)
    np.testing.assert_allclose(diff, b.mean.isel(mixture=0) - b.mean.isel(mixture=1), atol=1e-12)


def test_decisions_carry_the_shifts_in_losses_not_in_the_improvement(nested):
    """decide on a pipeline posterior (no learned extrapolation error): the expected-loss
    intervals carry the imputation shifts, the paired improvement does not (both mixtures of
    a draw share its shift), and accuracy changes read from the report use them too."""
    from bayesmix.decisions.accuracy_link import AccuracyLink
    from bayesmix.decisions.decision import decide
    from bayesmix.decisions.task_groups import accuracy_changes

    plain = Posterior(nested.tree.copy())
    del plain.tree["imputation_shift"]
    assert nested.extrapolation is None
    a, b = (
        decide(nested, random_seed=0, per_draw=False),
        decide(plain, random_seed=0, per_draw=False),
    )
    pd.testing.assert_frame_equal(a.recommendation, b.recommendation)
    key = ["mixture", "eval_domain"]
    la, lb = a.losses.set_index(key), b.losses.set_index(key)
    # the shifts are zero-mean over imputations and the draws take them in turn: means agree
    np.testing.assert_allclose(la["mean"], lb["mean"], atol=0.02)
    assert not np.allclose(la["lower"], lb["lower"])  # the shifts widen absolute intervals
    ca, cb = a.comparison.set_index("eval_domain"), b.comparison.set_index("eval_domain")
    np.testing.assert_allclose(ca["improvement_lower"], cb["improvement_lower"], atol=1e-12)
    link = AccuracyLink(floor=0.25, ceiling=0.9, midpoint=2.0, width=0.05)
    shares = a.recommendation.set_index("train_domain")
    by_report = accuracy_changes(nested, a, {"Books3": link}).iloc[0]
    by_hand = accuracy_changes(
        nested, shares["share"], {"Books3": link}, baseline=shares["baseline"]
    ).iloc[0]
    assert by_report["accuracy"] == pytest.approx(by_hand["accuracy"], rel=1e-12)


def test_accuracy_changes_read_the_shifted_losses(nested):
    """Accuracy is not linear in the loss: a pipeline posterior's accuracies come from its
    shifted losses, draw by draw, as its predictions."""
    from bayesmix.decisions.accuracy_link import AccuracyLink
    from bayesmix.decisions.task_groups import accuracy_changes

    link = AccuracyLink(floor=0.25, ceiling=0.9, midpoint=2.0, width=0.05)
    mix = {"Github": 0.2, "Books3": 0.3, "Pile-CC": 0.5}
    plain = Posterior(nested.tree.copy())
    del plain.tree["imputation_shift"]
    a = accuracy_changes(nested, mix, {"Books3": link}).iloc[0]
    b = accuracy_changes(plain, mix, {"Books3": link}).iloc[0]
    k = list(nested.eval_domains).index("Books3")
    loss = nested.predict([list(mix.values())]).mean.isel(mixture=0, eval_domain=k)
    np.testing.assert_allclose(a["accuracy"], float(link(loss.values).mean()), rtol=1e-10)
    assert not np.isclose(a["accuracy"], b["accuracy"], rtol=1e-6)


def test_target_posterior_saves_and_loads(nested, tmp_path):
    post = nested
    # saved and reloaded, it predicts exactly the same
    path = post.save(tmp_path / "target.nc")
    back = Posterior.load(path)
    np.testing.assert_allclose(
        back.intervals([[0.2, 0.3, 0.5]])["mean"], post.intervals([[0.2, 0.3, 0.5]])["mean"]
    )
    assert back.tree.attrs["bayesmix_pipeline"] == post.tree.attrs["bayesmix_pipeline"]
    np.testing.assert_array_equal(back.imputation_shift, post.imputation_shift)


@pytest.mark.slow
def test_cli_end_to_end(sim, tmp_path, capsys):
    runs, _ = sim
    src = tmp_path / "runs.csv"
    runs.to_tidy().to_csv(src, index=False)
    out = tmp_path / "target.nc"
    code = main(
        [
            "pipeline",
            str(src),
            "--n-params",
            "400M",
            "--steps",
            str(TARGET_S),
            "-o",
            str(out),
            "--imputations",
            "2",
            "--draws",
            "150",
            "--tune",
            "300",
            "--chains",
            "2",
            "--seed",
            "4",
            "--quiet",
        ]
    )
    text = capsys.readouterr().out
    assert code == 0
    assert "stage 1 (step law):" in text and "stage 2 (size law):" in text
    assert "stage 3 (mixing law):" in text and "imputation 2:" in text
    post = Posterior.load(out)
    assert post.tree["posterior"].sizes["chain"] == 2 and post.imputation_shift.shape == (2, 3)
    assert json.loads(post.tree.attrs["bayesmix_pipeline"])["target"]["n_params"] == 4e8
    # the backtest ran by default (4 steps allow no steps split, 3 sizes a size split) and
    # its learned extrapolation error is stored for the target's distance
    assert "backtests (nested): 90% intervals covered" in text
    assert "no steps backtest" in text
    cal = post.extrapolation
    assert cal is not None and cal.n_splits == 1
    np.testing.assert_allclose(
        cal.target_axes, [np.log(TARGET_N / SIZES[-1]), np.log(TARGET_S / STEPS[-1])]
    )
    assert "(size 1.16, tokens 0.69)" in text  # log(4e8 / 1.25e8), log(16000 / 8000)
    assert "of the predictive variance" in text
    plain = Posterior.load(out).with_extrapolation(None)
    mix = [[0.2, 0.3, 0.5]]
    assert not np.allclose(post.intervals(mix)["upper"], plain.intervals(mix)["upper"])
    # decisions drawn from it carry the verdict and the learned error in their notes
    from bayesmix.decisions.decision import decide

    notes = decide(post, random_seed=0, per_draw=False).notes
    assert any(n.startswith("backtests (nested)") for n in notes)
    assert any("extrapolation error learned from 1 backtest split" in n for n in notes)
    # the HTML report has the backtest section and its figure
    from bayesmix.reporting.html_report import build_html, figure_names

    page = build_html(post)
    assert "Backtests: extrapolation within the proxies" in page
    assert "backtest" in figure_names(page)
    assert "(size 1.16, tokens 0.69)" in page  # the target's two distances
    # one size split: the token axis keeps its prior, and the description says so
    assert cal.learned_axes == ["size"] and "prior only" in cal.describe()


@pytest.mark.slow
def test_cli_bad_target_step_is_one_line(sim, tmp_path, capsys):
    runs, _ = sim
    src = tmp_path / "runs.csv"
    runs.to_tidy().to_csv(src, index=False)
    out = tmp_path / "target.nc"
    code = main(["pipeline", str(src), "--n-params", "400M", "--steps", "500", "-o", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "below the fitted checkpoints" in err
    assert not out.exists()


@pytest.mark.slow
def test_cli_never_overwrites_an_input(sim, tmp_path, capsys):
    runs, _ = sim
    src = tmp_path / "runs.csv"
    runs.to_tidy().to_csv(src, index=False)
    before = src.read_bytes()
    code = main(["pipeline", str(src), "--n-params", "400M", "--steps", "16000", "-o", str(src)])
    assert code == 2 and "would overwrite input" in capsys.readouterr().err
    assert src.read_bytes() == before


@pytest.mark.slow
def test_one_model_size_is_refused(sim):
    from bayesmix.scaling.pipeline import PipelineError, nested_fit

    runs, _ = sim
    one = runs.select([r for r in runs.runs if r.startswith("20M")])
    with pytest.raises(PipelineError, match="at least 2"):
        nested_fit(one, target_n_params=TARGET_N, target_steps=TARGET_S)


def test_mixture_at_one_size_is_dropped_with_a_note(sim):
    from bayesmix.scaling.design import mixture_design, proxy_records

    runs, _ = sim
    keep = [r for r in runs.runs if not (r.endswith("_13") and not r.startswith("20M"))]
    design = mixture_design(proxy_records(runs.select(keep), None)[0])
    assert design.dropped == ("13",)
    assert "13" not in design.mixtures.index and len(design.mixtures) == 13


def test_no_checkpoint_below_max_step_names_the_parameter(sim):
    """A library error names the Python parameter (``max_step=``), which the CLI replaces by
    its flag; a non-positive max_step is refused the same way."""
    from bayesmix.scaling.design import PipelineError, proxy_records

    runs, _ = sim
    for bad, fragment in ((10.0, "steps <= max_step=10"), (-1.0, "max_step=-1 is not positive")):
        with pytest.raises(PipelineError, match=fragment) as err:
            proxy_records(runs, bad)
        assert err.value.param == "max_step" and "--" not in str(err.value)


def test_a_target_that_is_not_a_positive_finite_number_is_one_line(tmp_path, capsys):
    from bayesmix.cli import main
    from bayesmix.scaling.design import PipelineError, check_target

    with pytest.raises(PipelineError, match=r"target_steps=inf is not a positive finite number"):
        check_target("target_steps", float("inf"))
    runs = tmp_path / "runs.csv"
    runs.write_text("run,mix.web,mix.code,loss.web\nr1,0.5,0.5,2.0\n")
    args = ["pipeline", str(runs), "-o", str(tmp_path / "t.nc"), "--n-params", "1B"]
    assert main([*args, "--steps", "inf"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["bayesmix pipeline: error: --steps must be a positive finite number, got inf"]
    assert main([*args[:-1], "1.5Q", "--steps", "1000"]) == 2
    assert "--n-params '1.5Q' is not a model size" in capsys.readouterr().err
