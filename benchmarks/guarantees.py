"""Do per-domain guarantees hold for the TRUE law? Simulated problems with a known M4 law.

For every seed and size (5 training x 5 validation domains from 32 runs; 17 x 13 from 64 runs),
:func:`bayesmix.model.simulation.simulate` draws a random M4 law and noisy proxy runs, the default
model is fitted with the real MCMC (``fit``'s defaults: retried towards the gate), and
:func:`bayesmix.decisions.guarantees.minimize_guaranteed` chooses a mixture under three requests
(baseline: the uniform mixture):

* ``mean+no-worse``: minimise the expected overall loss (equal weights) with
  ``--no-worse all=0.01@0.9``;
* ``target+no-worse``: minimise the first validation domain's loss with
  ``--no-worse all=0.005@0.9`` (the target pulls hard, so many guarantees bind);
* ``mean+max-loss``: minimise the expected overall loss with ``--max-loss D=V@0.9`` on the
  domain D whose expected loss rises most at the unguaranteed optimum, V = the posterior
  0.95-quantile of D's loss at the baseline (the baseline itself meets it, so it is feasible).

Per (problem, guarantee) - "all" counts once per validation domain - the guarantee is *kept*
when the TRUE loss of the recommendation meets the bound (no-worse: true ``L_d(rec) - L_d(b)
<= TOL``; max-loss: true ``L_d(rec) <= V``). A calibrated posterior keeps a guarantee asked at
probability 0.9 in at least 90 % of problems up to Monte Carlo error; guarantees far from
binding are kept almost always, so the benchmark also reports the rate among *binding* ones
(posterior probability on the draws below 0.95). The *price* is the true loss of the request's
objective at the recommendation minus that at the unguaranteed recommendation (nats per token).
*feasible*: the recommendation is inside the share constraints and meets every guarantee exactly
on the draws (a GuaranteeError counts as infeasible).

Run: ``.venv/bin/python benchmarks/guarantees.py`` (``--seeds 3`` for a quick look;
``--large-seeds 10`` fewer 17-domain problems). The last
line is ``guarantees kept=.. requested=.. price_median=.. feasible=all`` (``feasible=N_bad``).
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

from bayesmix.data.constraints import Constraints
from bayesmix.decisions.draws import LawDraws
from bayesmix.decisions.guarantees import Guarantee, GuaranteeError, minimize_guaranteed
from bayesmix.decisions.optimize import minimize_objective
from bayesmix.inference.fitting import fit
from bayesmix.model.simulation import simulate

#: (training domains, validation domains, proxy runs)
SIZES = [(5, 5, 32), (17, 13, 64)]
PROB = 0.9
BINDING_BELOW = 0.95


def requests(draws: LawDraws, w_mean, base, c):
    """The three requests of the module docstring: (name, weights, guarantees)."""
    k = len(draws.eval_domains)
    target = np.eye(k)[0]
    free = minimize_objective(draws, c, w_mean).mixture
    loss = draws.mean_loss(np.vstack([free, base]))  # (S, 2, K)
    worst = int(np.argmax(loss[:, 0].mean(axis=0) - loss[:, 1].mean(axis=0)))
    value = float(np.quantile(loss[:, 1, worst], 0.95))
    d = draws.eval_domains[worst]
    return [
        ("mean+no-worse", w_mean, [Guarantee("no-worse", "all", 0.01, PROB)]),
        ("target+no-worse", target, [Guarantee("no-worse", "all", 0.005, PROB)]),
        ("mean+max-loss", w_mean, [Guarantee("max-loss", d, value, PROB)]),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=20, help="problems per size (default 20)")
    ap.add_argument(
        "--large-seeds",
        type=int,
        default=None,
        help="problems of the 17-domain size (default: --seeds; its fits take about 10x longer)",
    )
    ap.add_argument("--chains", type=int, help="chains (default: fit's)")
    ap.add_argument("--draws", type=int, help="draws = tuning steps per chain (default: fit's)")
    ap.add_argument("--sizes", default="5,17", help="training-domain counts to run (5, 17)")
    args = ap.parse_args()
    mcmc = {"chains": args.chains} if args.chains else {}
    if args.draws:
        mcmc.update(draws=args.draws, tune=args.draws)
    warnings.simplefilter("ignore")  # the diagnostics gate's warnings; counted below instead

    rows = []
    wanted = {int(v) for v in args.sizes.split(",")}
    for n_train, n_eval, n_runs in SIZES:
        if n_train not in wanted:
            continue
        n_seeds = args.seeds if n_train < 17 or args.large_seeds is None else args.large_seeds
        for seed in range(n_seeds):
            runs, truth = simulate(n_train, n_eval, n_runs=n_runs, random_seed=seed, noise_sd=0.02)
            t0 = time.perf_counter()
            post = fit(runs, random_seed=seed, warn=False, **mcmc)
            fit_s = time.perf_counter() - t0
            draws = LawDraws.from_posterior(post)
            train, evals = list(post.train_domains), list(post.eval_domains)
            c = Constraints.build(train)
            w_mean = np.full(n_eval, 1.0 / n_eval)
            base = np.full(n_train, 1.0 / n_train)
            true_base = truth.true_loss(base)
            for name, w, gs in requests(draws, w_mean, base, c):
                t1 = time.perf_counter()
                free = minimize_objective(draws, c, w).mixture
                try:
                    got = minimize_guaranteed(
                        draws, c, w, guarantees=gs, baseline=base, random_seed=seed
                    )
                except GuaranteeError as err:
                    print(
                        f"[{n_train:>2} domains, seed {seed:>2}, {name}] INFEASIBLE: {err}",
                        flush=True,
                    )
                    rows.append(
                        {
                            "domains": n_train,
                            "seed": seed,
                            "request": name,
                            "bad": 1,
                            "kept": [],
                            "binding": [],
                            "price": np.nan,
                        }
                    )
                    continue
                solve_s = time.perf_counter() - t1
                true_rec = truth.true_loss(got.mixture)
                kept, binding = [], []
                for g, p in zip(got.guarantees, got.probs):
                    d = evals.index(g.domain)
                    limit = true_base[d] + g.bound if g.kind == "no-worse" else g.bound
                    kept.append(bool(true_rec[d] <= limit + 1e-12))
                    binding.append(bool(p < BINDING_BELOW))
                ok = bool(c.contains(got.mixture)) and bool(
                    np.all(got.probs >= np.array([g.prob for g in got.guarantees]) - 1e-12)
                )
                price = float(true_rec @ w - truth.true_loss(free) @ w)
                row = {
                    "domains": n_train,
                    "seed": seed,
                    "request": name,
                    "bad": int(not ok),
                    "kept": kept,
                    "binding": binding,
                    "price": price,
                    "diagnostics_ok": post.diagnostics.ok,
                }
                rows.append(row)
                nb = int(np.sum(binding))
                kb = int(np.sum(np.array(kept) & np.array(binding)))
                print(
                    f"[{n_train:>2} domains, seed {seed:>2}, {name:<15}] kept "
                    f"{int(np.sum(kept))}/{len(kept)} (binding {kb}/{nb}) price {price:+.5f}"
                    f" | min P on draws {got.probs.min():.3f} | solve {solve_s:.1f} s, fit "
                    f"{fit_s:.0f} s, diagnostics {'ok' if post.diagnostics.ok else 'FAILED'}",
                    flush=True,
                )

    def rate(sel, binding_only=False):
        k = [kk for r in sel for kk, b in zip(r["kept"], r["binding"]) if b or not binding_only]
        return (np.mean(k) if k else np.nan), len(k)

    for n_train, *_ in SIZES:
        for name in ("mean+no-worse", "target+no-worse", "mean+max-loss"):
            sel = [r for r in rows if r["domains"] == n_train and r["request"] == name]
            if not sel:
                continue
            k_all, n_all = rate(sel)
            k_b, n_b = rate(sel, True)
            print(
                f"summary {n_train:>2} domains {name:<15}: kept {k_all:.3f} of {n_all} "
                f"guarantees, binding ones {k_b:.3f} of {n_b} | price median "
                f"{np.nanmedian([r['price'] for r in sel]):.5f} | infeasible "
                f"{sum(r['bad'] for r in sel)}/{len(sel)}"
            )
    k_all, _ = rate(rows)
    k_b, n_b = rate(rows, True)
    n_bad = sum(r["bad"] for r in rows)
    print(f"binding guarantees kept {k_b:.3f} of {n_b}")
    print(
        f"guarantees kept={k_all:.3f} requested={PROB} "
        f"price_median={np.nanmedian([r['price'] for r in rows]):.5f} "
        f"feasible={'all' if n_bad == 0 else f'{n_bad}_bad'}"
    )


if __name__ == "__main__":
    main()
