"""A new experiment ledger, the steps of :meth:`Experiment.create
<bayesmix.loop.experiment.Experiment.create>`: everything is checked before the file exists
(a free path, the domains, the target weights, the proxy menu and target scale, the hand-off
path, the initial design), then the ledger is created with its past runs, its menu and round 0
in one go, and round 0's hand-off file is written from the ledger. With a menu, round 0's runs
get planned sizes in turn (each size's longest entry), as ``propose``'s initial design does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bayesmix import errors
from bayesmix.data.constraints import Constraints
from bayesmix.data.table import RunTable, check_known_domains
from bayesmix.laws import get_law
from bayesmix.loop import design
from bayesmix.loop.fidelity import initial_entries
from bayesmix.loop.ledger import (
    Fidelity,
    IngestSummary,
    Ledger,
    check_proposals_path,
    resolve_fidelity,
    write_proposals,
)
from bayesmix.loop.proposing import proposal_frame


@dataclass(frozen=True)
class Round0:
    """An initial design to record as round 0: ``mixtures`` (n, M) over the constraints'
    domains, the ``strategy`` name, the ``settings`` stored with the ledger, the hand-off
    file ``out`` (None: not written), the runs' ``planned`` n_params, steps and tokens and
    their ``cost`` relative to the menu's cheapest entry (empty and None without a menu)."""

    mixtures: pd.DataFrame
    strategy: str
    settings: dict
    out: Path | None
    planned: dict[str, np.ndarray]
    cost: np.ndarray | None = None


@dataclass(frozen=True)
class Plan:
    """A ledger to create, checked: its ``path``, domains, ``settings``, ``round0`` (None: no
    initial design) and ``fidelity`` (None: a single-scale loop)."""

    path: Path
    train: list[str]
    evals: list[str]
    settings: dict
    round0: Round0 | None
    fidelity: Fidelity | None


def plan(
    path: Path,
    train_domains,
    eval_domains,
    constraints: Constraints | None,
    *,
    runs: RunTable | None,
    target: Mapping[str, float] | None,
    settings: Mapping | None,
    initial_design: int | None,
    design: dict,
    design_min_distance: float | None,
    out,
    fidelity: tuple,
    options: dict,
) -> Plan:
    """Everything :meth:`Experiment.create` writes, checked before the file exists: a free
    path, the model, the domains, the target weights, the menu and target scale
    (``fidelity``: menu, target_scale, tokens_per_step; all None for none), round 0's
    hand-off path and design."""
    from bayesmix.model.spec import load_spec

    check_free(path)
    law = get_law(load_spec(options.get("model", "default")).law)
    train, evals = ledger_domains(path, runs, train_domains, eval_domains)
    settings = dict(settings or {})
    if target:
        settings["target_weights"] = target_weights(target, evals)
    out_path = round0_out(path, out, initial_design)
    fid = None if all(v is None for v in fidelity) else resolve_fidelity(None, *fidelity)
    round0 = None
    if initial_design is not None:
        round0 = design_round0(
            constraints,
            train,
            runs,
            initial_design,
            **design,
            min_distance=design_min_distance,
            random_seed=options.get("random_seed", 0),
            out=out_path,
            fidelity=fid,
            law=law,
        )
        settings["initial_design"] = round0.settings
    return Plan(path, train, evals, settings, round0, fid)


def check_free(path: Path) -> None:
    """LedgerError when a file exists at ``path`` (a ledger is never overwritten)."""
    if path.exists():
        raise errors.LedgerError(
            "a file already exists here; refusing to overwrite it",
            source=str(path),
            hint="choose a new path, or open it with Experiment(path)",
        )


def ledger_domains(
    path: Path,
    runs: RunTable | None,
    train_domains: Sequence[str] | None,
    eval_domains: Sequence[str] | None,
) -> tuple[list[str], list[str]]:
    """(training, validation) domains: the runs' when given, else the names given
    (validation defaults to training)."""
    if runs is not None:
        if train_domains is not None or eval_domains is not None:
            raise errors.OptionError(
                "give the domains or the runs, not both", hint="the runs define the domains"
            )
        return list(runs.train_domains), list(runs.eval_domains)
    for name, given in (("train_domains", train_domains), ("eval_domains", eval_domains)):
        if isinstance(given, (str, bytes)):  # "abc" would be the domains a, b and c
            raise errors.OptionError(
                f"{name}={given!r} is one string, not a list of domain names",
                hint=f"write {name}=[{given!r}], or split a comma-separated list",
                param=name,
            )
    if not train_domains:
        raise errors.DomainNameError("no training domains given", source=str(path))
    train = [str(d) for d in train_domains]
    return train, [str(d) for d in eval_domains] if eval_domains else list(train)


