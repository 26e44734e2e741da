"""``bayesmix optimize POSTERIOR.nc``: choose the mixture for the big run and report on it.

Prints the decision report (recommended mixture, predicted losses with intervals, the baseline's,
the probability of beating it, the spread of the per-draw optima; a failed-diagnostics warning
first). Any mixing law works; the report's ``optimiser:`` line says whether SLSQP converged and
how many starts reached the best value (a non-convex law gets more starts and a note when they
disagree). ``-o FILE.json|FILE.csv`` also writes it. Bad input: one line on stderr, exit status 2.
For a law over model size and tokens (``--model scaling``) ``--n-params N --tokens D`` say which
run the mixture is for; the report then says whether the recommendation moves between the
proxies' scale and that target, with the probability over posterior draws.
Guarantees (chance constraints over posterior draws, met exactly on the draws):
``--no-worse DOMAIN=TOL@PROB`` (``all=TOL@PROB`` for every validation domain) asks that the
domain's loss be at most TOL nats above the baseline's with probability PROB (paired per draw);
``--max-loss DOMAIN=VALUE@PROB`` that it be at most VALUE nats per token. When no mixture meets
them, one line names the binding guarantee and the best probability reachable (exit status 2).
``--objective minimax`` minimises the worst validation domain's expected change vs the baseline.
In benchmark points: ``--accuracy-links FILE.csv`` (columns task, loss, accuracy [, floor]: paired
values of runs that report a task's loss and accuracy; or task, floor, ceiling, midpoint, width:
links fitted elsewhere) gives each task's loss-to-accuracy link and adds the decision's
accuracy change per task (percentage points, interval, P(better)) to the report and to the -o
file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bayesmix import errors
from bayesmix.cli._options import (
    add_aggregate_arguments,
    add_baseline_arguments,
    add_ci_kind_argument,
    add_constraint_arguments,
    add_scale_arguments,
    constraints_from_args,
    parse_pairs,
    scale_from_args,
)
from bayesmix.cli._output import add_force_argument, add_json_argument, check_output, print_json
from bayesmix.decisions.objectives import OBJECTIVES
from bayesmix.decisions.optimize import DEFAULT_STARTS, NONCONVEX_STARTS
from bayesmix.posterior.intervals import DEFAULT_PROB

_EPILOG = """examples:
  bayesmix optimize post.nc --weights valid_weight.json --weights-subset
  bayesmix optimize post.nc --target Github --objective quantile:0.9 -o report.json
  bayesmix optimize post.nc --max-share code=0.3 --tokens-available books=2e9 \\
      --max-epochs 4 --target-tokens 1e11 --objective beat-baseline --baseline web=0.6,code=0.4
  bayesmix optimize post.nc --target Github --no-worse all=0.01@0.9 --baseline-file today.json
  bayesmix optimize post.nc --objective minimax --max-loss ArXiv=2.1@0.95
  bayesmix optimize tasks.nc --objective minimax --accuracy-links pairs.csv -o decision.json

