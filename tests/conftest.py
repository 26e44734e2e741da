"""Shared fixtures: the real proxy-run data in ``../shared/data`` (never copied into the repo),
and one small posterior fitted to simulated runs, shared by every model test."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

#  One sampling per fit in the suite (no retries towards the gate, bayesmix.inference.gate_retry):
# most  test fits are deliberately too small to pass the gate, and retrying them would multiply the
#: suite's MCMC time. Tests of the retries pass ``max_time`` explicitly. Subprocesses (the CLI
#: tests) inherit it.
os.environ.setdefault("BAYESMIX_MAX_TIME", "0")

#: ``<repository>/../shared/data``, computed from this file so no machine path is written down.
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def phased_m4_draws(gamma: float = 1.5) -> dict:
    """One draw (leading axis 1) of an ``m4+phases`` law over web, code, hq where hq helps
    every validation domain; ``gamma`` the late-phase emphasis."""
    t = np.eye(3) * -3.0
    t[:, 2] += -1.5
    t = t - t.mean(axis=1, keepdims=True)
    return {
        "m": np.array([[3.0, 2.0, 2.6]]),
        "rho": np.full((1, 3), 0.15),
        "t": t[None],
        "late_emphasis": np.array([gamma]),
    }


def wait_until(condition: Callable[[], object], timeout: float = 30.0, poll: float = 0.05):
    """Poll ``condition`` until it returns a true value (returned) or ``timeout`` seconds pass
    (then None): tests of concurrent outcomes wait for them instead of sleeping a fixed time,
    so they pass on a busy machine and finish early on an idle one."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() >= deadline:
            return value or None
        time.sleep(poll)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to the shared real data (RegMix, Ye et al.); skips the test when it is absent."""
    if not (SHARED_DATA / "regmix").is_dir() or not (SHARED_DATA / "mixinglaws").is_dir():
        pytest.skip(
            "real data absent: ../shared/data/regmix and ../shared/data/mixinglaws "
            "(relative to the repository root) are needed for this test"
        )
    return SHARED_DATA


# ----------------------------------------------------------------------------- the CLI in-process
def _show_warning(message, category, filename, lineno, file=None, line=None):
    """Print a warning as a fresh interpreter does: to the current ``sys.stderr``."""
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def run_cli(*args, cwd: Path | str | None = None) -> subprocess.CompletedProcess:
    """``bayesmix ARGS`` run in this process by :func:`bayesmix.cli.main`, in ``cwd``, with
    what a subprocess would give: exit code, stdout and stderr as text (an uncaught exception:
    its traceback on stderr and code 1; argparse's exits: their code).

    For CLI tests where the subprocess itself is not what is tested: it saves each call the
    import of the package (seconds) and reuses the session's compiled models. Warnings go to
    stderr under a fresh interpreter's filters, not pytest's. Tests of what only a real
    process shows (a new process compiling, the entry point, signals) use ``subprocess``.
    """
    from bayesmix.cli import main

    argv = [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    old = os.getcwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with (
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
            warnings.catch_warnings(),
        ):
            warnings.resetwarnings()
            for category in (
                DeprecationWarning,
                PendingDeprecationWarning,
                ImportWarning,
                ResourceWarning,
            ):
                warnings.simplefilter("ignore", category)
            warnings.showwarning = _show_warning
            try:
                code = main(argv)
            except SystemExit as stop:  # argparse: --help (0), bad usage (2)
                if isinstance(stop.code, str):
                    print(stop.code, file=sys.stderr)
                code = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
            except Exception:  # as the interpreter: the traceback, exit code 1
                traceback.print_exc()
                code = 1
    finally:
        os.chdir(old)
    return subprocess.CompletedProcess(["bayesmix", *argv], code, out.getvalue(), err.getvalue())


# ---------------------------------------------------------------------------------- one fitted law
#: Training = validation domains (Pile names, so the Pile weights file applies and the diagonal
#: effect is on). 40 simulated runs, noise sd 0.02 nats: a small but realistic proxy experiment.
SIM_DOMAINS = ("Github", "Books3", "Pile-CC", "ArXiv")
SIM_SEED = 7
#: Small MCMC shared by the whole suite. 2 x 300 draws do not pass the diagnostics gate (its ESS
#: floor is 100 per chain on every parameter, hyperparameters included), but the law's parameters
#: m, rho, t mix well at this size, which is what the tests use. Other fits of this structure in
#: the session reuse the compiled model (a few seconds each).
FIT_KW = {"draws": 300, "tune": 300, "chains": 2, "random_seed": 11}


@dataclass(frozen=True)
class SimulatedFit:
    """A run table simulated from a known law, that law, and the posterior fitted to the table."""

    runs: object  # bayesmix.RunTable
    truth: object  # bayesmix.model.simulation.Truth
    posterior: object  # bayesmix.posterior.posterior.Posterior


def simulate_runs(seed: int = SIM_SEED, n_runs: int = 40):
    """Runs of the fixture's structure (same domains) from a law drawn with ``seed``."""
    from bayesmix.model.simulation import simulate

    return simulate(list(SIM_DOMAINS), n_runs=n_runs, random_seed=seed)


#: The nested pipeline's proxies (tests/scaling): domains, model sizes and checkpoint steps.
NESTED_DOMAINS = ("Github", "Books3", "Pile-CC")
NESTED_SIZES = (2e7, 5e7, 1.25e8)
NESTED_STEPS = (1000, 2000, 4000, 8000)


def nested_runs():
    """14 mixtures x 3 sizes x 4 steps from a known M4 law with power laws in N and D, and the
    truth: the one table of the pipeline's and the backtests' fits, so their refits of one
    geometry (e.g. the size backtest's stages 1-2) share compiled curve models."""
    from bayesmix.model.simulation import simulate

    return simulate(
        list(NESTED_DOMAINS),
        n_runs=14,
        random_seed=5,
        sizes=list(NESTED_SIZES),
        steps=list(NESTED_STEPS),
        noise_sd=0.01,
    )


@pytest.fixture(scope="session")
def simulated_fit() -> SimulatedFit:
    """The suite's one fitted posterior (default model; compiled once per session)."""
    from bayesmix.inference.fitting import fit

    runs, truth = simulate_runs()
    post = fit(runs, "default", warn=False, **FIT_KW)
    return SimulatedFit(runs, truth, post)


@pytest.fixture(scope="session")
def saved_posterior(simulated_fit, tmp_path_factory) -> Path:
    """``simulated_fit.posterior`` saved as NetCDF (read it, never write to it)."""
    return simulated_fit.posterior.save(tmp_path_factory.mktemp("posterior") / "posterior.nc")


# ---------------------------------------------------------------------------------- shared checks
def check_objective_gradients(values, label: str = "") -> None:
    """Every objective's gradient (``Criterion`` over per-draw ``values`` on 4 training
    domains) against central differences of its own value.

    Central differences err by ~h^2 f''' + eps f / h ~ 1e-10 here; sort-based objectives
    (quantile, CVaR) are smooth away from order changes, which steps of 1e-6 rarely cross.
    """
    import numpy as np

    from bayesmix.decisions.objectives import Criterion, Objective

    base = np.array([0.4, 0.3, 0.2, 0.1])
    r = np.array([0.1, 0.2, 0.3, 0.4])
    for obj in ("mean", "quantile:0.9", "cvar:0.8", "beat-baseline"):
        crit = Criterion(Objective.parse(obj), values, base, temperature=0.05)
        _, g = crit(r)
        h = 1e-6
        fd = np.array([(crit(r + h * e)[0] - crit(r - h * e)[0]) / (2 * h) for e in np.eye(4)])
        np.testing.assert_allclose(g, fd, rtol=1e-4, atol=1e-7, err_msg=f"{label} {obj}")


# ---------------------------------------------------------------------------------- compile cache
@pytest.fixture(scope="session", autouse=True)
def compile_cache_dir(tmp_path_factory):
    """Every test (and every subprocess it starts) uses a temporary compile cache, never the
    user's cache directory: ``BAYESMIX_CACHE_DIR`` points into pytest's tmp dir (shared by the
    workers of ``pytest -n``, whose entries are written atomically)."""
    import os

    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):  # one cache for all workers: each model compiles once
        path = base.parent / "compile-cache"
        path.mkdir(exist_ok=True)
    else:
        path = tmp_path_factory.mktemp("compile-cache")
    old = os.environ.get("BAYESMIX_CACHE_DIR")
    os.environ["BAYESMIX_CACHE_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("BAYESMIX_CACHE_DIR", None)
    else:
        os.environ["BAYESMIX_CACHE_DIR"] = old


# ------------------------------------------------------------------------- shared test helpers
def train_simulated(proposals, runs, seed: int):
    """What the training jobs report for proposed ``runs``: the true losses of the simulator
    behind :func:`simulate_runs` plus noise (sd 0.02)."""
    import numpy as np

    mix = [f"mix.{d}" for d in SIM_DOMAINS]
    _, truth = simulate_runs()
    out = proposals[proposals["run"].isin(runs)][["run", *mix]].reset_index(drop=True)
    loss = truth.true_loss(out[mix].to_numpy())
    loss = loss + np.random.default_rng(seed).normal(0.0, 0.02, loss.shape)
    for i, d in enumerate(truth["eval_domains"]):
        out[f"loss.{d}"] = loss[:, i]
    return out


def m4_posterior(m, rho, t, runs, *, sigma: float, train=None, evals=None, model="default"):
    """A default-model (M4; or ``model``, a specification of a law with M4's parameters)
    Posterior holding the given draws, no sampler: ``m``, ``rho``
    (chains, draws, K), ``t`` (chains, draws, K, M), the noise sd ``sigma``, ``runs`` as fit
    data (``train``/``evals``: the domain order of the draws, default the runs'); diagnostics
    that pass the gate."""
    import numpy as np
    import xarray as xr

    from bayesmix.model.spec import load_spec
    from bayesmix.posterior.diagnostics import Diagnostics
    from bayesmix.posterior.posterior import Posterior

    chains, draws, k, _ = t.shape
    coords = {
        "chain": np.arange(chains),
        "draw": np.arange(draws),
        "eval_domain": list(runs.eval_domains if evals is None else evals),
        "train_domain": list(runs.train_domains if train is None else train),
    }
    post = xr.Dataset(
        {
            "m": (("chain", "draw", "eval_domain"), m),
            "rho": (("chain", "draw", "eval_domain"), rho),
            "t": (("chain", "draw", "eval_domain", "train_domain"), t),
            "sigma": (("chain", "draw", "eval_domain"), np.full((chains, draws, k), sigma)),
        },
        coords=coords,
    )
    stats = xr.Dataset(
        {"diverging": (("chain", "draw"), np.zeros((chains, draws), bool))},
        coords={"chain": coords["chain"], "draw": coords["draw"]},
    )
    tree = xr.DataTree.from_dict({"posterior": post, "sample_stats": stats})
    diag = Diagnostics(
        chains=chains,
        draws=draws,
        divergences=0,
        treedepth_hits=0,
        min_bfmi=1.0,
        max_rhat=1.0,
        min_ess_bulk=500.0,
        min_ess_tail=500.0,
    )
    return Posterior.from_fit(
        tree, load_spec(model), runs, diag, {"draws": draws, "chains": chains}
    )


# ---------------------------------------------------------------------------------- suite cost
def family_runs(n_runs=40, seed=0):
    """Two families of three tasks over three training domains: family ``a`` is helped by
    domain 0, family ``b`` by domain 2 (slopes -1.5 vs +0.75 on the others), tasks of one
    family differ by 0.1 in their slopes, noise sd 0.01."""
    import numpy as np
    import pandas as pd

    from bayesmix.data.table import RunTable
    from bayesmix.laws.m4 import from_ck

    rng = np.random.default_rng(seed)
    r = rng.dirichlet(np.ones(3), size=n_runs)
    base = {"a": np.array([-1.5, 0.75, 0.75]), "b": np.array([0.75, 0.75, -1.5])}
    names, t = [], []
    for fam in ("a", "b"):
        for i in range(3):
            names.append(f"{fam}_task{i}")
            t.append(base[fam] + 0.1 * rng.standard_normal(3))
    params = from_ck(np.full(6, 1.0), np.full(6, 1.0), np.array(t))
    mean = params["m"] * (1 - params["rho"] + params["rho"] * np.exp(r @ params["t"].T))
    y = mean + 0.01 * rng.standard_normal(mean.shape)
    frame = pd.DataFrame({"run": [f"r{i}" for i in range(n_runs)]})
    for j, dom in enumerate(("d0", "d1", "d2")):
        frame[f"mix.{dom}"] = r[:, j]
    for i, name in enumerate(names):
        frame[f"loss.{name}"] = y[:, i]
    return RunTable.from_frame(frame), params


def family_posterior(seed=0, model="tasks"):
    """(runs, truth, posterior) for :func:`family_runs`: 2 chains x 30 draws around the truth
    (slopes jittered by sd 0.05 with ``seed``), no sampler; ``model`` as in
    :func:`m4_posterior`."""
    import numpy as np

    runs, truth = family_runs()
    rng = np.random.default_rng(seed)
    shape = (2, 30)
    post = m4_posterior(
        np.broadcast_to(truth["m"], shape + truth["m"].shape).copy(),
        np.broadcast_to(truth["rho"], shape + truth["rho"].shape).copy(),
        truth["t"] + 0.05 * rng.standard_normal(shape + truth["t"].shape),
        runs,
        sigma=0.01,
        model=model,
    )
    return runs, truth, post


@pytest.fixture(scope="session")
def tasks_fit():
    """A ``tasks`` posterior of :func:`family_runs` (small: 2 chains x 200 draws) and the
    truth's M4 parameters."""
    from bayesmix.inference.fitting import fit

    runs, truth = family_runs()
    post = fit(runs, "tasks", draws=200, tune=300, chains=2, random_seed=3, warn=False)
    return post, truth


def pytest_terminal_summary(terminalreporter):
    """One line after the run: the real compilations (cache misses) and compile-cache loads
    of the pytest process (subprocesses not counted), the suite's main cost after sampling;
    with ``--durations`` it tells where a suite that grows slow spends its time."""
    cache = sys.modules.get("bayesmix.inference.compile_cache")
    if cache is not None:
        s = cache.stats
        terminalreporter.write_line(
            f"nutpie compilations in this process: {s['misses']} (compile-cache loads: "
            f"{s['hits']}, entries stored: {s['stores']})"
        )
