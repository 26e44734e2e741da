"""The public API: ``import bayesmix as bm`` names, their numpydoc docstrings and doctests, the
deprecated argument names (``seed``, ``progress``, ``prob``), the one interval function and the
``py.typed`` marker. No MCMC: posteriors are built from draws (``conftest.m4_posterior``)."""

from __future__ import annotations

import doctest
import importlib
import inspect
import pkgutil
import re
import tomllib
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import m4_posterior

import bayesmix as bm
from bayesmix import errors
from bayesmix.decisions.draws import LawDraws
from bayesmix.posterior.intervals import credible_interval

ROOT = Path(__file__).resolve().parents[1]
#: The main methods of each public class, documented like functions.
MAIN_METHODS = {
    "Posterior": ["predict", "intervals", "report", "save", "load"],
    "DecisionProblem": [],
    "DecisionReport": ["to_text", "to_html", "save"],
    "Experiment": ["create", "propose", "ingest", "recommend"],
    "Constraints": ["build", "contains"],
    "RunTable": ["from_frame"],
    "BayesmixError": [],
}
#: Every deprecated name of this release and its replacement.
RENAMES = {"seed": "random_seed", "progress": "progressbar", "prob": "ci_prob"}


def _public():
    return [(n, getattr(bm, n)) for n in bm.__all__ if n != "__version__"]


def _sections(doc: str) -> set[str]:
    """numpydoc section titles: a line followed by a dashed underline of the same length."""
    lines = inspect.cleandoc(doc).splitlines()
    return {
        a.strip()
        for a, b in zip(lines, lines[1:])
        if b.strip() and set(b.strip()) == {"-"} and len(b.strip()) == len(a.strip())
    }


# ------------------------------------------------------------------------------ names
def test_every_public_name_resolves_even_after_importing_submodules():
    """Importing a submodule binds it on the package: no submodule may be named like a public
    name (``bayesmix/fit.py`` would turn ``bm.fit`` into the module after ``import
    bayesmix.fit``), so every public name stays what it is after every submodule is imported."""
    import importlib.util
    import pkgutil

    for name in bm.__all__:
        assert importlib.util.find_spec(f"bayesmix.{name}") is None, name
    for info in pkgutil.walk_packages(bm.__path__, "bayesmix."):
        if ".cli" not in info.name and not info.name.endswith("__main__"):
            importlib.import_module(info.name)

    assert bm.__version__ and sorted(bm.__all__) == bm.__all__
    for name, obj in _public():
        assert callable(obj), name
        assert not inspect.ismodule(obj), name
    assert bm.fit is importlib.import_module("bayesmix.inference.fitting").fit
    assert bm.simulate is importlib.import_module("bayesmix.model.simulation").simulate
    assert bm.report is bm.write_report
    assert set(dir(bm)) >= set(bm.__all__)


@pytest.mark.parametrize("name", [n for n in bm.__all__ if n != "__version__"])
def test_public_names_have_numpydoc_docstrings(name):
    obj = getattr(bm, name)
    sections = _sections(obj.__doc__ or "")
    if inspect.isclass(obj):
        assert {"Parameters", "Examples"} <= sections, (name, sections)
        for method in MAIN_METHODS[name]:
            got = _sections(getattr(obj, method).__doc__ or "")
            assert {"Parameters", "Returns"} <= got, (f"{name}.{method}", got)
    else:
        assert {"Parameters", "Returns", "Examples"} <= sections, (name, sections)
    assert inspect.signature(obj) is not None  # wrapped functions keep their signature


def test_doctests_of_the_public_modules_pass(tmp_path, monkeypatch):
    """The examples in ``bayesmix/__init__.py`` and every module behind ``__all__`` run (fits
    are marked ``+SKIP``); the files they write land in a temporary folder."""
    monkeypatch.chdir(tmp_path)
    modules = {bm} | {inspect.getmodule(obj) for _, obj in _public()}
    modules.add(importlib.import_module("bayesmix._compat"))
    modules.add(importlib.import_module("bayesmix.posterior.intervals"))  # credible_interval
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    for module in sorted(modules, key=lambda m: m.__name__):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", errors.ExtrapolationWarning)
            result = doctest.testmod(module, optionflags=flags, report=True, verbose=False)
        assert result.failed == 0, module.__name__
        assert result.attempted > 0, module.__name__


