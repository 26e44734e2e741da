"""Regret of the recommended mixture on simulated problems with a known optimum.

For every seed and size (5 training x 5 validation domains from 32 runs; 17 x 13, the RegMix
shape, from 64 runs) :func:`bayesmix.model.simulation.simulate` draws a random M4 law and noisy
proxy runs, the default model is fitted with the real MCMC (``fit``'s defaults), and
:func:`bayesmix.decisions.decision.decide` picks the mixture minimising the posterior expected
overall loss (equal weights over validation domains) under two constraint sets:

* ``none``: the plain simplex;
* ``caps``: token caps (4 epochs, 1e11 target tokens) that halve the shares of the two domains
  the *true* optimum likes most, so the caps bind.

Figures per problem: regret = true loss of the recommendation - true optimal loss under the same
constraints (nats per token, noise-free, from the simulator's law); the same for the 0.9-quantile
objective, the uniform mixture (projected onto the constraints) and the best observed feasible
run, for scale; feasibility of the recommendations and of every per-draw optimum; the time of
:func:`bayesmix.decisions.optimize.draw_optima` on 4000 draws (the posterior's draws resampled to
4000).

Run: ``.venv/bin/python benchmarks/optimize_accuracy.py`` (``--seeds 3`` for a quick look). The
last line is ``optimize_accuracy median_regret=.. p90_regret=.. feasible=all draws_per_s=..``
(``feasible=N_bad`` when N recommendations or per-draw optima violate a constraint).
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

from bayesmix.data.constraints import Constraints
from bayesmix.decisions.decision import decide
from bayesmix.decisions.draws import exp_terms
from bayesmix.decisions.feasible import centre
from bayesmix.decisions.optimize import draw_optima, minimize_objective
from bayesmix.inference.fitting import fit
from bayesmix.laws.solvers import solve_exp_sum
from bayesmix.model.simulation import simulate

#: (training domains, validation domains, proxy runs)
SIZES = [(5, 5, 32), (17, 13, 64)]
MAX_EPOCHS, TARGET_TOKENS = 4.0, 1e11
TIMING_DRAWS = 4000


def true_optimum(truth, w, c: Constraints) -> tuple[np.ndarray, float]:
    """Exact optimum of the noise-free overall loss under ``c`` (one convex problem)."""
    params = {k: np.asarray(truth[k])[None] for k in ("m", "rho", "t")}
    _, a, t = exp_terms(params, w)
    x, ok = solve_exp_sum(a, t, c.lower, c.upper, x0=centre(c), tol=1e-12, max_iter=200)
    assert ok.all()
    return x[0], float(true_loss(truth, w, x[0]))


def true_loss(truth, w, r) -> np.ndarray:
    return truth.true_loss(np.asarray(r, float)) @ w


def caps_for(truth, w, train) -> Constraints:
    """Token caps that halve the two largest shares of the true unconstrained optimum."""
    r, _ = true_optimum(truth, w, Constraints.build(train))
    top = np.argsort(r)[-2:]
    tokens = {train[j]: 0.5 * r[j] * TARGET_TOKENS / MAX_EPOCHS for j in top}
    return Constraints.build(
        train, tokens_available=tokens, max_epochs=MAX_EPOCHS, target_tokens=TARGET_TOKENS
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=20, help="problems per size (default 20)")
    ap.add_argument("--chains", type=int, help="chains (default: fit's)")
    ap.add_argument("--sizes", default="5,17", help="training-domain counts to run (5, 17)")
    args = ap.parse_args()
    warnings.simplefilter("ignore")  # the diagnostics gate's warnings; counted below instead

    rows = []
    wanted = {int(v) for v in args.sizes.split(",")}
    mcmc = {"chains": args.chains} if args.chains else {}
    for n_train, n_eval, n_runs in SIZES:
        if n_train not in wanted:
            continue
        for seed in range(args.seeds):
            runs, truth = simulate(n_train, n_eval, n_runs=n_runs, random_seed=seed, noise_sd=0.02)
            t0 = time.perf_counter()
            post = fit(runs, random_seed=seed, warn=False, **mcmc)
            fit_s = time.perf_counter() - t0
            train = list(post.train_domains)
            w = np.full(n_eval, 1.0 / n_eval)
            params = post.law_params()
            pick = np.random.default_rng(seed).integers(0, len(params["m"]), TIMING_DRAWS)
            many = {k: params[k][pick] for k in ("m", "rho", "t")}
            observed = runs.losses[list(post.eval_domains)].to_numpy() @ w
            mixes = runs.mixtures[train].to_numpy()
            cases = (("none", Constraints.build(train)), ("caps", caps_for(truth, w, train)))
            for name, c in cases:
                _, best_true = true_optimum(truth, w, c)
                rep = decide(post, constraints=c)
                rec = rep.mixture.to_numpy()
                q_rec = minimize_objective(params, c, w, "quantile:0.9").mixture
                t1 = time.perf_counter()
                optima, ok = draw_optima(many, c, w)
                opt_s = time.perf_counter() - t1
                bad = (
                    int(not c.contains(rec))
                    + int(not c.contains(q_rec))
                    + int((~c.contains(optima)).sum())
                    + int((~c.contains(rep.draw_optima.values)).sum())
                )
                feasible_runs = c.contains(mixes)
                best_run = (
                    true_loss(truth, w, mixes[feasible_runs][np.argmin(observed[feasible_runs])])
                    - best_true
                    if feasible_runs.any()
                    else np.nan
                )
                row = {
                    "domains": n_train,
                    "seed": seed,
                    "constraints": name,
                    "regret": float(true_loss(truth, w, rec)) - best_true,
                    "regret_q90": float(true_loss(truth, w, q_rec)) - best_true,
                    "regret_uniform": float(true_loss(truth, w, centre(c))) - best_true,
                    "regret_best_run": float(best_run),
                    "bad": bad,
                    "draws_per_s": TIMING_DRAWS / opt_s,
                    "unconverged": int((~ok).sum()),
                    "fit_s": fit_s,
                    "diagnostics_ok": post.diagnostics.ok,
                }
                rows.append(row)
                print(
                    f"[{n_train:>2} domains, seed {seed:>2}, {name:<4}] "
                    f"regret {row['regret']:.5f} (q90 {row['regret_q90']:.5f}, uniform "
                    f"{row['regret_uniform']:.4f}, best run {row['regret_best_run']:.4f}) "
                    f"infeasible {bad} | {TIMING_DRAWS} draw optima {opt_s:.2f} s "
                    f"({row['unconverged']} unconverged) | fit {fit_s:.0f} s, diagnostics "
                    f"{'ok' if row['diagnostics_ok'] else 'FAILED'}",
                    flush=True,
                )

    regret = np.array([r["regret"] for r in rows])
    for n_train, *_ in SIZES:
        for name in ("none", "caps"):
            sel = [r for r in rows if r["domains"] == n_train and r["constraints"] == name]
            if not sel:
                continue
            g = {
                k: np.array([r[k] for r in sel], float) for k in sel[0] if k not in ("constraints",)
            }
            print(
                f"summary {n_train:>2} domains {name:<4}: regret median "
                f"{np.median(g['regret']):.5f} p90 {np.quantile(g['regret'], 0.9):.5f} | "
                f"q90 objective median {np.median(g['regret_q90']):.5f} | uniform median "
                f"{np.median(g['regret_uniform']):.4f} | best run median "
                f"{np.nanmedian(g['regret_best_run']):.4f} | draws/s median "
                f"{np.median(g['draws_per_s']):.0f} | diagnostics passed "
                f"{int(g['diagnostics_ok'].sum())}/{len(sel)}"
            )
    n_bad = sum(r["bad"] for r in rows)
    speed = np.median([r["draws_per_s"] for r in rows])
    print(
        f"optimize_accuracy median_regret={np.median(regret):.5f} "
        f"p90_regret={np.quantile(regret, 0.9):.5f} "
        f"feasible={'all' if n_bad == 0 else f'{n_bad}_bad'} draws_per_s={speed:.0f}"
    )


if __name__ == "__main__":
    main()
