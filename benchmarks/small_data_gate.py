"""Do fits of the first rounds of a loop (16-64 runs) pass the diagnostics gate at the first
attempt, at defaults (issue 27 item 3)?

Simulated runs as in ``make demo`` (:func:`bayesmix.simulate`, 5 x 5 domains, noise sd 0.02,
truth seed 2024), 16 / 24 / 32 / 48 / 64 runs, sampler seeds 1-3, ``bm.fit`` at its defaults
with ``max_time=0`` (one sampling: the retries are a safety net, this measures the first
attempt). One line per fit; the last line is
``small_data_gate fits=.. first_attempt_passed=.. divergences=.. min_ess=..``.

Run: ``.venv/bin/python benchmarks/small_data_gate.py [--model default] [--runs 16,24]``.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import bayesmix as bm

DOMAINS = ["web", "code", "books", "papers", "wiki"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default", help="model specification (default: default)")
    ap.add_argument("--runs", default="16,24,32,48,64", help="numbers of runs")
    ap.add_argument("--seeds", default="1,2,3", help="sampler seeds")
    args = ap.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} (1 min)")
    passed = fits = divergences = 0
    min_ess = float("inf")
    for n in (int(x) for x in args.runs.split(",")):
        runs, _ = bm.simulate(DOMAINS, n_runs=n, random_seed=2024, noise_sd=0.02)
        for seed in (int(x) for x in args.seeds.split(",")):
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the gate's result is printed below
                d = bm.fit(runs, args.model, random_seed=seed, max_time=0).diagnostics
            fits, passed = fits + 1, passed + d.ok
            divergences += d.divergences
            min_ess = min(min_ess, d.min_ess_bulk)
            print(
                f"{args.model} runs={n} seed={seed} s={time.perf_counter() - start:.1f} "
                f"gate={'passed' if d.ok else 'FAILED'} divergences={d.divergences} "
                f"rhat={d.max_rhat:.3f} ess={d.min_ess_bulk:.0f} ({d.worst_ess}) "
                f"bfmi={d.min_bfmi:.2f}",
                flush=True,
            )
    print(f"load average {os.getloadavg()[0]:.2f} (1 min)")
    print(
        f"small_data_gate fits={fits} first_attempt_passed={passed} "
        f"divergences={divergences} min_ess={min_ess:.0f}"
    )


if __name__ == "__main__":
    main()
