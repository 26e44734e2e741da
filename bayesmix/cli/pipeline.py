"""``bayesmix pipeline RUNS... --n-params 1e9 --steps 100000 -o target.nc``: the mixing law at a
target model size and step, fitted through the nested scaling pipeline.

Fits every learning curve of the proxy runs with a step law, extrapolates each run to
``--steps``, fits a size law per mixture across the proxy sizes and extrapolates to
``--n-params``, then fits the mixing law (``--model``) to the predicted target-scale losses;
uncertainty passes between stages as ``--imputations`` posterior draws, and the mixing-law
posterior (whose predictions add the J imputations' shared shifts) is one file that
``bayesmix predict``/``optimize`` read like any fit.
Prints each stage's timings and diagnostics; a stage that fails its diagnostics gate gets a
loud warning on stderr (the posterior is still saved, with every report stored in it).
"""

from __future__ import annotations

import argparse
import math
import warnings

from bayesmix import errors
from bayesmix.cli._options import (
    add_max_loss_argument,
    add_max_time_argument,
    max_loss_from_args,
    max_time_from_args,
)
from bayesmix.cli._output import add_force_argument, check_output, loud_warning
from bayesmix.cli.backtest import (
    add_predictor_arguments,
    add_stage_sampler_arguments,
    with_declared_schedule,
)
from bayesmix.data.loaders import FORMATS, load
from bayesmix.data.ye_logs import size_label
from bayesmix.inference.gate_retry import STAGE_MAX_TIME


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "pipeline",
        help="fit the mixing law at a target size and step from smaller, shorter "
        "proxy runs (nested scaling laws, uncertainty carried by draws)",
        description=__doc__.split("\n\n")[1],
        epilog="examples:\n"
        "  bayesmix pipeline ../data/5Mix/70M.txt ../data/5Mix/160M.txt "
        "../data/5Mix/410M.txt \\\n"
        "      --n-params 1B --steps 100000 --max-step 30000 -o target.nc --seed 1\n"
        "  bayesmix predict target.nc new.csv",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "runs",
        nargs="+",
        metavar="RUNS",
        help="run files or directories (checkpoints with model sizes and steps)",
    )
    p.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="POSTERIOR.nc",
        help="where to save the target-scale posterior",
    )
    p.add_argument(
        "--n-params", required=True, metavar="N", help="target model size (e.g. 1B, 1.4B, 1e9)"
    )
    p.add_argument(
        "--steps",
        required=True,
        type=float,
        metavar="S",
        help="target training steps (tokens = steps x the runs' tokens per step)",
    )
    p.add_argument(
        "--imputations",
        type=int,
        default=4,
        metavar="J",
        help="draws passed between stages (J stage-2 fits; default 4)",
    )
    p.add_argument(
        "--model",
        default="target",
        metavar="NAME|FILE.toml",
        help="mixing-law specification of stage 3 (default: target, M4 plus exact absence)",
    )
    p.add_argument(
        "--max-step",
        type=float,
        metavar="S",
        help="fit only checkpoints up to this step (default: all)",
    )
    p.add_argument("--format", choices=FORMATS, help="input format (detected when omitted)")
    add_stage_sampler_arguments(p, "; the saved posterior has J x chains")
    p.add_argument("--seed", type=int, help="random seed (default: fresh randomness)")
    p.add_argument(
        "--no-backtest",
        action="store_true",
        help="skip the backtests (refits with the largest size and the latest steps held "
        "out); then the target-scale intervals carry no learned extrapolation error",
    )
    p.add_argument(
        "--target-schedule",
        metavar="KIND[,warmup=N][,decay=N][,min_lr=X]",
        help="the target run's learning-rate schedule, ending at --steps unless total= says "
        "otherwise (default: the proxies' kind when they have one, else a constant rate)",
    )
    add_predictor_arguments(p, method=False)
    add_max_time_argument(p, per="each stage fit", default=STAGE_MAX_TIME)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_max_loss_argument(p)
    add_force_argument(p)
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from bayesmix.model.model import size_values
    from bayesmix.model.spec import load_spec

    out = check_output(args.output, inputs=args.runs, force=args.force)
    max_loss = max_loss_from_args(args)
    max_time = max_time_from_args(args)
    n_params = size_values([args.n_params], param="n_params")[0]
    if not (math.isfinite(args.steps) and args.steps > 0):
        raise errors.OptionError(f"--steps must be a positive finite number, got {args.steps:g}")
    if args.imputations < 1:
        raise errors.OptionError(f"--imputations must be >= 1, got {args.imputations}")
    load_spec(args.model)  # a bad specification fails before the data is read
    table = with_declared_schedule(load(args.runs, args.format, max_loss=max_loss), args.schedule)
    if args.target_schedule is not None:
        from bayesmix.data.schedules import Schedule, ScheduleError

        try:
            Schedule.parse(args.target_schedule, total_steps=args.steps)
        except ScheduleError as err:
            raise errors.OptionError(f"--target-schedule: {err}") from None

    from bayesmix.scaling.pipeline import gate_warnings, nested_fit, pipeline_record

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the gates are printed below, loudly
        post = nested_fit(
            table,
            target_n_params=n_params,
            target_steps=args.steps,
            imputations=args.imputations,
            spec=args.model,
            draws=args.draws,
            tune=args.tune,
            chains=args.chains,
            random_seed=args.seed,
            progressbar=not args.quiet,
            max_step=args.max_step,
            warn=False,
            max_time=max_time,
            target_schedule=args.target_schedule,
        )
    bt = None
    if not args.no_backtest:
        from bayesmix.scaling.backtesting import attach, backtest, target_axes

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            bt = backtest(
                table,
                method="nested",
                model=args.model,
                max_step=args.max_step,
                step_ratio=args.step_ratio,
                size_splits=args.size_splits,
                imputations=args.imputations,
                draws=args.draws,
                tune=args.tune,
                chains=args.chains,
                random_seed=args.seed,
                progressbar=not args.quiet,
                max_time=max_time,
            )
        axes = target_axes(table, n_params=n_params, steps=args.steps, max_step=args.max_step)
        attach(post, bt, target_axes=axes)
    post.save(out)
    record = pipeline_record(post)
    assert record is not None  # nested_fit records it
    print(summary(post, record, out))
    if bt is not None:
        print("\n" + bt.to_text())
        from bayesmix.posterior.extrapolation import stored_backtest as stored

        target = (stored(post) or {}).get("target")
        if target:
            print(
                f"target:      at log-distance {target['distance']:.2f} beyond the proxies "
                f"(size {target.get('size_distance', 0):.2f}, tokens "
                f"{target.get('token_distance', 0):.2f}); "
                f"the learned extrapolation error is {100 * target['extrapolation_share']:.0f}% "
                "of the predictive variance (median over the fitted mixtures and domains)"
            )
        if not bt.gates_ok:
            loud_warning(
                "a backtest fit did not pass its diagnostics gate",
                "its verdict is stored with the posterior (attribute bayesmix_backtest).",
            )
    else:
        print(
            "\nno backtest (--no-backtest): the target-scale intervals rest on the laws' "
            "forms alone, with no learned extrapolation error"
        )
    for line in gate_warnings(post):
        loud_warning(
            line,
            f"the posterior was saved to {out} with every stage's report "
            "stored in it (attribute bayesmix_pipeline).",
        )
    return 0


