"""Repetition-aware decisions on simulated data-constrained runs: regret with and without the
repetition component (``law = "m4+repeat"`` against ``"m4"``).

Truth (:func:`truth`): five training and validation domains web, code, books, wiki, forum; M4
(``L_i = m_i (1 - rho_i + rho_i exp(t_i . r))``, rho = 0.1, each validation domain helped most
by its own training domain, ``t = -4`` on the diagonal, and wiki helping every validation domain,
``-1`` in its column; rows centred) with the repetition component of
:mod:`bayesmix.laws.repetition` on top: unique tokens web 1e13, code 1e12, books 3e11, wiki 1e9,
forum 1e12; ``R*`` 15.4 (``--r-star``), data term 0.34 nats at 1e11 tokens (``--data-term``)
with exponent 0.28
(Muennighoff et al. 2023; Hoffmann et al. 2022). wiki is the small, valuable domain.

Runs (:func:`simulate_runs`): ``--runs`` proxies (default 40) of ``PROXY_TOKENS`` = 1e9 tokens,
Dirichlet(1) mixtures (seed ``--seed``): no domain repeats (wiki at share 1 is one epoch), so
the component is the identity on them; Gaussian noise sd ``--noise`` (0.01 nats). Optionally
``--repeat-runs`` runs of 5e10 tokens with 20-60% wiki (25-30 epochs of it), where repetition
shows.

Both laws are fitted to the same runs (``repeat`` and ``default`` specifications, ``--draws``,
``--tune``, ``--chains``, seed ``--seed``) and decide the mean objective with equal weights at
the target budget ``TARGET_TOKENS`` = 2e11 tokens (the aware one with ``inputs={"tokens":
2e11}``; the naive one cannot see the budget). The true optimum is the package's optimiser on the
true law (one draw). Regret = true loss (equal-weight mean over validation domains, nats per
token) of a recommendation minus that of the true optimum. ``max_epochs_*``: the largest number
of passes over a domain's unique data the recommendation asks for at the target. Goal:
``regret_aware <= 0.25 regret_naive``. Last line::

    repetition regret_aware=.. regret_naive=.. max_epochs_aware=.. max_epochs_naive=..

Run: ``PYTHONPATH=. .venv/bin/python benchmarks/repetition.py [--runs N --seed S --r-star R
--data-term B --repeat-runs N --draws N --tune N --chains N]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import pandas as pd

import bayesmix as bm
from bayesmix.decisions.draws import LawDraws

DOMAINS = ("web", "code", "books", "wiki", "forum")
UNIQUE = np.array([1e13, 1e12, 3e11, 1e9, 1e12])  # unique tokens per training domain
PROXY_TOKENS = 1e9
REPEAT_TOKENS = 5e10
TARGET_TOKENS = 2e11
LEVEL = np.array([3.2, 2.0, 3.0, 2.8, 3.4])  # m: loss at the uniform mixture, nats per token


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def truth(r_star: float = 15.4, data_term: float = 0.34) -> dict[str, np.ndarray]:
    """The true law's parameters with a leading draw axis of 1 (law ``m4+repeat``)."""
    t = np.eye(5) * -4.0
    t[:, DOMAINS.index("wiki")] += -1.0
    t = t - t.mean(axis=1, keepdims=True)
    return {
        "m": LEVEL[None],
        "rho": np.full((1, 5), 0.1),
        "t": t[None],
        "r_star": np.array([r_star]),
        "unique_tokens": UNIQUE[None],
        "data_term": np.array([data_term]),
        "data_exponent": np.array([0.28]),
    }


def true_draws(params, tokens: float) -> LawDraws:
    return LawDraws(params, DOMAINS, DOMAINS, law="m4+repeat", inputs={"tokens": tokens})


def simulate_runs(params, n_runs: int, n_repeat: int, noise: float, seed: int) -> bm.RunTable:
    """Proxy runs (no repetition) and ``n_repeat`` runs that repeat wiki, with Gaussian noise;
    the table carries tokens and unique.<domain> columns."""
    rng = np.random.default_rng(seed)
    mixes = rng.dirichlet(np.ones(5), n_runs)
    tokens = np.full(n_runs, PROXY_TOKENS)
    if n_repeat:
        wiki = np.linspace(0.2, 0.6, n_repeat)
        rest = rng.dirichlet(np.ones(4), n_repeat) * (1 - wiki)[:, None]
        mixes = np.vstack([mixes, np.insert(rest, DOMAINS.index("wiki"), wiki, axis=1)])
        tokens = np.concatenate([tokens, np.full(n_repeat, REPEAT_TOKENS)])
    rows = []
    for i, (r, d) in enumerate(zip(mixes, tokens, strict=True)):
        mean = true_draws(params, d).mean_loss(r[None])[0, 0]  # (K,)
        loss = mean + rng.normal(0.0, noise, 5)
        row = {"run": f"r{i:03d}", "tokens": d}
        row.update({f"mix.{dom}": v for dom, v in zip(DOMAINS, r, strict=True)})
        row.update({f"unique.{dom}": u for dom, u in zip(DOMAINS, UNIQUE, strict=True)})
        row.update({f"loss.{dom}": v for dom, v in zip(DOMAINS, loss, strict=True)})
        rows.append(row)
    return bm.RunTable.from_frame(pd.DataFrame(rows), source="simulated")


