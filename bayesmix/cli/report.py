"""``bayesmix report POSTERIOR.nc``: one self-contained HTML report to look at.

The fit and its diagnostics (trace and rank plots of the worst parameters), a posterior
predictive check per validation domain, the slope matrix as a heatmap, the loss along lines
through the simplex and a ternary slice through three training domains; with a decision
(``--decision FILE.json`` from ``bayesmix optimize -o``, or computed here when ``--decide``,
``--weights``, ``--target``, ``--objective`` or a constraint is given) the decision report with
the spread of the optimum; with ``--ledger`` the active-learning loop's progress per round;
with ``--accuracy-links FILE.csv`` (as ``bayesmix optimize`` reads it) the decision's accuracy
change per linked task in percentage points, in the downstream-tasks section.
Figures are embedded PNGs: the file opens in any browser without network access. The output is
checked before any work (never an input; an existing file only with ``--force``) and written
atomically. Bad input: one line on stderr, exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bayesmix import errors
from bayesmix.cli._options import (
    add_aggregate_arguments,
    add_ci_kind_argument,
    add_constraint_arguments,
    add_scale_arguments,
    constraints_from_args,
    parse_pairs,
    scale_from_args,
)
from bayesmix.cli._output import add_force_argument, check_output
from bayesmix.decisions.objectives import OBJECTIVES
from bayesmix.posterior.intervals import DEFAULT_PROB

_EPILOG = """examples:
  bayesmix report post.nc -o report.html
  bayesmix report post.nc --decision decision.json --ledger exp.db -o report.html
  bayesmix report post.nc --max-share web=0.5 --min-share wiki=0.05 --ternary web,code,books
  bayesmix report tasks.nc --decision decision.json --accuracy-links pairs.csv -o report.html

Without -o the report goes next to the posterior, as POSTERIOR.html."""


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "report",
        help="write a self-contained HTML report (fit, checks, decision, loop)",
        description=__doc__.split("\n\n")[0].removeprefix("``bayesmix report POSTERIOR.nc``: "),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("posterior", metavar="POSTERIOR.nc", help="a posterior saved by bayesmix fit")
    p.add_argument(
        "-o",
        "--output",
        "--out",
        dest="out",
        metavar="FILE.html",
        help="the report (default: the posterior's name with .html)",
    )
    p.add_argument(
        "--decision",
        metavar="FILE.json",
        help="a decision report written by 'bayesmix optimize -o FILE.json'",
    )
    p.add_argument(
        "--decide",
        action="store_true",
        help="compute the decision here (implied by --weights, --target, "
        "--objective, --baseline or a constraint)",
    )
    add_aggregate_arguments(p)
    p.add_argument(
        "--objective",
        metavar="|".join(OBJECTIVES),
        help="decision objective (default mean): mean, quantile:Q, cvar:Q, beat-baseline",
    )
    p.add_argument(
        "--baseline",
        metavar="D=SHARE,...",
        help="baseline mixture to compare with (default: uniform)",
    )
    add_constraint_arguments(p)
    p.add_argument(
        "--accuracy-links",
        metavar="FILE.csv",
        help="show the decision in benchmark points: per task (loss, accuracy) pairs, columns "
        "task, loss, accuracy [, floor] (a decision is computed when none is given)",
    )
    p.add_argument("--ledger", metavar="EXP.db", help="an experiment ledger: progress per round")
    p.add_argument(
        "--ternary",
        metavar="A,B,C",
        help="three training domains for the ternary view (default: the three "
        "largest shares of the recommendation)",
    )
    p.add_argument(
        "--ci-prob",
        "--prob",
        dest="prob",
        type=float,
        default=DEFAULT_PROB,
        help=f"mass of the intervals (default {DEFAULT_PROB})",
    )
    p.add_argument("--title", help="the report's title")
    p.add_argument("--seed", type=int, default=0, help="seed of the optimiser's random starts")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    add_force_argument(p)
    add_scale_arguments(p)
    add_ci_kind_argument(p)
    p.set_defaults(func=run)
    return p


def _wants_decision(args) -> bool:
    constraints = (args.min_share, args.max_share, args.fixed, args.tokens_available)
    return bool(
        args.decide
        or args.weights
        or args.target
        or args.objective
        or args.baseline
        or any(constraints)
        or args.target_tokens is not None
    )


def run(args) -> int:
    from bayesmix.posterior.posterior import Posterior
    from bayesmix.reporting.html_report import load_decision, write_report

    def say(msg: str) -> None:
        if not args.quiet:
            print(f"[report] {msg}", file=sys.stderr, flush=True)

    decide_here = _wants_decision(args) or bool(args.accuracy_links and not args.decision)
    if args.decision and decide_here:
        raise errors.OptionError(
            "--decision FILE.json reads a decision; the decision options "
            "(--decide, --weights, --target, --objective, --baseline, "
            "constraints) compute one: give one or the other"
        )
    if args.allow_subset and not args.weights:
        raise errors.OptionError("--weights-subset needs --weights FILE.json")
    out_path = args.out or str(Path(args.posterior).with_suffix(".html"))
    inputs = (args.posterior, args.decision, args.ledger, args.weights, args.accuracy_links)
    out = check_output(out_path, (".html", ".htm"), force=args.force, inputs=inputs)
    if args.ledger is not None and not Path(args.ledger).is_file():
        raise errors.LedgerError("file not found", source=args.ledger)
    decision = load_decision(args.decision) if args.decision else None

    say(f"loading {args.posterior}")
    posterior = Posterior.load(args.posterior)
    posterior.check_finite()
    links = None
    if args.accuracy_links:
        from bayesmix.decisions.accuracy_link import read_links

        links = read_links(args.accuracy_links, tasks=posterior.eval_domains)
    if decide_here:
        from bayesmix.decisions.decision import decide

        scale = scale_from_args(args, posterior.law)
        constraints = constraints_from_args(args, posterior.train_domains)
        baseline = parse_pairs([args.baseline], "--baseline") if args.baseline else None
        say("deciding")
        decision = decide(
            posterior,
            weights=args.weights,
            target=args.target,
            constraints=constraints,
            objective=args.objective or "mean",
            baseline=baseline,
            ci_prob=args.prob,
            ci_kind=args.ci_kind,
            allow_subset=args.allow_subset,
            random_seed=args.seed,
            inputs=scale or None,
            max_extrapolation=args.max_extrapolation,
        )
        decision.source = args.posterior
    if links and decision is not None:  # a decision is computed when none was given
        from bayesmix.decisions.task_groups import accuracy_changes

        # the posterior itself (a pipeline posterior's shifts), at the decision's target scale
        decision.accuracy_changes = accuracy_changes(
            posterior, decision, links, ci_prob=decision.prob
        )
    say("drawing the figures")
    path = write_report(
        out,
        posterior,
        decision=decision,
        ledger=args.ledger,
        ternary=args.ternary,
        ci_prob=args.prob,
        ci_kind=args.ci_kind,
        title=args.title,
        force=args.force,
        inputs=inputs,
    )
    print(f"wrote {path}")
    return 0
