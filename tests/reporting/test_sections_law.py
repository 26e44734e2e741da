"""The law's sections of the report (bayesmix.reporting.sections_law) on a posterior assembled
from given draws (no sampler, seconds): the ternary view's domains and their errors (naming
``ternary=``, the CLI's ``--ternary``). ``view`` is shared with test_sections_decision.py."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import m4_posterior, simulate_runs

from bayesmix import errors
from bayesmix.cli import error_text
from bayesmix.reporting.sections_law import ternary_domains
from bayesmix.reporting.view import View


@pytest.fixture(scope="module")
def view():
    runs, _ = simulate_runs(n_runs=12)
    rng = np.random.default_rng(0)
    c, d, k, m = 2, 40, len(runs.eval_domains), len(runs.train_domains)
    t = rng.standard_normal((c, d, k, m))
    t -= t.mean(-1, keepdims=True)
    post = m4_posterior(
        2.0 + 0.05 * rng.standard_normal((c, d, k)),
        0.5 + 0.02 * rng.standard_normal((c, d, k)),
        t,
        runs,
        sigma=0.02,
    )
    return View(post, None, 0.9)


def test_ternary_defaults_to_the_three_largest_shares_in_domain_order(view):
    abc = ternary_domains(None, view)
    top = sorted(np.argsort(-view.mixture, kind="stable")[:3])
    assert abc == [view.train[i] for i in top]
    assert ternary_domains(" Github, ArXiv ,Books3", view) == ["Github", "ArXiv", "Books3"]


@pytest.mark.parametrize("ternary", ["Github,Books3", ["Github", "Github", "ArXiv"]])
def test_ternary_errors_name_the_parameter_and_the_cli_its_flag(view, ternary):
    with pytest.raises(errors.OptionError) as info:
        ternary_domains(ternary, view)
    err = info.value
    assert err.param == "ternary" and "three different training domains" in str(err)
    assert str(err).startswith("ternary=")
    shown = error_text(err, {"ternary": "--ternary"})
    assert shown.startswith("--ternary '") and "ternary=" not in shown
    assert "e.g. --ternary web,code,books" in shown


def test_unknown_ternary_domain_suggests_the_closest(view):
    with pytest.raises(errors.DomainNameError, match="did you mean 'ArXiv'"):
        ternary_domains("Github,Books3,Arxiv", view)
