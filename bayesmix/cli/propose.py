"""``bayesmix propose``: propose the next batch of proxy runs for an experiment ledger.

With no completed runs it proposes a space-filling initial design (or random pool rows).
Otherwise it refits the model when results arrived since the last fit (the posterior is saved
next to the ledger as ``<ledger>.posterior-round<N>.nc``; an unchanged ledger reuses the last
one), chooses ``-n`` runs with the chosen strategy, accounting for runs still pending, records
them in the ledger (one transaction that allocates the round and re-checks the distances, with
the posterior's path and hash) and writes them as CSV or JSON for the training jobs (the file
is checked before any fit; ``bayesmix export`` writes any round's file again). A posterior that
failed its diagnostics is reported loudly and recorded with the proposals. ``--menu`` and
``--target-scale`` record (or change) the proxy sizes and step counts one can train and the
target run's scale first; ``--strategy target-info`` then chooses (mixture, size, steps) runs.
The work is done by :meth:`bayesmix.loop.experiment.Experiment.propose`.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from contextlib import contextmanager

from bayesmix import errors
from bayesmix.cli._options import menu_from_args
from bayesmix.cli._output import TABLE_SUFFIXES, check_output, proposals_table
from bayesmix.loop.refit import results_digest, shown_path  # noqa: F401 - re-exported

_EPILOG = """strategies:
  thompson      posterior sampling: each run is the optimum of one posterior draw (default)
  optimum-info  runs that best tell apart where the optimum is (groups of per-draw optima)
  bald          runs that most reduce uncertainty about the law's parameters (early rounds)
  random        RegMix's design: Dirichlet mixtures / random pool rows (baseline)
  target-info   (mixture, size, steps) runs that tell most about the optimum at the target
                scale per unit of cost (needs --menu/--target-scale and a law over size and
                tokens, e.g. --model scaling)
With a menu in the ledger the other strategies choose mixtures only: their runs are planned
at the menu's largest entry (the largest size at its most steps), and a note says so.

examples:
  bayesmix propose --ledger exp.db -n 8
  bayesmix propose --ledger exp.db -n 8 --strategy optimum-info --out round2.json
  bayesmix propose --ledger exp.db -n 4 --pool candidates.csv --strategy bald
  bayesmix propose --ledger exp.db -n 8 --draws 500 --tune 500 --chains 2 --seed 3
  bayesmix propose --ledger exp.db -n 4 --model scaling --strategy target-info \\
      --menu 70M@10000,160M@10000,410M@20000 --target-scale 1B@100000

