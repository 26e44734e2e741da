"""``bayesmix schedule POSTERIOR.nc --fractions 0.8,0.2``: the best multi-phase schedule.

For a posterior of a ``<law>+phases`` fit (runs described as phases: docs/phases.md), chooses one
mixture per phase, the phases taking the given shares of the training steps, to minimise the
posterior expected weighted loss (``bayesmix.decisions.schedule.decide_schedule``), and compares
it with the best single mixture feasible in every phase and on the whole run. The constraint
options (--max-share, --tokens-available ...) bound the whole run's token shares (a scarce
domain's budget); --phase-max-share and --phase-min-share (K:DOMAIN=SHARE, phase K counted from
1) bound one phase's mixture. A schedule gains over one static mixture only where such bounds
differ between phases or on the whole run (docs/phases.md).

Prints each phase's mixture, the whole run's token shares, the expected losses and the gain over
the static mixture; -o writes the tidy table (row: phase 1..P, whole, static; train_domain;
share; fraction; expected_loss) as CSV or JSON, atomically. A posterior that failed its
diagnostics gate is announced loudly on stderr.
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from bayesmix import errors
from bayesmix.cli._options import (
    add_aggregate_arguments,
    add_constraint_arguments,
    constraints_from_args,
    parse_pairs,
)
from bayesmix.cli._output import (
    TABLE_SUFFIXES,
    add_force_argument,
    add_json_argument,
    check_output,
    loud_warning,
    print_json,
    write_table,
)
from bayesmix.data.constraints import Constraints


def register(subparsers) -> argparse.ArgumentParser:
    parts = __doc__.split("\n\n")
    p = subparsers.add_parser(
        "schedule",
        help="multi-phase runs: the mixture of each phase (a <law>+phases posterior)",
        description="\n\n".join(parts[1:]),
        epilog="examples:\n"
        "  bayesmix fit phased_runs.csv --model phases -o phases.nc\n"
        "  bayesmix schedule phases.nc --fractions 0.8,0.2 --max-share hq=0.06 "
        "--phase-max-share 2:hq=0.3 -o schedule.csv",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("posterior", metavar="POSTERIOR.nc", help="a posterior of a <law>+phases fit")
    p.add_argument(
        "--fractions",
        required=True,
        metavar="F1,F2,...",
        help="each phase's share of the training steps, in training order (sum 1)",
    )
    add_aggregate_arguments(p)
    add_constraint_arguments(p)
    for bound in ("max", "min"):
        p.add_argument(
            f"--phase-{bound}-share",
            action="append",
            default=[],
            metavar="K:DOMAIN=SHARE",
            help=f"{bound}imum share of a training domain in phase K (repeatable, or "
            "comma-separated)",
        )
    p.add_argument("-o", "--out", metavar="FILE.csv|FILE.json", help="write the schedule table")
    add_force_argument(p)
    add_json_argument(p)
    p.set_defaults(func=run)
    return p


def parse_fractions(text: str) -> np.ndarray:
    """``"0.8,0.2"`` as phase fractions (>= 0, sum 1); OptionError naming --fractions."""
    try:
        frac = np.array([float(v) for v in str(text).split(",")], float)
    except ValueError:
        raise errors.OptionError(
            f"--fractions {text!r}: not comma-separated numbers", hint="e.g. --fractions 0.8,0.2"
        ) from None
    if not np.all(np.isfinite(frac) & (frac >= 0)) or abs(frac.sum() - 1) > 1e-6:
        raise errors.OptionError(
            f"--fractions {text!r}: each phase's share must be >= 0 and they must sum to 1",
            hint="e.g. --fractions 0.8,0.2",
        )
    return frac


def phase_constraints(args, domains, n_phases: int) -> list[Constraints]:
    """One Constraints per phase from --phase-max-share / --phase-min-share items
    ``K:DOMAIN=SHARE``; OptionError naming the flag and the item when K is not 1..n_phases."""
    bounds: list[dict[str, dict[str, float]]] = [{"max": {}, "min": {}} for _ in range(n_phases)]
    for bound in ("max", "min"):
        flag = f"--phase-{bound}-share"
        for text in getattr(args, f"phase_{bound}_share"):
            for item in str(text).split(","):
                phase, colon, pair = item.strip().partition(":")
                if not colon or not phase.strip().isdigit() or not 1 <= int(phase) <= n_phases:
                    raise errors.OptionError(
                        f"{flag} {item.strip()!r}: not K:DOMAIN=SHARE with a phase K from 1 "
                        f"to {n_phases}",
                        hint=f"e.g. {flag} {n_phases}:hq=0.3",
                    )
                bounds[int(phase) - 1][bound].update(parse_pairs([pair], flag))
    return [
        Constraints.build(domains, max_share=b["max"] or None, min_share=b["min"] or None)
        for b in bounds
    ]


def schedule_table(schedule) -> pd.DataFrame:
    """Tidy rows (row, fraction, train_domain, share, expected_loss) of a
    :class:`~bayesmix.decisions.schedule.Schedule`: each phase, the whole run, the static
    mixture."""
    rows = []
    for k, (_, mix) in enumerate(schedule.mixtures.iterrows()):
        for d, share in mix.items():
            rows.append((str(k + 1), schedule.fractions[k], d, share, schedule.expected_loss))
    for name, mix, loss in (
        ("whole", schedule.whole, schedule.expected_loss),
        ("static", schedule.static, schedule.static_loss),
    ):
        rows += [(name, 1.0, d, share, loss) for d, share in mix.items()]
    columns = ["row", "fraction", "train_domain", "share", "expected_loss"]
    return pd.DataFrame(rows, columns=columns)


def run(args) -> int:
    from bayesmix.data.mixtures import domain_weights
    from bayesmix.decisions.schedule import decide_schedule
    from bayesmix.posterior.posterior import Posterior

    frac = parse_fractions(args.fractions)
    out = None
    if args.out:
        inputs = (args.posterior, args.weights)
        out = check_output(args.out, TABLE_SUFFIXES, force=args.force, inputs=inputs)
    post = Posterior.load(args.posterior)
    if not post.law.name.endswith("+phases"):
        raise errors.OptionError(
            f"{args.posterior}: law {post.law.name!r} is not a <law>+phases law",
            hint="fit the phased runs with a phases model, e.g. --model phases",
        )
    weights = None
    if args.target:
        weights = domain_weights({args.target: 1.0}, post.eval_domains)
    elif args.weights:
        weights = domain_weights(
            args.weights, post.eval_domains, allow_subset=args.allow_subset, source=args.weights
        )
    whole = constraints_from_args(args, post.train_domains)
    phases = phase_constraints(args, post.train_domains, len(frac))
    if not post.diagnostics.ok:  # after every check of the options
        loud_warning(post.diagnostics.warning())
    w = None if weights is None else [float(v) for v in weights]
    schedule = decide_schedule(
        post, [float(f) for f in frac], constraints=phases, whole=whole, weights=w
    )
    table = schedule_table(schedule)
    if args.json:
        print_json(table)
    else:
        wide = table.pivot(index="row", columns="train_domain", values="share")
        wide = wide.loc[list(dict.fromkeys(table["row"])), list(post.train_domains)]
        print(f"schedule over {len(frac)} phases (fractions {', '.join(f'{f:g}' for f in frac)})")
        print(wide.to_string(float_format=lambda v: f"{v:.3f}"))
        print(
            f"expected loss {schedule.expected_loss:.4f} nats/token; best static mixture "
            f"{schedule.static_loss:.4f}; gain {round(schedule.gain, 4) + 0.0:.4f}"
        )
    if out is not None:
        write_table(table, out)
        print(f"wrote {out}")
    return 0
