"""``bayesmix critical-share POSTERIOR.nc --original D --new D``: continual pre-training.

The critical share is the largest share of the NEW training domain at which the ORIGINAL domain's
loss after continued training stays at or below its loss at the start (the step-0 checkpoint), or
at most --tolerance nats above it. It is computed for every posterior draw from the fitted mixing
law, along the line from all-original to all-new (other training domains held at --other-share,
default 0), and printed as median, mean and equal-tailed interval with the matching share of the
original domain and the number of draws at a boundary (loss within the limit even at the largest
share, or above it at every share). -o writes the tidy table (CSV or JSON by extension,
atomically); --plot draws the loss curve. A posterior that failed its diagnostics gate is
announced loudly on stderr.

What "the original domain's loss" is: with --weights FILE.json ({validation domain: weight}, e.g.
the Pile token shares) --original names the TRAINING domain (e.g. Pile) and its loss is the
weighted aggregate over the validation domains. Without --weights, --original names one
VALIDATION domain (e.g. Github); the training domain that gives up share is the one of the same
name, or else the only training domain besides --new.

The start loss: bayesmix fit keeps only the fitted checkpoint of each run, so give the runs file
(--runs, the file the posterior was fitted to: its step-0 records, which must agree between runs)
or the number (--start-loss, in nats per token, of the original loss as defined above).
"""

from __future__ import annotations

import argparse

from bayesmix import errors
from bayesmix.cli._options import add_max_loss_argument, max_loss_from_args, parse_pairs
from bayesmix.cli._output import (
    TABLE_SUFFIXES,
    add_force_argument,
    add_json_argument,
    check_output,
    loud_warning,
    print_json,
    write_table,
)
from bayesmix.data.loaders import FORMATS
from bayesmix.io import check_distinct_outputs


def register(subparsers) -> argparse.ArgumentParser:
    parts = __doc__.split("\n\n")
    p = subparsers.add_parser(
        "critical-share",
        help="continual pre-training: largest share of a new domain that keeps the original "
        "domain's loss at its start",
        description="\n\n".join(parts[1:]),
        epilog="examples:\n"
        "  bayesmix fit ct/70M.txt --step 10000 -o ct.nc\n"
        "  bayesmix critical-share ct.nc --original Pile --new Python --runs ct/70M.txt "
        "--weights valid_weight.json -o critical.csv --plot critical.png\n"
        "  bayesmix critical-share ct.nc --original Github --new Python --start-loss "
        "1.5653 --tolerance 0.01",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("posterior", metavar="POSTERIOR.nc", help="a posterior from `bayesmix fit`")
    p.add_argument(
        "--original",
        required=True,
        metavar="DOMAIN",
        help="with --weights: the training domain whose aggregate loss must not "
        "rise (e.g. Pile); without: a validation domain (e.g. Github)",
    )
    p.add_argument(
        "--new",
        required=True,
        metavar="DOMAIN",
        help="the training domain added by continued training (e.g. Python)",
    )
    p.add_argument(
        "--runs", metavar="RUNS_FILE", help="run file with the step-0 records (the start loss)"
    )
    p.add_argument("--format", choices=FORMATS, help="format of --runs (detected when omitted)")
    p.add_argument(
        "--start-loss",
        type=float,
        metavar="X",
        help="the original loss at the start, nats per token (instead of --runs)",
    )
    p.add_argument(
        "--weights",
        metavar="FILE.json",
        help="validation-domain weights {domain: weight} of the original loss",
    )
    p.add_argument(
        "--tolerance",
        type=float,
        default=0.0,
        metavar="NATS",
        help="nats the original loss may rise above its start (default 0)",
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
        "--other-share",
        dest="other_shares",
        action="append",
        default=[],
        metavar="DOMAIN=SHARE",
        help="fixed share of a third training domain (repeatable; default 0)",
    )
    p.add_argument(
        "-o",
        "--output",
        metavar="FILE.csv|FILE.json",
        help="write the tidy table here (CSV or JSON by extension)",
    )
    p.add_argument(
        "--plot",
        metavar="FIG.png",
        help="draw the loss curve, start and critical share (PNG, PDF or SVG)",
    )
    add_max_loss_argument(p)
    add_force_argument(p)
    add_json_argument(p)
    p.set_defaults(func=run)
    return p


def _check_outputs(args) -> None:
    """Output paths are checked before any work: valid, distinct, never an input, an existing
    file only with --force, a folder that can be written."""
    from bayesmix.decisions.continual import PLOT_SUFFIXES

    inputs = [p for p in (args.posterior, args.runs, args.weights) if p]
    for path, option, suffixes in (
        (args.output, "-o", TABLE_SUFFIXES),
        (args.plot, "--plot", PLOT_SUFFIXES),
    ):
        if path:
            check_output(path, suffixes, option, inputs=inputs, force=args.force)
    check_distinct_outputs([("-o", args.output), ("--plot", args.plot)])


def run(args) -> int:
    import dataclasses

    from bayesmix.data.loaders import load
    from bayesmix.decisions.continual import critical_share
    from bayesmix.decisions.continual_inputs import ContinualProblem
    from bayesmix.posterior.posterior import Posterior

    _check_outputs(args)
    if args.runs and args.start_loss is not None:
        raise errors.OptionError("give either --runs or --start-loss, not both")
    if args.format and not args.runs:
        raise errors.OptionError("--format needs --runs RUNS_FILE")
    problem = ContinualProblem(  # checked here, before any work
        original=args.original,
        new=args.new,
        start_loss=args.start_loss,
        weights=args.weights,
        tolerance=args.tolerance,
        prob=args.prob,
        other_shares=parse_pairs(args.other_shares, "--other-share"),
    )
    max_loss = max_loss_from_args(args)
    post = Posterior.load(args.posterior)
    post.check_finite()
    runs = load(args.runs, args.format, max_loss=max_loss) if args.runs else None
    result = critical_share(post, dataclasses.replace(problem, runs=runs))
    loud_warning(post.diagnostics_warning)  # after the input checks: errors stay one line
    if args.json:
        print_json(result.to_frame())
    else:
        print(format_result(result))
        print()
        print(result.to_text(warning=False))
    if args.output:
        write_table(result.to_frame(), args.output)
        print(f"\nwritten: {args.output}")
    if args.plot:
        result.plot(args.plot)
        print(f"{'' if args.output else chr(10)}plot: {args.plot}")
    return 0


def format_result(result) -> str:
    """The two shares with their intervals and the boundary counts, aligned."""
    pct = f"{result.prob:.0%}"
    head = (
        f"critical share ({result.law} law, {result.n_draws} draws"
        + (f", step {result.fit_step:g}" if result.fit_step is not None else "")
        + f"; start loss {result.start_loss:.4f} nats/token, tolerance "
        f"{result.tolerance:g}): median [{pct} interval], mean"
    )
    lines = [head]
    for role, dom, med, (lo, hi), mean in (
        ("new", result.new, result.median, result.interval, result.mean),
        (
            "original",
            result.original,
            result.original_median,
            result.original_interval,
            result.original_mean,
        ),
    ):
        lines.append(f"  {dom + ' (' + role + ')':<24} {med:.4f} [{lo:.4f}, {hi:.4f}]  {mean:.4f}")
    lines.append(
        f"  boundary draws: {result.n_at_max} at share {result.x_max:g} (within the "
        f"limit even there), {result.n_at_zero} at share 0 (above it at every share)"
    )
    return "\n".join(lines)
