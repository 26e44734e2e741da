"""The compile cache across processes (bayesmix.inference.compile_cache): a reloaded compilation
computes what a fresh one does, keys change with versions and model (not its labels), racing
processes both succeed, and a fit from a loaded model is the fit from a compiled one.

Subprocesses build the tiny model below (imported from this file) in their own interpreter, so
"fresh process" means a real one. The conftest points ``BAYESMIX_CACHE_DIR`` at a tmp dir.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bayesmix.inference import compile_cache
from bayesmix.inference.nutpie_adapter import logp_and_grad

HERE = Path(__file__).resolve().parent

#: Child process: compile (or load) the tiny model with ``n_obs`` observations, print the
#: cache counters and the log density and gradient at a fixed point as JSON.
CHILD = """
import json, sys, warnings
warnings.simplefilter("ignore")
sys.path.insert(0, sys.argv[1])
import numpy as np
from bayesmix.inference import compile_cache
from bayesmix.inference.nutpie_adapter import logp_and_grad
from test_compile_cache import tiny_model
compiled = compile_cache.compile_model(tiny_model(int(sys.argv[2])))
logp, grad = logp_and_grad(compiled, np.linspace(-0.3, 0.4, compiled.n_dim))
print(json.dumps({**compile_cache.stats, "logp": logp, "grad": grad.tolist()}))
"""


def tiny_model(n_obs: int = 6, prior_sd: float = 1.0, labels=("a", "b")):
    """A two-coefficient regression with a noise scale and one deterministic (n_dim 3)."""
    import pymc as pm

    rng = np.random.default_rng(n_obs)
    with pm.Model(coords={"coef": list(labels)}) as model:
        x = pm.Data("x", rng.normal(size=n_obs))
        y = pm.Data("y", rng.normal(size=n_obs))
        b = pm.Normal("b", 0.0, prior_sd, dims="coef")
        s = pm.HalfNormal("s", 1.0)
        pm.Deterministic("b_sum", b.sum())
        pm.Normal("obs", b[0] + b[1] * x, s, observed=y)
    return model


def _env(cache: Path) -> dict:
    env = {**os.environ, "BAYESMIX_CACHE_DIR": str(cache)}
    env.pop("BAYESMIX_NO_COMPILE_CACHE", None)
    return env


def _start(cache: Path, n_obs: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(HERE), str(n_obs)],
        env=_env(cache),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _result(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-2000:]
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.slow
def test_racing_compilers_store_one_entry_that_a_fresh_process_reloads(tmp_path, monkeypatch):
    """Two processes compiling one model at once into an empty cache both succeed and leave one
    entry; a third, fresh process with other data of the same structure loads it; and what it
    computes is what a compilation from scratch here computes, and what the entry loaded here
    computes with that data swapped in."""
    cache = tmp_path / "cache"
    racing = [_result(p) for p in [_start(cache, 6), _start(cache, 6)]]
    for r in racing:
        assert r["hits"] + r["misses"] == 1 and np.isfinite(r["logp"])
        assert r["stores"] == r["misses"]  # a process that compiled stored its compilation
    assert sum(r["misses"] for r in racing) >= 1  # the cache was empty: someone compiled
    assert racing[0]["logp"] == racing[1]["logp"]
    assert len(list((cache / "compiled").glob("*.nbm"))) == 1
    assert not list((cache / "compiled").glob("*.tmp"))  # no half-written files left
    # a fresh process with other data of the same structure (9 observations, not 6) loads it
    second = _result(_start(cache, 9))
    assert (second["hits"], second["misses"], second["stores"]) == (1, 0, 0)

    # the same model compiled from scratch here, cache off (and nothing written)
    monkeypatch.setenv("BAYESMIX_CACHE_DIR", str(tmp_path / "unused"))
    monkeypatch.setenv("BAYESMIX_NO_COMPILE_CACHE", "1")
    fresh = compile_cache.compile_model(tiny_model(9))
    assert not (tmp_path / "unused").exists()
    x = np.linspace(-0.3, 0.4, fresh.n_dim)
    logp, grad = logp_and_grad(fresh, x)
    assert np.isfinite(logp) and np.all(grad != 0)
    np.testing.assert_allclose(second["logp"], logp, rtol=1e-12)
    np.testing.assert_allclose(second["grad"], grad, rtol=1e-12)
    # and loaded into this process from disk: the racers' value with their data, then fed new
    # data through with_data, the fresh compilation's
    monkeypatch.delenv("BAYESMIX_NO_COMPILE_CACHE")
    monkeypatch.setenv("BAYESMIX_CACHE_DIR", str(cache))
    monkeypatch.setattr(compile_cache, "_LOADED", {})
    hits = compile_cache.stats["hits"]
    loaded = compile_cache.compile_model(tiny_model(6))
    assert compile_cache.stats["hits"] == hits + 1
    assert logp_and_grad(loaded, x)[0] == racing[0]["logp"]
    data = tiny_model(9)
    loaded = loaded.with_data(x=data["x"].get_value(), y=data["y"].get_value())
    np.testing.assert_allclose(logp_and_grad(loaded, x)[0], logp, rtol=1e-12)


def test_key_changes_with_versions_and_model_not_labels(monkeypatch):
    key = compile_cache.model_key(tiny_model(6))
    assert compile_cache.model_key(tiny_model(6)) == key  # rebuilt: same key
    assert compile_cache.model_key(tiny_model(9)) == key  # data size is not in it
    # other coordinate labels (domain names): the same machine code, so one entry serves both
    assert compile_cache.model_key(tiny_model(6, labels=("web", "code"))) == key
    assert compile_cache.model_key(tiny_model(6, prior_sd=2.0)) != key  # new prior
    real = compile_cache.versions()
    monkeypatch.setattr(compile_cache, "versions", lambda: {**real, "pymc": "0.0.1"})
    assert compile_cache.model_key(tiny_model(6)) != key
    monkeypatch.undo()
    import numba

    assert real["numba_opt"] == str(numba.config.OPT)  # another level is other machine code
    monkeypatch.setattr(numba.config, "OPT", numba.config.OPT + 1)
    assert compile_cache.model_key(tiny_model(6)) != key


@pytest.mark.slow
def test_a_law_on_other_domain_names_loads_the_entry_with_its_own_labels(simulated_fit):
    """A fit of the fixture's law on the same counts of differently named domains loads the
    fixture's entry instead of compiling, and its posterior carries the new names."""
    from conftest import FIT_KW

    from bayesmix.data.table import RunTable
    from bayesmix.inference.fitting import fit

    runs = simulated_fit.runs
    names = {d: f"renamed_{i}" for i, d in enumerate(runs.train_domains)}
    frame = runs.to_tidy().rename(
        columns=lambda c: (
            ".".join([c.split(".", 1)[0], names.get(c.split(".", 1)[1], "")])
            if c.startswith(("mix.", "loss.")) and c.split(".", 1)[1] in names
            else c
        )
    )
    before = dict(compile_cache.stats)
    post = fit(RunTable.from_frame(frame), "default", warn=False, **FIT_KW)
    assert compile_cache.stats["misses"] == before["misses"]
    assert list(post.tree["posterior"]["t"].coords["train_domain"].values) == list(names.values())