def _status(report: dict, settings: dict | None = None) -> str:
    """PASSED or FAILED: checks, after how many attempts when more than one was made."""
    failed = report["failed"]
    n = len((settings or {}).get("attempts") or [])
    tried = f" ({n} attempts)" if n > 1 else ""
    return ("PASSED" if not failed else "FAILED: " + "; ".join(failed)) + tried


def summary(post, rec: dict, path) -> str:
    """Target, proxies, per-stage timings and diagnostics, stage 3's report."""
    t, p = rec["target"], rec["proxies"]
    s1 = rec["stage1"]
    lines = [
        f"target:      {size_label(t['n_params'])} parameters, {t['steps']:g} steps "
        f"({t['tokens']:.3g} tokens), learning rate "
        f"{t.get('schedule') or 'constant'}",
        f"proxies:     {p['runs']} runs, {p['records']} checkpoints (steps "
        f"{p['step_range'][0]:g}-{p['step_range'][1]:g}), sizes "
        f"{', '.join(size_label(s) for s in p['sizes'])}; {len(p['mixtures'])} mixtures",
        f"imputations: {rec['imputations']} (stage 3 model {rec['spec']!r}), seed {rec['seed']}",
        "",
        f"stage 1 (step law):   compile {s1['compile_s']:.1f} s, sampling "
        f"{s1['sample_s']:.1f} s; {_status(s1['diagnostics'], s1['settings'])}",
    ]
    reports = rec["stage2"]
    compile_s = sum(r["compile_s"] or 0.0 for r in reports)
    sample_s = sum(r["sample_s"] or 0.0 for r in reports)
    lines.append(
        f"stage 2 (size law):   {len(reports)} fits, compile {compile_s:.1f} s, "
        f"sampling {sample_s:.1f} s"
    )
    lines += [
        f"  imputation {j + 1}: {_status(r['diagnostics'], r['settings'])}"
        for j, r in enumerate(reports)
    ]
    s3 = rec["stage3"]
    lines.append(
        f"stage 3 (mixing law): 1 fit, compile {s3['compile_s'] or 0.0:.1f} s, sampling "
        f"{s3['sample_s'] or 0.0:.1f} s; {_status(s3['diagnostics'], s3['settings'])}"
    )
    lines.append(f"total:       {rec['timings']['wall_s']:.1f} s")
    lines += [f"note:        {n}" for n in rec["notes"]]
    lines += [
        "",
        "stage-3 posterior (predictions add the imputations' shared shifts):",
        post.diagnostics.table(),
        "",
        f"saved:       {path}",
    ]
    return "\n".join(lines)
