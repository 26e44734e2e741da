"""``bayesmix status``: show an experiment ledger (or change run statuses with ``--set``).

Shows the domains, the constraints, the settings, the proxy menu and target scale of a
multi-fidelity loop, counts of runs by status and by round, the
domain-set versions once the set has changed (runs per version, how many a fit in the current
set uses), and the runs table (shares in the current set). ``--set RUN=STATUS`` marks runs
running, failed, abandoned or proposed (retry) first; ``--json`` prints everything as one JSON
object instead. Several ``--set`` are all or nothing: every change is checked before any is
written.
"""

from __future__ import annotations

import argparse
import json

import pandas as pd

from bayesmix.cli._options import parse_pairs
from bayesmix.data.table import MIX_PREFIX
from bayesmix.loop.ledger import STATUSES, describe_fidelity


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "status",
        help="show an experiment ledger; mark runs running/failed/abandoned",
        description=__doc__.split("\n\n")[0].removeprefix("``bayesmix status``: "),
        epilog="examples:\n  bayesmix status --ledger exp.db\n"
        "  bayesmix status --ledger exp.db --set r0003=running --set r0004=failed",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--ledger", required=True, metavar="EXP.db", help="the experiment ledger")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    settable = ", ".join(s for s in STATUSES if s != "completed")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="RUN=STATUS",
        help=f"change a run's status first ({settable}; repeatable)",
    )
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from bayesmix.loop.experiment import Experiment

    changes = parse_pairs(args.set, "--set", convert=str)
    exp = Experiment(args.ledger)
    if changes:
        exp.set_statuses(changes)
        if not args.json:
            for run_id, status in changes.items():
                print(f"{run_id}: now {status}")
    from bayesmix.loop.runner import runs_frame

    summary = exp.status()
    runs = exp.runs(losses=False)
    jobs = runs_frame(args.ledger)
    if args.json:
        records = json.loads(runs.to_json(orient="records", double_precision=15))
        job_list = json.loads(jobs.to_json(orient="records"))
        print(json.dumps({**summary, "run_list": records, "jobs": job_list}, indent=2))
        return 0
    print(render(summary, runs, jobs))
    return 0


def render(summary: dict, runs: pd.DataFrame, jobs: pd.DataFrame | None = None) -> str:
    """Human-readable status: a few lines of facts, then tables by round and by run, then the
    launches of ``bayesmix run`` that needed more than one attempt or failed (with the last
    note: why, e.g. the job's stderr tail)."""
    lines = [
        f"ledger: {summary['ledger']} (created {summary['created']})",
        f"training domains ({len(summary['train_domains'])}): "
        + ", ".join(summary["train_domains"]),
        f"validation domains ({len(summary['eval_domains'])}): "
        + ", ".join(summary["eval_domains"]),
    ]
    lines += domain_set_lines(summary)
    bounds = []
    for d, b in summary["constraints"].items():
        if b["min"] == b["max"]:
            bounds.append(f"{d} = {b['min']:.4g}")
            continue
        if b["min"] > 0:
            bounds.append(f"{d} >= {b['min']:.4g}")
        if b["max"] < 1:
            bounds.append(f"{d} <= {b['max']:.4g}")
    lines.append("constraints: " + (", ".join(bounds) if bounds else "none (whole simplex)"))
    if summary["settings"]:
        lines.append("settings: " + json.dumps(summary["settings"], sort_keys=True))
    if summary.get("fidelity"):
        lines.append(describe_fidelity(summary["fidelity"]))
    counts = ", ".join(f"{n} {s}" for s, n in summary["by_status"].items() if n) or "none yet"
    lines.append(
        f"runs: {summary['runs']} ({counts}); {summary['external_runs']} external; "
        f"{summary['recorded_losses']} losses in {summary['recorded_checkpoints']} "
        f"checkpoints; current round {summary['current_round']}"
    )
    for rnd, path in summary.get("missing_handoffs", {}).items():
        lines.append(
            f"round {rnd}: proposals file {path} was never written (recreate it with "
            f"`bayesmix export --ledger {summary['ledger']} --round {rnd}`)"
        )
    if summary["runs"]:
        by_round = pd.DataFrame(summary["by_round"]).T.reindex(columns=list(STATUSES))
        by_round = by_round.fillna(0).astype(int)
        by_round.insert(0, "round", by_round.index)
        lines += ["", "runs by round:", by_round.to_string(index=False)]
        mix_cols = [c for c in runs.columns if c.startswith(MIX_PREFIX)]
        shown = ["run", "round", "strategy", "status", "checkpoints"]
        if len(summary.get("domain_sets", [])) > 1:
            shown.append("domain_set")
        table = runs[shown].copy()
        for col in ("n_params", "steps", "tokens"):
            if runs[col].notna().any():
                table[col] = runs[col].map(lambda v: "" if pd.isna(v) else f"{v:.3g}")
        for col in mix_cols:
            table[col.removeprefix(MIX_PREFIX)] = runs[col].map(
                lambda v: "-" if pd.isna(v) else f"{v:.3f}"
            )
        lines += ["", "runs:", table.to_string(index=False)]
    if jobs is not None and len(jobs):
        trouble = jobs[(jobs["attempts"] > 1) | (jobs["status"] == "failed")].copy()
        lines.append(
            f"\nbayesmix run launched {len(jobs)} run(s); {len(trouble)} needed retries or failed"
        )
        if len(trouble):
            trouble["last_note"] = trouble["last_note"].str.slice(0, 110)
            lines += [trouble.to_string(index=False)]
    return "\n".join(lines)


def domain_set_lines(summary: dict) -> list[str]:
    """One line per domain-set version once the set has changed: its domains, runs by status
    and the completed runs a fit in the current set uses (older ones remapped)."""
    sets = summary.get("domain_sets", [])
    if len(sets) < 2:
        return []
    lines = [f"domain sets ({len(sets)}; current {summary['domain_set']}):"]
    for ds in sets:
        counts = ", ".join(f"{n} {s}" for s, n in ds["by_status"].items()) or "no runs"
        lines.append(
            f"  {ds['name']} ({', '.join(ds['train_domains'])}): {ds['runs']} runs ({counts}); "
            f"{ds['in_fit']} in the fit"
        )
    return lines
