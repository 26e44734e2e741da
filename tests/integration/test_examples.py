"""The scripts in examples/ run end to end and print what they promise.

Each runs as ``__main__`` in this process (as ``python examples/NAME.py ARGS`` runs it, without
a new interpreter's seconds of imports, and with the session's compiled models), with small MCMC
settings and ``--out`` in the test's temporary folder; one runs as a real subprocess.
plan_regmix.py reads ../shared/data/regmix when present and otherwise says it skips.
tests/integration/test_run_example.py runs examples/real_loop.py as a subprocess too.
"""

from __future__ import annotations

import contextlib
import io
import runpy
import subprocess
import sys
import traceback
import warnings
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
REGMIX = Path(__file__).resolve().parents[3] / "shared" / "data" / "regmix"
SMALL = ["--draws", "100", "--tune", "100", "--chains", "2"]

pytestmark = pytest.mark.slow


def run_example(name: str, *args: str) -> str:
    """Run examples/<name> with ``args`` as ``__main__`` in this process; its stdout, or a failure
    with its output and traceback unless it ends normally or with exit code 0."""
    out = io.StringIO()
    argv = sys.argv
    sys.argv = [str(EXAMPLES / name), *args]
    try:
        with contextlib.redirect_stdout(out), warnings.catch_warnings():
            runpy.run_path(str(EXAMPLES / name), run_name="__main__")
    except SystemExit as stop:
        assert stop.code in (0, None), f"{name} exited {stop.code}:\n{out.getvalue()}"
    except Exception:
        pytest.fail(f"{name} raised:\n{out.getvalue()}\n{traceback.format_exc()}")
    finally:
        sys.argv = argv
    return out.getvalue()


def run_example_process(name: str, *args: str) -> str:
    """Run examples/<name> with ``args`` in a new interpreter; fail with its output unless it
    exits 0."""
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, f"{name} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_plan_regmix(tmp_path):
    out = run_example("plan_regmix.py", "--out", str(tmp_path), "--runs", "24", *SMALL)
    if not (REGMIX / "train_mixture_1m.csv").is_file():
        assert "RegMix data not found" in out and "skipping" in out
        return
    assert "loaded 24 runs: 17 training x 13 validation domains" in out
    assert (tmp_path / "regmix_posterior.nc").is_file()
    assert "Decision report" in out
    assert "recommended mixture (top 5 shares):" in out
    shares = [
        float(part.split()[-1])
        for part in out.split("recommended mixture (top 5 shares): ")[1].splitlines()[0].split(", ")
    ]
    assert len(shares) == 5 and all(0.0 <= s <= 0.3 + 1e-6 for s in shares)  # the 30 % cap


def test_plan_regmix_without_data(tmp_path):
    out = run_example_process(
        "plan_regmix.py", "--out", str(tmp_path), "--data", str(tmp_path / "no_such_folder")
    )
    assert "RegMix data not found" in out and "skipping" in out
    assert not (tmp_path / "regmix_posterior.nc").exists()


def test_loop_from_python(tmp_path):
    out = run_example("loop_from_python.py", "--out", str(tmp_path), *SMALL)
    assert "round 0: proposed 12 runs" in out
    assert "ingested 12 results" in out
    assert "round 1: proposed 4 runs (thompson)" in out
    assert "'completed': 16" in out
    assert "Decision report" in out
    line = next(ln for ln in out.splitlines() if ln.startswith("recommended mixture: "))
    shares = {d: float(s) for d, s in (p.split() for p in line.split(": ", 1)[1].split(", "))}
    assert set(shares) == {"web", "code", "books", "wiki"}
    assert abs(sum(shares.values()) - 1) < 2e-3  # printed to 3 decimals
    assert shares["web"] <= 0.4 + 1e-3 and shares["books"] >= 0.1 - 1e-3  # the constraints
    assert (tmp_path / "loop" / "loop.db").is_file()
    assert (tmp_path / "loop" / "loop-round0.csv").is_file()


def test_read_in_arviz(tmp_path):
    out = run_example("read_in_arviz.py", "--out", str(tmp_path), *SMALL)
    assert "groups: constant_data, fit_data, log_likelihood, observed_data, posterior" in out
    assert "ess_bulk" in out and "r_hat" in out  # the arviz-stats summary table
    assert "elpd_loo" in out
    png = tmp_path / "arviz_ppc.png"
    assert png.is_file() and png.stat().st_size > 1000
    # the saved posterior is read again through --posterior, without refitting
    again = run_example(
        "read_in_arviz.py",
        "--out",
        str(tmp_path / "again"),
        "--posterior",
        str(tmp_path / "arviz_posterior.nc"),
    )
    assert "elpd_loo" in again and (tmp_path / "again" / "arviz_ppc.png").is_file()


def test_domain_change(tmp_path):
    out = run_example("domain_change.py", "--out", str(tmp_path), *SMALL)
    if not (REGMIX.parent / "mixinglaws" / "3Mix" / "410M.txt").is_file():
        assert "skipping" in out
        return
    assert "earlier swarm: 6 runs over Books3, Pile-CC" in out
    assert "fitted: 19 runs (6 remapped); held out: 13" in out
    assert (tmp_path / "add_github.toml").is_file()
    assert "absence of GitHub adds (nats/token)" in out and "held-out MAE: " in out


def test_domain_change_without_data(tmp_path):
    out = run_example("domain_change.py", "--out", str(tmp_path), "--data", str(tmp_path / "no"))
    assert "not found" in out and "skipping" in out


def test_repetition(tmp_path):
    out = run_example("repetition.py", "--out", str(tmp_path), *SMALL)
    assert "24 proxy runs of 1e+09 tokens" in out
    line = out.split("largest epochs: ")[1].splitlines()[0]  # "m4+repeat 38, m4 alone 122"
    aware, alone = (float(part.split()[-1]) for part in line.split(", "))
    # the known law's optimum at 2e11 tokens repeats wiki about 40 times; M4 alone asks ~120
    assert aware < 80 < alone
    assert (tmp_path / "repetition_decision.json").is_file()
