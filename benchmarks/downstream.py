"""Many downstream targets in one posterior, on Olmix's public DCLM swarm (24 topic domains,
127 proxy runs, ~110 downstream evaluations in bits per byte).

Trains on the first 96 runs by ``index``, scores the other 31 on every evaluation: per task the
Spearman correlation of the predicted mean with the truth, the mean absolute error, and the
share of true values inside the 90% predictive intervals. Beside it, Olmix's own fit: per task,
``c + exp(b + t . r)`` by least squares with a Huber loss (scipy's ``least_squares``), scored the
same way (no intervals).

Run: ``python benchmarks/downstream.py`` (``--model`` another specification, ``--select`` a
subset of tasks by name, glob or family; data from ../shared/data/olmix or ``--data``). The last
line is ``downstream tasks=.. mean_spearman=.. mean_mae=.. coverage90=.. fit_s=.. gate=..``.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from pathlib import Path

import numpy as np
from scipy.optimize import least_squares
from scipy.stats import spearmanr

from bayesmix.data.downstream import load_tasks
from bayesmix.decisions.task_groups import TaskGroups, worst_group
from bayesmix.inference.fitting import fit
from bayesmix.laws.tasks import family_index

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "olmix"
N_TRAIN = 96


def olmix_fit(r_train, y_train, r_test) -> np.ndarray:
    """Olmix's log-linear law per task: ``c + exp(b + t . r)``, Huber least squares; the
    predictions (n_test, K)."""
    out = np.empty((len(r_test), y_train.shape[1]))
    m = r_train.shape[1]
    for i in range(y_train.shape[1]):
        y = y_train[:, i]
        c0 = 0.5 * y.min()
        x0 = np.concatenate([[c0, np.log(y.mean() - c0)], np.zeros(m)])

        def resid(p, y=y):
            return p[0] + np.exp(p[1] + r_train @ p[2:]) - y

        sol = least_squares(resid, x0, loss="huber", f_scale=0.5 * y.std())
        p = sol.x
        out[:, i] = p[0] + np.exp(p[1] + r_test @ p[2:])
    return out


def scores(pred, truth, lo=None, hi=None) -> dict:
    """Per-task means of Spearman and MAE [and 90% coverage]."""
    rho = [spearmanr(pred[:, i], truth[:, i]).statistic for i in range(truth.shape[1])]
    out = {
        "spearman": np.asarray(rho),
        "mae": np.abs(pred - truth).mean(axis=0),
    }
    if lo is not None:
        out["coverage"] = ((truth >= lo) & (truth <= hi)).mean(axis=0)
    return out


def decisions(post) -> None:
    """The worst-family mixture against the uniform one, and what it buys per family."""
    t0 = time.perf_counter()
    groups = TaskGroups.build(post.eval_domains)
    dec = worst_group(post, groups)
    fam = dec.changes[dec.changes["kind"] == "group"]
    tasks = dec.changes[dec.changes["kind"] == "task"]
    top = sorted(dec.mixture.items(), key=lambda kv: -kv[1])[:4]
    print(
        f"worst-family mixture ({time.perf_counter() - t0:.1f} s): "
        + ", ".join(f"{d} {v:.2f}" for d, v in top)
        + f"; worst family change {dec.worst:+.4f} vs uniform; families improved "
        f"{int((fam['change'] < 0).sum())}/{len(fam)}, tasks improved with P > 0.9 "
        f"{int((tasks['p_better'] > 0.9).sum())}/{len(tasks)}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of the Olmix CSVs")
    ap.add_argument("--model", default="tasks", help="model specification (default: tasks)")
    ap.add_argument("--select", nargs="*", help="tasks: names, globs or families (default all)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    if not (args.data / "dclm_ratios.csv").is_file():
        raise SystemExit(f"Olmix data not found in {args.data} (pass --data)")
    tasks = load_tasks(
        args.data / "dclm_ratios.csv", args.data / "dclm_metrics.csv", select=args.select
    )
    order = tasks.runs_by_index()
    train, test = tasks.table.select(order[:N_TRAIN]), tasks.table.select(order[N_TRAIN:])
    names = list(tasks.names)
    families, fam_of = family_index(names)
    print(
        f"{len(names)} tasks in {len(families)} families, "
        f"{len(tasks.table.train_domains)} training domains; train {train.n_runs} runs, "
        f"test {test.n_runs}",
        flush=True,
    )

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        post = fit(train, args.model, random_seed=args.seed)
    fit_s = post.settings["compile_s"] + post.settings["sample_s"]
    d = post.diagnostics
    gate = "passed" if d.ok else "failed"
    print(
        f"bayesmix {post.spec.name!r} (law {post.spec.law}): compile "
        f"{post.settings['compile_s']:.1f} s, sampling {post.settings['sample_s']:.1f} s; "
        f"divergences {d.divergences}, min bulk ESS {d.min_ess_bulk:.0f}, max R-hat "
        f"{d.max_rhat:.3f}, gate {gate}",
        flush=True,
    )
    if post.diagnostics_warning:
        print(f"WARNING: {post.diagnostics_warning}", flush=True)

    runs = list(test.mixtures.index)
    truth = test.losses.loc[runs, names].to_numpy()
    pred = post.predict(test.mixtures.loc[runs], random_seed=args.seed)
    mean = pred.mean.mean(("chain", "draw")).transpose("mixture", "eval_domain").values
    draws = (
        pred.predictive.stack(sample=("chain", "draw"))
        .transpose("mixture", "eval_domain", "sample")
        .values
    )
    lo, hi = np.quantile(draws, [0.05, 0.95], axis=-1)
    ours = scores(mean, truth, lo, hi)

    r_train = train.mixtures.to_numpy()
    y_train = train.losses.loc[list(train.mixtures.index), names].to_numpy()
    t0 = time.perf_counter()
    olmix = scores(olmix_fit(r_train, y_train, test.mixtures.loc[runs].to_numpy()), truth)
    olmix_s = time.perf_counter() - t0

    fams = np.asarray(fam_of)
    print(
        f"{'family':18s} {'n':>3s}  {'spearman':>8s} {'olmix':>6s}  {'mae':>6s} {'olmix':>6s}"
        f"  {'cov90':>5s}"
    )
    for f, fam in enumerate(families):
        sel = fams == f
        print(
            f"{fam[:18]:18s} {sel.sum():3d}  {ours['spearman'][sel].mean():8.3f} "
            f"{olmix['spearman'][sel].mean():6.3f}  {ours['mae'][sel].mean():6.3f} "
            f"{olmix['mae'][sel].mean():6.3f}  {ours['coverage'][sel].mean():5.2f}"
        )
    print(
        f"olmix log-linear (Huber, per task, {olmix_s:.1f} s): mean_spearman="
        f"{olmix['spearman'].mean():.3f} mean_mae={olmix['mae'].mean():.4f}"
    )
    decisions(post)
    print(f"uptime: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    print(
        f"downstream tasks={len(names)} mean_spearman={ours['spearman'].mean():.3f} "
        f"mean_mae={ours['mae'].mean():.4f} coverage90={ours['coverage'].mean():.3f} "
        f"fit_s={fit_s:.0f} gate={gate}"
    )


if __name__ == "__main__":
    main()
