"""The HTML report (bayesmix.reporting.html_report, ``bayesmix report``): every section and figure
from a posterior, a decision and a ledger; figures embedded (no network); output-path checks; sizes
that
stay readable at 17 x 13 and 64 training domains. The browser check is test_report_browser.py."""

from __future__ import annotations

import base64
import re
import warnings

import numpy as np
import pytest
import xarray as xr
from conftest import SIM_DOMAINS

from bayesmix.cli import main

pytestmark = pytest.mark.slow  # uses the suite's fitted posterior

ALL_FIGURES = {
    "trace-rank",
    "ppc",
    "slopes",
    "simplex-lines",
    "ternary",
    "optimum-spread",
    "ledger-progress",
}


def _pngs(text: str) -> dict[str, bytes]:
    found = re.findall(
        r'data-figure="([^"]+)"><img alt="[^"]*" '
        r'src="data:image/png;base64,([^"]+)"',
        text,
    )
    return {name: base64.b64decode(data) for name, data in found}


@pytest.fixture(scope="session")
def report_inputs(simulated_fit, saved_posterior, tmp_path_factory):
    """A saved decision (with per-draw optima) and a ledger with one proposal round from the
    fixture's runs (one small refit, same structure: no new compilation)."""
    from bayesmix.data.constraints import Constraints
    from bayesmix.decisions.decision import decide
    from bayesmix.loop.experiment import Experiment
    from bayesmix.posterior.diagnostics import ConvergenceWarning

    d = tmp_path_factory.mktemp("report")
    cons = Constraints.build(list(SIM_DOMAINS), max_share={"Github": 0.5})
    decision = decide(simulated_fit.posterior, constraints=cons)
    decision.save(d / "decision.json", include_draw_optima=True)
    exp = Experiment.create(
        d / "exp.db",
        runs=simulated_fit.runs,
        constraints=cons,
        draws=100,
        tune=150,
        chains=2,
        random_seed=3,
    )
    with warnings.catch_warnings():  # 2 x 100 draws do not pass the gate; not tested here
        warnings.simplefilter("ignore", ConvergenceWarning)
        exp.propose(4, strategy="thompson")
    return {
        "posterior": saved_posterior,
        "decision": d / "decision.json",
        "ledger": d / "exp.db",
        "report": decision,
    }