objectives: mean (posterior expected loss), quantile:Q (Q-quantile over draws), cvar:Q (mean of
the worst 1-Q of draws), beat-baseline (maximise P(loss < baseline's loss)), minimax (minimise
the worst validation domain's expected loss change vs the baseline)."""


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "optimize",
        help="choose the mixture under uncertainty and constraints",
        description=__doc__.split("\n\n")[0].removeprefix("``bayesmix optimize POSTERIOR.nc``: "),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("posterior", metavar="POSTERIOR.nc", help="a posterior saved by bayesmix fit")
    add_aggregate_arguments(p)
    add_baseline_arguments(p)
    add_constraint_arguments(p)
    p.add_argument(
        "--objective",
        default="mean",
        metavar="|".join(OBJECTIVES),
        help="mean (default), quantile:Q, cvar:Q, beat-baseline or minimax",
    )
    p.add_argument(
        "--no-worse",
        action="append",
        default=[],
        metavar="DOMAIN=TOL@PROB",
        help="guarantee: DOMAIN's loss at most TOL nats above the baseline's with "
        "probability PROB (paired per draw; DOMAIN 'all' = every validation "
        "domain; repeatable)",
    )
    p.add_argument(
        "--max-loss",
        action="append",
        default=[],
        metavar="DOMAIN=VALUE@PROB",
        help="guarantee: DOMAIN's loss at most VALUE nats per token with probability "
        "PROB (repeatable)",
    )
    p.add_argument(
        "--ci-prob",
        "--prob",
        dest="ci_prob",
        type=float,
        default=DEFAULT_PROB,
        help=f"mass of the reported intervals (default {DEFAULT_PROB})",
    )
    p.add_argument(
        "-o",
        "--output",
        "--out",
        dest="out",
        metavar="FILE.json|FILE.csv",
        help="also write the report",
    )
    p.add_argument(
        "--accuracy-links",
        metavar="FILE.csv",
        help="state the decision in benchmark points: per task (loss, accuracy) pairs, "
        "columns task, loss, accuracy [, floor: chance accuracy]; a sigmoid link is fitted "
        "per task (at least 5 pairs each); or fitted links, one row per task: columns task, "
        "floor, ceiling, midpoint, width [, rmse]",
    )
    p.add_argument(
        "--draws-optima",
        action="store_true",
        help="include every draw's optimal mixture in the -o file",
    )
    p.add_argument(
        "--starts",
        dest="n_starts",
        type=int,
        default=None,
        help=f"optimiser starts (default {DEFAULT_STARTS}, {NONCONVEX_STARTS} for a "
        "non-convex law)",
    )
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
    add_ci_kind_argument(p)
    add_json_argument(p)
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    import dataclasses

    from bayesmix.decisions.decision import decide
    from bayesmix.posterior.posterior import Posterior

    out = _check_output(args)
    if args.allow_subset and not args.weights:
        raise errors.OptionError("--weights-subset needs --weights FILE.json")
    if args.n_starts is not None and args.n_starts < 1:
        raise errors.OptionError(f"--starts must be >= 1, got {args.n_starts}")
    problem = problem_from_args(args)  # malformed options fail here, before any work

    if not args.quiet:
        print(f"[optimize] loading {args.posterior}", file=sys.stderr, flush=True)
    posterior = Posterior.load(args.posterior)
    posterior.check_finite()  # NaN draws: refused, never silently optimised over
    scale = scale_from_args(args, posterior.law)
    posterior.check_scale(**scale, **problem.scale_options)  # fail early
    links = None
    if args.accuracy_links:
        from bayesmix.decisions.accuracy_link import read_links

        links = read_links(args.accuracy_links, tasks=posterior.eval_domains)
    problem = dataclasses.replace(
        problem,
        constraints=constraints_from_args(args, posterior.train_domains),
        inputs=scale or None,
    )
    report = decide(
        posterior,
        problem,
        n_starts=args.n_starts,
        random_seed=args.random_seed,
        progressbar=not args.quiet,
    )
    report.source = args.posterior
    if links:
        from bayesmix.decisions.task_groups import accuracy_changes

        # the posterior itself (a pipeline posterior's shifts), at the report's target scale
        report.accuracy_changes = accuracy_changes(posterior, report, links, ci_prob=report.prob)
    if args.json:
        print_json(report.to_dict())
    else:
        print(report.to_text())
    if out is not None:
        report.save(out, include_draw_optima=args.draws_optima)
        print(f"wrote {out}")
    return 0


def _check_output(args) -> Path | None:
    """The -o path checked before any work (format, folder writable, not an input, --force to
    replace), or None; --draws-optima needs it."""
    if not args.out:
        if args.draws_optima:
            raise errors.OptionError("--draws-optima needs -o FILE.json|FILE.csv")
        return None
    suffix = Path(args.out).suffix
    if suffix.lower() not in (".json", ".csv"):
        raise errors.OptionError(
            f"-o {args.out!r}: cannot write a report as {suffix or 'a file without suffix'}",
            hint="use a .json or .csv file name",
        )
    out = check_output(
        args.out,
        (".json", ".csv"),
        force=args.force,
        inputs=(args.posterior, args.weights, args.baseline_file, args.accuracy_links),
    )
    if not out.parent.is_dir():
        raise errors.OptionError(f"-o {args.out!r}: directory {str(out.parent)!r} does not exist")
    return out


def problem_from_args(args):
    """The :class:`~bayesmix.decisions.problem.DecisionProblem` of the options that need no
    posterior (checked by the problem itself); the constraints and the target scale are added
    once the posterior is read."""
    from bayesmix.decisions.guarantees import parse_guarantees
    from bayesmix.decisions.problem import DecisionProblem

    baseline = args.baseline_file
    if args.baseline is not None:
        baseline = parse_pairs([args.baseline], "--baseline")
    return DecisionProblem(
        weights=args.weights,
        target=args.target,
        allow_subset=args.allow_subset,
        objective=args.objective,
        baseline=baseline,
        guarantees=parse_guarantees(args.no_worse, args.max_loss),
        ci_prob=args.ci_prob,
        ci_kind=args.ci_kind,
        max_extrapolation=args.max_extrapolation,
    )
