"""``bayesmix run``: run the active-learning loop: launch proposed runs, ingest, propose again.

For each proposed run the command template is filled in (``{run}``, ``{mixture_json}``,
``{mixture_file}``, ``{out}``, ``{workdir}``, shell-quoted absolute paths) and run from the
directory ``bayesmix run`` was started in (``--cwd`` to change it) on this machine
(``--executor local``, ``--parallel`` at a time) or as Ray tasks (``--executor ray``, on
``--ray-address`` or a local Ray instance). The job writes its losses to ``{out}`` (a run table
``bayesmix ingest`` reads, e.g. a tidy CSV); they are recorded, failures are retried
``--retries`` times, then the next batch is proposed, for ``--rounds`` rounds. Ctrl-C stops the
jobs and leaves the ledger consistent; running the same command again resumes. ``--menu``,
``--target-scale`` and ``--tokens-per-step`` mean what they mean for ``bayesmix propose``: checked
with every other option and recorded in the ledger before the first launch (what is not given is
kept). The work is done by :class:`bayesmix.loop.runner.Runner`.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from bayesmix import errors
from bayesmix.loop.command_template import PLACEHOLDERS
from bayesmix.loop.runner import DEFAULT_STALE_AFTER_S

_EPILOG = (
    """examples:
  bayesmix run --ledger exp.db --rounds 3 -n 8 --parallel 2 \\
      --command 'python train.py --run {run} --mixture-file {mixture_file} --out {out}'
  bayesmix run --ledger exp.db --executor ray --ray-address 10.0.0.5:6379 --parallel 16 \\
      --command 'python train.py --mix {mixture_json} --out {out}'
  bayesmix run --ledger exp.db --model scaling --strategy target-info -n 4 \\
      --menu 70M@10000,160M@10000,410M@20000 --target-scale 1B@100000 --command \\
      'python train.py --size {n_params} --steps {steps} --mixture-file {mixture_file} --out {out}'

placeholders: """
    + ", ".join("{" + p + "}" for p in PLACEHOLDERS)
    + """ (shell-quoted when filled in).
Commands start in the directory bayesmix run was started from (--cwd DIR to change it); {workdir}
is the run's folder <workdir>/<run>/, which holds mixture.json, stdout.log, stderr.log and
result.csv. Setting a run back to proposed by hand (bayesmix status --set RUN=proposed) gives it
its --retries afresh.
A run left running by a runner that died is taken back at once when that process is gone from
this host, otherwise after --stale-after seconds without a heartbeat (default 600).
Exit status: 0 when every round finished with no run failed, 1 when some run failed after its
retries, 2 for bad input, 130 when interrupted."""
)


def register(subparsers) -> argparse.ArgumentParser:
    from bayesmix.cli._options import (
        add_menu_arguments,
        add_refit_arguments,
        add_size_argument,
    )
    from bayesmix.loop.acquire import MULTIFIDELITY_STRATEGIES, STRATEGIES
    from bayesmix.loop.executors import EXECUTORS

    p = subparsers.add_parser(
        "run",
        help="run the loop: launch proposed runs with your training command, ingest, propose",
        description=__doc__.split("\n\n")[0].removeprefix("``bayesmix run``: "),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--ledger", required=True, metavar="EXP.db", help="the experiment ledger")
    p.add_argument(
        "--command", required=True, metavar="TEMPLATE", help="the training command template"
    )
    p.add_argument("--executor", default="local", choices=EXECUTORS, help="default local")
    p.add_argument("--ray-address", metavar="HOST:PORT", help="an existing Ray cluster")
    p.add_argument("--parallel", type=int, default=1, metavar="N", help="jobs at a time (1)")
    p.add_argument("--rounds", type=int, default=1, metavar="R", help="rounds to run (1)")
    p.add_argument("--retries", type=int, default=1, metavar="K", help="relaunches (1)")
    p.add_argument("-n", type=int, default=8, metavar="N", help="runs per new batch (8)")
    p.add_argument(
        "--strategy",
        default="thompson",
        metavar="|".join(STRATEGIES + MULTIFIDELITY_STRATEGIES),
        help="default thompson",
    )
    p.add_argument("--timeout", type=float, metavar="S", help="seconds per launch (no limit)")
    p.add_argument(
        "--stale-after",
        type=float,
        default=DEFAULT_STALE_AFTER_S,
        metavar="S",
        help="take back a dead runner's runs after S s without heartbeat (600)",
    )
    p.add_argument("--workdir", metavar="DIR", help="runs' folders (default <ledger>-runs)")
    p.add_argument(
        "--cwd", metavar="DIR", help="where commands start (default: the current directory)"
    )
    slurm = p.add_argument_group("Slurm (--executor slurm, through submitit: the slurm extra)")
    slurm.add_argument("--slurm-partition", metavar="NAME", help="the partition to submit to")
    slurm.add_argument("--slurm-time", type=int, metavar="MIN", help="time limit per job")
    slurm.add_argument("--slurm-gpus", type=int, metavar="N", help="GPUs per job's node")
    slurm.add_argument("--slurm-cpus", type=int, metavar="N", help="CPUs per job")
    track = p.add_argument_group("tracking (the tracking extra)")
    track.add_argument(
        "--mlflow",
        metavar="URI|DIR",
        help="log each round to MLflow: a tracking server or a local folder",
    )
    track.add_argument(
        "--mlflow-experiment", default="bayesmix", metavar="NAME", help="(default bayesmix)"
    )
    add_refit_arguments(p)
    p.add_argument("--seed", type=int, default=0, help="seed of fits and proposals")
    obj = p.add_mutually_exclusive_group()
    obj.add_argument("--target", metavar="EVAL_DOMAIN", help="optimise one validation domain")
    obj.add_argument("--weights", metavar="FILE.json", help="validation-domain weights")
    p.add_argument("--min-distance", type=float, metavar="D", help="between proposals")
    p.add_argument(
        "--no-recommend", action="store_true", help="do not fit and recommend at the end"
    )
    add_menu_arguments(p)
    add_size_argument(p)
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=run)
    return p


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _propose_options(args) -> dict:
    """The template and numbers checked; what each round's propose gets besides -n and
    --strategy (the menu is recorded once, before the first launch)."""
    from bayesmix.loop.command_template import check_template

    check_template(args.command)
    for name in ("parallel", "rounds", "n", "draws", "tune", "chains"):
        if getattr(args, name) < 1:
            flag = "-n" if name == "n" else f"--{name}"
            raise errors.OptionError(f"{flag} must be >= 1, got {getattr(args, name)}")
    if args.retries < 0:
        raise errors.OptionError(f"--retries must be >= 0, got {args.retries}")
    opts: dict = {}
    if args.target:
        opts["target"] = args.target
    if args.weights:
        opts["weights"] = args.weights  # a JSON file; read and checked by propose
    if args.min_distance is not None:
        opts["min_distance"] = args.min_distance
    if args.size is not None:
        opts["size"] = args.size
    return opts


def _slurm_options(args) -> dict:
    """submitit's parameters from the --slurm-* options (only with --executor slurm)."""
    slurm = {
        key: value
        for key, value in (
            ("slurm_partition", args.slurm_partition),
            ("timeout_min", args.slurm_time),
            ("gpus_per_node", args.slurm_gpus),
            ("cpus_per_task", args.slurm_cpus),
        )
        if value is not None
    }
    if slurm and args.executor != "slurm":
        raise errors.OptionError("--slurm-* options need --executor slurm")
    return slurm


