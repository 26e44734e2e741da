"""``bayesmix change-domains --ledger EXP.db --map MAP.toml``: change a live experiment's domains.

Records a new version of the experiment's training-domain set, made from the current one by a
domain map (TOML: ``rename``, ``merge``, ``split``, ``add``, ``drop``; docs/domain_changes.md), in
one transaction. Proposed runs of the old set are abandoned (``--pending abandon``, the default)
or remapped to the new set (``--pending remap``); the output lists them. Every completed run stays
in the fits of ``propose``, ``run`` and ``optimize``, remapped through the stored maps, so the
loop goes on without starting over. Constraints: kept and renamed domains keep their bounds
unless ``--min-share``/``--max-share``/``--fixed`` give the new set's. Refused while runs are
running; on any error nothing is changed.
"""

from __future__ import annotations

import argparse
import json

from bayesmix.cli._options import add_constraint_arguments, constraints_from_args


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "change-domains",
        help="change a live experiment's training-domain set (a new version; runs kept)",
        description=__doc__.split("\n\n")[1].replace("\n", " "),
        epilog="examples:\n  bayesmix change-domains --ledger exp.db --map v1_to_v2.toml\n"
        "  bayesmix change-domains --ledger exp.db --map v1_to_v2.toml --pending remap "
        "--max-share forum=0.2",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--ledger", required=True, metavar="EXP.db", help="the experiment ledger")
    p.add_argument("--map", required=True, dest="domain_map", metavar="MAP.toml")
    p.add_argument("--name", help="the new version's name (default: the map's 'to', else vN)")
    p.add_argument(
        "--pending",
        choices=("abandon", "remap"),
        default="abandon",
        help="proposed runs of the old set: abandon them (default) or remap their mixtures",
    )
    add_constraint_arguments(p)
    p.add_argument("--json", action="store_true", help="print the change as one JSON object")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from bayesmix.data.domain_maps import DomainMap
    from bayesmix.loop.experiment import Experiment
    from bayesmix.loop.ledger import Ledger

    domain_map = DomainMap.from_file(args.domain_map)
    constraints = None
    if args.min_share or args.max_share or args.fixed or args.tokens_available:
        with Ledger.open(args.ledger) as led:
            new = domain_map.new_domains(led.train_domains)
        constraints = constraints_from_args(args, new)
    change = Experiment(args.ledger).change_domains(
        domain_map, name=args.name, constraints=constraints, pending=args.pending
    )
    if args.json:
        record = {
            "version": change.version,
            "name": change.name,
            "previous": change.previous,
            "train_domains": list(change.new),
            "constraints": change.constraints.to_dict(),
            "abandoned": change.abandoned,
            "remapped": change.remapped,
            "notes": change.notes,
        }
        print(json.dumps(record, indent=2))
    else:
        print(change.describe())
    return 0
