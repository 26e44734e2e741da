"""An experiment's recommendation: :func:`bayesmix.decide` on its current posterior under the
ledger's constraints and target weights, compared by default with the best run trained so far
(:func:`best_trained_run`), so the report says whether the recommendation is expected to beat
a run one already has. In a multi-fidelity loop (a menu and target scale recorded) a law over
model size and tokens decides at the ledger's target scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bayesmix.data.constraints import Constraints
from bayesmix.data.table import RunTable
from bayesmix.decisions.inputs import resolve_weights
from bayesmix.loop.ledger import Ledger


def best_trained_run(table: RunTable, *, weights=None, target: str | None = None) -> dict | None:
    """The recorded run with the lowest weighted loss (last checkpoint of each run), as
    ``{"run", "loss", "mixture"}`` (mixture: {train_domain: share}); runs missing a loss of a
    weighted domain are skipped; None when no run is left. Weights as :func:`bayesmix.decide`
    resolves them (equal when neither ``weights`` nor ``target`` is given)."""
    final = table.final()
    w, _ = resolve_weights(final.eval_domains, weights, target)
    losses = final.losses[list(final.eval_domains)].to_numpy(float)
    used = w > 0
    ok = ~np.isnan(losses[:, used]).any(axis=1)
    if not ok.any():
        return None
    score = np.where(ok, np.nan_to_num(losses) @ w, np.inf)
    i = int(np.argmin(score))
    mix = final.mixtures.iloc[i]
    return {
        "run": str(final.runs[i]),
        "loss": float(score[i]),
        "mixture": {str(d): float(v) for d, v in mix.items()},
    }


@dataclass
class Recommendation:
    """What a recommendation needs from the ledger: the objective's ``weights`` (or
    ``target``), the ``constraints``, the options of :func:`bayesmix.decide` and the best
    trained run they use as the baseline (None when a baseline was given or none is usable),
    the ledger's target ``scale`` (None: a single-scale loop)."""

    weights: object
    target: str | None
    constraints: Constraints
    options: dict
    best: dict | None = None
    scale: dict | None = None

    @classmethod
    def from_ledger(cls, led: Ledger, weights, target: str | None, options: dict):
        """Weights default to the ledger's target weights; without ``baseline`` in
        ``options`` the baseline is the best trained run under those weights."""
        if weights is None and target is None:
            weights = led.settings.get("target_weights") or None
        options = dict(options)
        best = None
        if "baseline" not in options:
            best = best_trained_run(led.run_table(), weights=weights, target=target)
            if best is not None:
                options["baseline"] = best["mixture"]
        fid = led.fidelity()
        scale = None if fid is None else dict(fid.target)
        return cls(weights, target, led.constraints, options, best, scale)

    def decide(self, post):
        """The DecisionReport of ``post``, its baseline labelled when it is the best run."""
        from bayesmix.decisions.decision import decide

        options = dict(self.options)
        if self.scale and "inputs" not in options and set(self.scale) <= set(post.law.inputs):
            options["inputs"] = self.scale  # the mixture for the target run
        report = decide(
            post,
            weights=self.weights,
            target=self.target,
            constraints=self.constraints,
            **options,
        )
        if self.best is not None:
            report.baseline_label = (
                f"best trained run {self.best['run']} (recorded loss {self.best['loss']:.4f})"
            )
        return report
