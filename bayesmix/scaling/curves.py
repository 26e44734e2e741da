"""The curves stages 1 and 2 fit: one per (series, validation domain), as flat arrays.

Stage 1 (:func:`step_data`) reads every proxy checkpoint: one learning curve per (run, domain),
points at the forward area S1 of the run's learning-rate schedule and, when some rate decayed,
the annealing area S2 (:mod:`bayesmix.data.schedules`). Stage 2 (:func:`size_data`) reads one
stage-1 draw at the target step: one size curve per (mixture, domain) over the proxy sizes.
:class:`CurveData` holds both in the form the curve model (:mod:`bayesmix.scaling.curve_model`)
and the imputation (:mod:`bayesmix.scaling.imputation`) use; :func:`curve_values` is what
changes between refits of one structure.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import xarray as xr

from bayesmix.data.schedules import features
from bayesmix.data.table import LOSS_PREFIX, RunTable
from bayesmix.data.ye_logs import TOKENS_PER_STEP
from bayesmix.laws.size import SizeLaw
from bayesmix.laws.step import StepLaw
from bayesmix.scaling.design import Design


@dataclass(frozen=True)
class CurveData:
    """Learning curves (stage 1) or size curves (stage 2), one per (series, validation domain).

    A *series* is a proxy run (stage 1) or a mixture (stage 2); a curve's points are its
    checkpoints (stage 1, as the forward area S1 of their learning-rate schedule: the step at
    a constant rate) or its proxy sizes (stage 2). Curves of one *group* and domain share
    an exponent: stage 1 groups runs by model size, stage 2 has one group. ``refs`` (G,): the
    reference step / size of each group (geometric mean of its points), so x = log(ref / point)
    per observation (``log_ratio``). Per curve (C): ``curve_series``, ``curve_eval``,
    ``curve_group``, ``curve_offset`` (mean observed loss: losses are centred on it, for
    numerical precision), ``curve_n``, ``curve_sy``, ``curve_syy`` (count, sum and sum of
    squares of centred losses). Per observation: ``y`` (nats per token), ``obs_curve``,
    ``log_ratio``, ``record_idx`` (the proxy checkpoint / run it belongs to: one record shares
    a shock across domains). ``observed`` (series, K). ``series_size`` (series,): model size of
    each run (stage 1) or NaN. ``noise_floor`` (K,): the least noise sd a point has, nats per
    token (stage 2: the noise stage 1 put into its imputed losses; None: 0).
    """

    kind: str
    series: tuple[str, ...]
    groups: tuple[float, ...]
    eval_domains: tuple[str, ...]
    refs: np.ndarray
    curve_series: np.ndarray
    curve_eval: np.ndarray
    curve_group: np.ndarray
    curve_offset: np.ndarray
    curve_n: np.ndarray
    curve_sy: np.ndarray
    curve_syy: np.ndarray
    y: np.ndarray
    obs_curve: np.ndarray
    log_ratio: np.ndarray
    record_idx: np.ndarray
    n_records: int
    observed: np.ndarray
    level_loc: np.ndarray
    level_scale: np.ndarray
    log_exponent_loc: float
    log_reducible_loc: float
    series_size: np.ndarray
    tokens_per_step: float = float(TOKENS_PER_STEP)
    anneal: np.ndarray | None = None
    notes: tuple[str, ...] = ()
    noise_floor: np.ndarray | None = None

    @property
    def point_range(self) -> tuple[float, float]:
        """Smallest and largest step (stage 1: in peak-LR steps S1) or size fitted."""
        pts = self.refs[self.curve_group[self.obs_curve]] / np.exp(self.log_ratio)
        return float(pts.min()), float(pts.max())

    @property
    def annealed(self) -> bool:
        """Whether some fitted checkpoint comes after its learning rate decayed (stage 1 then
        has the annealing term ``- C S2``, :mod:`bayesmix.data.schedules`)."""
        return self.anneal is not None


def curve_data(
    kind: str,
    series: Sequence[str],
    groups: Sequence[float] | np.ndarray,
    refs: np.ndarray,
    eval_domains: Sequence[str],
    values: np.ndarray,
    obs_series: np.ndarray,
    obs_group: np.ndarray,
    obs_point: np.ndarray,
    obs_record: np.ndarray,
    n_records: int,
    log_exponent_loc: float,
    log_reducible_loc: float,
    series_size: np.ndarray,
    tokens_per_step: float,
    obs_anneal: np.ndarray | None = None,
    notes: Sequence[str] = (),
) -> CurveData:
    """CurveData from a (point, K) loss matrix whose row i is series ``obs_series[i]`` at step /
    size ``obs_point[i]`` (group ``obs_group[i]``, record ``obs_record[i]``); ``obs_anneal``:
    the annealing area S2 of each row (stage 1, None when no rate decayed), stored relative
    to its group's reference."""
    n_series, n_dom = len(series), len(eval_domains)
    row, col = np.nonzero(~np.isnan(values))
    pair = obs_series[row] * n_dom + col  # curve key
    keys, obs_curve = np.unique(pair, return_inverse=True)
    y = values[row, col]
    n = np.bincount(obs_curve, minlength=len(keys)).astype(float)
    offset = np.bincount(obs_curve, y, len(keys)) / n
    yc = y - offset[obs_curve]
    curve_series, curve_eval = keys // n_dom, keys % n_dom
    curve_group = np.zeros(len(keys), np.int64)
    curve_group[obs_curve] = obs_group[row]
    observed = np.zeros((n_series, n_dom), bool)
    observed[curve_series, curve_eval] = True
    loc, scale = _level_prior(values)
    return CurveData(
        kind=kind,
        series=tuple(series),
        groups=tuple(float(g) for g in groups),
        eval_domains=tuple(eval_domains),
        refs=np.asarray(refs, float),
        curve_series=curve_series.astype(np.int64),
        curve_eval=curve_eval.astype(np.int64),
        curve_group=curve_group,
        curve_offset=offset,
        curve_n=n,
        curve_sy=np.bincount(obs_curve, yc, len(keys)),
        curve_syy=np.bincount(obs_curve, yc**2, len(keys)),
        y=y,
        obs_curve=obs_curve.astype(np.int64),
        log_ratio=np.log(np.asarray(refs, float)[obs_group[row]] / obs_point[row]),
        record_idx=obs_record[row].astype(np.int64),
        n_records=int(n_records),
        observed=observed,
        level_loc=loc,
        level_scale=scale,
        log_exponent_loc=float(log_exponent_loc),
        log_reducible_loc=float(log_reducible_loc),
        series_size=np.asarray(series_size, float),
        tokens_per_step=float(tokens_per_step),
        anneal=(
            None
            if obs_anneal is None
            else np.asarray(obs_anneal, float)[row] / np.asarray(refs, float)[obs_group[row]]
        ),
        notes=tuple(notes),
    )


