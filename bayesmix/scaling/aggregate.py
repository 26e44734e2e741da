"""Aggregate losses for implicit domain aggregation, and choosing its number of latent domains.

Two ways to predict an overall loss ``L = sum_i w_i L_i`` (Ye et al. 2025):

* explicit: fit a law per validation domain, predict, weight the predictions
  (``Posterior.intervals(..., weights=...)``);
* implicit: fit the ``implicit`` law (:mod:`bayesmix.laws.implicit`) to the aggregate loss
  itself, made here by :func:`aggregate_losses`, with K latent domains chosen by PSIS-LOO
  (:func:`choose_latent`).

Losses are nats per token throughout.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bayesmix import errors
from bayesmix.data.mixtures import domain_weights
from bayesmix.data.table import LOSS_PREFIX, RunTable
from bayesmix.laws import model_with
from bayesmix.model.spec import ModelSpec, load_spec

#: What :func:`aggregate_losses` does with a record that lacks a weighted domain's loss.
MISSING = ("error", "drop")


def aggregate_losses(
    runs: RunTable,
    weights,
    name: str = "overall",
    *,
    allow_subset: bool = False,
    missing: str = "error",
    report: list[str] | None = None,
) -> RunTable:
    """The run table with one loss column ``loss.<name> = sum_i w_i loss_i`` instead of its
    per-domain losses (every record; mixtures, model size, steps and tokens kept).

    ``weights``: ``{domain: weight}`` or a JSON file, as
    :func:`bayesmix.data.mixtures.domain_weights` takes them (names matched up to case and
    punctuation, normalised to sum 1; a weighted domain the table lacks is an error unless
    ``allow_subset``, which renormalises over the domains present). A record missing the loss of a
    domain with positive weight cannot be aggregated: ``missing="error"`` (default) raises a
    :class:`~bayesmix.errors.MissingValueError` naming the run and column; ``missing="drop"`` drops
    such records and appends one line saying how many to ``report`` (a list), when given.
    """
    if missing not in MISSING:
        raise errors.OptionError(f"missing must be one of {', '.join(MISSING)}, got {missing!r}")
    try:
        w = domain_weights(weights, runs.eval_domains, allow_subset=allow_subset)
    except errors.DomainNameError as err:  # its message speaks of a posterior's domains
        raise errors.DomainNameError(
            f"weighted domain {err.column!r} is not a validation domain of the runs",
            source=err.source or runs.source,
            column=err.column,
            hint=(err.hint or "").replace("--weights-subset", "allow_subset=True"),
        ) from None
    used = np.flatnonzero(w > 0)
    losses = runs.losses.to_numpy(dtype=float)[:, used]  # (record, used)
    tidy = runs.to_tidy()
    lacking = np.isnan(losses).any(axis=1)
    if lacking.any():
        i = int(np.flatnonzero(lacking)[0])
        dom = runs.eval_domains[used[int(np.flatnonzero(np.isnan(losses[i]))[0])]]
        where = f"run {tidy['run'].iloc[i]!r}" + (
            f" at step {tidy['step'].iloc[i]:g}" if runs.has_steps else ""
        )
        if missing == "error":
            raise errors.MissingValueError(
                f"{where} has no loss on weighted domain {dom!r}: cannot aggregate",
                source=runs.source,
                run=str(tidy["run"].iloc[i]),
                column=LOSS_PREFIX + dom,
                hint='drop such records with missing="drop", or give the domain weight 0',
            )
        if lacking.all():
            raise errors.NoLossesError(
                "no record has a loss on every weighted domain",
                source=runs.source,
                column=LOSS_PREFIX + dom,
                hint="check the weights' domain names",
            )
        if report is not None:
            report.append(
                f"dropped {int(lacking.sum())} of {len(lacking)} records lacking a "
                f"weighted loss (first: {where}, domain {dom!r})"
            )
    keep = ~lacking
    meta = [c for c in tidy.columns if not c.startswith(LOSS_PREFIX)]
    frame = tidy.loc[keep, meta].copy()
    frame[LOSS_PREFIX + str(name)] = losses[keep] @ w[used]
    return RunTable.from_frame(frame.reset_index(drop=True), source=runs.source)


def latent_spec(k: int, model: str | ModelSpec | None = None) -> ModelSpec:
    """``model`` (a specification of a law with latent domains; None: the shipped one of the
    law with a ``latent`` dim) with ``hierarchy.latent = k``, named ``<model>-K<k>``."""
    base = load_spec(model if model is not None else model_with(dim="latent"))
    d = base.to_dict()
    d["hierarchy"]["latent"] = k
    d["name"] = f"{base.name}-K{k}"
    d["description"] = f"{base.law} law with K = {k} latent domains (from {base.name})"
    return ModelSpec.from_json(json.dumps(d))


@dataclass
class LatentChoice:
    """Result of :func:`choose_latent`.

    ``k``: the chosen number of latent domains; ``table``: the PSIS-LOO table of
    :func:`bayesmix.inference.compare.compare` (best first) with a ``latent`` column (K of each
    row); ``posteriors``: ``{K: Posterior}``.
    """

    k: int
    table: pd.DataFrame
    posteriors: dict


def choose_latent(
    runs: RunTable,
    ks: Sequence[int] = (1, 2, 3, 5),
    *,
    model: str | ModelSpec | None = None,
    tolerance_se: float = 1.0,
    var_name: str = "run_loss",
    **fit_kw,
) -> LatentChoice:
    """Fit ``model`` with each number of latent domains in ``ks`` and choose K by PSIS-LOO.

    ``runs``: a table of aggregate losses (:func:`aggregate_losses`); ``fit_kw`` go to
    :func:`bayesmix.inference.fitting.fit` (draws, tune, chains, random_seed, step, warn, ...). The
    chosen K is the smallest whose ELPD is within ``tolerance_se`` standard errors of the best one
    (``elpd_diff >= -tolerance_se * dse``; 0 picks the best ELPD): latent domains beyond what
    the data support cost parameters for no better predictions. Rows whose fits failed the
    diagnostics gate or whose Pareto k is high say so in ``warning``.
    """
    from bayesmix.inference.compare import compare
    from bayesmix.inference.fitting import fit

    ks = list(ks)
    if len(ks) < 2 or len(set(ks)) != len(ks):
        raise errors.OptionError(f"choose_latent needs at least two different K, got {ks}")
    if not (np.isfinite(tolerance_se) and tolerance_se >= 0):
        raise errors.OptionError(f"tolerance_se must be >= 0, got {tolerance_se}")
    specs = {k: latent_spec(k, model) for k in ks}  # validates every K first
    posts = {k: fit(runs, spec, **fit_kw) for k, spec in specs.items()}
    names = {f"K={k}": k for k in ks}
    table = compare({name: posts[k] for name, k in names.items()}, var_name)
    table.insert(1, "latent", table["model"].map(names).astype(int))
    ok = table["elpd_diff"] >= -tolerance_se * table["dse"]
    chosen = int(table.loc[ok, "latent"].min())
    table.attrs["chosen"] = chosen
    table.attrs["tolerance_se"] = tolerance_se
    return LatentChoice(chosen, table, posts)