def true_loss(params, mixture) -> float:
    """Equal-weight mean over validation domains of the true law at the target budget."""
    return float(true_draws(params, TARGET_TOKENS).mean_loss(np.asarray(mixture)[None]).mean())


def passes(mixture) -> np.ndarray:
    return np.asarray(mixture) * TARGET_TOKENS / UNIQUE


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--repeat-runs", type=int, default=0)
    ap.add_argument("--noise", type=float, default=0.01)
    ap.add_argument("--r-star", type=float, default=15.4)
    ap.add_argument("--data-term", type=float, default=0.34)
    ap.add_argument("--seed", type=int, default=0)
    # the sampler: fit's defaults unless given
    ap.add_argument("--draws", type=int, help="draws per chain (default: fit's)")
    ap.add_argument("--tune", type=int, help="tuning steps per chain (default: fit's)")
    ap.add_argument("--chains", type=int, help="chains (default: fit's)")
    args = ap.parse_args(argv)
    mcmc = {k: v for k in ("draws", "tune", "chains") if (v := getattr(args, k)) is not None}
    t0 = time.perf_counter()
    params = truth(args.r_star, args.data_term)
    runs = simulate_runs(params, args.runs, args.repeat_runs, args.noise, args.seed)
    best = bm.decide(true_draws(params, TARGET_TOKENS), per_draw=False, random_seed=0)
    opt = best.mixture.to_numpy()
    f_opt = true_loss(params, opt)
    fits = {}
    for name, spec in (("aware", "repeat"), ("naive", "default")):
        log(f"fitting {spec} to {runs.n_runs} runs")
        fits[name] = bm.fit(runs, spec, random_seed=args.seed, warn=False, **mcmc)
    rec = {
        "aware": bm.decide(
            fits["aware"], inputs={"tokens": TARGET_TOKENS}, per_draw=False, random_seed=0
        ),
        "naive": bm.decide(fits["naive"], per_draw=False, random_seed=0),
    }
    mixes = {k: v.mixture.to_numpy() for k, v in rec.items()}
    regret = {k: true_loss(params, v) - f_opt for k, v in mixes.items()}
    epochs = {k: float(passes(v).max()) for k, v in mixes.items()}
    table = pd.DataFrame(
        {"true optimum": opt, "aware": mixes["aware"], "naive": mixes["naive"]}, index=DOMAINS
    )
    print(
        f"truth: R* {args.r_star:g}, data term {args.data_term:g}; {args.runs} proxy runs "
        f"of {PROXY_TOKENS:.0e} tokens"
    )
    print(f"+ {args.repeat_runs} runs of {REPEAT_TOKENS:.0e} tokens repeating wiki")
    print(
        f"target budget {TARGET_TOKENS:.0e} tokens; unique tokens "
        + ", ".join(f"{d} {u:.0e}" for d, u in zip(DOMAINS, UNIQUE, strict=True))
    )
    print("shares (epochs of wiki at the target in the last row)")
    table.loc["wiki epochs"] = [
        passes(opt)[3],
        passes(mixes["aware"])[3],
        passes(mixes["naive"])[3],
    ]
    print(table.to_string(float_format=lambda v: f"{v:.3f}"))
    print(f"true loss at the true optimum {f_opt:.4f} nats/token")
    for k in ("aware", "naive"):
        gate = "passed" if fits[k].diagnostics.ok else f"FAILED ({fits[k].diagnostics_warning})"
        print(f"{k}: regret {regret[k]:.4f}, max epochs {epochs[k]:.1f}, gate {gate}")
    post = fits["aware"].law_params()
    print(f"aware R* posterior median {np.median(post['r_star']):.1f} (prior median 15.4)")
    met = regret["aware"] <= 0.25 * regret["naive"]
    print(f"goal regret_aware <= 0.25 x regret_naive: {'met' if met else 'NOT met'}")
    load = os.getloadavg()[0]
    print(f"wall {time.perf_counter() - t0:.0f} s, 1-minute load {load:.2f}")
    print(
        f"repetition regret_aware={regret['aware']:.4f} regret_naive={regret['naive']:.4f} "
        f"max_epochs_aware={epochs['aware']:.1f} max_epochs_naive={epochs['naive']:.1f}"
    )


if __name__ == "__main__":
    main()