def target_weights(target: Mapping[str, float], evals: Sequence[str]) -> dict[str, float]:
    """The objective's validation-domain weights, checked: known domains, >= 0, not all 0."""
    weights = {str(k): float(v) for k, v in target.items()}
    check_known_domains(weights, evals, "validation")
    if any(w < 0 for w in weights.values()) or not sum(weights.values()) > 0:
        raise errors.OptionError("target weights must be >= 0 and not all 0")
    return weights


def round0_out(path: Path, out, initial_design: int | None) -> Path | None:
    """Round 0's hand-off file (``out``: a path, or True for ``<ledger>-round0.csv``),
    checked; None when not written. An ``out`` without an initial design is an error."""
    if initial_design is None:
        if out:
            raise errors.OptionError(
                f"out={out!r} needs an initial design", param="out", hint="pass initial_design=N"
            )
        return None
    out_path = (
        path.with_name(f"{path.stem}-round0.csv") if out is True else Path(out) if out else None
    )
    if out_path is not None:
        check_proposals_path(out_path, inputs=[path])
    return out_path


def design_round0(
    constraints: Constraints | None,
    train: Sequence[str],
    runs: RunTable | None,
    n: int,
    *,
    method: str,
    alpha: float,
    min_distance: float | None,
    random_seed: int | None,
    out: Path | None,
    fidelity: Fidelity | None = None,
    law=None,
) -> Round0:
    """``n`` space-filling mixtures (:func:`bayesmix.loop.design.initial_design`) in the
    feasible set (the simplex when ``constraints`` is None), away from the past ``runs``; with
    a menu, at the entries :func:`~bayesmix.loop.fidelity.initial_entries` gives ``law``."""
    cons = constraints if constraints is not None else Constraints.unconstrained(train)
    existing = runs.mixtures[list(cons.domains)].to_numpy() if runs is not None else None
    mixtures = design.initial_design(
        cons,
        n,
        random_seed=random_seed,
        method=method,
        alpha=alpha,
        min_distance=min_distance,
        existing=existing,
    )
    settings = {
        "n": n,
        "seed": random_seed,
        "method": method,
        "alpha": alpha,
        "min_distance": min_distance,
    }
    frame = pd.DataFrame(mixtures, columns=list(cons.domains))
    planned: dict[str, np.ndarray] = {}
    cost = None
    if fidelity is not None:
        pick = initial_entries(fidelity.menu, n, law)
        planned = {k: getattr(fidelity.menu, k)[pick] for k in ("n_params", "steps", "tokens")}
        cost = fidelity.menu.cost[pick] / fidelity.menu.unit
    return Round0(frame, f"initial-{method}", settings, out, planned, cost)


def write_ledger(
    plan: Plan, constraints: Constraints | None, runs: RunTable | None
) -> tuple[IngestSummary | None, list[str] | None]:
    """Create the planned ledger with its past runs, its menu and round 0: (import summary,
    round 0's run ids)."""
    round0 = plan.round0
    with Ledger.create(plan.path, plan.train, plan.evals, constraints, plan.settings) as led:
        summary = led.import_runs(runs) if runs is not None else None
        if plan.fidelity is not None:
            led.set_menu(plan.fidelity.menu, plan.fidelity.target)
        ids = None
        if round0 is not None:
            planned = round0.planned
            ids = led.add_proposals(
                round0.mixtures,
                round0.strategy,
                0,
                handoff=round0.out,
                n_params=planned.get("n_params"),
                steps=planned.get("steps"),
                tokens=planned.get("tokens"),
            )
    return summary, ids


def hand_off_round0(path: Path, ids: list[str], round0: Round0) -> pd.DataFrame:
    """Round 0's proposal frame from the ledger, its file written (when ``round0.out``)."""
    with Ledger.open(path) as led:
        frame = led.handoff_frame(0)
        frame = frame[frame["run"].isin(ids)].reset_index(drop=True)
        if round0.out is not None:
            write_proposals(frame, round0.out)
            led.mark_handoff_written(0)
    attrs = {
        "round": 0,
        "strategy": round0.strategy,
        "path": round0.out,
        "posterior": None,
        "notes": [],
        "fit": None,
    }
    shown = proposal_frame(frame, None, attrs)
    if round0.cost is not None:
        shown.insert(3, "cost", round0.cost)
    return shown
