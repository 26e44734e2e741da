"""Chains of a sampling, for the gate's retries: lost chains dropped, two samplings pooled.

A chain that never reached the posterior's typical set (a bad start adaptation did not escape)
is dropped before the gate judges the rest (:func:`lost_chains`, :func:`drop_chains`).

A retry that fails the gate only on R-hat or ESS (no divergences, every chain kept) samples the
same posterior as the attempt before it, with more draws. Its chains and the earlier attempt's
are draws of one posterior from independent starts, so the gate may judge them together: 2 + 2
chains tell R-hat better than 2, and the earlier draws are not thrown away. Measured on a 5Mix
stage-3 table (the pipeline's steps backtest, seed 1): attempt 1 R-hat 1.015, attempt 2 1.0104
with bulk ESS 588, and no time left for a third.
"""

from __future__ import annotations

import numpy as np
import xarray as xr


def thin_draws(ds: xr.Dataset, n_draw: int) -> xr.Dataset:
    """``n_draw`` evenly spaced draws of ``ds`` (all of them when it has that many, first and
    last kept), renumbered 0..n-1 so that datasets of several samplings align on ``draw``."""
    keep = np.linspace(0, ds.sizes["draw"] - 1, n_draw).round().astype(int)
    return ds.isel(draw=keep).assign_coords(draw=np.arange(n_draw))


def pool_chains(first: xr.DataTree, second: xr.DataTree) -> xr.DataTree:
    """One tree of both samplings' chains (``first``'s, then ``second``'s, renumbered): every
    group with chain and draw dims keeps the fewer draws of the two, evenly spaced, so that
    each chain weighs the same; groups without a chain dim are ``first``'s."""

    def join(a: xr.Dataset, b: xr.Dataset) -> xr.Dataset:
        if "chain" not in a.dims:
            return a
        if "draw" in a.dims:
            n = min(a.sizes["draw"], b.sizes["draw"])
            a, b = thin_draws(a, n), thin_draws(b, n)
        out = xr.concat([a, b], dim="chain", combine_attrs="drop_conflicts")
        return out.assign_coords(chain=np.arange(out.sizes["chain"]))

    return xr.map_over_datasets(join, first, second)


#: A chain is lost (never reached the posterior's typical set: a bad start that adaptation did
#: not escape) when its median log density lies more than this many typical within-chain
#: spreads, and more than :data:`LOST_MIN_NATS`, below the best chain's. Chains that sample
#: one posterior differ in median log density by a fraction of one spread; the measured case,
#: a 5Mix stage-3 fit, had one chain at -1.8e6 against 910 for the other three.
LOST_SPREADS = 20.0
LOST_MIN_NATS = 100.0


def lost_chains(logp: np.ndarray) -> tuple[list[int], str]:
    """Indices of lost chains in a (chain, draw) array of log densities, and a note; none
    unless at least 3 chains and 2 would be left."""
    logp = np.asarray(logp, float)
    if logp.ndim != 2 or logp.shape[0] < 3:
        return [], ""
    med = np.median(logp, axis=1)
    best = float(np.nanmax(med))
    spread = float(np.nanmedian(np.std(logp, axis=1)))
    cut = best - max(LOST_SPREADS * spread, LOST_MIN_NATS)
    lost = [i for i, m in enumerate(med) if not m >= cut]  # NaN is lost too
    if not lost or logp.shape[0] - len(lost) < 2:
        return [], ""
    values = ", ".join(f"{med[i]:.4g}" for i in lost)
    note = (
        f"dropped chain(s) {', '.join(str(i) for i in lost)}: median log density {values} "
        f"against {best:.4g} for the best chain (spread {spread:.3g}): stuck away from the "
        "posterior"
    )
    return lost, note


def drop_chains(tree, lost: list[int]):
    """``tree`` without the chains ``lost`` (every group with a chain dim), chains renumbered
    0..n-1."""
    post = tree["posterior"]
    keep = [i for i in range(post.sizes["chain"]) if i not in set(lost)]

    def select(ds):
        if "chain" not in ds.dims:
            return ds
        ds = ds.isel(chain=keep)
        return ds.assign_coords(chain=np.arange(len(keep)))

    return tree.map_over_datasets(select)


def log_density(tree) -> np.ndarray | None:
    """The (chain, draw) log density of a sampler's DataTree (nutpie ``logp``, PyMC ``lp``),
    or None when it has none."""
    if "sample_stats" not in getattr(tree, "children", {}):
        return None
    stats = tree["sample_stats"]
    for name in ("logp", "lp"):
        if name in stats:
            return stats[name].transpose("chain", "draw").values
    return None


__all__ = ["drop_chains", "log_density", "lost_chains", "pool_chains", "thin_draws"]
