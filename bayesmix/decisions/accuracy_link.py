"""A fitted link from a task's loss to its accuracy, so a decision can be stated in benchmark
points.

Accuracy falls with the loss along a sigmoid (the shape of the loss-to-accuracy maps of CAMEL
and of the OLMo / Llama downstream-scaling work):

    acc(L) = floor + (ceiling - floor) * sigmoid(-(L - midpoint) / width)

``floor`` is chance accuracy (given: 1 / number of choices, or fitted), ``ceiling`` the best
reachable accuracy (at most 1). :func:`fit_link` fits the free parameters to paired (loss,
accuracy) values of one task by least squares (the runs of a swarm that report both);
:meth:`AccuracyLink.__call__` maps loss draws to accuracy draws, so any posterior quantity in
loss (a task's loss at a mixture, a change against a baseline) becomes one in points.
The link is a point estimate: its own uncertainty is not propagated (:attr:`AccuracyLink.rmse`
says how far the fitted accuracies were from the measured ones).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares
from scipy.special import expit

from bayesmix import errors


@dataclass(frozen=True)
class AccuracyLink:
    """``acc(L) = floor + (ceiling - floor) sigmoid(-(L - midpoint) / width)``; ``rmse`` the
    fit's root mean squared error in accuracy units."""

    floor: float
    ceiling: float
    midpoint: float
    width: float
    rmse: float = float("nan")

    def __call__(self, loss):
        """Accuracy of ``loss`` (any shape)."""
        loss = np.asarray(loss, float)
        return self.floor + (self.ceiling - self.floor) * expit(
            -(loss - self.midpoint) / self.width
        )

    def change(self, loss, baseline_loss):
        """Accuracy change (points of the accuracy's units) from ``baseline_loss`` to
        ``loss``, draw by draw."""
        return self(loss) - self(baseline_loss)


def fit_link(loss, accuracy, *, floor: float | None = None, task: str = "task") -> AccuracyLink:
    """Fit :class:`AccuracyLink` to paired values of one task (1-D arrays, NaN pairs
    dropped); ``floor`` fixed when given (chance accuracy), else fitted. OptionError with
    fewer than 5 pairs, or accuracies outside [0, 1]."""
    x, y = np.asarray(loss, float), np.asarray(accuracy, float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < 5:
        raise errors.OptionError(f"{task}: {len(x)} (loss, accuracy) pairs; the link needs 5")
    if y.min() < 0 or y.max() > 1:
        raise errors.OptionError(f"{task}: accuracies must be in [0, 1]", hint="divide by 100")
    free_floor = floor is None
    lo0 = float(min(y.min(), 0.25)) if floor is None else float(floor)
    hi0 = float(min(1.0, y.max() + 0.05))
    x0 = [np.log((hi0 - lo0) / max(1e-3, 1.0 - hi0)), np.median(x), np.log(x.std() + 1e-6)]
    if free_floor:
        x0.append(np.log(lo0 + 1e-3) - np.log(1 - lo0 + 1e-3))

    def unpack(p):
        lo = float(expit(p[3])) if free_floor else float(floor)
        hi = lo + (1.0 - lo) * float(expit(p[0]))
        return lo, hi, p[1], float(np.exp(p[2]))

    def resid(p):
        lo, hi, mid, width = unpack(p)
        return lo + (hi - lo) * expit(-(x - mid) / width) - y

    sol = least_squares(resid, np.asarray(x0, float), loss="soft_l1", f_scale=0.05)
    lo, hi, mid, width = unpack(sol.x)
    rmse = float(np.sqrt(np.mean(resid(sol.x) ** 2)))
    return AccuracyLink(lo, hi, float(mid), width, rmse)
