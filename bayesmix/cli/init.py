"""``bayesmix init``: create an experiment ledger, optionally with an initial design.

The ledger's domains come from ``--domains``/``--eval-domains`` or from existing run results
(``--runs``, imported as completed runs). Constraints (minimum, maximum, fixed shares, token caps)
are checked for feasibility before anything is written. ``--initial-design N`` records N proposed
runs spread over the feasible set (round 0) and writes them to a CSV or JSON file for the
training jobs. ``--menu`` and ``--target-scale`` record the proxy sizes and step counts one can
train and the target run's scale (a multi-fidelity loop); the initial design's runs then get
planned sizes, each size's longest entry in turn. ``--target-tokens`` given with
``--target-scale`` must be its steps x ``--tokens-per-step``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bayesmix import errors
from bayesmix.cli._options import (
    add_constraint_arguments,
    add_menu_arguments,
    constraints_from_args,
    menu_from_args,
    parse_pairs,
)
from bayesmix.cli._output import add_force_argument, proposals_table
from bayesmix.data.loaders import FORMATS, load
from bayesmix.data.table import check_domain_names, check_known_domains
from bayesmix.laws import get_law
from bayesmix.loop import design
from bayesmix.loop.fidelity import SCALE_INPUTS, check_target_tokens, one_size_note
from bayesmix.loop.ledger import Ledger, check_proposals_path, describe_fidelity
from bayesmix.model.spec import load_spec


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "init",
        help="create an experiment ledger (domains, constraints, initial design)",
        description=__doc__.split("\n\n")[0].removeprefix("``bayesmix init``: "),
        epilog="examples:\n"
        "  bayesmix init --ledger exp.db --domains web,code,books --max-share code=0.3 "
        "--initial-design 16 --seed 1\n"
        "  bayesmix init --ledger exp.db --runs past_runs.csv --initial-design 8\n"
        "  bayesmix init --ledger exp.db --domains web,code,books --initial-design 9 \\\n"
        "      --model scaling --menu 70M@10000,160M@10000,410M@20000 --target-scale 1B@100000",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--ledger", required=True, metavar="EXP.db", help="ledger file to create")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--domains", metavar="D1,D2,...", help="training domains, comma-separated")
    src.add_argument(
        "--runs",
        nargs="+",
        metavar="RUNS",
        help="existing run results to import; they define the domains",
    )
    p.add_argument(
        "--eval-domains",
        metavar="D1,D2,...",
        help="validation domains (default: the training domains; not with --runs)",
    )
    p.add_argument("--format", choices=FORMATS, help="format of --runs files (default: detect)")
    p.add_argument(
        "--renormalize", action="store_true", help="rescale --runs proportions that do not sum to 1"
    )
    add_constraint_arguments(p)
    p.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="EVAL_DOMAIN=WEIGHT",
        help="weight of a validation domain in the objective (stored in settings)",
    )
    p.add_argument(
        "--initial-design", type=int, metavar="N", help="propose N space-filling mixtures (round 0)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the initial design (default 0)")
    p.add_argument(
        "--method",
        choices=design.METHODS,
        default="sobol",
        help="sobol (quasi-random, default) or dirichlet (RegMix)",
    )
    p.add_argument(
        "--alpha",
        type=float,
        default=1.0,
        help="Dirichlet concentration of the design (default 1: uniform)",
    )
    p.add_argument(
        "--min-distance",
        type=float,
        metavar="D",
        help=f"smallest distance between design mixtures (default {design.DEFAULT_MIN_DISTANCE})",
    )
    p.add_argument(
        "-o",
        "--output",
        "--out",
        dest="out",
        metavar="FILE.csv|FILE.json",
        help="where to write the proposals (default: <ledger>-round0.csv)",
    )
    add_menu_arguments(p)
    p.add_argument(
        "--model",
        default="default",
        help="the law the loop fits (model name or TOML file; default m4): with --menu, a law "
        "over model size and tokens (e.g. scaling) spreads the initial design over the menu's "
        "sizes, a law of one size plans it at the largest entry",
    )
    add_force_argument(p)
    p.set_defaults(func=run)
    return p


def split_names(text: str, option: str) -> list[str]:
    names = [n.strip() for n in text.split(",")]
    if not all(names):
        raise errors.OptionError(
            f"{option} {text!r} has an empty name", hint=f"e.g. {option} web,code,books"
        )
    return names


def run(args) -> int:
    from bayesmix.loop.experiment import Experiment

    ledger_path = Path(args.ledger)
    if args.domains is not None:  # names checked before any file is read or written
        names = split_names(args.domains, "--domains")
        if len(names) < 2:
            raise errors.OptionError(
                f"--domains {args.domains!r} names one training domain: a mixture needs at least 2",
                hint="e.g. --domains web,code,books",
            )
        check_domain_names(names, "training", source="--domains")
    if args.target_tokens is not None and args.target_scale is not None:
        check_target_tokens(
            args.target_tokens,
            args.target_scale,
            args.tokens_per_step,
            names=("--target-tokens", "--target-scale"),
        )
    if ledger_path.exists():
        raise errors.LedgerError(
            "a file already exists here; refusing to overwrite it",
            source=str(ledger_path),
            hint="choose a new path, or use bayesmix status/ingest on it",
        )
    out = None
    if args.initial_design is not None:
        out = (
            Path(args.out) if args.out else ledger_path.with_name(ledger_path.stem + "-round0.csv")
        )
        check_proposals_path(out, overwrite=args.force, inputs=[ledger_path, *(args.runs or [])])
    elif args.out:
        raise errors.OptionError("--out needs --initial-design N")

    table = None
    if args.runs:
        if args.eval_domains:
            raise errors.OptionError(
                "--eval-domains cannot be combined with --runs",
                hint="the run files define the validation domains",
            )
        report: list[str] = []
        table = load(args.runs, args.format, renormalize=args.renormalize, report=report)
        for line in report:
            print(f"note: {line}")
        train, evals = list(table.train_domains), list(table.eval_domains)
    else:
        train = split_names(args.domains, "--domains")
        evals = split_names(args.eval_domains, "--eval-domains") if args.eval_domains else train
        check_domain_names(
            evals, "validation", source="--eval-domains" if args.eval_domains else "--domains"
        )

    tokens = parse_pairs(args.tokens_available, "--tokens-available")
    constraints = constraints_from_args(args, train)
    settings: dict = {}
    weights = parse_pairs(args.target, "--target")
    if weights:
        check_known_domains(weights, evals, "validation")
        if any(w < 0 for w in weights.values()) or not sum(weights.values()) > 0:
            raise errors.OptionError("--target weights must be >= 0 and not all 0")
    if tokens:
        settings["token_caps"] = {
            "tokens_available": tokens,
            "max_epochs": args.max_epochs,
            "target_tokens": args.target_tokens,
        }

    exp = Experiment.create(
        ledger_path,
        None if table is not None else train,
        None if table is not None else evals,
        constraints,
        runs=table,
        target=weights or None,
        settings=settings,
        initial_design=args.initial_design,
        design_method=args.method,
        design_alpha=args.alpha,
        design_min_distance=args.min_distance,
        out=out,
        random_seed=args.seed,
        model=args.model,
        **(menu_from_args(args) or {}),
    )
    print(
        f"created {ledger_path}: {len(train)} training domains ({', '.join(train)}), "
        f"{len(evals)} validation domains"
    )
    _print_created(exp, out)
    return 0


def _print_created(exp, out) -> None:
    """What ``init`` created besides the ledger: the menu, imported runs, round 0 (with each
    run's planned size, and why they share one entry for a law of one size)."""
    fidelity = exp.status()["fidelity"]
    if fidelity is not None:
        print(describe_fidelity(fidelity))
    if exp.last_ingest is not None:
        print(f"imported: {exp.last_ingest.describe()}")
    if exp.last_proposals is None:
        return
    ids = exp.last_proposals["run"].tolist()
    print(f"proposed {len(ids)} runs ({ids[0]} to {ids[-1]}), written to {out}")
    if fidelity is not None:  # the planned sizes of each run
        print(proposals_table(exp.last_proposals))
        law = get_law(load_spec(exp.model).law)
        if not all(k in law.inputs for k in SCALE_INPUTS):
            with Ledger.open(exp.path) as led:
                print(f"note: {one_size_note(law, led.fidelity().menu)}")
