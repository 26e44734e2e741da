"""``bayesmix evaluate POSTERIOR HELDOUT...``: score a posterior on held-out runs.

Predicts each held-out run's last checkpoint and prints, per validation domain and over all
of them, the mean absolute error, the bias (observed - predicted), Spearman's rank correlation
across runs and the coverage and mean width of the predictive intervals; ``--weights`` adds
each run's weighted overall loss. ``--json`` prints the same as JSON, ``-o`` writes the records
(.csv) or everything (.json), ``--plot`` draws predicted against observed (.png/.svg/.pdf).
"""

from __future__ import annotations

import argparse
import sys
import warnings

from bayesmix import errors
from bayesmix.cli._options import add_ci_kind_argument, add_max_loss_argument, max_loss_from_args
from bayesmix.cli._output import (
    add_force_argument,
    add_json_argument,
    check_output,
    loud_warning,
    print_json,
)
from bayesmix.data.loaders import FORMATS, load


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "evaluate",
        help="score a posterior on held-out runs (MAE, bias, Spearman, interval coverage)",
        description=__doc__.split("\n\n")[1],
        epilog="examples:\n"
        "  bayesmix evaluate posterior.nc heldout.csv\n"
        "  bayesmix evaluate posterior.nc heldout.csv --weights valid_weight.json "
        "--plot heldout.png -o heldout.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("posterior", metavar="POSTERIOR.nc", help="a fitted posterior")
    p.add_argument("heldout", nargs="+", metavar="HELDOUT", help="held-out run files")
    p.add_argument("--format", choices=FORMATS, help="input format (detected when omitted)")
    p.add_argument(
        "--ci-prob",
        "--prob",
        dest="ci_prob",
        type=float,
        default=0.9,
        help="probability mass of the intervals (default 0.9)",
    )
    add_ci_kind_argument(p)
    p.add_argument("--weights", metavar="FILE.json", help="validation-domain weights: overall loss")
    p.add_argument(
        "--weights-subset",
        dest="allow_subset",
        action="store_true",
        help="allow weights for domains the posterior lacks (renormalised over the rest)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed of the predictive draws")
    add_json_argument(p)
    p.add_argument("-o", "--output", metavar="FILE.csv|.json", help="write the scores")
    p.add_argument("--plot", metavar="FILE.png", help="predicted against observed")
    add_max_loss_argument(p)
    add_force_argument(p)
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from bayesmix.io import check_distinct_outputs
    from bayesmix.posterior.evaluation import evaluate
    from bayesmix.posterior.posterior import Posterior

    inputs = (args.posterior, *args.heldout, args.weights)
    if args.output:
        check_output(args.output, (".csv", ".json"), inputs=inputs, force=args.force)
    if args.plot:
        check_output(args.plot, (".png", ".svg", ".pdf"), inputs=inputs, force=args.force)
    check_distinct_outputs([("--output", args.output), ("--plot", args.plot)])
    if not 0 < args.ci_prob < 1:
        raise errors.OptionError(f"--ci-prob must be between 0 and 1, got {args.ci_prob:g}")
    if args.allow_subset and not args.weights:
        raise errors.OptionError("--weights-subset needs --weights FILE.json")
    post = Posterior.load(args.posterior)
    heldout = load(args.heldout, args.format, max_loss=max_loss_from_args(args))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", errors.ExtrapolationWarning)
        ev = evaluate(
            post,
            heldout,
            ci_prob=args.ci_prob,
            ci_kind=args.ci_kind,
            weights=args.weights,
            allow_subset=args.allow_subset,
            random_seed=args.seed,
        )
    ev.heldout = ", ".join(args.heldout)
    loud_warning(post.diagnostics_warning)
    if args.json:
        print_json({k: v for k, v in ev.to_dict().items() if k != "records"})
    else:
        print(ev.to_text())
    if args.output:
        ev.save(args.output)
        print(f"written: {args.output}", file=sys.stderr if args.json else sys.stdout)
    if args.plot:
        from bayesmix.io import atomic_path

        fig = ev.plot()
        with atomic_path(args.plot, suffix=True) as tmp:
            fig.savefig(tmp, dpi=120, bbox_inches="tight")
        print(f"plot: {args.plot}", file=sys.stderr if args.json else sys.stdout)
    return 0
