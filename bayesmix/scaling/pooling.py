"""The end of the nested pipeline: stage 3's data table and the target-scale posterior.

Stage 2 gives J imputations of every mixture's losses at the target size and step. Their
differences are of two kinds: a shift every mixture of a validation domain shares (a draw of
an exponent or a level moves them all) and each mixture's own scatter. Stage 3 fits the mixing
law once, to one imputation's own scatter around the imputations' mean level
(:func:`stage3_data`): its noise scale learns the scatter a target run has. The shared shifts
(:func:`shared_shifts`, (imputation, eval_domain)) go with the posterior (group
``imputation_shift``); every prediction adds the shift of one imputation per posterior draw
(:meth:`~bayesmix.posterior.posterior.Posterior.predict`), so target-scale intervals carry
stages 1-2's uncertainty, and differences between mixtures are untouched by it.
:func:`target_posterior` assembles that posterior with the pipeline's record
(:func:`pipeline_record`, :func:`gate_warnings`).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import xarray as xr

from bayesmix.data.table import LOSS_PREFIX, MIX_PREFIX, RunTable
from bayesmix.io import json_safe
from bayesmix.posterior.posterior import SHIFT_GROUP, Posterior


def shared_shifts(imputed: xr.DataArray) -> xr.DataArray:
    """Each imputation's level per validation domain relative to the imputations' mean level
    (imputation, eval_domain), nats per token: the mean over mixtures of an imputation minus
    the mean over imputations and mixtures. Zero-mean over imputations."""
    level = imputed.mean("mixture")
    return (level - level.mean("imputation")).transpose("imputation", "eval_domain")


def stage3_data(imputed: xr.DataArray, base: int = 0) -> xr.DataArray:
    """Stage 3's losses (mixture, eval_domain): imputation ``base`` moved to the imputations'
    mean level, ``imputed[base] - shift[base]``. One imputation, not their mean: its
    mixtures keep the scatter of a single run, which stage 3's noise scale must learn."""
    return imputed.isel(imputation=base) - shared_shifts(imputed).isel(imputation=base)


def target_table(
    losses: xr.DataArray,
    mixtures: pd.DataFrame,
    n_star: float,
    s_star: float,
    tps: float,
    notes: list[str],
) -> RunTable:
    """A run table of one record per mixture at (n_star, s_star) with the given losses."""
    vals = losses.sel(mixture=list(mixtures.index)).transpose("mixture", "eval_domain").values
    bad = vals <= 0
    if bad.any():  # a non-positive loss is not a loss; cannot happen with sane fits
        notes.append(f"{int(bad.sum())} imputed losses <= 0 raised to 1e-3")
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
    return RunTable.from_frame(pd.DataFrame(frame), source="nested pipeline, stage 3")


def target_posterior(post: Posterior, imputed: xr.DataArray, record: dict) -> Posterior:
    """The stage-3 posterior made the pipeline's: the imputations (group ``imputed_data``),
    their shared shifts (group ``imputation_shift``, added by every prediction), the target
    and the pipeline's record in its settings and attributes."""
    settings = post.settings
    settings.update(
        {
            "seed": record["seed"],
            "pipeline": "nested",
            "imputations": record["imputations"],
            "target_n_params": record["target"]["n_params"],
            "target_steps": record["target"]["steps"],
            "target_tokens": record["target"]["tokens"],
        }
    )
    post.tree.attrs["bayesmix_settings"] = json.dumps(json_safe(settings), sort_keys=True)
    post.tree["imputed_data"] = xr.DataTree(
        xr.Dataset(
            {
                "loss": imputed.rename(mixture="run").assign_attrs(
                    units="nats per token",
                    description="stage-2 predictive draws at the target size and step, one "
                    "table per imputation",
                )
            }
        )
    )
    shift = shared_shifts(imputed).assign_attrs(
        units="nats per token",
        description="each imputation's level per validation domain minus their mean: added to "
        "the predictions of one posterior draw in J (draw index modulo J)",
    )
    post.tree[SHIFT_GROUP] = xr.DataTree(xr.Dataset({"shift": shift}))
    post.tree.attrs["bayesmix_pipeline"] = json.dumps(json_safe(record), sort_keys=True)
    return post


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
    bad = [(j, r["diagnostics"]["failed"]) for j, r in enumerate(rec["stage2"])]
    bad = [(j, f) for j, f in bad if f]
    if bad:
        lines.append(
            f"nested pipeline stage 2 (size law) did not pass its diagnostics in {len(bad)} of "
            f"{len(rec['stage2'])} imputations: "
            + "; ".join(f"imputation {j + 1}: {f[0]}" for j, f in bad)
        )
    s3 = rec["stage3"]["diagnostics"]
    if s3["failed"]:
        lines.append(
            "nested pipeline stage 3 (mixing law) did not pass its diagnostics: "
            + "; ".join(s3["failed"])
        )
    return lines
