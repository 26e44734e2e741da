"""``bayesmix compare A.nc B.nc ...``: which fitted law predicts new runs best?

Prints the PSIS-LOO ELPD table of posteriors fitted to the same runs (best first; ``--var
run_loss`` leaves out one run at a time, the default, ``--var loss`` one loss), with Pareto-k
and diagnostics warnings. Where Pareto k is high for a posterior, or with ``--kfold K``, it
refits every law on K-1 folds of runs and prints the held-out MAE, Spearman rank correlation
and 90% interval coverage per law and per validation domain (``--kfold 0``: never). ``-o``
writes one row per law (CSV or JSON by extension, atomically). Posteriors fitted to different
data are refused.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bayesmix import errors
from bayesmix.cli._output import TABLE_SUFFIXES, add_force_argument, check_output, write_table
from bayesmix.inference.compare import AUTO_KFOLD, KFOLD_CI_PROB


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "compare",
        help="compare fitted laws: PSIS-LOO ELPD table, K-fold by held-out runs",
        description=__doc__.split("\n\n")[1],
        epilog="examples:\n"
        "  bayesmix compare m4.nc logshare.nc normal.nc\n"
        "  bayesmix compare m4.nc logshare.nc --var loss -o elpd.csv\n"
        "  bayesmix compare m4.nc logshare.nc --kfold 5 --draws 500 --seed 1",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "posteriors",
        nargs="+",
        metavar="POSTERIOR.nc",
        help="two or more posteriors from `bayesmix fit`, fitted to the same runs",
    )
    p.add_argument(
        "--var",
        choices=("run_loss", "loss"),
        default="run_loss",
        help="unit left out: run_loss, a run with all its losses (default), or "
        "loss, one (run, validation domain) loss",
    )
    p.add_argument(
        "--kfold",
        type=int,
        metavar="K",
        help=f"run K-fold cross-validation by held-out runs (default: {AUTO_KFOLD} "
        "folds when a Pareto k is high; 0: never)",
    )
    p.add_argument(
        "--draws",
        type=int,
        help="draws per chain of each K-fold refit (default: as the posterior was fitted)",
    )
    p.add_argument(
        "--tune", type=int, help="tuning steps per chain of each refit (default: as fitted)"
    )
    p.add_argument("--chains", type=int, help="chains of each refit (default: as fitted)")
    p.add_argument("--seed", type=int, default=0, help="seed of the folds and refits (default 0)")
    p.add_argument(
        "-o",
        "--output",
        metavar="FILE.csv|FILE.json",
        help="write the table (one row per law; K-fold columns when run)",
    )
    p.add_argument("--quiet", action="store_true", help="no K-fold progress lines")
    add_force_argument(p)
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    import bayesmix.inference.compare as library
    from bayesmix.posterior.posterior import Posterior

    if args.output:
        check_output(args.output, TABLE_SUFFIXES, inputs=args.posteriors, force=args.force)
    if len(args.posteriors) < 2:
        raise errors.OptionError(
            "compare needs at least two posterior files", hint="bayesmix compare A.nc B.nc"
        )
    seen: dict = {}
    for path in args.posteriors:
        key = Path(path).resolve()  # ./A.nc and A.nc are one file
        if key in seen:
            raise errors.OptionError(f"{path} is given twice (as {seen[key]} too)")
        seen[key] = path

    posts = {path: Posterior.load(path) for path in args.posteriors}
    result = library.compare_laws(
        posts,
        var_name=args.var,
        kfold="auto" if args.kfold is None else args.kfold,
        random_seed=args.seed,
        draws=args.draws,
        tune=args.tune,
        chains=args.chains,
        quiet=args.quiet,
    )
    print_loo(result.loo, args.var)
    if result.kfold is not None:
        if result.auto:
            print(
                f"\nPareto k is high: checking with {result.k}-fold cross-validation by held-out "
                "runs (--kfold 0 skips it)"
            )
        print(
            f"\n{result.k}-fold cross-validation by held-out runs (folds seeded {args.seed}): "
            f"MAE (nats per token), Spearman of the mean loss over domains, "
            f"{KFOLD_CI_PROB:.0%} predictive interval coverage, held-out elpd\n"
        )
        print(format_kfold(result.kfold.summary))
        print("\nper validation domain:\n")
        print(format_kfold(result.kfold.by_domain))
    elif result.high_pareto_k:
        print(f"\nPareto k is high: check with --kfold {library.AUTO_KFOLD}")
    if args.output:
        write_table(result.table, args.output)
        print(f"\nwritten: {args.output}")
    return 0


def print_loo(table, var: str) -> None:
    """The PSIS-LOO table with what it measures and its warnings."""
    unit = (
        "one run (all its validation losses)"
        if var == "run_loss"
        else ("one (run, validation domain) loss")
    )
    print(
        f"PSIS-LOO comparison of {len(table)} posteriors, leaving out {unit} at a time "
        f"({table.attrs['n_units']} units, log-likelihood variable {var!r})"
    )
    print(
        "elpd_loo: expected log predictive density of held-out losses (log densities of "
        "losses in nats per token); higher is better. A difference within about 2 dse is "
        "noise.\n"
    )
    print(format_compare(table))
    notes = table[table["warning"] != ""]
    if len(notes):
        print("\nwarnings:")
        for _, row in notes.iterrows():
            print(f"  {row['model']}: {row['warning']}")


def format_compare(table) -> str:
    """The ELPD table as aligned text (warnings are printed below it)."""
    shown = table.drop(columns=["warning"]).rename(
        columns={"n_high_pareto_k": "high_k", "max_pareto_k": "max_k"}
    )
    fmt = {c: (lambda v: f"{v:.2f}") for c in ("elpd_loo", "se", "elpd_diff", "dse", "max_k")}
    fmt.update({"p_loo": lambda v: f"{v:.1f}", "weight": lambda v: f"{v:.3f}"})
    return shown.to_string(index=False, formatters=fmt)


def format_kfold(table) -> str:
    """A K-fold table as aligned text (4 decimals for errors, 3 for rank and coverage)."""
    fmt = {
        "mae": lambda v: f"{v:.4f}",
        "spearman": lambda v: f"{v:.3f}",
        "coverage": lambda v: f"{v:.3f}",
        "elpd_kfold": lambda v: f"{v:.2f}",
        "se": lambda v: f"{v:.2f}",
    }
    return table.to_string(
        index=False, formatters={k: f for k, f in fmt.items() if k in table.columns}
    )