def test_py_typed_ships_with_the_package():
    assert (ROOT / "bayesmix" / "py.typed").is_file()
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "bayesmix" in config["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    ignored = (ROOT / ".gitignore").read_text().split()
    assert "py.typed" not in ignored and "*.typed" not in ignored


# ------------------------------------------------------------------------------ renamed arguments
def _decorated():
    """(qualified name, function) of every callable in bayesmix with deprecated keywords."""
    found = {}
    names = ["bayesmix"] + [
        m.name
        for m in pkgutil.walk_packages(bm.__path__, "bayesmix.")
        if not m.name.endswith("__main__")
    ]
    for module in map(importlib.import_module, names):
        for obj in vars(module).values():
            members = [obj]
            if inspect.isclass(obj) and obj.__module__ == module.__name__:
                members += [getattr(obj, n) for n in vars(obj) if not n.startswith("__")]
                members.append(obj.__init__)
            for fn in members:
                if hasattr(fn, "__deprecated_kwargs__"):
                    found[f"{fn.__module__}.{fn.__qualname__}"] = fn
    return found


def test_renamed_arguments_cover_the_public_entry_points():
    found = _decorated()
    for name in (
        "bayesmix.inference.fitting.fit",
        "bayesmix.model.simulation.simulate",
        "bayesmix.decisions.decision.decide",
        "bayesmix.propose",
        "bayesmix.reporting.html_report.write_report",
        "bayesmix.posterior.posterior.Posterior.intervals",
        "bayesmix.posterior.posterior.Posterior.predict",
        "bayesmix.posterior.posterior.Posterior.report",
        "bayesmix.loop.experiment.Experiment.__init__",
        "bayesmix.loop.experiment.Experiment.propose",
    ):
        assert name in found, name
    for name, fn in found.items():
        params = inspect.signature(fn).parameters
        for old, new in fn.__deprecated_kwargs__.items():
            assert RENAMES[old] == new, name
            assert new in params and old not in params, name


def test_passing_an_old_and_its_new_name_is_one_line_error():
    """Refused before the function runs (no fit, no file): for every decorated callable."""
    for name, fn in _decorated().items():
        for old, new in fn.__deprecated_kwargs__.items():
            with pytest.raises(errors.OptionError, match=f"both `{old}` and `{new}`") as info:
                fn(**{old: 1, new: 1})
            assert "\n" not in str(info.value), name


def test_old_names_warn_and_give_the_same_result():
    with pytest.warns(FutureWarning, match="`seed` is deprecated, use `random_seed`"):
        old, _ = bm.simulate(["a", "b"], n_runs=5, seed=3)
    new, _ = bm.simulate(["a", "b"], n_runs=5, random_seed=3)
    pd.testing.assert_frame_equal(old.to_tidy(), new.to_tidy())

    draws = _draws()
    with pytest.warns(FutureWarning) as caught:
        rec_old = bm.decide(draws, prob=0.8, seed=1, progress=False, per_draw=False)
    assert sorted(str(w.message).split("`")[1] for w in caught) == ["prob", "progress", "seed"]
    assert all(w.filename == __file__ for w in caught)  # the warning points at the caller
    rec_new = bm.decide(draws, ci_prob=0.8, random_seed=1, progressbar=False, per_draw=False)
    pd.testing.assert_frame_equal(rec_old.losses, rec_new.losses)
    assert rec_old.prob == 0.8


def test_old_names_of_experiment_and_propose(tmp_path):
    with pytest.warns(FutureWarning, match="`seed` is deprecated"):
        exp = bm.Experiment.create(tmp_path / "a.db", ["x", "y"], seed=4)
    assert exp.random_seed == 4
    with pytest.warns(FutureWarning, match="`progress` is deprecated, use `progressbar`"):
        exp = bm.Experiment(tmp_path / "a.db", progress=True)
    assert exp.progressbar is True
    with pytest.warns(FutureWarning, match="`seed` is deprecated"):
        old = bm.propose(tmp_path / "a.db", 3, seed=2)  # no results yet: an initial design
    bm.Experiment.create(tmp_path / "b.db", ["x", "y"])
    new = bm.propose(tmp_path / "b.db", 3, random_seed=2)
    np.testing.assert_array_equal(old[["mix.x", "mix.y"]], new[["mix.x", "mix.y"]])


def test_old_names_of_posterior_methods():
    post = _posterior()
    mix = {"even": {"web": 0.5, "code": 0.5}, "web": {"web": 0.9, "code": 0.1}}
    with pytest.warns(FutureWarning, match="`prob` is deprecated, use `ci_prob`"):
        old = post.intervals(mix, prob=0.8, random_seed=2)
    pd.testing.assert_frame_equal(old, post.intervals(mix, ci_prob=0.8, random_seed=2))
    with pytest.warns(FutureWarning, match="`seed` is deprecated"):
        a = post.predict(mix, seed=5).predictive.values
    np.testing.assert_array_equal(a, post.predict(mix, random_seed=5).predictive.values)


def test_the_library_itself_uses_no_deprecated_name(tmp_path):
    """A decision on a posterior and a proposal, with FutureWarning as an error."""
    post = _posterior()
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        bm.decide(post, random_seed=0)
        exp = bm.Experiment.create(tmp_path / "e.db", ["web", "code"], initial_design=3)
        assert len(exp.last_proposals) == 3


# ------------------------------------------------------------------------------ intervals
@pytest.mark.parametrize("ci_prob", [0.5, 0.8, 0.9, 0.94, 0.95, 0.99])
def test_eti_equals_the_former_quantile_intervals(ci_prob):
    """The hand-written ``np.quantile(v, [(1 - p) / 2, (1 + p) / 2])`` it replaced."""
    v = np.random.default_rng(0).gamma(2.0, size=(401, 3, 2))
    lo, hi = credible_interval(v, ci_prob)
    want = np.quantile(v, [(1 - ci_prob) / 2, (1 + ci_prob) / 2], axis=0)
    np.testing.assert_array_equal(lo, want[0])
    np.testing.assert_array_equal(hi, want[1])
    lo, hi = credible_interval(np.moveaxis(v, 0, -1), ci_prob, axis=-1)
    np.testing.assert_array_equal(lo, want[0])
    v[5, 0, 0] = np.nan
    lo, hi = credible_interval(v, ci_prob, skipna=True)
    np.testing.assert_array_equal(
        hi, np.nanquantile(v, (1 + ci_prob) / 2, axis=0)
    )  # NaN draws left out


def test_hdi_is_the_shortest_interval_with_the_mass():
    v = np.random.default_rng(1).exponential(size=2000)  # skewed: the HDI hugs 0
    e_lo, e_hi = credible_interval(v, 0.9)
    h_lo, h_hi = credible_interval(v, 0.9, ci_kind="hdi")
    assert h_hi - h_lo < e_hi - e_lo and h_lo < e_lo
    assert np.mean((v >= h_lo) & (v <= h_hi)) >= 0.9
    with pytest.raises(errors.OptionError, match="interval kind"):
        credible_interval(v, 0.9, ci_kind="central")
    with pytest.raises(errors.ObjectiveError, match=r"\(0, 1\)"):
        credible_interval(v, 1.0)


def test_posterior_and_decision_intervals_come_from_credible_interval():
    post = _posterior()
    mix = {"even": {"web": 0.5, "code": 0.5}}
    table = post.intervals(mix, 0.9, random_seed=1, ci_kind="hdi").set_index("eval_domain")
    draws = post.predict(mix, random_seed=1).predictive.sel(mixture="even")
    for dom in ("web", "code"):
        lo, hi = credible_interval(draws.sel(eval_domain=dom).values.ravel(), 0.9, ci_kind="hdi")
        assert (table.loc[dom, "lower"], table.loc[dom, "upper"]) == (lo, hi)
    eti = post.intervals(mix, 0.9, random_seed=1).set_index("eval_domain")
    assert (eti["upper"] - eti["lower"] >= table["upper"] - table["lower"] - 1e-12).all()
    rec = bm.decide(post, ci_kind="hdi", random_seed=0)
    assert rec.ci_kind == "hdi" and "HDI" in rec.to_text()
    assert rec.to_dict()["ci_kind"] == "hdi"


# ------------------------------------------------------------------------------ helpers
def _draws(s: int = 80) -> LawDraws:
    """M4 draws close to a simulated truth over 3 domains."""
    runs, truth = bm.simulate(["web", "code", "books"], n_runs=6, random_seed=0)
    rng = np.random.default_rng(1)
    params = {
        k: truth[k] * rng.normal(1, 0.02, (s, *np.shape(truth[k]))) for k in ("m", "rho", "t")
    }
    return LawDraws(params, runs.train_domains, runs.eval_domains)


def _posterior():
    """An M4 Posterior over web and code from 2 x 100 draws near a simulated truth."""
    runs, truth = bm.simulate(["web", "code"], n_runs=8, random_seed=2)
    rng = np.random.default_rng(3)
    shape = (2, 100)
    m = truth["m"] * rng.normal(1, 0.01, (*shape, 2))
    rho = truth["rho"] * rng.normal(1, 0.01, (*shape, 2))
    t = truth["t"] + rng.normal(0, 0.05, (*shape, 2, 2))
    return m4_posterior(m, rho, t, runs, sigma=0.02)


def test_messages_name_the_function():
    with pytest.warns(FutureWarning) as caught:
        bm.simulate(["a", "b"], n_runs=2, seed=0)
    text = str(caught[0].message)
    assert re.search(r"\(simulate\(\); the old name goes in bayesmix 0\.2\.0\)", text)
