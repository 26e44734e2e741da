"""``bayesmix remap RUNS... --map MAP.toml -o OUT.csv``: runs of an old domain set in a new one.

Reads run files (any format ``validate`` reads), applies a domain map (TOML: ``rename``,
``merge``, ``split``, ``add``, ``drop``; docs/domain_changes.md) to their training shares and
writes the tidy table (CSV, or JSON records) atomically; losses are unchanged. The output is
validated like any run table before it is written. ``--with NEW.csv``: append runs already in
the new domain set (validation domains are the union), so one file holds every version. For a
live experiment, ``bayesmix change-domains`` records the change in its ledger instead.
"""

from __future__ import annotations

import argparse


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "remap",
        help="rewrite runs of an old training-domain set in a new one",
        description=__doc__.split("\n\n")[1].replace("\n", " "),
        epilog="examples:\n  bayesmix remap old.csv --map v1_to_v2.toml -o old_v2.csv\n"
        "  bayesmix remap old.csv --map v1_to_v2.toml --with new.csv -o all_v2.csv",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("files", nargs="+", metavar="RUNS", help="run files of the old domain set")
    p.add_argument("--map", required=True, dest="domain_map", metavar="MAP.toml")
    p.add_argument(
        "--with",
        dest="new_runs",
        nargs="+",
        default=(),
        metavar="NEW",
        help="run files already in the new domain set, appended to the output",
    )
    p.add_argument("-o", "--output", "--out", dest="out", required=True, metavar="OUT.csv|OUT.json")
    p.add_argument("--force", action="store_true", help="replace the output if it exists")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from bayesmix.cli._output import TABLE_SUFFIXES, check_output, write_table
    from bayesmix.data.domain_maps import DomainMap, concat_versions
    from bayesmix.data.loaders import load

    inputs = [*args.files, args.domain_map, *args.new_runs]
    check_output(args.out, TABLE_SUFFIXES, "-o", force=args.force, inputs=inputs)
    domain_map = DomainMap.from_file(args.domain_map)
    old = load(args.files)
    notes: list[str] = []
    table = old.remap(domain_map, report=notes)
    if args.new_runs:
        table = concat_versions([table, load(args.new_runs)])
    path = write_table(table.to_tidy(), args.out)
    label = " -> ".join(v for v in (domain_map.version_from, domain_map.version_to) if v)
    print(
        f"remapped {old.n_runs} runs ({len(old.train_domains)} -> "
        f"{len(table.train_domains)} training domains{', ' + label if label else ''}); "
        f"wrote {table.n_runs} runs to {path}"
    )
    for note in notes:
        print(f"note: {note}")
    return 0
