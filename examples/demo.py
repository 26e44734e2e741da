"""bayesmix demo: fit a Bayesian mixing law to simulated proxy runs and predict unseen mixtures.

The main job on built-in data, end to end (well under a minute on 2 cores):

1. simulate a small proxy experiment: 32 runs over 5 training domains (web, code, books, papers,
   wiki), losses on the 5 matching validation domains, from a known M4 law plus noise;
2. fit the default hierarchical model with MCMC (progress bar shown) and print its diagnostics;
3. predict 90 % intervals of the loss of unseen mixtures, next to the true noise-free losses,
   and the overall loss with equal domain weights;
4. save the posterior (out/demo_posterior.nc, readable by ArviZ) and two plots to out/;
5. compare the M4 law with the additive law by leave-one-run-out predictive density;
6. choose the mixture for the big run under constraints (decision report);
7. a few rounds of active learning through the ``bayesmix`` command (init -> propose ->
   simulated training -> ingest -> propose), in out/active_learning/;
8. one self-contained HTML report of all of it (out/demo_report.html: diagnostics, predictive
   check, slope heatmap, loss across the simplex, the decision, the loop's progress).

Run with `make demo`. Each step is a small function so the demo can grow (choosing the mixture,
proposing the next runs) without being rewritten.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bayesmix.inference.fitting import fit
from bayesmix.model.simulation import Truth, simulate
from bayesmix.posterior.posterior import Posterior

DOMAINS = ["web", "code", "books", "papers", "wiki"]
OUT = Path(__file__).resolve().parents[1] / "out"
PROB = 0.9


def simulate_experiment(seed: int = 2024, n_runs: int = 32):
    """Proxy runs from a known law: a RunTable and the Truth (noise sd 0.02 nats per token)."""
    runs, truth = simulate(DOMAINS, n_runs=n_runs, random_seed=seed, noise_sd=0.02)
    print(
        f"simulated {runs.n_runs} proxy runs: {len(runs.train_domains)} training x "
        f"{len(runs.eval_domains)} validation domains ({', '.join(DOMAINS)})"
    )
    return runs, truth


def fit_law(runs, *, seed: int = 1) -> Posterior:
    """The default hierarchical M4 model fitted with nutpie at fit's defaults (progress bar
    on; a failed gate is sampled again, within fit's time budget). ``seed``: the demo prints
    the same numbers every time."""
    print("\nfitting the default model (the first fit compiles the model)")
    post = fit(runs, "default", random_seed=seed, progressbar=True, warn=False)
    s = post.settings
    print(
        f"compile {s['compile_s']:.1f} s, sampling {s['sample_s']:.1f} s: {s['chains']} "
        f"chains x {s['draws']} draws after {s['tune']} tuning, "
        f"{len(s['attempts'])} attempt(s) towards the gate"
    )
    return post


def print_diagnostics(post: Posterior) -> None:
    print("\ndiagnostics gate")
    print(post.diagnostics.table())
    if post.diagnostics_warning:
        print(f"WARNING: {post.diagnostics_warning}")


def candidate_mixtures() -> pd.DataFrame:
    """Unseen mixtures to evaluate: uniform and three plausible alternatives."""
    rows = {
        "uniform": [0.2, 0.2, 0.2, 0.2, 0.2],
        "web_heavy": [0.6, 0.1, 0.1, 0.1, 0.1],
        "code_and_papers": [0.15, 0.35, 0.1, 0.3, 0.1],
        "no_wiki": [0.3, 0.2, 0.25, 0.25, 0.0],
    }
    return pd.DataFrame.from_dict(rows, orient="index", columns=DOMAINS)


def predicted_vs_true(
    post: Posterior, truth: Truth, mixtures: pd.DataFrame, weights: dict[str, float] | None = None
) -> pd.DataFrame:
    """Intervals of the law's mean loss per mixture and domain, with the true noise-free loss.

    With ``weights`` the ``overall`` rows hold the weighted loss (true: the same weighting).
    """
    table = post.intervals(mixtures, PROB, kind="mean", weights=weights)
    true = truth.true_loss(mixtures)  # DataFrame (mixture x eval_domain)
    if weights is not None:
        w = np.array([weights[d] for d in true.columns], float)
        true["overall"] = true.to_numpy() @ (w / w.sum())
    table["true"] = [true.loc[m, d] for m, d in zip(table["mixture"], table["eval_domain"])]
    table["covered"] = (table["lower"] <= table["true"]) & (table["true"] <= table["upper"])
    return table


def print_predictions(table: pd.DataFrame) -> None:
    shown = table[["mixture", "eval_domain", "median", "lower", "upper", "true", "covered"]]
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"{table['covered'].mean():.0%} of the {len(table)} intervals cover the true loss")


def save_outputs(post: Posterior, truth: Truth, out: Path = OUT) -> list[Path]:
    """The posterior (NetCDF), a forest plot of t and a predicted-vs-true plot, in ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import arviz_plots
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    paths = [post.save(out / "demo_posterior.nc")]

    pc = arviz_plots.plot_forest(post.tree, var_names=["t"], combined=True, backend="matplotlib")
    pc.savefig(out / "demo_forest_t.png")
    paths.append(out / "demo_forest_t.png")

    # 40 random unseen mixtures: error of the median, with its 90 % interval, per true loss
    new = np.random.default_rng(7).dirichlet(np.ones(len(DOMAINS)), 40)
    table = post.predict(new).intervals(PROB, kind="mean")
    true = truth.true_loss(new).ravel()  # same order as the table: mixture-major
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.errorbar(
        true,
        table["median"] - true,
        yerr=[table["median"] - table["lower"], table["upper"] - table["median"]],
        fmt="o",
        ms=3,
        alpha=0.6,
        elinewidth=0.8,
    )
    ax.axhline(0.0, color="k", ls="--", lw=0.8)
    covered = ((table["lower"] <= true) & (true <= table["upper"])).mean()
    ax.set(
        xlabel="true loss (nats per token)",
        ylabel=f"predicted - true, {PROB:.0%} interval",
        title=f"40 unseen mixtures x {len(DOMAINS)} domains: {covered:.0%} covered",
    )
    fig.tight_layout()
    fig.savefig(out / "demo_predicted_vs_true.png", dpi=120)
    plt.close(fig)
    paths.append(out / "demo_predicted_vs_true.png")
    return paths


