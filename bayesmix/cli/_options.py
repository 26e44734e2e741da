"""Options shared by several subcommands (not a subcommand): NAME=VALUE pairs and constraints."""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from typing import Any

from bayesmix import errors
from bayesmix.data.constraints import Constraints
from bayesmix.data.validation import MAX_LOSS, check_max_loss


def parse_pairs(values: list[str], option: str, convert=float) -> dict:
    """``["a=0.1", "b=0.2,c=0.3"]`` -> ``{"a": 0.1, "b": 0.2, "c": 0.3}``; OptionError if
    malformed or a name is given twice."""
    out: dict = {}
    for value in values:
        for item in value.split(","):
            name, sep, text = item.partition("=")
            name, text = name.strip(), text.strip()
            if not sep or not name or not text:
                raise errors.OptionError(
                    f"{option} {item!r} is not NAME=VALUE", hint=f"e.g. {option} web=0.1"
                )
            try:
                val = convert(text)
            except ValueError:
                raise errors.OptionError(
                    f"{option} {item!r}: {text!r} is not a valid value",
                    hint=f"e.g. {option} web=0.1",
                ) from None
            if isinstance(val, float) and not math.isfinite(val):
                raise errors.OptionError(f"{option} {item!r}: value must be finite")
            if name in out:
                raise errors.OptionError(f"{option} gives {name!r} twice")
            out[name] = val
    return out


def add_refit_arguments(p: argparse.ArgumentParser) -> None:
    """--model, --draws, --tune, --chains: how an experiment's posterior is refitted when results
    arrived (``bayesmix propose``, ``bayesmix run``)."""
    p.add_argument("--model", default="default", help="model name or TOML file (default)")
    p.add_argument("--draws", type=int, default=1000, help="MCMC draws per chain (default 1000)")
    p.add_argument("--tune", type=int, default=1000, help="MCMC tuning steps (default 1000)")
    p.add_argument("--chains", type=int, default=4, help="MCMC chains (default 4)")


def add_max_loss_argument(p: argparse.ArgumentParser) -> None:
    """``--max-loss``: the plausibility bound on losses (see :mod:`bayesmix.data.table`)."""
    p.add_argument(
        "--max-loss",
        type=float,
        default=MAX_LOSS,
        metavar="NATS",
        help=f"refuse losses above this many nats per token (default {MAX_LOSS:g}: "
        "higher is a unit mistake, e.g. a sum over tokens; empty or nan cells "
        "are missing losses, inf an error)",
    )


def max_loss_from_args(args) -> float:
    """``--max-loss`` checked (finite, > 0, at most the library's limit)."""
    return check_max_loss(args.max_loss)


def add_max_time_argument(
    p: argparse.ArgumentParser, per: str = "the fit", default: float | None = None
) -> None:
    """``--max-time SECONDS``: the budget for sampling again when a fit fails its diagnostics
    gate (:mod:`bayesmix.inference.gate_retry`); ``default``: the library's default there, for the
    help
    (None: a single fit's)."""
    from bayesmix.inference.gate_retry import DEFAULT_MAX_TIME, MAX_ATTEMPTS, MAX_TIME_ENV

    if default is None:
        default = DEFAULT_MAX_TIME

    p.add_argument(
        "--max-time",
        type=float,
        metavar="SECONDS",
        help=f"seconds {per} may spend sampling again, with changed settings, while the "
        f"diagnostics gate fails (at most {MAX_ATTEMPTS} attempts; default "
        f"{default:g}, or ${MAX_TIME_ENV}; 0: one attempt, no retry)",
    )


def max_time_from_args(args) -> float | None:
    """``--max-time``, or None (the library's default), checked by the library's own check
    before any data is read."""
    from bayesmix.inference.gate_retry import check_max_time

    if args.max_time is not None:
        check_max_time(args.max_time)
    return args.max_time


