"""The end of the nested pipeline: stage 3's data tables and the pooled posterior.

:func:`target_table` turns one imputation of the mixtures' losses at the target size and step
into a run table for the mixing law; :func:`pool` concatenates the J stage-3 posteriors into
one :class:`~bayesmix.posterior.posterior.Posterior` (chains renumbered, coordinate
``imputation``), with the union of their gate reports and the pipeline's record
(:func:`pipeline_record`, :func:`gate_warnings`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import xarray as xr

from bayesmix.data.table import LOSS_PREFIX, MIX_PREFIX, RunTable
from bayesmix.io import json_safe
from bayesmix.posterior.diagnostics import Diagnostics
from bayesmix.posterior.posterior import Posterior


def target_table(
    losses: xr.DataArray,
    mixtures: pd.DataFrame,
    n_star: float,
    s_star: float,
    tps: float,
    j: int | None,
    notes: list[str],
) -> RunTable:
    """A run table of one record per mixture at (n_star, s_star) with the given losses."""
    vals = losses.sel(mixture=list(mixtures.index)).transpose("mixture", "eval_domain").values
    bad = vals <= 0
    if bad.any():  # a non-positive loss is not a loss; cannot happen with sane fits
        notes.append(
            f"imputation {j + 1 if j is not None else '?'}: {int(bad.sum())} imputed "
            "losses <= 0 raised to 1e-3"
        )
        vals = np.where(bad, 1e-3, vals)
    frame = {
        "run": list(mixtures.index),
        "n_params": n_star,
        "step": s_star,
        "tokens": s_star * tps,
    }
    for d in mixtures.columns:
        frame[MIX_PREFIX + d] = mixtures[d].to_numpy(dtype=float)
    for i, d in enumerate(losses["eval_domain"].values):
        frame[LOSS_PREFIX + str(d)] = vals[:, i]
    source = (
        "nested pipeline, imputation mean" if j is None else f"nested pipeline, imputation {j + 1}"
    )
    return RunTable.from_frame(pd.DataFrame(frame), source=source)


def pool(
    posts: list[Posterior], spec, mean_table: RunTable, imputed: xr.DataArray, record: dict
) -> Posterior:
    """One Posterior from the J stage-3 posteriors: chains concatenated and renumbered. Fits
    that retried towards their gate (:mod:`bayesmix.inference.gate_retry`) may hold more draws: each
    imputation keeps the fewest number of draws, evenly spaced, so that all weigh the same."""
    n_chain = posts[0].tree["posterior"].sizes["chain"]
    n_draw = min(p.tree["posterior"].sizes["draw"] for p in posts)
    groups = {}
    for name in ("posterior", "sample_stats"):
        parts = [thin(p.tree[name].to_dataset(), n_draw) for p in posts]
        ds = xr.concat(parts, dim="chain", combine_attrs="drop_conflicts")
        n = ds.sizes["chain"]
        groups[name] = ds.assign_coords(
            chain=np.arange(n),
            imputation=("chain", np.repeat(np.arange(1, len(posts) + 1), n_chain)),
        )
    diag = dataclasses.replace(union_diagnostics([p.diagnostics for p in posts]), draws=n_draw)
    settings = dict(posts[0].settings)
    settings.pop("attempts", None)  # each imputation's attempts: in the record's stage3
    settings.update(
        {
            "chains": int(groups["posterior"].sizes["chain"]),
            "draws": n_draw,
            "seed": record["seed"],
            "compile_s": round(sum(p.settings["compile_s"] for p in posts), 3),
            "sample_s": round(sum(p.settings["sample_s"] for p in posts), 3),
            "pipeline": "nested",
            "imputations": record["imputations"],
            "target_n_params": record["target"]["n_params"],
            "target_steps": record["target"]["steps"],
            "target_tokens": record["target"]["tokens"],
        }
    )
    post = Posterior.from_fit(xr.DataTree.from_dict(groups), spec, mean_table, diag, settings)
    post.tree["imputed_data"] = xr.DataTree(
        xr.Dataset(
            {
                "loss": imputed.rename(mixture="run").assign_attrs(
                    units="nats per token",
                    description="stage-3 data of each imputation: stage-2 predictive draws at the "
                    "target size and step",
                )
            }
        )
    )
    post.tree.attrs["bayesmix_pipeline"] = json.dumps(json_safe(record), sort_keys=True)
    return post


def thin(ds: xr.Dataset, n_draw: int) -> xr.Dataset:
    """``n_draw`` evenly spaced draws of ``ds`` (all when it has that many), renumbered 0..n-1
    so that datasets of several fits align along ``draw``."""
    keep = np.linspace(0, ds.sizes["draw"] - 1, n_draw).round().astype(int)
    return ds.isel(draw=keep).assign_coords(draw=np.arange(n_draw))


def union_diagnostics(reports: Sequence[Diagnostics]) -> Diagnostics:
    """The worst figures of several fits' gate reports and all their failures (prefixed with
    ``imputation j``); chains add up."""

    def key_max(r):
        return r.max_rhat if math.isfinite(r.max_rhat) else -math.inf

    jr = max(range(len(reports)), key=lambda j: key_max(reports[j]))
    je = min(range(len(reports)), key=lambda j: reports[j].min_ess_bulk)
    bfmi = [r.min_bfmi for r in reports if math.isfinite(r.min_bfmi)]
    return Diagnostics(
        chains=sum(r.chains for r in reports),
        draws=reports[0].draws,
        divergences=sum(r.divergences for r in reports),
        treedepth_hits=sum(r.treedepth_hits for r in reports),
        min_bfmi=min(bfmi) if bfmi else float("nan"),
        max_rhat=reports[jr].max_rhat,
        min_ess_bulk=reports[je].min_ess_bulk,
        min_ess_tail=min(r.min_ess_tail for r in reports),
        worst_rhat=f"imputation {jr + 1}: {reports[jr].worst_rhat}",
        worst_ess=f"imputation {je + 1}: {reports[je].worst_ess}",
        failed=[f"imputation {j + 1}: {f}" for j, r in enumerate(reports) for f in r.failed],
    )


def pipeline_record(post: Posterior) -> dict | None:
    """The nested pipeline's record (target, J, notes, per-stage reports) of a posterior, or
    None for a posterior that did not come from :func:`nested_fit`."""
    text = post.tree.attrs.get("bayesmix_pipeline")
    return json.loads(text) if text else None


def gate_warnings(post: Posterior) -> list[str]:
    """One line per pipeline stage that failed its diagnostics gate (empty when all passed)."""
    rec = pipeline_record(post)
    if rec is None:
        return [post.diagnostics_warning] if post.diagnostics_warning else []
    lines = []
    s1 = rec["stage1"]["diagnostics"]
    if s1["failed"]:
        lines.append(
            "nested pipeline stage 1 (step law) did not pass its diagnostics: "
            + "; ".join(s1["failed"])
        )
    for name, reports in (("2 (size law)", rec["stage2"]), ("3 (mixing law)", rec["stage3"])):
        bad = [
            (j, r["diagnostics"]["failed"])
            for j, r in enumerate(reports)
            if r["diagnostics"]["failed"]
        ]
        if bad:
            lines.append(
                f"nested pipeline stage {name} did not pass its diagnostics in "
                f"{len(bad)} of {len(reports)} imputations: "
                + "; ".join(f"imputation {j + 1}: {f[0]}" for j, f in bad)
            )
    return lines