@pytest.fixture(scope="session")
def full_report(report_inputs, tmp_path_factory):
    """The demo-like report (posterior + decision + ledger) written by the command."""
    out = tmp_path_factory.mktemp("full") / "report.html"
    code = main(
        [
            "report",
            str(report_inputs["posterior"]),
            "--decision",
            str(report_inputs["decision"]),
            "--ledger",
            str(report_inputs["ledger"]),
            "-o",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0
    return out


def test_report_has_every_section_and_figure(full_report):
    text = full_report.read_text()
    pngs = _pngs(text)
    assert set(pngs) == ALL_FIGURES
    for name, data in pngs.items():
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 2000, name
    for section in ("fit", "ppc", "slopes", "simplex", "decision", "ledger"):
        assert f'<section id="{section}">' in text
    # self-contained: no external resources (scripts, styles, images, fonts)
    assert not re.search(r'(src|href)="(https?:)?//', text)
    assert "@import" not in text and "<script" not in text
    assert "Decision report" in text and "P(recommended beats baseline" in text
    # the suite's 2 x 300-draw fit fails its gate: the page says so once, styled, without the
    # terminal's banner of '!'
    assert 'class="warn"' in text and "!!!!" not in text
    assert "grey: the shares the fitted runs covered" in text


def test_ledger_section_shows_each_round(full_report):
    text = full_report.read_text()
    section = text.split('<section id="ledger">')[1].split("</section>")[0]
    # round 0: the imported runs (no posterior); round 1: proposals from a fitted posterior
    assert "exp.posterior-round1.nc" in section
    rows = re.findall(r"<tr><td>(\d+)</td>", section)
    assert rows == ["0", "1"]


def test_api_wrappers_return_the_same_page(simulated_fit, report_inputs, tmp_path):
    from bayesmix.reporting.html_report import figure_names

    post = simulated_fit.posterior
    text = post.report()
    assert set(figure_names(text)) == ALL_FIGURES - {"optimum-spread", "ledger-progress"}
    path = report_inputs["report"].to_html(post, tmp_path / "d.html", ternary="Github,ArXiv,Books3")
    assert set(figure_names(path.read_text())) == ALL_FIGURES - {"ledger-progress"}
    assert "mixtures of Github, ArXiv, Books3" in path.read_text()


def test_output_checks(report_inputs, tmp_path, capsys):
    post = str(report_inputs["posterior"])
    out = tmp_path / "r.html"
    assert main(["report", post, "-o", str(out), "--quiet"]) == 0
    first = out.read_bytes()
    capsys.readouterr()
    # an existing file: refused without --force, untouched
    assert main(["report", post, "-o", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "already exists" in err
    assert out.read_bytes() == first
    assert main(["report", post, "-o", str(out), "--quiet", "--force"]) == 0
    # an input is never overwritten, even with --force
    dec = str(report_inputs["decision"])
    assert main(["report", post, "--decision", dec, "-o", dec, "--force", "--quiet"]) == 2
    assert "json" in capsys.readouterr().err  # wrong suffix named
    html_input = tmp_path / "in.html"
    html_input.write_text("{}")
    assert (
        main(
            [
                "report",
                post,
                "--decision",
                str(html_input),
                "-o",
                str(html_input),
                "--force",
                "--quiet",
            ]
        )
        == 2
    )
    assert "overwrite input" in capsys.readouterr().err
    assert html_input.read_text() == "{}"
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--ternary", "Github,Books3"],
            "--ternary 'Github,Books3' does not name three different training domains",
        ),
        (["--ternary", "Github,Books3,Wiki"], "Wiki"),
        (["--decision", "DECISION", "--max-share", "Github=0.5"], "give one or the other"),
        (["--decision", "POSTERIOR"], "not JSON"),
        (["--ledger", "missing.db"], "not found"),
        (["--prob", "1.5"], "prob"),
    ],
)
def test_bad_options_give_one_line(report_inputs, tmp_path, capsys, argv, message):
    argv = [
        str(report_inputs["decision"])
        if a == "DECISION"
        else str(report_inputs["posterior"])
        if a == "POSTERIOR"
        else str(tmp_path / a)
        if a.endswith(".db")
        else a
        for a in argv
    ]
    code = main(
        [
            "report",
            str(report_inputs["posterior"]),
            "-o",
            str(tmp_path / "x.html"),
            "--quiet",
            *argv,
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "x.html").exists()


def test_decision_computed_by_the_command(report_inputs, tmp_path):
    from bayesmix.reporting.html_report import figure_names

    out = tmp_path / "r.html"
    assert (
        main(
            [
                "report",
                str(report_inputs["posterior"]),
                "-o",
                str(out),
                "--quiet",
                "--max-share",
                "Github=0.3",
                "--target",
                "ArXiv",
            ]
        )
        == 0
    )
    text = out.read_text()
    assert "optimum-spread" in figure_names(text) and "target domain ArXiv" in text


# ------------------------------------------------------------------------------ large sizes
def _fake_posterior(n_train: int, n_eval: int, seed: int = 0):
    """A posterior of the default model around a simulated law's true parameters (no MCMC):
    enough to draw the report at realistic domain counts."""
    from bayesmix.model.simulation import simulate
    from bayesmix.model.spec import load_spec
    from bayesmix.posterior.diagnostics import diagnose
    from bayesmix.posterior.posterior import Posterior

    runs, truth = simulate(n_train, n_eval, n_runs=3 * n_train, random_seed=seed)
    rng = np.random.default_rng(seed)
    c, s = 2, 50
    k, m = len(runs.eval_domains), len(runs.train_domains)
    t = truth["t"][None, None] + 0.05 * rng.standard_normal((c, s, k, m))
    t -= t.mean(-1, keepdims=True)
    ev, tr = list(runs.eval_domains), list(runs.train_domains)
    post = xr.Dataset(
        {
            "m": (
                ("chain", "draw", "eval_domain"),
                truth["m"] + 0.01 * rng.standard_normal((c, s, k)),
            ),
            "rho": (
                ("chain", "draw", "eval_domain"),
                np.clip(truth["rho"] + 0.01 * rng.standard_normal((c, s, k)), 0.05, 0.95),
            ),
            "t": (("chain", "draw", "eval_domain", "train_domain"), t),
            "sigma": (("chain", "draw", "eval_domain"), np.full((c, s, k), 0.02)),
        },
        coords={"chain": np.arange(c), "draw": np.arange(s), "eval_domain": ev, "train_domain": tr},
    )
    stats = xr.Dataset(
        {"diverging": (("chain", "draw"), np.zeros((c, s), bool))},
        coords={"chain": np.arange(c), "draw": np.arange(s)},
    )
    tree = xr.DataTree.from_dict({"posterior": post, "sample_stats": stats})
    return Posterior.from_fit(tree, load_spec("default"), runs, diagnose(tree), {"seed": 0})


@pytest.mark.parametrize("n_train, n_eval", [(13, 17), (64, 17)])
def test_large_domain_counts_stay_readable(n_train, n_eval):
    """17 x 13: every cell annotated with P(t < 0); 64 training domains: no annotations, a
    second heatmap for the uncertainty instead, figures grown with the domain count."""
    import io

    from matplotlib.image import imread

    from bayesmix.reporting.html_report import build_html
    from bayesmix.reporting.sections_law import ANNOTATE_ONE

    post = _fake_posterior(n_train, n_eval)
    text = build_html(post)
    pngs = _pngs(text)
    sizes = {name: imread(io.BytesIO(data)).shape[:2] for name, data in pngs.items()}
    height, width = sizes["slopes"]
    cells = n_train * n_eval
    if cells > ANNOTATE_ONE:
        assert "slopes-uncertainty" in pngs and "too small to annotate" in text
    else:
        assert "slopes-uncertainty" not in pngs and "P(t &lt; 0)" in text
    # at least ~12 pixels per heatmap cell along both axes
    assert width >= 12 * n_train and height >= 12 * n_eval
    # one small panel per domain: the grids wrap instead of shrinking the panels
    assert sizes["simplex-lines"][1] >= 600 and sizes["ppc"][0] >= 400
