"""Fit speed on a small synthetic case: 5 training x 5 validation domains, 40 mixtures.

Every fit at ``fit``'s defaults (4 chains x 1000 draws after 1000 tuning, retried towards the
gate within ``max_time``):

* ``wall_s``: the first fit in a fresh process, compilation included (bayesmix default model,
  nutpie);
* ``refit_s``: a second fit with new data of the same shape, same process (compiled model reused);
* ``naive_wall_s``: the same data fitted by PyMC's own NUTS on the plain unconstrained M4
  parameterisation (independent c, k, t; compilation included).

Run: ``.venv/bin/python benchmarks/fit_speed.py`` (``--skip-naive`` for a quick run). The last
line is ``fit_speed wall_s=.. refit_s=.. naive_wall_s=.. ratio=.. min_ess_bulk=.. divergences=..``.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import pymc as pm

from bayesmix.inference.fitting import fit
from bayesmix.laws.m4 import build_naive_model
from bayesmix.model.model import prepare_data
from bayesmix.model.simulation import simulate

DOMAINS = ["web", "code", "books", "papers", "wiki"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-naive", action="store_true", help="skip the slow PyMC baseline")
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args()

    runs, _ = simulate(DOMAINS, n_runs=40, random_seed=args.seed, noise_sd=0.02)
    runs2, _ = simulate(DOMAINS, n_runs=40, random_seed=args.seed + 1, noise_sd=0.02)
    warnings.simplefilter("ignore")

    start = time.perf_counter()
    post = fit(runs, random_seed=1)
    wall = time.perf_counter() - start
    d = post.diagnostics
    print(
        f"first fit: {wall:.1f} s (compile {post.settings['compile_s']:.1f} s, sampling "
        f"{post.settings['sample_s']:.1f} s); divergences {d.divergences}, "
        f"min bulk ESS {d.min_ess_bulk:.0f}, max R-hat {d.max_rhat:.4f}",
        flush=True,
    )

    start = time.perf_counter()
    post2 = fit(runs2, random_seed=2)
    refit = time.perf_counter() - start
    d2 = post2.diagnostics
    print(
        f"refit:     {refit:.1f} s; divergences {d2.divergences}, min bulk ESS "
        f"{d2.min_ess_bulk:.0f}",
        flush=True,
    )

    naive = float("nan")
    if not args.skip_naive:
        data = prepare_data(runs)
        start = time.perf_counter()
        with build_naive_model(runs.train_domains, runs.eval_domains, data):
            tree = pm.sample(  # fit's default draws, tuning and chains, so the times compare
                draws=1000,
                tune=1000,
                chains=4,
                cores=2,
                random_seed=1,
                nuts_sampler="pymc",
                progressbar=False,
                compute_convergence_checks=False,
            )
        naive = time.perf_counter() - start
        stats = tree["sample_stats"]
        depth_hits = int(stats["reached_max_treedepth"].sum())
        print(
            f"naive:     {naive:.1f} s (PyMC NUTS, unconstrained c, k, t); max tree depth in "
            f"{depth_hits} of 4000 draws, divergences {int(stats['diverging'].sum())}",
            flush=True,
        )

    min_ess = min(d.min_ess_bulk, d2.min_ess_bulk)
    divergences = d.divergences + d2.divergences
    ratio = naive / wall if np.isfinite(naive) else float("nan")
    print(
        f"fit_speed wall_s={wall:.1f} refit_s={refit:.1f} naive_wall_s={naive:.1f} "
        f"ratio={ratio:.1f} min_ess_bulk={min_ess:.0f} divergences={divergences}"
    )


if __name__ == "__main__":
    main()