@pytest.mark.slow
def test_shipped_specifications_have_stable_keys(simulated_fit):
    """Two builds of each shipped model give one key (no memory addresses in the graph
    fingerprint), so a fresh process finds its entry."""
    from bayesmix.laws import get_law
    from bayesmix.model.model import build_model, prepare_data
    from bayesmix.model.spec import available_models, load_spec

    runs = simulated_fit.runs
    checked = 0
    for name in available_models():
        spec = load_spec(name)
        if get_law(spec.law).inputs != ("r",):
            continue  # laws over model size / tokens need other run tables
        data = prepare_data(runs, spec.law)
        keys = {
            compile_cache.model_key(build_model(spec, runs.train_domains, runs.eval_domains, data))
            for _ in range(2)
        }
        assert len(keys) == 1, name
        checked += 1
    assert checked >= 3


@pytest.mark.slow
def test_fit_from_a_cached_model_is_the_fit_from_a_compiled_one(simulated_fit, monkeypatch):
    """The suite's fixture compiled and stored the default model; with this process's caches
    emptied, the same fit loads it from disk and reproduces the draws exactly."""
    from conftest import FIT_KW

    fit_module = importlib.import_module("bayesmix.inference.fitting")

    assert compile_cache.entries()  # the fixture's fit stored its compiled model
    monkeypatch.setattr(fit_module, "_COMPILED", {})
    monkeypatch.setattr(compile_cache, "_LOADED", {})
    hits, misses = compile_cache.stats["hits"], compile_cache.stats["misses"]
    post = fit_module.fit(simulated_fit.runs, "default", warn=False, **FIT_KW)
    assert compile_cache.stats["hits"] == hits + 1
    assert compile_cache.stats["misses"] == misses
    before = simulated_fit.posterior.tree["posterior"]
    after = post.tree["posterior"]
    for name in ("m", "rho", "t"):
        np.testing.assert_allclose(after[name].values, before[name].values, rtol=1e-10)
    assert post.diagnostics.divergences == simulated_fit.posterior.diagnostics.divergences