def main() -> None:
    runs, truth = simulate_experiment()
    post = fit_law(runs)
    print_diagnostics(post)

    print(
        f"\n{PROB:.0%} intervals of the mean loss of unseen mixtures (nats per token), "
        "next to the true noise-free loss"
    )
    table = predicted_vs_true(
        post, truth, candidate_mixtures(), weights=dict.fromkeys(DOMAINS, 1.0)
    )
    print_predictions(table[table["eval_domain"] != "overall"])

    print("\noverall loss, equal weights on the 5 validation domains")
    print_predictions(table[table["eval_domain"] == "overall"])

    print("\nwritten:")
    for path in save_outputs(post, truth):
        print(f"  {path.relative_to(OUT.parent)}")
    print(
        "open the posterior in ArviZ: xarray.open_datatree('out/demo_posterior.nc', "
        "engine='h5netcdf'), then arviz_stats.summary(tree, var_names=['m', 't'])"
    )

    compare_laws(runs, post)
    decision = choose_mixture(post, truth)
    ledger = active_learning_rounds(truth)
    path = write_html_report(post, decision, ledger)
    print(f"\nreport (open in a browser): {path.relative_to(OUT.parent)}")


def write_html_report(post: Posterior, decision, ledger: Path, out: Path = OUT) -> Path:
    """The HTML report of the posterior, the decision and the experiment ledger; the demo owns
    out/, so an older report is replaced."""
    return post.report(out / "demo_report.html", decision=decision, ledger=ledger, force=True)


def compare_laws(runs, post: Posterior) -> None:
    """Fit a second law (the additive one) to the same runs and rank both by leave-one-run-out
    predictive density (PSIS-LOO on each posterior's log_likelihood group). The truth is M4,
    so M4 should come first."""
    from bayesmix.inference.compare import compare

    other = fit(runs, "additive", random_seed=1, warn=False)
    table = compare({"m4 (default)": post, "additive": other})
    print("\ncomparing laws on the same runs (PSIS-LOO, leave one run out; higher elpd is better)")
    cols = ["model", "rank", "elpd_loo", "se", "elpd_diff", "dse", "n_high_pareto_k"]
    print(table[cols].to_string(index=False, float_format=lambda v: f"{v:.1f}"))


