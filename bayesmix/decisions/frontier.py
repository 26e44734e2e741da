"""The trade-off frontier: what a guarantee costs the target domain's loss.

For each value of a sweep (the no-worse guards' tolerance, or every guard's probability) the
best posterior expected loss of the target (a validation domain, or the problem's weighted
aggregate) with every guard met exactly on the draws (:func:`bayesmix.decisions.chance.solve`).
Points are solved from the tightest to the loosest, each warm-started from the previous mixture,
which stays feasible, so the target loss never rises as the guards loosen. ``bayesmix frontier``
(``cli/frontier.py``) prints, writes and draws it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bayesmix import errors
from bayesmix._compat import CI_PROB, SEED, renamed_kwargs
from bayesmix.data.constraints import Constraints
from bayesmix.decisions.chance import ChanceSet, solve
from bayesmix.decisions.draws import as_law_draws, unpack_draws
from bayesmix.decisions.epigraph import DomainValues, worst_piece
from bayesmix.decisions.feasible import centre, check_constraints
from bayesmix.decisions.guarantees import Guarantee, expand
from bayesmix.decisions.inputs import problem_from, resolve_baseline, resolve_weights
from bayesmix.decisions.optimize import minimize_objective
from bayesmix.decisions.problem import DecisionProblem
from bayesmix.io import atomic_path
from bayesmix.posterior.intervals import DEFAULT_PROB, credible_interval

#: Frontier defaults: tolerances 0, TOL/4, ..., 2 TOL.
FRONTIER_STEPS = 9
PLOT_SUFFIXES = (".png", ".pdf", ".svg")


@dataclass
class Frontier:
    """Best target-domain loss along a sweep of guarantee tolerances or probabilities.

    ``table``: one row per swept value: sweep value (``tolerance`` or ``prob``), ``feasible``,
    ``target_loss`` (posterior mean, nats/token) with ``target_lower``/``target_upper``
    (equal-tailed, mass ``interval_prob``), ``price`` (target loss minus the unguaranteed
    optimum's), ``gain`` (drop of target loss from the previous, tighter row), the tightest
    guarantee and its exact probability, ``share.<domain>`` columns. Target loss never rises
    as the guarantee loosens (each point starts from the tighter one's mixture, which stays
    feasible, and keeps it when the optimiser finds nothing better).
    """

    table: pd.DataFrame
    target: str
    sweep: str
    guards: list
    unguaranteed_loss: float
    interval_prob: float = DEFAULT_PROB
    source: str | None = None

    def to_text(self) -> str:
        cols = [
            self.sweep,
            "feasible",
            "target_loss",
            "target_lower",
            "target_upper",
            "price",
            "gain",
            "tightest",
            "tightest_prob",
        ]
        shares = [c for c in self.table if c.startswith("share.")]
        out = [
            f"Frontier of {self.target}'s expected loss ({self.source or 'posterior'}): "
            f"guards {', '.join(g.label() for g in self.guards)}, sweeping {self.sweep}; "
            f"without guarantees {self.unguaranteed_loss:.4f} nats/token"
        ]
        out.append(
            self.table[cols + shares].to_string(index=False, float_format=lambda v: f"{v:.4f}")
        )
        return "\n".join(out)

    def plot(self, path) -> Path:
        """Target loss (mean and interval) against the swept value (PNG/PDF/SVG, atomic)."""
        from matplotlib.figure import Figure

        path = Path(path)
        if path.suffix.lower() not in PLOT_SUFFIXES:
            raise errors.OptionError(
                f"{path}: unknown figure format {path.suffix!r}",
                hint=f"use a file ending in {' or '.join(PLOT_SUFFIXES)}",
            )
        t = self.table[self.table["feasible"]]
        fig = Figure(figsize=(6.4, 4.4))
        ax = fig.add_subplot()
        ax.fill_between(
            t[self.sweep],
            t["target_lower"],
            t["target_upper"],
            alpha=0.25,
            color="tab:blue",
            label=f"{self.interval_prob:.0%} interval",
        )
        ax.plot(t[self.sweep], t["target_loss"], "o-", color="tab:blue", label="posterior mean")
        ax.axhline(self.unguaranteed_loss, color="black", ls="--", lw=1, label="without guarantees")
        ax.set_xlabel(
            "tolerance (nats per token above the baseline)"
            if self.sweep == "tolerance"
            else "required probability"
        )
        ax.set_ylabel(f"{self.target} expected loss (nats per token)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        with atomic_path(path, suffix=True) as tmp:
            fig.savefig(tmp)
        return path


@renamed_kwargs(**CI_PROB, **SEED)
def frontier(
    source,
    problem: DecisionProblem | None = None,
    *,
    tolerances=None,
    probs=None,
    random_seed: int = 0,
    target: str | None = None,
    guards=None,
    constraints: Constraints | None = None,
    baseline=None,
    inputs: Mapping | None = None,
    ci_prob: float | None = None,
) -> Frontier:
    """The trade-off frontier of a :class:`DecisionProblem`: minimise the posterior expected
    loss of its ``target`` (or weighted aggregate) subject to its ``guarantees`` (the guards)
    with their tolerance set to each of ``tolerances`` (no-worse guards; max-loss guards stay
    fixed), or their probability set to each of ``probs``.

    ``frontier(posterior, problem, tolerances=...)``, or the problem's fields as keywords
    (``target``, ``guards`` for its guarantees, ``constraints``, ``baseline``, ``inputs``,
    ``ci_prob``). Default sweep: tolerances ``0, TOL/4, ..., 2 TOL`` (TOL the largest no-worse
    bound). Points are solved from the tightest to the loosest (tolerance up, probability
    down), each warm-started from the previous mixture, which stays feasible, so the target
    loss never rises. Target-loss intervals have mass ``ci_prob`` (equal-tailed);
    ``random_seed`` draws the random starts."""
    fields = {
        "target": target,
        "guarantees": guards,
        "constraints": constraints,
        "baseline": baseline,
        "inputs": inputs,
        "ci_prob": ci_prob,
    }
    problem = problem_from(problem, fields, DecisionProblem)
    if problem.objective.kind != "mean":
        raise errors.OptionError(
            f"objective={str(problem.objective)!r}: the frontier minimises the expected loss",
            hint="use objective='mean'",
            param="objective",
        )
    guards = list(problem.guarantees)
    if not guards:
        raise errors.OptionError(
            "guards=[]: the frontier needs at least one guard",
            hint="e.g. guards=['no-worse:all=0.01@0.9']",
            param="guards",
        )
    sweep, values = _sweep(guards, tolerances, probs)
    draws, constraints, w, w_desc, base = _resolve(source, problem)
    law, params, inp = unpack_draws(draws)
    anchor = minimize_objective(draws, constraints, w, "mean", random_seed=random_seed).mixture
    target_values = DomainValues(law, params, inp, w[None, :])
    free_loss = float(target_values.at(anchor)[:, 0, 0].mean())

    def pieces(r):
        f, g = target_values(r)
        return np.array([f[:, 0].mean()]), g[:, 0, :].mean(axis=0)[None, :]

    rows, prev, prev_v = [], None, np.inf
    for v in values:
        gs = [_swept(g, sweep, v) for g in guards]
        expanded, wg = expand(gs, draws.eval_domains)
        chance = ChanceSet(law, params, inp, expanded, wg, base)
        starts = ([prev] if prev is not None else []) + [anchor, base, centre(constraints)]
        try:
            x, _ = solve(pieces, chance, constraints, starts, anchor=anchor)
        except errors.GuaranteeError as err:
            x, last_error = None, err
        if (
            x is not None
            and prev is not None
            and chance.ok(prev)
            and worst_piece(pieces, x) > prev_v
        ):
            x = prev  # monotone: the tighter point's mixture is feasible here and better
        row: dict[str, Any] = {sweep: v, "feasible": x is not None}
        if x is not None:
            target_loss = target_values.at(x)[:, 0, 0]
            row.update(_point(x, target_loss, chance, expanded, problem.ci_prob, free_loss, prev_v))
            row.update({f"share.{d}": float(s) for d, s in zip(draws.train_domains, x)})
            prev, prev_v = x, row["target_loss"]
        rows.append(row)
    if prev is None:  # no point feasible: say which guarantee fails, not a table of NaN
        raise errors.InfeasibleError(
            f"no point of the frontier meets every guarantee; at the loosest ({sweep} "
            f"{values[-1]:g}): {last_error}"
        )
    return Frontier(
        table=_table(rows, sweep, draws.train_domains),
        target=problem.target or w_desc,
        sweep=sweep,
        guards=guards,
        unguaranteed_loss=free_loss,
        interval_prob=problem.ci_prob,
        source=draws.source,
    )


def _resolve(source, problem: DecisionProblem):
    """The draws at the problem's scale, its constraints, weights (K,) with their description
    and baseline (M,) over the draws' domains."""
    draws = as_law_draws(source)
    if problem.inputs is not None:
        draws = dataclasses.replace(draws, inputs=problem.inputs)
    constraints = check_constraints(problem.constraints, draws.train_domains)
    w, w_desc = resolve_weights(
        draws.eval_domains, problem.weights, problem.target, allow_subset=problem.allow_subset
    )
    base, _ = resolve_baseline(draws.train_domains, problem.baseline)
    return draws, constraints, w, w_desc, base


def _sweep(guards, tolerances, probs) -> tuple[str, list[float]]:
    """What is swept (``"tolerance"`` or ``"prob"``) and its values, tightest first."""
    if tolerances is not None and probs is not None:
        raise errors.OptionError(
            "tolerances= was given with probs=: sweep one of them", param="tolerances"
        )
    if probs is not None:
        values = sorted({float(p) for p in probs}, reverse=True)
        for p in values:
            if not 0 < p < 1:
                raise errors.OptionError(
                    f"probs={list(probs)!r}: {p:g} is not in (0, 1)", param="probs"
                )
        return "prob", values
    tols = [g.bound for g in guards if g.kind == "no-worse"]
    if not tols:
        raise errors.OptionError(
            "guards= has no no-worse guard, so there is no tolerance to sweep",
            hint="add a no-worse guard, or sweep the probabilities",
            param="guards",
        )
    if tolerances is None:
        top = max(tols) if max(tols) > 0 else 0.01
        tolerances = np.linspace(0.0, 2 * top, FRONTIER_STEPS)
    values = sorted({float(t) for t in tolerances})
    if not all(math.isfinite(t) for t in values):
        raise errors.OptionError(
            f"tolerances={list(tolerances)!r}: give finite numbers", param="tolerances"
        )
    return "tolerance", values


def _swept(guard: Guarantee, sweep: str, value: float) -> Guarantee:
    """``guard`` at one point of the sweep (max-loss guards keep their bound)."""
    if sweep == "prob":
        return guard.replace(prob=value)
    return guard.replace(bound=value) if guard.kind == "no-worse" else guard


def _point(x, target_loss, chance: ChanceSet, expanded, ci_prob, free_loss, prev_v) -> dict:
    """One feasible point's row: the target loss with its interval, its price against the
    unguaranteed optimum, its gain over the previous (tighter) point, the tightest guard."""
    lo, hi = credible_interval(target_loss, ci_prob)
    probs_x = chance.probs(x)
    k = int(np.argmin(probs_x - chance.level))
    mean_loss = float(target_loss.mean())
    return {
        "target_loss": mean_loss,
        "target_lower": float(lo),
        "target_upper": float(hi),
        "price": mean_loss - free_loss,
        "gain": (prev_v - mean_loss) if np.isfinite(prev_v) else np.nan,
        "tightest": expanded[k].label(),
        "tightest_prob": float(probs_x[k]),
    }


def _table(rows: list[dict], sweep: str, train_domains) -> pd.DataFrame:
    """The frontier's rows as a table in sweep order, every column present (NaN where a point
    is infeasible); checks that the target loss never rises along the sweep."""
    table = pd.DataFrame(rows)
    columns = ["target_loss", "target_lower", "target_upper", "price", "gain", "tightest"]
    columns += ["tightest_prob"] + [f"share.{d}" for d in train_domains]
    for col in columns:
        if col not in table:
            table[col] = np.nan
    feas = table[table["feasible"]]["target_loss"].to_numpy()
    if np.any(np.diff(feas) > 1e-12):  # by construction this cannot happen
        raise errors.InfeasibleError(
            "frontier is not monotone (internal error)",
            hint="report this with the posterior and guards",
        )
    return table.sort_values(sweep, kind="stable").reset_index(drop=True)
