"""Does the best mixture move with scale? Compare the decision at the proxies' scale with the
decision at the target run's model size and token count, draw by draw.

For a law over model size and tokens (e.g. ``scaling``), each domain's reducible loss shrinks at
its own rate, so the weighted optimum can move between the scale the proxies ran at and the
target. :func:`scale_shift` reports the two recommendations, how far apart they are, the
probability (over posterior draws) that the per-draw optimum moves by more than a threshold, and
what following the proxies would cost at the target scale.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bayesmix._compat import CI_PROB, SEED, renamed_kwargs
from bayesmix.data.constraints import Constraints
from bayesmix.decisions.draws import LawDraws
from bayesmix.decisions.optimize import draw_optima, minimize_objective
from bayesmix.posterior.intervals import credible_interval

#: A per-draw optimum "moves" when some share changes by more than this (share of tokens).
DEFAULT_THRESHOLD = 0.02


@dataclass
class ScaleShift:
    """The decision at two scales (shares are fractions, losses nats per token).

    ``mixtures``: train_domain, proxy, target (the posterior-mean optima at each scale);
    ``max_share_change``: largest |target - proxy| share; ``p_moves``: fraction of draws whose
    own optimum moves by more than ``threshold`` in some share; ``p_target_better``: fraction
    of draws in which the target-scale optimum has a lower target-scale loss than the proxy
    optimum; ``cost_mean``/``cost_lower``/``cost_upper``: target-scale loss of the proxy
    optimum minus that of the target optimum (>= 0 means following the proxies costs).
    """

    proxy_inputs: dict
    target_inputs: dict
    mixtures: pd.DataFrame
    max_share_change: float
    p_moves: float
    p_target_better: float
    cost_mean: float
    cost_lower: float
    cost_upper: float
    threshold: float
    prob: float

    @property
    def changes(self) -> bool:
        """True when the recommendation moves by more than the threshold."""
        return self.max_share_change > self.threshold

    def to_text(self, digits: int = 3) -> str:
        def scale(d):
            return f"N={d['n_params']:.3g} params, D={d['tokens']:.3g} tokens"

        verdict = (
            "MOVES with scale"
            if self.changes
            else f"does not move with scale (within {self.threshold:.2f} per share)"
        )
        lines = [
            f"Recommended mixture at the proxies' scale ({scale(self.proxy_inputs)}) vs "
            f"the target ({scale(self.target_inputs)}): it {verdict}; largest share "
            f"change {self.max_share_change:.{digits}f}.",
            f"  P(a draw's optimum moves by > {self.threshold:.2f}) = {self.p_moves:.2f};"
            f" P(target optimum better at target scale) = {self.p_target_better:.2f};"
            f" cost of deciding at the proxies' scale: {self.cost_mean:.4f} "
            f"[{self.cost_lower:.4f}, {self.cost_upper:.4f}] nats ({self.prob:.0%})",
            self.mixtures.to_string(index=False, float_format=lambda v: f"{v:.{digits}f}"),
        ]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        out = {
            k: getattr(self, k)
            for k in (
                "proxy_inputs",
                "target_inputs",
                "max_share_change",
                "p_moves",
                "p_target_better",
                "cost_mean",
                "cost_lower",
                "cost_upper",
                "threshold",
                "prob",
            )
        }
        out["mixtures"] = self.mixtures.to_dict(orient="records")
        return out


def proxy_scale(posterior) -> dict[str, float]:
    """The proxies' scale: the geometric means of the fitted model sizes and tokens (where the
    fitted law is pinned best), of those the fitted runs record (a law that reads only tokens,
    e.g. as the budget of the repetition component, has runs without model sizes)."""
    table = posterior.fit_data()
    out = {}
    for key in ("n_params", "tokens"):
        col = table.column(key)
        values = np.array([]) if col is None else col.to_numpy(dtype=float)
        values = values[np.isfinite(values) & (values > 0)]
        if values.size:
            out[key] = float(np.exp(np.mean(np.log(values))))
    return out


@renamed_kwargs(**CI_PROB, **SEED)
def scale_shift(
    draws: LawDraws,
    constraints: Constraints,
    weights,
    *,
    target: Mapping,
    proxy: Mapping,
    threshold: float = DEFAULT_THRESHOLD,
    ci_prob: float = 0.9,
    random_seed: int = 0,
) -> ScaleShift:
    """Compare the mean-loss decision at ``proxy`` and ``target`` scales (``{"n_params": N,
    "tokens": D}``) for ``draws`` of a law over size and tokens; ``weights`` (K,) normalised.
    The cost interval has mass ``ci_prob`` (equal-tailed); ``random_seed`` seeds the
    optimiser's random starts."""
    import dataclasses

    at_proxy = dataclasses.replace(draws, inputs=dict(proxy))
    at_target = dataclasses.replace(draws, inputs=dict(target))
    r_proxy = minimize_objective(
        at_proxy, constraints, weights, "mean", random_seed=random_seed
    ).mixture
    r_target = minimize_objective(
        at_target, constraints, weights, "mean", random_seed=random_seed
    ).mixture
    opt_proxy, _ = draw_optima(at_proxy, constraints, weights, random_seed=random_seed)
    opt_target, _ = draw_optima(at_target, constraints, weights, random_seed=random_seed)
    moves = np.abs(opt_target - opt_proxy).max(axis=1) > threshold
    losses = at_target.mean_loss(np.vstack([r_proxy, r_target])) @ np.asarray(weights, float)
    cost = losses[:, 0] - losses[:, 1]  # (S,): proxy optimum minus target optimum, at target
    lo, hi = credible_interval(cost, ci_prob)
    table = pd.DataFrame(
        {"train_domain": list(draws.train_domains), "proxy": r_proxy, "target": r_target}
    )
    return ScaleShift(
        proxy_inputs=dict(proxy),
        target_inputs=dict(target),
        mixtures=table,
        max_share_change=float(np.abs(r_target - r_proxy).max()),
        p_moves=float(moves.mean()),
        p_target_better=float((cost > 0).mean()),
        cost_mean=float(cost.mean()),
        cost_lower=float(lo),
        cost_upper=float(hi),
        threshold=threshold,
        prob=ci_prob,
    )