def choose_mixture(post: Posterior, truth: Truth):
    """The decision: the mixture minimising posterior expected loss (equal weights) with at most
    half web data and at least 5 % wiki, its intervals, P(beats uniform), spread of the optimum;
    then its true loss against the true constrained optimum."""
    from bayesmix.data.constraints import Constraints
    from bayesmix.decisions.decision import decide
    from bayesmix.decisions.optimize import draw_optima

    cons = Constraints.build(DOMAINS, max_share={"web": 0.5}, min_share={"wiki": 0.05})
    report = decide(post, constraints=cons, objective="mean")
    print("\nchoosing the mixture for the big run (web <= 0.5, wiki >= 0.05, equal weights)")
    print(report.to_text())
    rec = report.mixture[DOMAINS].to_numpy()
    best = draw_optima({k: truth[k][None] for k in ("m", "rho", "t")}, cons, np.ones(len(DOMAINS)))[
        0
    ][0]
    print(
        f"true overall loss of the recommendation {truth.true_loss(rec).mean():.4f}; of the "
        f"true constrained optimum {truth.true_loss(best).mean():.4f}"
    )
    return report


def active_learning_rounds(
    truth: Truth,
    rounds: int = 3,
    batch: int = 6,
    seed: int = 5,
    out: Path = OUT / "active_learning",
) -> Path:
    """A few rounds of the experiment loop through the ``bayesmix`` command, in this process
    (so every refit reuses the model compiled above): init -> propose -> train -> ingest ->
    propose ... Training is simulated: the true law's loss plus noise (sd 0.02). Each round
    prints the proposals and how good the current recommendation (posterior-mean optimum) is
    under the true law."""
    import os
    import shutil

    from bayesmix.cli import main as bayesmix
    from bayesmix.data.constraints import Constraints
    from bayesmix.decisions.optimize import draw_optima, minimize_objective
    from bayesmix.loop.acquire import Belief
    from bayesmix.loop.ledger import Ledger

    def run(*argv):
        code = bayesmix([str(a) for a in argv])  # same as the shell command
        if code != 0:
            raise SystemExit(f"bayesmix {argv[0]} failed with status {code}")

    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    ledger = Path(os.path.relpath(out / "exp.db"))  # relative paths read better in the output
    rng = np.random.default_rng(seed)
    # the true best mixture under the constraints (equal weights on the validation domains)
    cons = Constraints.build(DOMAINS, max_share={"web": 0.5}, min_share={"wiki": 0.05})
    w = np.ones(len(DOMAINS))
    best = draw_optima({k: truth[k][None] for k in ("m", "rho", "t")}, cons, w)[0][0]
    best_loss = truth.true_loss(best).mean()

    print(
        f"\nactive learning: {rounds} rounds of {batch} runs, web <= 0.5, wiki >= 0.05 "
        f"(true best mixture: overall loss {best_loss:.4f})"
    )
    run(
        "init",
        "--ledger",
        ledger,
        "--domains",
        ",".join(DOMAINS),
        "--max-share",
        "web=0.5",
        "--min-share",
        "wiki=0.05",
    )
    run("propose", "--ledger", ledger, "-n", 8, "--seed", seed, "--quiet")
    for r in range(1, rounds + 1):
        with Ledger.open(ledger) as led:
            pending = led.runs("proposed")
        mix = pending[[f"mix.{d}" for d in DOMAINS]].to_numpy()
        loss = truth.true_loss(mix) + rng.normal(0.0, 0.02, (len(mix), len(DOMAINS)))
        results = pending[["run", *[f"mix.{d}" for d in DOMAINS]]].copy()
        for i, d in enumerate(truth["eval_domains"]):
            results[f"loss.{d}"] = loss[:, i]
        results.to_csv(ledger.parent / f"results-{r}.csv", index=False)
        print(f"\n-- round {r}: {len(results)} simulated runs finished")
        run("ingest", "--ledger", ledger, ledger.parent / f"results-{r}.csv")
        strategy = "bald" if r == 1 else "thompson"
        run(
            "propose",
            "--ledger",
            ledger,
            "-n",
            batch,
            "--strategy",
            strategy,
            "--seed",
            seed + r,
            "--quiet",
        )
        post = Posterior.load(out / f"exp.posterior-round{r}.nc")
        belief = Belief.from_posterior(post)
        rec = minimize_objective(belief.params, cons, belief.weights, "mean").mixture
        regret = truth.true_loss(rec).mean() - best_loss
        shares = ", ".join(f"{d} {v:.2f}" for d, v in zip(DOMAINS, rec))
        print(
            f"recommendation after {post.fit_data().n_runs} runs: {shares}; true overall "
            f"loss {truth.true_loss(rec).mean():.4f} (regret {regret:.4f} nats)"
        )
    print(f"ledger, posteriors and proposals: {out.relative_to(OUT.parent)}/")
    return out / "exp.db"


if __name__ == "__main__":
    main()
