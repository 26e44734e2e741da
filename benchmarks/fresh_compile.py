"""Compilation in a fresh process: the fit_speed problem, cold then warm compile cache.

Runs a child process twice with the same empty temporary ``BAYESMIX_CACHE_DIR``: the first
(cold) compiles the model with nutpie and stores it, the second (warm) loads it. Each child
simulates the fit_speed data (5 x 5 domains, 40 runs), builds the model and gets nutpie's
compiled model as ``bayesmix.inference.fitting`` does, then exits without sampling. By default the
cold run also gets an empty temporary pytensor compiledir (a machine that never compiled anything);
``--keep-pytensor-cache`` uses pytensor's own per-operation cache instead (``~/.pytensor``).

Figures per run: ``*_s`` the compile step (build + compile or load, what ``fit`` records as
``compile_s``); ``*_ready_s`` from launching the child to ready-to-sample (Python start-up,
imports and data simulation included); ``*_process_s`` the child's whole wall time (exit too).
Run: ``.venv/bin/python benchmarks/fresh_compile.py``; the last line is
``fresh_compile cold_s=.. warm_s=.. cold_ready_s=.. warm_ready_s=.. entry_mb=..``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = """
import json, time, warnings
warnings.simplefilter("ignore")
from bayesmix.inference import compile_cache
from bayesmix.inference.fitting import _model_for
from bayesmix.model.model import prepare_data, select_for_fit
from bayesmix.model.simulation import simulate
from bayesmix.model.spec import load_spec

runs, _ = simulate(
    ["web", "code", "books", "papers", "wiki"], n_runs=40, random_seed=11, noise_sd=0.02
)
spec = load_spec("default")
table = select_for_fit(runs, law=spec.law)
data = prepare_data(table, spec.law)
start = time.perf_counter()
_model_for(spec, table, data, "nutpie")
print(json.dumps({"compile_s": time.perf_counter() - start, "ready_at": time.time(),
                  **compile_cache.stats}))
"""


def run_child(env: dict) -> dict:
    started_at, start = time.time(), time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["process_s"] = time.perf_counter() - start
    result["ready_s"] = result["ready_at"] - started_at
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--keep-pytensor-cache",
        action="store_true",
        help="cold run with pytensor's own compile cache (default: an empty one)",
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bayesmix-fresh-compile-") as tmp:
        env = {**os.environ, "BAYESMIX_CACHE_DIR": str(Path(tmp) / "cache")}
        env.pop("BAYESMIX_NO_COMPILE_CACHE", None)
        cold_env = dict(env)
        if not args.keep_pytensor_cache:
            cold_env["PYTENSOR_FLAGS"] = ",".join(
                filter(
                    None,
                    [env.get("PYTENSOR_FLAGS", ""), f"base_compiledir={Path(tmp) / 'pytensor'}"],
                )
            )
        cold = run_child(cold_env)
        print(
            f"cold: compile {cold['compile_s']:.1f} s, ready {cold['ready_s']:.1f} s, "
            f"process {cold['process_s']:.1f} s "
            f"(misses {cold['misses']}, stores {cold['stores']})",
            flush=True,
        )
        warm = run_child(env)
        print(
            f"warm: compile {warm['compile_s']:.1f} s, ready {warm['ready_s']:.1f} s, "
            f"process {warm['process_s']:.1f} s "
            f"(hits {warm['hits']})",
            flush=True,
        )
        files = sorted((Path(tmp) / "cache").rglob("*.nbm"))
        size_mb = sum(f.stat().st_size for f in files) / 1e6
        print(f"cache: {len(files)} entry, {size_mb:.2f} MB")
    print(
        f"fresh_compile cold_s={cold['compile_s']:.1f} warm_s={warm['compile_s']:.1f} "
        f"cold_ready_s={cold['ready_s']:.1f} warm_ready_s={warm['ready_s']:.1f} "
        f"entry_mb={size_mb:.2f}"
    )


if __name__ == "__main__":
    main()
