"""``bayesmix predict POSTERIOR.nc MIXTURES``: loss intervals of unseen mixtures.

MIXTURES is a CSV, Parquet or JSON file of mixtures (one row per mixture, a column per training
domain or ``mix.<domain>``, optional ``mixture`` id column; JSON may also be ``{name: {domain:
share}}``). Prints, and with ``-o`` writes (CSV or JSON by extension, atomically), the tidy table
``mixture, eval_domain, mean, median, lower, upper`` of equal-tailed intervals, in nats per token.
``--kind predictive`` (default) includes the noise of a new run; ``--kind mean`` is the posterior
of the law's mean loss. ``--weights FILE.json`` ({domain: weight}) adds ``overall`` rows with the
weighted loss (weights are normalised; two keys for one domain, e.g. web and WEB, are refused).
An existing -o file is replaced only with --force; an input never is. A posterior that failed
its diagnostics gate is announced loudly on stderr; one with NaN draws is refused.
For a law over model size and tokens (``--model scaling``), ``--n-params N --tokens D`` give the
target run's scale: outside the fitted range a warning gives the numbers, more than
``--max-extrapolation`` (default 10) times beyond it is refused.
"""

from __future__ import annotations

import argparse
import sys
import warnings

from bayesmix import errors
from bayesmix.cli._options import add_ci_kind_argument, add_scale_arguments, scale_from_args
from bayesmix.cli._output import (
    TABLE_SUFFIXES,
    add_force_argument,
    add_json_argument,
    check_output,
    loud_warning,
    print_json,
    write_table,
)


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "predict",
        help="loss intervals of mixtures from a saved posterior",
        description=__doc__.split("\n\n")[1],
        epilog="examples:\n"
        "  bayesmix predict posterior.nc candidates.csv -o intervals.csv\n"
        "  bayesmix predict posterior.nc candidates.json --prob 0.8 --kind mean\n"
        "  bayesmix predict posterior.nc candidates.csv --weights valid_weight.json "
        "--weights-subset\n"
        "  bayesmix predict scaling.nc candidates.csv --n-params 1e9 --tokens 1e11",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("posterior", metavar="POSTERIOR.nc", help="a posterior from `bayesmix fit`")
    p.add_argument("mixtures", metavar="MIXTURES", help="CSV, Parquet or JSON file of mixtures")
    p.add_argument(
        "-o",
        "--output",
        metavar="FILE.csv|FILE.json",
        help="write the interval table here (CSV or JSON by extension)",
    )
    p.add_argument(
        "--ci-prob",
        "--prob",
        dest="prob",
        type=float,
        default=0.9,
        help="probability mass of the equal-tailed intervals (default 0.9)",
    )
    p.add_argument(
        "--kind",
        choices=("predictive", "mean"),
        default="predictive",
        help="predictive: loss of a new run, with noise (default); mean: the law's mean loss",
    )
    p.add_argument(
        "--weights",
        metavar="FILE.json",
        help="validation-domain weights {domain: weight}: adds 'overall' rows",
    )
    p.add_argument(
        "--weights-subset",
        dest="allow_subset",
        action="store_true",
        help="allow weights for domains the posterior lacks (renormalised over the domains it has)",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the predictive noise draws (default 0)"
    )
    add_force_argument(p)
    add_scale_arguments(p)
    add_ci_kind_argument(p)
    add_json_argument(p)
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from bayesmix.data.mixtures import read_mixtures
    from bayesmix.posterior.posterior import Posterior

    if args.output:  # before any work: never an input, never an old result without --force
        check_output(
            args.output,
            TABLE_SUFFIXES,
            inputs=(args.posterior, args.mixtures, args.weights),
            force=args.force,
        )
    if args.allow_subset and not args.weights:
        raise errors.OptionError("--weights-subset needs --weights FILE.json")
    if not 0 < args.prob < 1:
        raise errors.OptionError(f"--prob must be between 0 and 1, got {args.prob:g}")
    post = Posterior.load(args.posterior)
    scale = scale_from_args(args, post.law)
    mixtures = read_mixtures(args.mixtures, post.train_domains)
    extrapolating = post.check_scale(**scale, max_extrapolation=args.max_extrapolation)
    with warnings.catch_warnings():  # printed below, once, as one line each
        warnings.simplefilter("ignore", errors.ExtrapolationWarning)
        table = post.intervals(
            mixtures,
            args.prob,
            ci_kind=args.ci_kind,
            weights=args.weights,
            kind=args.kind,
            allow_subset=args.allow_subset,
            random_seed=args.seed,
            **scale,
            max_extrapolation=args.max_extrapolation,
        )
    loud_warning(post.diagnostics_warning)  # after the input checks: errors stay one line
    for text in extrapolating + post.mixture_range().notes(mixtures):
        print(f"bayesmix predict: warning: {text}", file=sys.stderr)
    if scale:
        print(f"target scale: {scale['n_params']:.3g} parameters, {scale['tokens']:.3g} tokens")
    what = (
        "posterior predictive loss of a new run"
        if args.kind == "predictive"
        else "posterior mean loss"
    )
    if args.json:
        print_json(table)
        if args.output:
            write_table(table, args.output)
        return 0
    print(
        f"{args.prob:.0%} {'equal-tailed' if args.ci_kind == 'eti' else 'highest-density'} "
        f"intervals of the {what} (nats per token), "
        f"{post.n_samples} draws of {args.posterior}"
    )
    print(format_intervals(table))
    if args.output:
        write_table(table, args.output)
        print(f"\nwritten: {args.output}")
    return 0


def format_intervals(table) -> str:
    """The interval table as aligned text (4 decimals)."""
    return table.to_string(index=False, float_format=lambda v: f"{v:.4f}")
