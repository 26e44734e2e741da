"""The diagnostics gate run after every fit: divergences, tree depth, E-BFMI, R-hat, ESS.

The figures are arviz-stats' estimators (rank-normalised split R-hat, bulk and tail ESS,
computed here for every scalar at once; E-BFMI by arviz-stats' formula) and the sampler
statistics (divergences, tree-depth hits). The gate does not import arviz-stats (1.7 s with
``scipy.stats`` in a fresh process, a third of a small fit there); tests compare every figure
with arviz-stats. A fit that fails any check is not an error: it is
reported loudly (a ``ConvergenceWarning``) and the report is stored with the posterior so that
every decision drawn from it can say so.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np
import xarray as xr

from bayesmix.posterior.groups import all_draws, owner_note

#: Thresholds of the gate. R-hat as recommended by Vehtari et al. (2021); ESS of 100 per chain.
RHAT_MAX = 1.01
ESS_PER_CHAIN = 100
BFMI_MIN = 0.3


class ConvergenceWarning(UserWarning):
    """The posterior failed the diagnostics gate; decisions drawn from it may be wrong."""


@dataclass
class Diagnostics:
    """Figures of the gate and the list of checks that failed (empty when all passed)."""

    chains: int
    draws: int
    divergences: int
    treedepth_hits: int
    min_bfmi: float
    max_rhat: float
    min_ess_bulk: float
    min_ess_tail: float
    worst_rhat: str = ""
    worst_ess: str = ""
    failed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed

    def warning(self) -> str | None:
        """One line listing what failed, or None when the fit passed."""
        if self.ok:
            return None
        return "posterior did not pass its diagnostics: " + "; ".join(self.failed)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, s: str) -> Diagnostics:
        return cls(**json.loads(s))

    def table(self) -> str:
        lines = [
            f"chains x draws       {self.chains} x {self.draws}",
            f"divergences          {self.divergences}",
            f"max tree depth hits  {self.treedepth_hits}",
            f"min E-BFMI           {self.min_bfmi:.3f}",
            f"max R-hat            {self.max_rhat:.4f}  ({self.worst_rhat})",
            f"min bulk ESS         {self.min_ess_bulk:.0f}  ({self.worst_ess})",
            f"min tail ESS         {self.min_ess_tail:.0f}",
            "status               " + ("PASSED" if self.ok else "FAILED"),
        ]
        lines += [f"  failed: {f}" for f in self.failed]
        return "\n".join(lines)


# ------------------------------------------------------------------ vectorised R-hat and ESS
# The same estimators as arviz-stats (rank-normalised split R-hat; bulk and tail ESS with
# Geyer's initial monotone sequence; Vehtari et al. 2021), computed for every scalar at once
# over an array (P, chain, draw). arviz-stats evaluates them one scalar at a time in Python:
# 9.4 s of an 81 s RegMix 512 fit went there (1,901 scalars, profiled).
# tests/posterior/test_diagnostics.py checks these against arviz-stats to 1e-9.


def _split_chains(x: np.ndarray) -> np.ndarray:
    """(P, chain, draw) -> (P, 2 chain, draw // 2): first and last halves of every chain."""
    half = x.shape[2] // 2
    return np.concatenate([x[:, :, :half], x[:, :, x.shape[2] - half :]], axis=1)


def _z_scale(x: np.ndarray) -> np.ndarray:
    """Rank-normalise each parameter over all its chains and draws (Blom's offset 3/8)."""
    from scipy import special

    flat = x.reshape(x.shape[0], -1)
    # ranks by sorting every row once (scipy's rankdata over an axis took 1.7 s for 1,901 x
    # 4,000); rows with ties take scipy's average ranks
    order = np.argsort(flat, axis=1)
    ordered = np.take_along_axis(flat, order, axis=1)
    rank = np.empty(flat.shape)  # the inverse permutation by scatter, not a second sort
    np.put_along_axis(rank, order, np.arange(1.0, flat.shape[1] + 1.0)[None, :], axis=1)
    _average_ties(rank, ordered, order)
    return special.ndtri((rank - 0.375) / (flat.shape[1] + 0.25)).reshape(x.shape)


def _average_ties(rank: np.ndarray, ordered: np.ndarray, order: np.ndarray) -> None:
    """Give tied values their average rank in place (scipy's ``rankdata(method="average")``):
    ``rank`` (P, N) 1-based ranks by position, ``ordered`` the sorted rows, ``order`` the
    sorting permutation. Works on the tied pairs only. Why: the folded draws of every scalar
    have a tie (the two draws around an even count's median), and scipy's rankdata over all
    those rows took 2 of the 5 s of R-hat at 1,901 scalars x 6,000 draws."""
    rows, cols = np.nonzero(ordered[:, 1:] == ordered[:, :-1])  # sorted cols and cols + 1 tie
    if rows.size == 0:
        return
    new = np.ones(rows.size, dtype=bool)  # a run of tied sorted positions starts here
    new[1:] = (rows[1:] != rows[:-1]) | (cols[1:] != cols[:-1] + 1)
    run = np.cumsum(new) - 1
    starts = np.flatnonzero(new)
    ends = np.r_[starts[1:] - 1, rows.size - 1]
    # a run of pairs c0..c1 ties sorted positions c0..c1+1: 1-based ranks c0+1..c1+2
    average = ((cols[starts] + cols[ends] + 3) / 2.0)[run]
    rank[rows, order[rows, cols]] = average
    rank[rows, order[rows, cols + 1]] = average


def _rhat_plain(x: np.ndarray) -> np.ndarray:
    """Gelman-Rubin R-hat of (P, chain, draw) (no split, no ranks)."""
    n = x.shape[2]
    between = n * np.var(x.mean(axis=2), axis=1, ddof=1)
    within = np.var(x, axis=2, ddof=1).mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sqrt((between / within + n - 1) / n)


def rhat_rank(x: np.ndarray, z_split: np.ndarray | None = None) -> np.ndarray:
    """Rank-normalised split R-hat, the larger of the bulk and the folded (tail) one: (P,).
    ``z_split``: ``_z_scale(_split_chains(x))`` if already computed (:func:`ess_bulk` uses the
    same array)."""
    split = _split_chains(x)
    folded = np.abs(split - np.median(split.reshape(len(split), -1), axis=1)[:, None, None])
    z_split = _z_scale(split) if z_split is None else z_split
    out = np.maximum(_rhat_plain(z_split), _rhat_plain(_z_scale(folded)))
    return np.where(np.isnan(x).any(axis=(1, 2)), np.nan, out)


def _ess(x: np.ndarray) -> np.ndarray:
    """Effective sample size of (P, chain, draw), chains already split: autocovariance by FFT,
    Geyer's initial positive sequence truncated at the first non-positive pair sum, made
    monotone (a running minimum of the pair sums)."""
    from scipy import fft  # twice as fast as numpy.fft here (pocketfft C++, measured)

    n_par, m, n = x.shape
    centred = x - x.mean(axis=2, keepdims=True)
    size = fft.next_fast_len(2 * n)
    f = fft.rfft(centred, n=size, axis=2)
    acov = fft.irfft(f * np.conjugate(f), n=size, axis=2)[:, :, :n] / n
    mean_acov = acov.mean(axis=1)  # (P, n)
    mean_var = mean_acov[:, 0] * n / (n - 1.0)
    var_plus = mean_var * (n - 1.0) / n
    if m > 1:
        var_plus = var_plus + np.var(x.mean(axis=2), axis=1, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = 1.0 - (mean_var[:, None] - mean_acov) / var_plus[:, None]
    rho[:, 0] = 1.0
    n_pairs = n // 2
    pairs = rho[:, 0 : 2 * n_pairs : 2] + rho[:, 1 : 2 * n_pairs : 2]  # (P, n_pairs)
    # pairs 1, 2, ... are read while the previous pair sum is positive and 2k - 1 < n - 3
    k_cap = max(0, (n - 3) // 2)  # the last pair arviz-stats' loop may read
    stop = np.where((pairs <= 0) | np.isnan(pairs), 1, 0)[:, : k_cap + 1]
    first_bad = np.where(stop.any(axis=1), stop.argmax(axis=1), k_cap + 1)
    k_last = np.minimum(first_bad, k_cap)  # (P,)
    monotone = np.minimum.accumulate(np.where(np.isnan(pairs), 0.0, pairs), axis=1)
    csum = np.concatenate([np.zeros((n_par, 1)), np.cumsum(monotone, axis=1)], axis=1)
    head = csum[np.arange(n_par), k_last]  # sum of pairs 0 .. k_last - 1
    idx = np.arange(n_par)
    even = rho[idx, 2 * k_last]
    last_pair = pairs[idx, k_last]
    last = np.where((k_last == 0) | (last_pair >= 0) | (even > 0), even, 0.0)
    tau = -1.0 + 2.0 * head + last
    total = m * n
    tau = np.maximum(tau, 1.0 / np.log10(total))
    out = total / tau
    out = np.where(np.isnan(rho[:, : 2 * n_pairs]).any(axis=1), np.nan, out)
    constant = (x.max(axis=(1, 2)) - x.min(axis=(1, 2))) < np.finfo(float).resolution
    return np.where(constant, float(total), out)


def ess_bulk(x: np.ndarray, z_split: np.ndarray | None = None) -> np.ndarray:
    """Bulk ESS (rank-normalised split chains) of every parameter of (P, chain, draw): (P,);
    ``z_split`` as in :func:`rhat_rank`."""
    out = _ess(_z_scale(_split_chains(x)) if z_split is None else z_split)
    return np.where(np.isnan(x).any(axis=(1, 2)), np.nan, out)


def ess_tail(x: np.ndarray, prob: float) -> np.ndarray:
    """Tail ESS: the smaller ESS of the indicators x <= q at the quantiles (1 - prob) and prob
    (prob as arviz-stats' ``ci_prob``), split chains: (P,)."""
    lo, hi = sorted((prob, 1.0 - prob))
    flat = x.reshape(len(x), -1)
    out = np.full(len(x), np.inf)
    for q in (lo, hi):
        cut = np.quantile(flat, q, axis=1)
        out = np.minimum(out, _ess(_split_chains((x <= cut[:, None, None]).astype(float))))
    return np.where(np.isnan(x).any(axis=(1, 2)), np.nan, out)


#: Scalars per block of the gate's arrays: 64 x 4 chains x 1,500 draws is 3 MB per temporary.
#: Why blocks: the gate's dozen full-size temporaries (91 MB each at 1,901 scalars x 6,000
#: draws) cost more to map fresh than to compute; on this VM a fresh 320 MB array took 0.2-3 s
#: to first touch (transparent huge-page compaction) against 0.04 s to fill once mapped. Block
#: temporaries are reused from the heap (docs/performance.md).
BLOCK_ELEMENTS = 400_000


def _stack(post: xr.Dataset) -> tuple[list[np.ndarray], list[tuple[str, xr.DataArray, int]]]:
    """Every float scalar of the posterior as rows (P_v, chain, draw) per variable (views, not
    copies), and per variable (name, DataArray, first row) so that a row's label is built only
    when it is reported."""
    rows, where, offset = [], [], 0
    for name, da in post.data_vars.items():
        other = [d for d in da.dims if d not in ("chain", "draw")]
        da = da.transpose("chain", "draw", *other)
        vals = np.asarray(da.values, dtype=float)
        rows.append(vals.reshape(vals.shape[0], vals.shape[1], -1).transpose(2, 0, 1))
        where.append((str(name), da, offset))
        offset += rows[-1].shape[0]
    return rows, where


def _blocks(rows: list[np.ndarray], block_elements: int):
    """(first row, contiguous block (B, chain, draw)) over the rows of every variable, B rows
    of at most ``block_elements`` values (at least one row)."""
    offset = 0
    for arr in rows:
        per_row = max(1, arr.shape[1] * arr.shape[2])
        size = max(1, block_elements // per_row)
        for start in range(0, arr.shape[0], size):
            yield offset + start, np.ascontiguousarray(arr[start : start + size])
        offset += arr.shape[0]


def scalar_checks(
    rows: list[np.ndarray], prob: float, block_elements: int = BLOCK_ELEMENTS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """R-hat (NaN with one chain), bulk ESS and tail ESS of every row of ``rows`` (as
    :func:`_stack` returns), each (P,), computed block by block (see :data:`BLOCK_ELEMENTS`)."""
    from concurrent.futures import ThreadPoolExecutor

    n_rows = sum(arr.shape[0] for arr in rows)
    rhat, bulk, tail = (np.full(n_rows, np.nan) for _ in range(3))

    def one(start: int, x: np.ndarray) -> None:
        stop = start + len(x)
        z_split = _z_scale(_split_chains(x))  # shared by R-hat and bulk ESS
        if x.shape[1] > 1:
            rhat[start:stop] = rhat_rank(x, z_split)
        bulk[start:stop] = ess_bulk(x, z_split)
        tail[start:stop] = ess_tail(x, prob)

    # blocks in threads: sorting, FFTs and ufuncs release the GIL (1.7x on 2 cores, measured)
    workers = min(getattr(os, "process_cpu_count", os.cpu_count)() or 1, 8)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for job in [pool.submit(one, start, x) for start, x in _blocks(rows, block_elements)]:
            job.result()
    return rhat, bulk, tail


def _label(where: list[tuple[str, xr.DataArray, int]], row: int) -> str:
    """``name[coord, ...]`` (as in ArviZ summaries) of row ``row`` of :func:`_stack`, with the
    parameters a sampler variable belongs to (``b_raw[web, code] (sampler variable of t)``)."""
    name, da, offset = next(w for w in reversed(where) if w[2] <= row)
    other = da.dims[2:]
    idx = np.unravel_index(row - offset, da.shape[2:]) if other else ()
    parts = [str(da[d].values[i]) if d in da.coords else str(i) for d, i in zip(other, idx)]
    return name + (f"[{', '.join(parts)}]" if parts else "") + owner_note(da.attrs)


def _extreme(values: np.ndarray, where, pick) -> tuple[float, str]:
    """The extreme finite value of ``values`` and its label (NaN, "" when there is none)."""
    if values.size == 0 or np.all(np.isnan(values)):
        return float("nan"), ""
    i = int(pick(values))
    return float(values[i]), _label(where, i)


def bfmi(energy: np.ndarray) -> np.ndarray:
    """E-BFMI per chain of the sampler's energy, shape (chain, draw): the mean squared change
    of energy between draws over its variance (ddof 1), arviz-stats' ``bfmi`` formula."""
    energy = np.atleast_2d(np.asarray(energy, dtype=float))
    return np.square(np.diff(energy, axis=1)).mean(axis=1) / np.var(energy, axis=1, ddof=1)


def diagnose(
    tree,
    *,
    rhat_max: float = RHAT_MAX,
    ess_per_chain: float = ESS_PER_CHAIN,
    bfmi_min: float = BFMI_MIN,
) -> Diagnostics:
    """Run the gate on a fitted DataTree (groups ``posterior`` and ``sample_stats``, and the
    sampler variables when the tree has them: :func:`bayesmix.posterior.groups.all_draws`)."""
    from arviz_base import rcParams

    post = all_draws(tree)
    stats = tree["sample_stats"].to_dataset()
    chains, draws = int(post.sizes["chain"]), int(post.sizes["draw"])
    post = post[[v for v in post.data_vars if post[v].dtype.kind == "f"]]
    divergences = int(stats["diverging"].sum()) if "diverging" in stats else 0
    depth_name = next(
        (n for n in ("maxdepth_reached", "reached_max_treedepth") if n in stats), None
    )
    treedepth = int(stats[depth_name].sum()) if depth_name else 0
    min_bfmi = float("nan")
    if "energy" in stats:
        energy = stats["energy"].transpose("chain", "draw").to_numpy()
        min_bfmi = float(np.min(bfmi(energy)))

    rows, where = _stack(post)
    max_rhat, worst_rhat = float("nan"), ""
    min_bulk, worst_ess, min_tail = float("nan"), "", float("nan")
    if where and draws >= 4:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rhat, bulk, tail = scalar_checks(rows, float(rcParams["stats.ci_prob"]))
        if chains > 1:
            max_rhat, worst_rhat = _extreme(rhat, where, np.nanargmax)
        min_bulk, worst_ess = _extreme(bulk, where, np.nanargmin)
        min_tail, _ = _extreme(tail, where, np.nanargmin)

    failed = []
    n = chains * draws
    if divergences:
        failed.append(f"{divergences} divergent transitions ({100 * divergences / n:.1f}%)")
    if treedepth:
        failed.append(f"{treedepth} draws hit the maximum tree depth")
    if np.isfinite(min_bfmi) and min_bfmi < bfmi_min:
        failed.append(f"E-BFMI {min_bfmi:.2f} < {bfmi_min}")
    if np.isfinite(max_rhat) and max_rhat > rhat_max:
        failed.append(f"R-hat {max_rhat:.3f} > {rhat_max} at {worst_rhat}")
    ess_min = ess_per_chain * chains
    if min_bulk < ess_min:
        failed.append(f"bulk ESS {min_bulk:.0f} < {ess_min:.0f} at {worst_ess}")
    if min_tail < ess_min:
        failed.append(f"tail ESS {min_tail:.0f} < {ess_min:.0f}")
    return Diagnostics(
        chains=chains,
        draws=draws,
        divergences=divergences,
        treedepth_hits=treedepth,
        min_bfmi=min_bfmi,
        max_rhat=max_rhat,
        min_ess_bulk=min_bulk,
        min_ess_tail=min_tail,
        worst_rhat=worst_rhat,
        worst_ess=worst_ess,
        failed=failed,
    )