def run(args) -> int:
    from bayesmix.cli._options import menu_from_args
    from bayesmix.cli.propose import banner_warnings, open_experiment
    from bayesmix.laws import get_law
    from bayesmix.loop.executors import get_executor
    from bayesmix.loop.proposing import menu_to_record
    from bayesmix.loop.runner import Runner, check_workdir
    from bayesmix.model.spec import load_spec

    def say(msg: str) -> None:
        if not args.quiet:
            print(f"[run] {msg}", file=sys.stderr, flush=True)

    opts = _propose_options(args)
    exp = open_experiment(args, say)
    law = get_law(load_spec(args.model).law)
    # the menu read and the strategy's needs checked before an executor is started; the
    # runner records it before the first launch (Runner.record_menu)
    fidelity = menu_to_record(args.ledger, args.strategy, law, menu_from_args(args), args.size)
    if fidelity is not None:
        opts.update(menu=fidelity.menu, target_scale=fidelity.target)
    slurm = _slurm_options(args)
    on_round = None
    if args.mlflow:
        from bayesmix.loop.tracking import MLflowTracker

        on_round = MLflowTracker(args.mlflow, experiment=args.mlflow_experiment)
    ledger = Path(args.ledger)
    runs_dir = Path(args.workdir) if args.workdir else ledger.with_name(f"{ledger.stem}-runs")
    check_workdir(runs_dir)  # before an executor (a Ray instance) is started
    executor = get_executor(
        args.executor, args.parallel, args.ray_address, slurm=slurm, folder=runs_dir / "slurm"
    )
    runner = Runner(
        exp,
        args.command,
        executor,
        workdir=args.workdir,
        cwd=args.cwd,
        retries=args.retries,
        batch=args.n,
        strategy=args.strategy,
        propose_options=opts,
        timeout_s=args.timeout,
        stale_after_s=args.stale_after,
        log=say,
        on_round=on_round,
    )
    try:  # every option checked: the menu recorded before the first launch
        recorded = runner.record_menu()
    except BaseException:
        executor.shutdown()
        raise
    if recorded is not None:
        print(f"note: recorded: {recorded.describe()}", flush=True)
    old = signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops as cleanly as Ctrl-C
    try:
        with banner_warnings():
            summary = runner.run(args.rounds, recommend=not args.no_recommend)
    finally:
        signal.signal(signal.SIGTERM, old)
    print(summary.describe())
    if summary.interrupted:
        print(
            "bayesmix run: interrupted; the ledger is consistent (runs in flight are proposed "
            "again): run the same command to resume",
            file=sys.stderr,
        )
        return 130
    if summary.recommendation is not None:
        print(summary.recommendation.to_text())
    return 1 if summary.failed else 0