#: A fresh interpreter fits the suite's runs with the suite's settings (the model loaded from
#: the session's compile cache) and saves the draws of ``t``.
SAME_SEED = """
import sys, warnings
import numpy as np
warnings.simplefilter("ignore")
sys.path.insert(0, sys.argv[1])
from conftest import FIT_KW, simulate_runs
from bayesmix.inference.fitting import fit
post = fit(simulate_runs()[0], "default", warn=False, **FIT_KW)
np.save(sys.argv[2], post.tree["posterior"]["t"].values)
"""


@pytest.mark.slow
def test_a_seed_gives_the_same_draws_compiled_loaded_or_loaded_concurrently(
    simulated_fit, tmp_path
):
    """Two processes loading the stored model at once draw exactly what the session's fit
    (which compiled it) drew with the same seed: the cache changes speed, never draws."""
    tests = Path(__file__).resolve().parents[1]
    outs = [tmp_path / f"b{i}.npy" for i in range(2)]
    procs = [
        subprocess.Popen([sys.executable, "-c", SAME_SEED, str(tests), str(out)]) for out in outs
    ]
    assert [p.wait(timeout=600) for p in procs] == [0, 0]
    expected = simulated_fit.posterior.tree["posterior"]["t"].values
    for out in outs:
        np.testing.assert_array_equal(np.load(out), expected)


#: A fresh interpreter fits the cases given (argv[2], comma-separated) and saves every posterior
#: array of each to argv[1] (.npz): "curves", the nested pipeline's stage-1 curve model on 3
#: domains x 6 runs x 3 sizes x 4 steps; "refit", that structure fitted on another table and then
#: refitted on a third (argv[3] == "1": only the refit, as a process that never saw the other
#: table), so the refit swaps data into a compiled or a loaded model. One structure: one
#: compilation. max_time=0: one sampling each, so no clock decides which attempt's draws are kept.
CURVES = """
import json, sys, warnings
import numpy as np
warnings.simplefilter("ignore")
from bayesmix.inference import compile_cache
from bayesmix.model.simulation import simulate
from bayesmix.scaling.stages import fit_step_law
kw = {"draws": 30, "tune": 40, "chains": 2, "random_seed": 3, "warn": False, "max_time": 0}
def runs(seed):
    return simulate(["Github", "Books3", "Pile-CC"], n_runs=6, random_seed=seed,
                    sizes=[2e7, 5e7, 1.25e8], steps=[1000, 2000, 4000, 8000])[0]
out = {}
for case in sys.argv[2].split(","):
    if case == "curves":
        tree = fit_step_law(runs(5), **kw).posterior
    else:
        if sys.argv[3] != "1":
            fit_step_law(runs(8), **kw)
        tree = fit_step_law(runs(9), **kw).posterior
    out.update({f"{case}/{k}": np.asarray(v.values) for k, v in tree.data_vars.items()})
np.savez(sys.argv[1], **out)
print(json.dumps(compile_cache.stats))
"""


@pytest.mark.slow
def test_curve_and_refitted_models_draw_the_same_compiled_or_loaded(tmp_path):
    """The nested pipeline's curve model, and the same structure with its data swapped before a
    refit, draw exactly the same chains with one seed in the process that compiled (and stored)
    it and in a fresh process loading it for the refit first (loading at once from several
    processes is test_a_seed_gives_the_same_draws_compiled_loaded_or_loaded_concurrently's).
    Before the cached callbacks were made self-contained, the curve model's loaders drew other
    chains (1 ulp of its log density differed at a few points)."""
    cache = tmp_path / "cache"

    def run(name: str, order: str, only_refit: str) -> dict:
        argv = [sys.executable, "-c", CURVES, str(tmp_path / name), order, only_refit]
        proc = subprocess.run(argv, env=_env(cache), capture_output=True, text=True, timeout=1200)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])

    compiled = run("compiled.npz", "curves,refit", "0")
    assert (compiled["misses"], compiled["stores"]) == (1, 1)  # the refits reuse it in-process
    loader = run("loaded.npz", "refit,curves", "1")
    assert (loader["hits"], loader["misses"]) == (1, 0)
    expected = np.load(tmp_path / "compiled.npz")
    assert {k.split("/")[0] for k in expected.files} == {"curves", "refit"}
    assert any(expected[k].ndim == 4 for k in expected.files)  # (chain, draw, group, domain)
    loaded = np.load(tmp_path / "loaded.npz")
    assert sorted(loaded.files) == sorted(expected.files)
    for k in expected.files:
        np.testing.assert_array_equal(loaded[k], expected[k], err_msg=k)
    # the refit's draws are of its own data, not the first table's
    assert not np.array_equal(expected["refit/" + expected.files[0].split("/")[1]],
                              expected[expected.files[0]])  # fmt: skip
