"""``bayesmix frontier POSTERIOR.nc --target D --guard all=TOL``: what a guarantee costs.

For a range of tolerances (or probabilities) of the guards, the best posterior expected loss of
the --target validation domain with every guard met exactly on the posterior draws: a guard
``--guard DOMAIN=TOL@PROB`` asks that DOMAIN's loss be at most TOL nats above the baseline's
(default uniform) with probability PROB, paired per draw (``all`` = every validation domain);
``--max-loss DOMAIN=VALUE@PROB`` guards stay fixed along the sweep. Default sweep: tolerances
0, TOL/4, ..., 2 TOL; ``--tolerances 0:0.03:0.005`` or ``--probs 0.5,0.7,0.9`` choose it. The
table (one row per point: target loss with interval, price vs no guarantees, gain from the
previous tighter point, the tightest guard, the mixture) is printed; ``-o`` writes it (CSV or
JSON by extension, atomically; an existing file only with --force); ``--plot`` draws it. The
target loss never rises as the guards loosen (each point starts from the tighter one's mixture).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from bayesmix import errors
from bayesmix.cli._options import (
    add_baseline_arguments,
    add_constraint_arguments,
    add_scale_arguments,
    constraints_from_args,
    parse_pairs,
    scale_from_args,
)
from bayesmix.cli._output import (
    TABLE_SUFFIXES,
    add_force_argument,
    add_json_argument,
    check_output,
    loud_warning,
    print_json,
    write_table,
)
from bayesmix.posterior.intervals import DEFAULT_PROB

#: Most points a sweep may have (each is one constrained optimisation).
MAX_POINTS = 200


def register(subparsers) -> argparse.ArgumentParser:
    parts = __doc__.split("\n\n")
    p = subparsers.add_parser(
        "frontier",
        help="trade-off frontier: best target loss against a guarantee's tolerance",
        description=parts[1],
        epilog="examples:\n"
        "  bayesmix frontier post.nc --target Github --guard all=0.01@0.9 -o front.csv "
        "--plot front.png\n"
        "  bayesmix frontier post.nc --target Github --guard all=0.005 "
        "--tolerances 0:0.03:0.005\n"
        "  bayesmix frontier post.nc --target Github --guard all=0.01 --probs "
        "0.5,0.7,0.8,0.9,0.95",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("posterior", metavar="POSTERIOR.nc", help="a posterior saved by bayesmix fit")
    p.add_argument(
        "--target",
        required=True,
        metavar="DOMAIN",
        help="the validation domain whose expected loss is minimised",
    )
    p.add_argument(
        "--guard",
        dest="guards",
        action="append",
        default=[],
        required=True,
        metavar="DOMAIN=TOL@PROB",
        help="no-worse guard (DOMAIN 'all' = every validation domain; @PROB "
        "default 0.9; repeatable)",
    )
    p.add_argument(
        "--max-loss",
        action="append",
        default=[],
        metavar="DOMAIN=VALUE@PROB",
        help="fixed absolute guard: DOMAIN's loss at most VALUE with probability PROB",
    )
    sweep = p.add_mutually_exclusive_group()
    sweep.add_argument(
        "--tolerances",
        metavar="T1,T2,..|START:STOP:STEP",
        help="tolerances (nats) of the no-worse guards (default 0 to 2 TOL in steps of TOL/4)",
    )
    sweep.add_argument(
        "--probs",
        metavar="P1,P2,..",
        help="sweep the guards' probability instead (tolerances as given)",
    )
    add_baseline_arguments(p)
    add_constraint_arguments(p)
    p.add_argument(
        "--ci-prob",
        "--prob",
        dest="ci_prob",
        type=float,
        default=DEFAULT_PROB,
        help=f"mass of the target loss intervals (default {DEFAULT_PROB})",
    )
    p.add_argument(
        "-o", "--output", "--out", dest="out", metavar="FILE.csv|FILE.json", help="write the table"
    )
    p.add_argument("--plot", metavar="FIG.png", help="draw the frontier (PNG, PDF or SVG)")
    p.add_argument(
        "--seed",
        dest="random_seed",
        type=int,
        default=0,
        help="seed of random starts (default 0)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    add_force_argument(p)
    add_scale_arguments(p)
    add_json_argument(p)
    p.set_defaults(func=run)
    return p


def parse_sweep(text: str, option: str) -> list[float]:
    """``"0,0.005,0.01"`` or ``"START:STOP:STEP"`` (STOP included) as floats; the points of a
    range are counted before they are made (``0:1:1e-12`` is refused at once)."""
    text = text.strip()
    try:
        if ":" in text:
            start, stop, step = (float(v) for v in text.split(":"))
            if not step > 0 or not stop >= start:
                raise ValueError
            n = int(np.floor((stop - start) / step + 1e-9)) + 1  # OverflowError: inf
            values = [start + i * step for i in range(min(n, MAX_POINTS + 1))]
        else:
            values = [float(v) for v in text.split(",") if v.strip()]
            n = len(values)
    except (ValueError, OverflowError):
        raise errors.OptionError(
            f"{option} {text!r} is not a list of numbers or START:STOP:STEP with STEP > 0",
            hint=f"e.g. {option} 0:0.03:0.005",
        ) from None
    if not values or not np.all(np.isfinite(values)):
        raise errors.OptionError(f"{option} {text!r}: give finite numbers")
    if n > MAX_POINTS:
        raise errors.OptionError(
            f"{option} {text!r} has {n} points (at most {MAX_POINTS})",
            hint="use a larger step",
        )
    return values


def run(args) -> int:
    import dataclasses

    from bayesmix.decisions.frontier import PLOT_SUFFIXES, frontier
    from bayesmix.decisions.guarantees import Guarantee
    from bayesmix.decisions.problem import DecisionProblem
    from bayesmix.io import check_distinct_outputs
    from bayesmix.posterior.posterior import Posterior

    inputs = (args.posterior, args.baseline_file)
    out = plot = None
    if args.out:  # before any work
        out = check_output(args.out, TABLE_SUFFIXES, "-o", inputs=inputs, force=args.force)
    if args.plot:
        plot = check_output(args.plot, PLOT_SUFFIXES, "--plot", inputs=inputs, force=args.force)
    check_distinct_outputs([("-o", out), ("--plot", plot)])
    guards = []
    for text in args.guards:
        guards += Guarantee.parse(text, "no-worse", param="guards")
    for text in args.max_loss:
        guards += Guarantee.parse(text, "max-loss", param="max_loss")
    tolerances = parse_sweep(args.tolerances, "--tolerances") if args.tolerances else None
    probs = parse_sweep(args.probs, "--probs") if args.probs else None
    baseline = args.baseline_file
    if args.baseline is not None:
        baseline = parse_pairs([args.baseline], "--baseline")
    problem = DecisionProblem(  # checked here, before any work
        target=args.target,
        guarantees=guards,
        baseline=baseline,
        ci_prob=args.ci_prob,
        max_extrapolation=args.max_extrapolation,
    )

    if not args.quiet:
        print(f"[frontier] loading {args.posterior}", file=sys.stderr, flush=True)
    posterior = Posterior.load(args.posterior)
    posterior.check_finite()
    scale = scale_from_args(args, posterior.law)
    posterior.check_scale(**scale, **problem.scale_options)
    problem = dataclasses.replace(
        problem,
        constraints=constraints_from_args(args, posterior.train_domains),
        inputs=scale or None,
    )
    loud_warning(posterior.diagnostics_warning)
    if not args.quiet:
        print("[frontier] solving", file=sys.stderr, flush=True)
    front = frontier(
        posterior, problem, tolerances=tolerances, probs=probs, random_seed=args.random_seed
    )
    front.source = args.posterior
    if args.json:
        print_json(front.table)
    else:
        print(front.to_text())
    if out is not None:
        write_table(front.table, out)
        print(f"wrote {out}")
    if plot is not None:
        front.plot(plot)
        print(f"wrote {plot}")
    return 0