def add_constraint_arguments(p: argparse.ArgumentParser) -> None:
    """--min-share, --max-share, --fixed, --tokens-available, --max-epochs, --target-tokens."""
    p.add_argument(
        "--min-share",
        action="append",
        default=[],
        metavar="DOMAIN=SHARE",
        help="minimum share of a training domain (repeatable, or comma-separated)",
    )
    p.add_argument(
        "--max-share",
        action="append",
        default=[],
        metavar="DOMAIN=SHARE",
        help="maximum share of a training domain",
    )
    p.add_argument(
        "--fixed",
        action="append",
        default=[],
        metavar="DOMAIN=SHARE",
        help="fixed share of a training domain",
    )
    p.add_argument(
        "--tokens-available",
        action="append",
        default=[],
        metavar="DOMAIN=TOKENS",
        help="unique tokens available in a domain (caps its share at "
        "TOKENS x max-epochs / target-tokens)",
    )
    p.add_argument(
        "--max-epochs",
        type=float,
        default=1.0,
        metavar="E",
        help="passes allowed over a domain's data (default 1)",
    )
    p.add_argument(
        "--target-tokens",
        type=float,
        metavar="T",
        help="training tokens of the target run (needed with --tokens-available)",
    )


def constraints_from_args(args, train_domains: Sequence[str]) -> Constraints:
    """The Constraints given by :func:`add_constraint_arguments` options (InfeasibleError names
    any conflict)."""
    return Constraints.build(
        train_domains,
        min_share=parse_pairs(args.min_share, "--min-share"),
        max_share=parse_pairs(args.max_share, "--max-share"),
        fixed=parse_pairs(args.fixed, "--fixed"),
        tokens_available=parse_pairs(args.tokens_available, "--tokens-available"),
        max_epochs=args.max_epochs,
        target_tokens=args.target_tokens,
    )


def add_scale_arguments(p: argparse.ArgumentParser) -> None:
    """--n-params/--tokens/--max-extrapolation: the scale of the target run (laws over scale)."""
    g = p.add_argument_group("target scale (laws over model size and tokens, e.g. --model scaling)")
    g.add_argument(
        "--n-params",
        type=float,
        metavar="N",
        help="model size of the target run in parameters (e.g. 1e9)",
    )
    g.add_argument(
        "--tokens",
        type=float,
        metavar="D",
        help="training tokens of the target run (e.g. 1e11; for a <law>+repeat, the budget that "
        "fixes each domain's epochs)",
    )
    g.add_argument(
        "--max-extrapolation",
        type=float,
        default=10.0,
        metavar="X",
        help="refuse a target more than X times beyond the fitted sizes or tokens "
        "(default 10; a warning with the numbers below that)",
    )


def scale_from_args(args, law) -> dict[str, Any]:
    """``{"n_params": N, "tokens": D}`` from the options, checked against the law's inputs."""
    given = {"n_params": args.n_params, "tokens": args.tokens}
    takes = [k for k in ("n_params", "tokens") if k in law.inputs]
    for key, value in given.items():
        flag = "--" + key.replace("_", "-")
        if value is not None and key not in law.inputs:
            raise errors.OptionError(
                f"{flag}: law {law.name!r} has no {key} input",
                hint="fit a law over model size and tokens "
                "(bayesmix fit --model scaling) to predict at scale",
            )
        if value is not None and not (math.isfinite(value) and value > 0):
            raise errors.OptionError(f"{flag} must be a positive number, got {value:g}")
    missing = [k for k in takes if given[k] is None]
    if missing and set(missing) <= set(law.budget_inputs):
        raise errors.OptionError(
            f"law {law.name!r} counts repeated data at the target's token budget: give --tokens",
            hint="e.g. --tokens 2e11",
        )
    if missing:
        flags = " and ".join("--" + k.replace("_", "-") for k in missing)
        raise errors.OptionError(
            f"law {law.name!r} predicts at a model size and token count: give {flags}",
            hint="e.g. --n-params 1e9 --tokens 1e11",
        )
    if not args.max_extrapolation > 1:
        raise errors.OptionError(f"--max-extrapolation must be > 1, got {args.max_extrapolation:g}")
    return {k: float(given[k]) for k in takes}


