"""``bayesmix backtest RUNS... [-o backtest.json]``: how well extrapolating to a larger model
size or more tokens works, measured within the proxies before the big run.

Refits with the largest proxy size held out, and with the latest checkpoints held out (after
the last step / --step-ratio), predicts what was held out with the same predictor that predicts
the target (--method nested: the nested pipeline; joint: one law over size and tokens), and
prints coverage, bias and MAE by split and distance, with the extrapolation error learned from
the residuals (what `bayesmix pipeline` adds to its target-scale intervals).
"""

from __future__ import annotations

import argparse
import sys

from bayesmix import errors
from bayesmix.cli._options import (
    add_max_loss_argument,
    add_max_time_argument,
    max_loss_from_args,
    max_time_from_args,
)
from bayesmix.cli._output import add_force_argument, add_json_argument, check_output, print_json
from bayesmix.data.loaders import FORMATS, load
from bayesmix.inference.gate_retry import PIPELINE_DRAWS, PIPELINE_TUNE, STAGE_MAX_TIME


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "backtest",
        help="check target-scale extrapolation within the proxies (size and steps held out)",
        description=__doc__.split("\n\n")[1],
        epilog="examples:\n"
        "  bayesmix backtest ../data/5Mix/70M.txt ../data/5Mix/160M.txt "
        "../data/5Mix/305M.txt ../data/5Mix/410M.txt \\\n"
        "      --max-step 30000 --weights ../data/pipeline/valid_weight.json -o backtest.json\n"
        "  bayesmix backtest ../data/5Mix --method joint --max-step 30000",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("runs", nargs="+", metavar="RUNS", help="run files or directories")
    p.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="save the backtest: .json (summary, splits, calibration, records) or .csv "
        "(one row per held-out run and validation domain)",
    )
    add_predictor_arguments(p)
    p.add_argument("--format", choices=FORMATS, help="input format (detected when omitted)")
    p.add_argument(
        "--weights",
        metavar="FILE.json",
        help="validation-domain weights: adds each held-out run's overall loss",
    )
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    add_max_time_argument(p, per="each refit's stage fit", default=STAGE_MAX_TIME)
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    add_max_loss_argument(p)
    add_force_argument(p)
    add_json_argument(p)
    p.set_defaults(func=run)
    return p


def with_declared_schedule(table, text: str | None):
    """The run table with ``--schedule`` filled in where its runs have none."""
    if text is None:
        return table
    from bayesmix.data.schedules import ScheduleError, declare
    from bayesmix.data.table import MAX_LOSS_LIMIT, RunTable

    try:
        tidy = declare(table.to_tidy(), text)
    except ScheduleError as err:
        raise errors.OptionError(f"--schedule: {err}") from None
    return RunTable.from_frame(tidy, source=table.source, max_loss=MAX_LOSS_LIMIT)


def add_stage_sampler_arguments(p: argparse.ArgumentParser, chains_note: str = "") -> None:
    """``--draws``/``--tune``/``--chains`` of every pipeline stage fit, at the pipeline's
    defaults (shared with ``bayesmix pipeline``)."""
    p.add_argument(
        "--draws",
        type=int,
        default=PIPELINE_DRAWS,
        help=f"draws per chain, every stage fit (default {PIPELINE_DRAWS})",
    )
    p.add_argument(
        "--tune",
        type=int,
        default=PIPELINE_TUNE,
        help=f"tuning steps per chain (default {PIPELINE_TUNE})",
    )
    p.add_argument("--chains", type=int, default=2, help=f"chains per fit (default 2{chains_note})")


def add_predictor_arguments(p: argparse.ArgumentParser, *, method: bool = True) -> None:
    """Options of the backtest's refits (shared with ``bayesmix pipeline``)."""
    if method:
        p.add_argument(
            "--method",
            choices=("nested", "joint"),
            default="nested",
            help="the predictor: nested pipeline (default) or one law over size and tokens",
        )
        p.add_argument(
            "--model",
            metavar="NAME|FILE.toml",
            help="mixing-law specification (nested: stage 3, default 'target'; joint: "
            "default 'scaling')",
        )
        p.add_argument(
            "--max-step", type=float, metavar="S", help="proxy checkpoints up to this step"
        )
        p.add_argument(
            "--imputations", type=int, default=4, metavar="J", help="nested: J (default 4)"
        )
        add_stage_sampler_arguments(p)
    p.add_argument(
        "--schedule",
        metavar="KIND[,total=N][,warmup=N][,decay=N][,min_lr=X]",
        help="the proxies' learning-rate schedule where the run files give none (constant, "
        "cosine, linear, wsd; without total= each run's schedule ends at its last checkpoint), "
        "e.g. cosine,warmup=2000; default: the files' schedule columns, else a constant rate",
    )
    p.add_argument(
        "--size-splits",
        type=int,
        default=2,
        metavar="K",
        help="size backtests: 1 predicts the largest size from all smaller ones, 2 also from "
        "all but the two largest (4 or more sizes; default 2)",
    )
    p.add_argument(
        "--step-ratio",
        type=float,
        default=3.0,
        metavar="R",
        help="the steps backtest fits checkpoints up to the last step / R (default 3)",
    )


def run(args) -> int:
    from bayesmix.scaling.backtesting import backtest

    out = (
        check_output(args.output, (".json", ".csv"), inputs=args.runs, force=args.force)
        if args.output
        else None
    )
    for name in ("imputations", "draws", "tune", "chains"):
        if getattr(args, name) < 1:
            raise errors.OptionError(f"--{name} must be >= 1, got {getattr(args, name)}")
    table = with_declared_schedule(
        load(args.runs, args.format, max_loss=max_loss_from_args(args)), args.schedule
    )
    bt = backtest(
        table,
        method=args.method,
        model=args.model,
        max_step=args.max_step,
        step_ratio=args.step_ratio,
        size_splits=args.size_splits,
        imputations=args.imputations,
        draws=args.draws,
        tune=args.tune,
        chains=args.chains,
        random_seed=args.seed,
        weights=args.weights,
        progressbar=not args.quiet,
        max_time=max_time_from_args(args),
    )
    if args.json:
        print_json(bt.to_dict(records=False))
    else:
        print(bt.to_text())
    if out is not None:
        bt.save(out)
        print(f"saved:       {out}", file=sys.stderr if args.json else sys.stdout)
    return 0
