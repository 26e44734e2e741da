"""What the report's sections share (:class:`View`): the posterior, its law draws thinned to
:data:`CURVE_DRAWS`, the validation-domain weights, the mixture the simplex views start from
(the decision's recommendation, else the posterior-mean optimum) and the constraints."""

from __future__ import annotations

import math

import numpy as np

from bayesmix.data.constraints import Constraints
from bayesmix.decisions.draws import LawDraws
from bayesmix.decisions.optimize import minimize_objective
from bayesmix.decisions.scale import proxy_scale

#: At most this many posterior draws enter the curves and the ternary view (thinned evenly).
CURVE_DRAWS = 400


class View:
    """What several sections share: the posterior, thinned law draws, weights, the
    recommended mixture and the constraints."""

    def __init__(self, post, decision, ci_prob: float, ci_kind: str = "eti"):
        self.post, self.decision, self.prob, self.ci_kind = post, decision, ci_prob, ci_kind
        self.train = list(post.train_domains)
        self.eval = list(post.eval_domains)
        inputs = {}
        if decision is not None and decision.inputs:
            inputs = dict(decision.inputs)
        elif set(post.law.inputs) - {"r"}:
            inputs = {k: v for k, v in proxy_scale(post).items() if k in post.law.inputs}
        self.inputs = inputs
        draws = LawDraws.from_posterior(post, post.source, inputs=inputs)
        step = max(1, math.ceil(draws.n_samples / CURVE_DRAWS))
        self.draws = draws.select(slice(None, None, step))
        if decision is not None:
            self.weights = decision_weights(decision, self.eval)
            self.constraints = decision.constraints
            self.mixture = decision.mixture.reindex(self.train).to_numpy(dtype=float)
            self.label = "recommended mixture"
            self.weights_text = decision.weights_description
        else:
            self.weights = np.full(len(self.eval), 1.0 / len(self.eval))
            self.constraints = Constraints.unconstrained(self.train)
            self.mixture = minimize_objective(
                self.draws, self.constraints, self.weights, "mean"
            ).mixture
            self.label = "posterior-mean optimum (equal weights, no constraints)"
            self.weights_text = f"equal weights over the {len(self.eval)} validation domains"
        self.scale_text = (
            "" if not inputs else " at " + ", ".join(f"{k} {v:.3g}" for k, v in inputs.items())
        )

    def overall(self, mixtures: np.ndarray) -> np.ndarray:
        """Aggregate expected loss (S, n) of mixtures (n, M) under the thinned draws."""
        return self.draws.mean_loss(np.asarray(mixtures, float)) @ self.weights


def decision_weights(decision, eval_domains) -> np.ndarray:
    """The decision's normalised weights (K,) over ``eval_domains`` (equal when none)."""
    rows = decision.losses[
        (decision.losses["mixture"] == "recommended")
        & (decision.losses["eval_domain"].isin(eval_domains))
    ]
    w = rows.set_index("eval_domain")["weight"].reindex(eval_domains).fillna(0.0)
    w = w.to_numpy(dtype=float)
    return w / w.sum() if w.sum() > 0 else np.full(len(w), 1.0 / len(w))


__all__ = ["CURVE_DRAWS", "View", "decision_weights"]