def add_menu_arguments(p: argparse.ArgumentParser) -> None:
    """--menu, --target-scale, --tokens-per-step: the proxy menu and target scale of a
    multi-fidelity loop, recorded in the ledger (``bayesmix init``, ``propose``, ``run``: one
    definition, one meaning)."""
    from bayesmix.data.ye_logs import TOKENS_PER_STEP
    from bayesmix.loop.fidelity import ENTRY_FORM

    g = p.add_argument_group(
        "multi-fidelity (which proxy size and steps to train; --strategy target-info)"
    )
    g.add_argument(
        "--menu",
        metavar="SIZE@STEPS[=COST],...",
        help="the proxy runs one can train, recorded in the ledger (replacing any before): "
        f"entries {ENTRY_FORM}; costs relative, for every entry or none (default n_params x "
        "tokens)",
    )
    g.add_argument(
        "--target-scale",
        metavar="SIZE@STEPS",
        help="the target run's model size and steps, e.g. 1B@100000 (kept from the ledger "
        "when not given)",
    )
    g.add_argument(
        "--tokens-per-step",
        type=float,
        metavar="T",
        help="tokens per training step for --menu and --target-scale (default: the ledger "
        f"menu's, else {TOKENS_PER_STEP})",
    )


def add_size_argument(p: argparse.ArgumentParser) -> None:
    """``--size``: plan the proposal at one model size of the ledger's menu."""
    p.add_argument(
        "--size",
        metavar="SIZE[@STEPS]",
        help="only the menu's entries of this model size (e.g. 160M; 160M@10000: one entry): "
        "the runs of mixture-only strategies and initial designs are planned at its longest "
        "entry, target-info chooses among its entries (default: the whole menu)",
    )


def menu_from_args(args) -> dict[str, Any] | None:
    """The keywords of ``Experiment.set_menu``/``create`` from :func:`add_menu_arguments`'
    options, or None when none is given (the library reads and checks the text)."""
    given = {
        "menu": args.menu,
        "target_scale": args.target_scale,
        "tokens_per_step": args.tokens_per_step,
    }
    return None if all(v is None for v in given.values()) else given


def add_aggregate_arguments(p: argparse.ArgumentParser) -> None:
    """``--weights FILE.json`` | ``--target DOMAIN`` and ``--weights-subset``: how validation
    losses aggregate into the loss a decision minimises (optimize, report)."""
    agg = p.add_mutually_exclusive_group()
    agg.add_argument(
        "--weights",
        metavar="FILE.json",
        help="validation-domain weights {domain: weight} (default: equal weights)",
    )
    agg.add_argument("--target", metavar="DOMAIN", help="optimise one validation domain's loss")
    p.add_argument(
        "--weights-subset",
        dest="allow_subset",
        action="store_true",
        help="ignore weighted domains the posterior lacks (renormalise the rest)",
    )


def add_baseline_arguments(p: argparse.ArgumentParser) -> None:
    """``--baseline D=SHARE,...`` | ``--baseline-file FILE.json``: the mixture a decision is
    compared with (optimize, frontier)."""
    base = p.add_mutually_exclusive_group()
    base.add_argument(
        "--baseline",
        metavar="D=SHARE,...",
        help="baseline mixture to compare with (default: uniform); unnamed domains get 0",
    )
    base.add_argument(
        "--baseline-file",
        metavar="FILE.json",
        help="baseline from a JSON {domain: share} or an earlier report",
    )


def add_ci_kind_argument(p) -> None:
    """``--ci-kind eti|hdi``: equal-tailed (default) or highest-density intervals."""
    p.add_argument(
        "--ci-kind",
        choices=("eti", "hdi"),
        default="eti",
        help="equal-tailed (default) or highest-density intervals",
    )