A pool file lists candidate runs: mix.<domain> (or bare domain) columns, optional run,
n_params and steps/tokens (then every strategy weighs the cost n_params x tokens: information
/ cost^P, Thompson's improvement / cost^P, random rows drawn with probability ~ cost^-P)."""


def register(subparsers) -> argparse.ArgumentParser:
    from bayesmix.cli._options import (
        add_menu_arguments,
        add_refit_arguments,
        add_size_argument,
    )
    from bayesmix.loop.acquire import (
        DEFAULT_CANDIDATES,
        DEFAULT_MIN_DISTANCE,
        MULTIFIDELITY_STRATEGIES,
        STRATEGIES,
    )

    p = subparsers.add_parser(
        "propose",
        help="propose the next proxy runs (active learning) and record them",
        description=__doc__.split("\n\n")[0].removeprefix("``bayesmix propose``: "),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--ledger", required=True, metavar="EXP.db", help="the experiment ledger")
    p.add_argument("-n", type=int, default=8, metavar="N", help="runs to propose (default 8)")
    p.add_argument(
        "--strategy",
        default="thompson",
        metavar="|".join(STRATEGIES + MULTIFIDELITY_STRATEGIES),
        help="acquisition strategy (default thompson)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of sampling and proposals")
    p.add_argument(
        "-o",
        "--output",
        "--out",
        dest="out",
        metavar="FILE.csv|FILE.json",
        help="where to write the proposals (default: <ledger>-round<N>.csv)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="replace the proposals file if it exists (else refused before any work)",
    )
    p.add_argument(
        "--pool",
        metavar="POOL.csv",
        help="choose among these candidate runs instead of the whole feasible set",
    )
    add_refit_arguments(p)
    p.add_argument(
        "--refit", action="store_true", help="refit even when no result arrived since the last fit"
    )
    obj = p.add_mutually_exclusive_group()
    obj.add_argument(
        "--target",
        metavar="EVAL_DOMAIN",
        help="optimise one validation domain (default: the ledger's target "
        "weights, else equal weights)",
    )
    obj.add_argument(
        "--weights", metavar="FILE.json", help="validation-domain weights {domain: weight}"
    )
    p.add_argument(
        "--min-distance",
        type=float,
        default=None,
        metavar="D",
        help="smallest distance between a proposal and any other run (default "
        f"{DEFAULT_MIN_DISTANCE})",
    )
    p.add_argument(
        "--candidates",
        type=int,
        default=DEFAULT_CANDIDATES,
        metavar="N",
        help=f"size of the continuous candidate cloud (default {DEFAULT_CANDIDATES})",
    )
    p.add_argument(
        "--cost-power",
        type=float,
        default=1.0,
        metavar="P",
        help="weight of cost (n_params x tokens) for pools with sizes, every "
        "strategy; 0 ignores cost (default 1)",
    )
    add_menu_arguments(p)
    add_size_argument(p)
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=run)
    return p


def open_experiment(args, log):
    """The ledger's Experiment with the refit options of ``propose`` and ``run``
    (``add_refit_arguments``: model, draws, tune, chains, seed, quiet) and ``log``."""
    from bayesmix.loop.experiment import Experiment

    return Experiment(
        args.ledger,
        model=args.model,
        draws=args.draws,
        tune=args.tune,
        chains=args.chains,
        random_seed=args.seed,
        progressbar=not args.quiet,
        log=log,
    )


def _say(args, msg: str) -> None:
    if not args.quiet:
        print(f"[propose] {msg}", file=sys.stderr, flush=True)


def _check_options(args) -> None:
    """Every option checked before any work: a bad value, an unknown strategy or an unknown or
    invalid model specification (law, priors) fails here with one line, not after MCMC."""
    from bayesmix.loop.acquire import get_strategy
    from bayesmix.model.spec import load_spec

    if args.n < 1:
        raise errors.OptionError(f"-n must be >= 1, got {args.n}")
    for name in ("draws", "tune", "chains", "candidates"):
        if getattr(args, name) < 1:
            raise errors.OptionError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.min_distance is not None and not args.min_distance >= 0:
        raise errors.OptionError(f"--min-distance must be >= 0, got {args.min_distance}")
    if not args.cost_power >= 0:
        raise errors.OptionError(f"--cost-power must be >= 0, got {args.cost_power}")
    get_strategy(args.strategy)  # unknown names fail here, before any work
    load_spec(args.model)  # unknown model or law, bad priors: before any fit


def _loud(warning: str) -> None:
    bar = "!" * 78
    print(
        f"{bar}\nWARNING: {warning}\nThe proposals below come from a posterior that failed "
        f"its diagnostics; they may be poorly chosen. Refit with more draws/tuning (or a "
        f"better model) before relying on them.\n{bar}",
        file=sys.stderr,
        flush=True,
    )


@contextmanager
def banner_warnings():
    """Inside: a ConvergenceWarning is printed as the loud banner (every time), other warnings
    as usual."""
    from bayesmix.posterior.diagnostics import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("always", ConvergenceWarning)
        default = warnings.showwarning

        def show(message, category, *rest, **kw):
            if issubclass(category, ConvergenceWarning):
                _loud(str(message))
            else:
                default(message, category, *rest, **kw)

        warnings.showwarning = show
        yield


def run(args) -> int:

    _check_options(args)
    if args.out:  # before any fit: not an input, not an existing file without --force
        check_output(
            args.out,
            TABLE_SUFFIXES,
            "--out",
            force=args.force,
            inputs=[args.ledger, args.pool, args.weights],
        )
    exp = open_experiment(args, lambda msg: _say(args, msg))
    with banner_warnings():
        frame = exp.propose(
            args.n,
            args.strategy,
            pool=args.pool,
            out=args.out if args.out else True,
            force=args.force,
            target=args.target,
            weights=args.weights,
            min_distance=args.min_distance,
            candidates=args.candidates,
            cost_power=args.cost_power,
            refit=args.refit,
            random_seed=args.seed,
            size=args.size,
            **(menu_from_args(args) or {}),
        )
    info = frame.attrs
    for note in info["notes"]:
        print(f"note: {note}")
    ids = frame["run"].tolist()
    print(
        f"round {info['round']}: proposed {len(ids)} runs by {info['strategy']} ({ids[0]} to "
        f"{ids[-1]}), written to {info['path']}"
    )
    if info["posterior"] is not None:
        failed = info["fit"] and info["fit"].get("diagnostics_warning")
        print(
            f"posterior: {shown_path(info['posterior'])}"
            + (" (FAILED diagnostics)" if failed else "")
        )
    print(proposals_table(frame))
    return 0
