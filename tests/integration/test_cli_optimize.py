"""``bayesmix optimize`` end to end on a posterior from the real fit (tiny MCMC, fitted once)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from bayesmix.cli import main
from bayesmix.data.constraints import Constraints
from bayesmix.decisions.decision import decide
from bayesmix.decisions.draws import aggregate_loss

#: Every test here runs MCMC (or uses a fitted fixture): `make test-fast` skips them.
pytestmark = pytest.mark.slow

TRAIN = ["web", "code", "books"]


@pytest.fixture(scope="session")
def posterior_path(tmp_path_factory):
    """A saved posterior of the default model on 24 simulated runs over 3 domains.

    Few draws (2 chains x 100): this checks plumbing and feasibility, not statistics.
    """
    from bayesmix.inference.fitting import fit
    from bayesmix.model.simulation import simulate

    runs, _ = simulate(TRAIN, n_runs=24, random_seed=3, noise_sd=0.02)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tiny runs fail the diagnostics gate; that is expected
        post = fit(runs, draws=100, tune=100, chains=2, random_seed=3)
    return post.save(tmp_path_factory.mktemp("optimize") / "post.nc")


def run_cli(capsys, *argv):
    code = main(["optimize", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_optimize_writes_a_feasible_json_report(posterior_path, tmp_path, capsys):
    out_path = tmp_path / "report.json"
    code, out, err = run_cli(
        capsys,
        posterior_path,
        "--max-share",
        "code=0.3",
        "--min-share",
        "web=0.1",
        "--tokens-available",
        "books=15e9",
        "--max-epochs",
        "4",
        "--target-tokens",
        "1e11",
        "--objective",
        "quantile:0.9",
        "-o",
        out_path,
        "--draws-optima",
        "--quiet",
    )
    assert code == 0, err
    assert err == ""  # --quiet
    assert "Mixture (shares of training tokens)" in out and f"wrote {out_path}" in out
    rep = json.loads(out_path.read_text())
    c = Constraints.build(
        TRAIN,
        max_share={"code": 0.3},
        min_share={"web": 0.1},
        tokens_available={"books": 15e9},
        max_epochs=4,
        target_tokens=1e11,
    )
    shares = np.array([r["share"] for r in rep["recommendation"]])
    assert c.contains(shares, atol=1e-12)
    # books' cap (15e9 tokens x 4 epochs / 1e11 = 0.6) binds: this posterior wants more books
    assert shares[2] == pytest.approx(0.6, abs=1e-9)
    optima = np.array(rep["draw_optima"]["shares"])
    assert optima.shape == (200, 3) and c.contains(optima, atol=1e-12).all()
    assert rep["objective"] == "quantile:0.9"
    for row in rep["losses"]:  # a Posterior adds the predictive interval of one measured run
        assert row["pred_lower"] < row["mean"] < row["pred_upper"]
    assert rep["diagnostics_warning"]  # 2 x 100 draws do not pass the gate: it must say so
    assert out.splitlines()[1].startswith("WARNING: ")


def test_cli_matches_the_python_api(posterior_path, tmp_path, capsys):
    from bayesmix.posterior.posterior import Posterior

    weights = tmp_path / "w.json"
    weights.write_text(json.dumps({"Web": 2, "code": 1, "books": 1, "ArXiv": 5}))
    out_path = tmp_path / "r.csv"
    code, out, err = run_cli(
        capsys,
        posterior_path,
        "--weights",
        weights,
        "--weights-subset",
        "--baseline",
        "web=0.5,code=0.5",
        "--objective",
        "beat-baseline",
        "-o",
        out_path,
    )
    assert code == 0, err
    assert "[optimize] loading" in err  # progress lines go to stderr
    csv = pd.read_csv(out_path, keep_default_na=False)
    rec = csv.query("section == 'mixture' and mixture == 'recommended'")
    post = Posterior.load(posterior_path)
    api = decide(
        post,
        weights={"Web": 2, "code": 1, "books": 1, "ArXiv": 5},
        allow_subset=True,
        baseline={"web": 0.5, "code": 0.5},
        objective="beat-baseline",
    )
    np.testing.assert_allclose(rec["value"].astype(float), api.mixture.to_numpy(), atol=1e-12)
    # The reported probability is the share of draws where the recommendation wins (recomputed).
    params = post.law_params()
    w = np.array([0.5, 0.25, 0.25])
    lr, lb = aggregate_loss(params, np.vstack([api.mixture.to_numpy(), [0.5, 0.5, 0.0]]), w).T
    meta = csv[csv.section == "meta"].set_index("statistic")
    assert float(meta.loc["p_beats_baseline", "value"]) == pytest.approx(np.mean(lr < lb))


@pytest.mark.parametrize(
    "argv,message",
    [
        (
            ["--min-share", "code=0.7", "--max-share", "code=0.3"],
            "domain 'code': minimum share 0.7 exceeds maximum share 0.3",
        ),
        (["--fixed", "web=0.6,books=0.6"], "sum to 1.2"),
        (["--tokens-available", "code=1e9"], "token caps need a positive target_tokens"),
        (["--target", "Code"], "unknown validation domain 'Code' (did you mean 'code'?)"),
        (["--objective", "quantile:2"], "needs a level in (0, 1)"),
        (["--max-share", "cod=0.2"], "unknown training domain 'cod'"),
        (["--max-share", "code"], "is not NAME=VALUE"),
        (["--baseline", "web=0.5,code=0.2"], "sum to 0.7"),
        (["-o", "report.txt"], "cannot write a report as .txt"),
        (["--draws-optima"], "--draws-optima needs -o"),
        (["--weights-subset"], "--weights-subset needs --weights"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(posterior_path, capsys, argv, message):
    code, out, err = run_cli(capsys, posterior_path, "--quiet", *argv)
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bayesmix optimize: error: ")
    assert message in lines[0]


def test_mismatched_weights_file_and_missing_posterior(posterior_path, tmp_path, capsys):
    weights = tmp_path / "pile.json"
    weights.write_text(json.dumps({"web": 1, "Github": 1}))
    code, _, err = run_cli(capsys, posterior_path, "--weights", weights, "--quiet")
    assert code == 2 and "'Github' is not a validation domain of the posterior" in err
    assert "--weights-subset" in err
    code, _, err = run_cli(capsys, tmp_path / "nope.nc", "--quiet")
    assert code == 2 and "nope.nc: file not found" in err