def _level_prior(losses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Wide data-scaled prior of the level (K,): mean observed loss, 2 x its spread + 0.5."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(losses, axis=0)
        spread = np.nanstd(losses, axis=0)
    mean = np.where(np.isfinite(mean), mean, np.nanmean(losses))
    spread = np.where(np.isfinite(spread), spread, 0.0)
    return mean, 2.0 * spread + 0.5


def geomean(x) -> float:
    return float(np.exp(np.mean(np.log(np.asarray(x, float)))))


def curve_values(d: CurveData) -> dict:
    """What changes between refits of one structure, per observation and per curve (the
    curve model's ``pm.Data`` come from it: :func:`~bayesmix.scaling.curve_model.model_values`)."""
    sums = {} if d.annealed else {"curve_sy": d.curve_sy, "curve_syy": d.curve_syy}
    return {
        "y_centred": d.y - d.curve_offset[d.obs_curve],
        "log_ratio": d.log_ratio,
        **sums,
        "level_mean": d.level_loc[d.curve_eval] - d.curve_offset,
        "level_sd": d.level_scale[d.curve_eval],
        "log_reducible_loc": np.asarray(d.log_reducible_loc),
        "log_exponent_loc": np.asarray(d.log_exponent_loc),
        **({"anneal": d.anneal} if d.anneal is not None else {}),
    }


def step_data(table: RunTable) -> CurveData:
    """Stage-1 curves from a table of checkpoints (steps > 0, model sizes present): one curve
    per (run, validation domain); one exponent per (model size, domain)."""
    tidy = table.to_tidy()
    runs = tuple(table.runs)
    order = {r: i for i, r in enumerate(runs)}
    tidy = tidy.assign(_r=tidy["run"].map(order)).sort_values(["_r", "step"], kind="stable")
    n_params = (
        tidy.drop_duplicates("run")
        .set_index("run")["n_params"]
        .loc[list(runs)]
        .to_numpy(dtype=float)
    )
    sizes = np.unique(n_params)
    run_size = np.searchsorted(sizes, n_params)
    record_run = tidy["_r"].to_numpy(dtype=np.int64)
    step = tidy["step"].to_numpy(dtype=float)
    s1, s2, notes = features(tidy)
    record_size = run_size[record_run]
    refs = np.array([geomean(s1[record_size == g]) for g in range(len(sizes))])
    tokens = tidy["tokens"].to_numpy(dtype=float) if "tokens" in tidy.columns else None
    tps = (
        float(np.median(tokens / step))
        if tokens is not None and np.all(np.isfinite(tokens))
        else float(TOKENS_PER_STEP)
    )
    values = tidy[[LOSS_PREFIX + d for d in table.eval_domains]].to_numpy(dtype=float)
    return curve_data(
        "step",
        runs,
        sizes,
        refs,
        table.eval_domains,
        values,
        record_run,
        record_size,
        s1,
        np.arange(len(step)),
        len(step),
        *StepLaw().centres(geomean(step) * tps),
        n_params,
        tps,
        s2 if np.any(s2 > 0) else None,
        notes,
    )


def size_data(losses: xr.DataArray, design: Design) -> CurveData:
    """Stage-2 curves from stage-1 losses (run, eval_domain) of the runs in ``design``: one
    curve per (mixture, validation domain) over the model sizes; one exponent per domain."""
    mixtures = tuple(design.mixtures.index)
    mix_of = {m: i for i, m in enumerate(mixtures)}
    runs = [str(r) for r in losses["run"].values if design.run_mixture.get(str(r)) in mix_of]
    vals = losses.sel(run=runs).transpose("run", "eval_domain").values
    size = np.array([design.run_size[r] for r in runs])
    size_ref = geomean(design.sizes)
    return curve_data(
        "size",
        mixtures,
        (size_ref,),
        np.array([size_ref]),
        [str(v) for v in losses["eval_domain"].values],
        vals,
        np.array([mix_of[design.run_mixture[r]] for r in runs]),
        np.zeros(len(runs), np.int64),
        size,
        np.arange(len(runs)),
        len(runs),
        *SizeLaw().centres(size_ref),
        np.full(len(mixtures), np.nan),
        TOKENS_PER_STEP,
    )
