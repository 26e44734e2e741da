"""``bayesmix fit RUNS... -o POSTERIOR.nc``: fit a mixing law to proxy runs with MCMC.

Loads the run files (any format ``bayesmix validate`` reads), keeps one record per run (the last
checkpoint, or ``--step``) of one model size (``--size`` when the files hold several) - or, for a
law over model size and tokens (``--model scaling``), every checkpoint of every size given
(``--size 70M,160M``, ``--max-step``) - samples the
model (``--model``: a shipped name or a TOML file) and saves the posterior as one NetCDF file,
atomically. Prints the model, the runs used and the diagnostics table. A fit that fails the
diagnostics gate samples again with changed settings while ``--max-time`` allows (each attempt
is printed and stored); one that still fails is saved (exit status 0) with the report stored
in the file, and a loud warning goes to stderr. ``--list-models`` and ``--show-model NAME``
describe the specifications.
"""

from __future__ import annotations

import argparse

import numpy as np

from bayesmix import errors
from bayesmix.cli._options import (
    add_max_loss_argument,
    add_max_time_argument,
    max_loss_from_args,
    max_time_from_args,
)
from bayesmix.cli._output import add_force_argument, check_output, loud_warning
from bayesmix.data.loaders import FORMATS, load
from bayesmix.data.ye_logs import size_label
from bayesmix.inference.gate_retry import record_line


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "fit",
        help="fit a mixing law to run results (MCMC) and save the posterior",
        description=__doc__.split("\n\n")[1],
        epilog="examples:\n"
        "  bayesmix fit runs.csv -o posterior.nc --seed 1\n"
        "  bayesmix fit ../data/3Mix/410M.txt -o p.nc --model normal --draws 2000\n"
        "  bayesmix fit ../data/5Mix -o p70m.nc --size 70M --step 30000\n"
        "  bayesmix fit --list-models\n"
        "  bayesmix fit --show-model default   # copy the file it names, edit, --model",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("runs", nargs="*", metavar="RUNS", help="run files or directories")
    p.add_argument("-o", "--output", metavar="POSTERIOR.nc", help="where to save the posterior")
    p.add_argument(
        "--model",
        default="default",
        metavar="NAME|FILE.toml",
        help="shipped model name or a specification file (default: default)",
    )
    p.add_argument("--format", choices=FORMATS, help="input format (detected when omitted)")
    p.add_argument(
        "--renormalize",
        action="store_true",
        help="rescale proportions to sum to 1 instead of rejecting them",
    )
    p.add_argument(
        "--step",
        type=float,
        metavar="S",
        help="fit the checkpoint at this step (default: each run's last)",
    )
    p.add_argument(
        "--size",
        metavar="N[,N...]",
        help="model size(s) to fit when the runs hold several (e.g. 70M, 1.4B, 7e7; "
        "a comma-separated list for laws over model size, --model scaling)",
    )
    p.add_argument(
        "--max-step",
        type=float,
        metavar="S",
        help="laws over tokens (--model scaling) take every checkpoint; only those "
        "at or below this step",
    )
    p.add_argument("--draws", type=int, default=1000, help="draws per chain (default 1000)")
    p.add_argument("--tune", type=int, default=1000, help="tuning steps per chain (default 1000)")
    p.add_argument("--chains", type=int, default=4, help="chains (default 4)")
    p.add_argument("--seed", type=int, help="random seed (default: fresh randomness)")
    p.add_argument(
        "--sampler",
        choices=("nutpie", "pymc"),
        default="nutpie",
        help="NUTS implementation (default nutpie)",
    )
    add_max_time_argument(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_max_loss_argument(p)
    add_force_argument(p)
    p.add_argument(
        "--list-models", action="store_true", help="list the shipped model specifications and exit"
    )
    p.add_argument(
        "--show-model",
        metavar="NAME|FILE.toml",
        help="print a resolved model specification and exit",
    )
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from bayesmix.model.spec import available_models, load_spec, models_dir

    if args.list_models:
        from bayesmix.laws import available_laws

        for name in available_models():
            spec = load_spec(name)
            print(f"{name:<14} law {spec.law:<11} {spec.description}")
        print('\nlaws (a specification\'s law = "..."):')
        for name, law in sorted(available_laws().items()):
            print(f"{name:<14} {law.description}")
        return 0
    if args.show_model:
        spec = load_spec(args.show_model)
        print(spec)
        if args.show_model in available_models():
            print(f"file: {models_dir() / (args.show_model + '.toml')}")
        print("\n# every prior written out: save this, edit it, pass it with --model FILE.toml")
        print(spec.to_toml(), end="")
        return 0
    if not args.runs:
        raise errors.OptionError("no run files given", hint="bayesmix fit RUNS... -o FILE.nc")
    if not args.output:
        raise errors.OptionError("no output file given", hint="add -o POSTERIOR.nc")
    # every check that can fail does so before the MCMC: output path, options, data, run count
    out = check_output(args.output, inputs=args.runs, force=args.force)
    max_loss = max_loss_from_args(args)
    max_time = max_time_from_args(args)
    for name in ("draws", "tune", "chains"):
        if getattr(args, name) < 1:
            raise errors.OptionError(f"--{name} must be >= 1, got {getattr(args, name)}")
    spec = load_spec(args.model)  # a bad specification fails before the data is read
    table = load(args.runs, args.format, renormalize=args.renormalize, max_loss=max_loss)
    n_loaded = table.n_runs
    if args.max_step is not None and args.step is not None:
        raise errors.OptionError(
            "--step and --max-step exclude each other",
            hint="--step fits one checkpoint per run; --max-step bounds "
            "the checkpoints a law over tokens takes",
        )

    from bayesmix.inference.fitting import fit

    post = fit(  # refuses too few runs (the law's min_runs) and a bad --size before MCMC
        table,
        spec,
        step=args.step,
        max_step=args.max_step,
        size=args.size,
        draws=args.draws,
        tune=args.tune,
        chains=args.chains,
        random_seed=args.seed,
        sampler=args.sampler,
        progressbar=not args.quiet,
        warn=False,
        max_time=max_time,
    )
    post.save(out)
    print(summary(post, n_loaded, out))
    loud_warning(
        post.diagnostics_warning, f"the posterior was saved to {out} with this report stored in it."
    )
    return 0


def summary(post, n_loaded: int, path) -> str:
    """What was fitted and how the sampler did, in a few lines (every attempt when the fit
    sampled more than once)."""
    data = post.fit_data()
    losses = data.losses.to_numpy(dtype=float)
    s = post.settings
    lines = [
        f"model:       {post.spec.name} ({post.spec.description})",
        f"runs used:   {data.n_runs} of {n_loaded} loaded, {len(post.train_domains)} "
        f"training x {len(post.eval_domains)} validation domains, "
        f"{int(np.isfinite(losses).sum())} losses ({int(np.isnan(losses).sum())} missing)",
    ]
    sizes = data.column("n_params")
    if sizes is not None:
        lines.append(
            "model size:  " + ", ".join(size_label(float(v)) for v in sorted(sizes.unique()))
        )
    if s.get("step") is not None:
        lines.append(f"step:        {s['step']:g}")
    if len(data) > data.n_runs and post.law.inputs != ("r",):
        steps = data.column("step")
        lines.append(
            f"checkpoints: {len(data)} records"
            + (f", steps {steps.min():g} to {steps.max():g}" if steps is not None else "")
        )
    lines += [
        f"sampler:     {s['sampler']}, {s['chains']} chains x {s['draws']} draws after "
        f"{s['tune']} tuning, seed {s['seed']}",
        f"time:        compile {s['compile_s']:.1f} s, sampling {s['sample_s']:.1f} s",
    ]
    attempts = s.get("attempts") or []
    if len(attempts) > 1:
        lines.append(f"attempts:    {len(attempts)} (max_time {s['max_time']:g} s)")
        lines += [f"  {record_line(a)}" for a in attempts]
    lines += [
        "",
        post.diagnostics.table(),
        "",
        f"saved:       {path}",
    ]
    return "\n".join(lines)
