"""Implicit vs explicit aggregation of the overall Pile validation loss, out of sample.

Data: Ye et al.'s 5-domain set, ``../shared/data/mixinglaws/5Mix/70M.txt`` at step 30000 (26
mixtures of academic, prose, dialogue, symbolic, internet; 22 Pile validation domains). The
overall loss of a run is the token-share weighted sum of its 22 domain losses, with the Pile's
validation token shares ``mixinglaws/pipeline/valid_weight.json``. Split: a permutation of the
26 run ids (in file order) drawn with ``numpy.random.default_rng(SPLIT_SEED = 0)``; its first 6
are held out, the other 20 fitted.

* explicit: the per-domain ``default`` (M4) law fitted to the 22 domain losses of the 20 runs;
  the 6 held-out runs' overall loss predicted as the weighted sum of the per-domain predictions
  (``Prediction.aggregate``: each draw's weighted sum; the predictive adds each domain's noise);
* implicit: the ``implicit`` law fitted to the overall loss of the 20 runs with K in (1, 3, 5)
  latent domains; K chosen by PSIS-LOO (:func:`bayesmix.scaling.aggregate.choose_latent`, smallest K
  within 1 SE of the best ELPD). ``implicit_mae`` is the MAE of the K chosen (chosen without
  the held-out runs); every K's MAE is reported too.

For reference, the paper's method is reproduced too: the implicit law fitted by least squares
(:func:`least_squares_implicit`, best of 30 seeded starts), in-sample and held-out MAE per K.

Scores on the 6 held-out runs: MAE of the posterior mean overall loss (nats per token) and the
share of the 6 overall losses inside the 90% equal-tailed posterior predictive interval.
Reference (Ye et al.'s code, least squares, possibly in-sample): explicit 0.0086; implicit
K = 1 / 3 / 5: 0.0268 / 0.0104 / 0.0027. Last line::

    implicit_aggregation implicit_mae=.. explicit_mae=.. k=.. wall_s=..

Run: ``.venv/bin/python benchmarks/implicit_aggregation.py [--draws N --tune N --chains N]``.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from bayesmix.data.loaders import load
from bayesmix.data.mixtures import domain_weights
from bayesmix.inference.fitting import fit
from bayesmix.scaling.aggregate import aggregate_losses, choose_latent

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mixinglaws"
STEP = 30000
SPLIT_SEED = 0
N_HELD_OUT = 6
KS = (1, 3, 5)
PROB = 0.9
REFERENCE = {"explicit": 0.0086, "implicit": {1: 0.0268, 3: 0.0104, 5: 0.0027}}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def split(run_ids, seed: int = SPLIT_SEED, n_held: int = N_HELD_OUT):
    """(fit ids, held-out ids): the first ``n_held`` of a seeded permutation are held out."""
    order = np.random.default_rng(seed).permutation(len(run_ids))
    ids = [run_ids[i] for i in order]
    return ids[n_held:], ids[:n_held]


def least_squares_implicit(r_fit, y_fit, r_test, k: int, starts: int = 30, seed: int = 0):
    """The paper's fit: ``L = c + sum_k exp(a_k + t_k . r)`` (its law with s_k k_k = e^{a_k})
    by least squares from ``starts`` random starts; returns (in-sample, held-out) predictions."""
    from scipy.optimize import least_squares

    m = r_fit.shape[1]

    def law(p, r):
        a, t = p[1 : 1 + k], p[1 + k :].reshape(k, m)
        return p[0] + np.exp(a[None, :] + r @ t.T).sum(-1)

    rng = np.random.default_rng(seed)
    best = None
    for _ in range(starts):
        x0 = np.r_[y_fit.min() - 0.1, np.full(k, np.log(0.5 / k)), rng.normal(0, 1, k * m)]
        res = least_squares(lambda p: law(p, r_fit) - y_fit, x0)
        if best is None or res.cost < best.cost:
            best = res
    return law(best.x, r_fit), law(best.x, r_test)


def overall_scores(samples: np.ndarray, mean: np.ndarray, observed: np.ndarray) -> dict:
    """MAE of ``mean`` (n,) and 90% coverage of the predictive ``samples`` (S, n)."""
    lo, hi = np.quantile(samples, [(1 - PROB) / 2, (1 + PROB) / 2], axis=0)
    return {
        "mae": float(np.abs(mean - observed).mean()),
        "coverage90": float(((observed >= lo) & (observed <= hi)).mean()),
        "pred": mean.tolist(),
        "lower": lo.tolist(),
        "upper": hi.tolist(),
    }


def run(
    seed: int = 0,
    data: Path | str = DEFAULT_DATA,
    ks=KS,
    mcmc: dict | None = None,
) -> dict:
    """Fit both ways and score the held-out overall losses (see the module docstring).
    ``mcmc``: draws, tune, chains of every fit (default: fit's own).

    Returns a dict with ``implicit_mae``, ``explicit_mae`` (nats per token), ``implicit_k``
    (chosen by LOO), ``coverage90_implicit``, ``coverage90_explicit``, ``wall_s``, and
    ``implicit_by_k`` ({K: {mae, coverage90, gate, ...}}), ``loo`` (the PSIS-LOO table as
    records), ``least_squares_by_k`` ({K: {mae, mae_in_sample}}), ``explicit_gate``,
    ``held_out`` (run ids), ``observed`` (their overall losses).
    """
    start = time.perf_counter()
    data = Path(data)
    weights_file = data / "pipeline" / "valid_weight.json"
    table = load(data / "5Mix" / "70M.txt").at_step(STEP)
    fit_ids, held = split(list(table.runs))
    fit_runs, test_runs = table.select(fit_ids), table.select(held)
    observed = aggregate_losses(test_runs, weights_file).losses["overall"].to_numpy(float)
    fit_kw = {**(mcmc or {}), "random_seed": seed, "warn": False}

    log(f"explicit: default (M4) on {fit_runs.n_runs} runs x {len(table.eval_domains)} domains")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        explicit = fit(fit_runs, "default", **fit_kw)
    w = domain_weights(weights_file, explicit.eval_domains)
    pred = explicit.predict(test_runs.mixtures, random_seed=seed)
    mean = pred.aggregate(w, "mean").mean(("chain", "draw")).values
    samples = (
        pred.aggregate(w, "predictive")
        .stack(sample=("chain", "draw"))
        .transpose("sample", "mixture")
        .values
    )
    out_explicit = overall_scores(samples, mean, observed)

    log(f"implicit: K in {tuple(ks)} on the overall loss of {fit_runs.n_runs} runs")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        choice = choose_latent(aggregate_losses(fit_runs, weights_file), ks, **fit_kw)
    by_k = {}
    for k, post in choice.posteriors.items():
        p = post.predict(test_runs.mixtures, random_seed=seed)
        by_k[k] = overall_scores(
            p.predictive.isel(eval_domain=0)
            .stack(sample=("chain", "draw"))
            .transpose("sample", "mixture")
            .values,
            p.mean.isel(eval_domain=0).mean(("chain", "draw")).values,
            observed,
        )
        by_k[k].update(
            gate=post.diagnostics.ok,
            why=post.diagnostics_warning or "",
            fit_s=post.settings["compile_s"] + post.settings["sample_s"],
        )
    y_fit = aggregate_losses(fit_runs, weights_file).losses["overall"].to_numpy(float)
    least_squares = {}
    for k in ks:
        inside, held_pred = least_squares_implicit(
            fit_runs.mixtures.to_numpy(float), y_fit, test_runs.mixtures.to_numpy(float), k
        )
        least_squares[k] = {
            "mae_in_sample": float(np.abs(inside - y_fit).mean()),
            "mae": float(np.abs(held_pred - observed).mean()),
        }
    loo = choice.table[["latent", "elpd_loo", "se", "elpd_diff", "dse", "p_loo", "n_high_pareto_k"]]
    return {
        "implicit_mae": by_k[choice.k]["mae"],
        "explicit_mae": out_explicit["mae"],
        "implicit_k": choice.k,
        "coverage90_implicit": by_k[choice.k]["coverage90"],
        "coverage90_explicit": out_explicit["coverage90"],
        "wall_s": time.perf_counter() - start,
        "implicit_by_k": by_k,
        "explicit": out_explicit,
        "explicit_gate": explicit.diagnostics.ok,
        "explicit_why": explicit.diagnostics_warning or "",
        "loo": loo.to_dict("records"),
        "least_squares_by_k": least_squares,
        "held_out": held,
        "observed": observed.tolist(),
        "settings": {
            **(mcmc or {}),
            "seed": seed,
            "step": STEP,
            "split_seed": SPLIT_SEED,
        },
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--draws", type=int, help="draws per chain (default: fit's)")
    ap.add_argument("--tune", type=int, help="tuning steps per chain (default: fit's)")
    ap.add_argument("--chains", type=int, help="chains (default: fit's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--data",
        type=Path,
        default=DEFAULT_DATA,
        help="the mixinglaws folder (default ../shared/data/mixinglaws)",
    )
    args = ap.parse_args(argv)
    if not (args.data / "5Mix" / "70M.txt").is_file():
        sys.exit(f"data not found: {args.data / '5Mix' / '70M.txt'}")
    mcmc = {k: v for k in ("draws", "tune", "chains") if (v := getattr(args, k)) is not None}
    res = run(args.seed, args.data, mcmc=mcmc)
    print(
        f"5Mix 70M, step {STEP}: fit {26 - N_HELD_OUT} runs, held out {N_HELD_OUT} "
        f"({', '.join(res['held_out'])}); overall = Pile token-share weighted loss"
    )
    print(f"{'method':<16} {'mae':>8} {'cover90':>8} {'reference':>10}  gate")
    e = res["explicit"]
    print(
        f"{'explicit (M4)':<16} {e['mae']:8.4f} {e['coverage90']:8.2f} "
        f"{REFERENCE['explicit']:10.4f}  "
        f"{'passed' if res['explicit_gate'] else 'FAILED: ' + res['explicit_why']}"
    )
    for k, m in res["implicit_by_k"].items():
        mark = " (LOO)" if k == res["implicit_k"] else ""
        print(
            f"{f'implicit K={k}{mark}':<16} {m['mae']:8.4f} {m['coverage90']:8.2f} "
            f"{REFERENCE['implicit'].get(k, float('nan')):10.4f}  "
            f"{'passed' if m['gate'] else 'FAILED: ' + m['why']}"
        )
    for k, m in res["least_squares_by_k"].items():
        print(
            f"{f'least sq. K={k}':<16} {m['mae']:8.4f} {'':>8} "
            f"{REFERENCE['implicit'].get(k, float('nan')):10.4f}  "
            f"(paper's method; in-sample MAE {m['mae_in_sample']:.4f})"
        )
    print("held-out overall losses and posterior means:")
    print(
        f"  {'run':<8} {'observed':>9} {'explicit':>9} "
        + " ".join(f"{f'K={k}':>9}" for k in res["implicit_by_k"])
    )
    for i, run_id in enumerate(res["held_out"]):
        print(
            f"  {run_id:<8} {res['observed'][i]:9.4f} {e['pred'][i]:9.4f} "
            + " ".join(f"{m['pred'][i]:9.4f}" for m in res["implicit_by_k"].values())
        )
    print("PSIS-LOO (leave one run out):")
    for row in res["loo"]:
        print(
            f"  K={row['latent']}: elpd_loo {row['elpd_loo']:.1f} (se {row['se']:.1f}), "
            f"diff {row['elpd_diff']:.1f} (dse {row['dse']:.1f}), p_loo {row['p_loo']:.1f}, "
            f"high Pareto k {row['n_high_pareto_k']}"
        )
    print(
        f"implicit_aggregation implicit_mae={res['implicit_mae']:.4f} "
        f"explicit_mae={res['explicit_mae']:.4f} k={res['implicit_k']} "
        f"wall_s={res['wall_s']:.0f}"
    )


if __name__ == "__main__":
    main()
