"""The diagnostics gate run after every fit: divergences, tree depth, E-BFMI, R-hat, ESS.

The figures come from arviz-stats (R-hat, bulk and tail ESS, E-BFMI) and the sampler statistics
(divergences, tree-depth hits). A fit that fails any check is not an error: it is reported loudly
(a ``ConvergenceWarning``) and the report is stored with the posterior so that every decision
drawn from it can say so.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np
import xarray as xr

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


def _worst(ds: xr.Dataset, pick) -> tuple[float, str]:
    """The extreme value over every variable and element of ``ds`` and where it is."""
    best_val, best_name = None, ""
    for name, da in ds.data_vars.items():
        vals = np.asarray(da.values, dtype=float)
        if vals.size == 0 or np.all(np.isnan(vals)):
            continue
        flat = int(pick(np.nan_to_num(vals, nan=np.nan).ravel()))
        val = float(vals.ravel()[flat])
        if best_val is None or pick(np.array([best_val, val])) == 1:
            idx = np.unravel_index(flat, vals.shape)
            labels = [
                str(da[d].values[i]) if d in da.coords else str(i) for d, i in zip(da.dims, idx)
            ]
            best_val, best_name = val, str(name) + (f"[{', '.join(labels)}]" if labels else "")
    return (float("nan") if best_val is None else best_val), best_name


def diagnose(
    tree,
    *,
    rhat_max: float = RHAT_MAX,
    ess_per_chain: float = ESS_PER_CHAIN,
    bfmi_min: float = BFMI_MIN,
) -> Diagnostics:
    """Run the gate on a fitted DataTree (groups ``posterior`` and ``sample_stats``)."""
    import arviz_stats  # imported when first needed (about 1.8 s): commands that never
    # diagnose a fit (predict, optimize on a saved posterior) do not pay it

    post = tree["posterior"].to_dataset()
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
        bfmi = arviz_stats.bfmi(tree)
        values = bfmi["energy"].values if hasattr(bfmi, "__getitem__") else np.asarray(bfmi)
        min_bfmi = float(np.min(np.asarray(values, dtype=float)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rhat = arviz_stats.rhat(post) if chains > 1 else None
        ess_bulk = arviz_stats.ess(post, method="bulk")
        ess_tail = arviz_stats.ess(post, method="tail")
    max_rhat, worst_rhat = _worst(rhat, np.nanargmax) if rhat is not None else (float("nan"), "")
    min_bulk, worst_ess = _worst(ess_bulk, np.nanargmin)
    min_tail, _ = _worst(ess_tail, np.nanargmin)

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
