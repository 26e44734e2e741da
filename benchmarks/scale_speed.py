"""Where the time of a fit goes at realistic sizes, at ``fit``'s defaults.

Cases, each in a fresh Python process (``--case a|b|c`` runs one in this process):

* ``a`` RegMix 1M (../shared/data/regmix, or --data): all 512 training runs (17 training x 13
  validation domains), model ``logshare``; time of ``fit()`` (compilation included, every
  attempt towards the gate) and whether the gate passed, and the Spearman rank correlation of
  the predicted and true Pile-CC loss on the 256 test runs;
* ``b`` a simulated Olmix-like swarm (:func:`swarm_runs`): 64 training x 16 validation
  domains, 512 sparse Dirichlet mixtures (each share dropped with probability 0.85, so most
  shares are exactly zero), losses drawn from the ``logshare`` law under priors scaled for 64
  domains (``SWARM_PRIORS``), fitted with the same specification;
* ``c`` the fit_speed problem (benchmarks/fit_speed.py: 5 x 5 domains, 40 runs, ``default``)
  fitted in a fresh process after an earlier process fitted it (whatever the cross-process
  compile cache holds then): ``fit()`` time in the second process (its import time is printed
  separately).

Each case prints its profile: compile and sampling seconds, one logp + gradient evaluation in
ms (the compiled function called from Python, a few microseconds of call overhead included),
mean leapfrog steps per draw, the draws of the attempt kept and how many attempts were made.
``benchmarks/gate_defaults.py`` measures the gate at defaults over seeds and laws; this script
says where one fit's time goes. Run: ``.venv/bin/python benchmarks/scale_speed.py``. The last
line::

    scale_speed regmix512_s=.. regmix512_gate=passed|failed regmix512_spearman=..
    swarm64_s=.. swarm64_gate=.. fresh_process_s=..
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import time
import warnings
from pathlib import Path

T_IMPORT = time.perf_counter()
import numpy as np  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "regmix"
RESULT = "case_result"


def grad_ms(post) -> float:
    """One logp + gradient evaluation of the fitted model, in ms, at a posterior draw."""
    from bayesmix.inference.nutpie_adapter import logp_and_grad

    fit_module = importlib.import_module("bayesmix.inference.fitting")
    compiled = next((c for _, c in fit_module._COMPILED.values() if c is not None), None)
    if compiled is None:
        return float("nan")
    # the sampler's own C callback (also for a model loaded from the compile cache)
    x = np.zeros(compiled.n_dim)
    logp_and_grad(compiled, x)
    n, start = 200, time.perf_counter()
    for _ in range(n):
        logp_and_grad(compiled, x)
    return (time.perf_counter() - start) / n * 1e3


def profile(post, wall: float) -> str:
    """One line: wall, compile, sampling, grad ms, steps per draw, chains x draws, gate."""
    d, s = post.diagnostics, post.settings
    steps = post.tree["sample_stats"]["n_steps"].values
    return (
        f"fit {wall:.1f} s = compile {s['compile_s']:.1f} s + sampling {s['sample_s']:.1f} s; "
        f"grad eval {grad_ms(post):.3f} ms; steps/draw {steps.mean():.0f} "
        f"(median {np.median(steps):.0f}); {d.chains} x {d.draws} draws after "
        f"{s['tune']} tuning ({len(s['attempts'])} attempt(s)); min bulk ESS "
        f"{d.min_ess_bulk:.0f} ({d.worst_ess}), max R-hat "
        f"{d.max_rhat:.3f}, divergences {d.divergences}; gate "
        f"{'passed' if d.ok else 'FAILED: ' + '; '.join(d.failed)}"
    )


def gate(post) -> str:
    d = post.diagnostics
    return "passed" if d.ok and d.min_ess_bulk >= 400 else "failed"


def case_a(args) -> dict:
    from scipy.stats import spearmanr

    from bayesmix.data.loaders import load
    from bayesmix.inference.fitting import fit

    if not (args.data / "train_mixture_1m.csv").is_file():
        raise SystemExit(f"RegMix data not found in {args.data} (pass --data)")
    train = load([args.data / "train_mixture_1m.csv", args.data / "train_pile_loss_1m.csv"])
    test = load([args.data / "test_mixture_1m.csv", args.data / "test_pile_loss_1m.csv"])
    start = time.perf_counter()
    post = fit(train, "logshare", random_seed=args.seed, warn=False)
    wall = time.perf_counter() - start
    print(f"[a] regmix512: {profile(post, wall)}", flush=True)
    pred = post.predict(test.mixtures, random_seed=args.seed)
    truth = test.losses.loc[list(test.mixtures.index), list(post.eval_domains)].to_numpy()
    mean = pred.mean.mean(("chain", "draw")).transpose("mixture", "eval_domain").values
    j = post.eval_domains.index("pile_cc")
    rho = float(spearmanr(mean[:, j], truth[:, j]).statistic)
    return {
        "regmix512_s": f"{wall:.1f}",
        "regmix512_gate": gate(post),
        "regmix512_spearman": f"{rho:.4f}",
    }


#: Priors of the swarm case: the logshare defaults are scaled for about 17 domains; with 64, a
#: sum of 64 log-share terms needs slopes about 5x smaller to keep losses finite.
SWARM_PRIORS = {
    "v_mu": {"dist": "Normal", "mu": 0.0, "sigma": 0.02},
    "v_sigma": {"dist": "HalfNormal", "sigma": 0.01},
    "diag_v_mu": {"dist": "Normal", "mu": -0.03, "sigma": 0.02},
    "b_mu": {"dist": "ZeroSumNormal", "sigma": 0.2},
    "b_sigma": {"dist": "HalfNormal", "sigma": 0.1},
}


def swarm_runs(first_seed: int = 1):
    """The swarm's runs, its specification (``logshare`` with :data:`SWARM_PRIORS`) and the
    truth's seed: the first seed from ``first_seed`` whose largest loss is at most 3.5x the
    median (a tame truth, as a real swarm's would be)."""
    from bayesmix import errors
    from bayesmix.model.simulation import simulate_law
    from bayesmix.model.spec import load_spec

    spec = load_spec("logshare").with_priors(**SWARM_PRIORS)
    for seed in range(first_seed, first_seed + 100):
        try:
            runs, _ = simulate_law(
                spec,
                64,
                16,
                n_runs=512,
                random_seed=seed,
                noise_sd=0.02,
                zero_fraction=0.85,
                concentration=1.0,
            )
        except errors.BayesmixError:  # a prior draw with absurd losses: next seed
            continue
        y = runs.losses.to_numpy()
        if np.nanmax(y) <= 3.5 * np.nanmedian(y):
            return runs, spec, seed
    raise SystemExit("no tame swarm truth in 100 seeds")


def case_b(args) -> dict:
    from bayesmix.inference.fitting import fit

    runs, spec, seed = swarm_runs(args.seed)
    zeros = float((runs.mixtures.to_numpy() == 0).mean())
    print(
        f"[b] swarm (seed {seed}): {runs.n_runs} runs, {len(runs.train_domains)} x "
        f"{len(runs.eval_domains)} domains, {100 * zeros:.0f}% of shares zero",
        flush=True,
    )
    start = time.perf_counter()
    post = fit(runs, spec, random_seed=args.seed, warn=False)
    wall = time.perf_counter() - start
    print(f"[b] swarm64: {profile(post, wall)}", flush=True)
    return {"swarm64_s": f"{wall:.1f}", "swarm64_gate": gate(post)}


def case_c_fit(args) -> dict:
    from bayesmix.inference.fitting import fit
    from bayesmix.model.simulation import simulate

    runs, _ = simulate(
        ["web", "code", "books", "papers", "wiki"], n_runs=40, random_seed=11, noise_sd=0.02
    )
    imported = time.perf_counter() - T_IMPORT
    start = time.perf_counter()
    post = fit(runs, random_seed=1, warn=False)
    wall = time.perf_counter() - start
    print(
        f"[c] fit_speed problem, fresh process: imports {imported:.1f} s; {profile(post, wall)}",
        flush=True,
    )
    return {"fresh_process_s": f"{wall:.1f}", "fresh_import_s": f"{imported:.1f}"}


def case_c(args) -> dict:
    """Two fresh processes fit the same problem; the second is timed."""
    first = _subprocess("c-fit", args)
    print(f"[c] first process: fit {first.get('fresh_process_s')} s", flush=True)
    return _subprocess("c-fit", args)


CASES = {"a": case_a, "b": case_b, "c": case_c, "c-fit": case_c_fit}


def _subprocess(case: str, args) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--case",
        case,
        "--seed",
        str(args.seed),
        "--data",
        str(args.data),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    result = {}
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT + " "):
            result = dict(kv.split("=", 1) for kv in line.split()[1:])
        elif case != "c-fit" or not line.startswith("[c] first"):
            print(line, flush=True)
    if proc.returncode != 0 or not result:
        print(proc.stderr[-2000:], file=sys.stderr)
        raise SystemExit(f"case {case} failed (exit {proc.returncode})")
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", choices=sorted(CASES), help="run one case in this process")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of the RegMix CSVs")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    if args.case:
        result = CASES[args.case](args)
        print(RESULT + " " + " ".join(f"{k}={v}" for k, v in result.items()), flush=True)
        return
    out = {}
    for case in ("a", "b", "c"):
        out.update(_subprocess(case, args))
    print(
        "scale_speed "
        + " ".join(
            f"{k}={out.get(k, 'nan')}"
            for k in (
                "regmix512_s",
                "regmix512_gate",
                "regmix512_spearman",
                "swarm64_s",
                "swarm64_gate",
                "fresh_process_s",
            )
        )
    )


if __name__ == "__main__":
    main()
