"""Where the fitted runs lie in the mixture space, and whether a mixture lies outside them.

A law fitted to runs that never gave a domain more than 2% of their tokens says little about
6%: its prediction there is the law's form, not the data. Two checks per mixture, shared by
``Posterior.predict`` (a warning), ``decide`` (a note on the recommendation) and ``propose``
(a note: proposals outside are exploration, on purpose):

* **share range**: each training domain's share against the fitted runs' [min, max], outside
  when beyond it by more than :data:`SHARE_MARGIN`;
* **distance**: total variation to the nearest fitted run (half the L1 distance: the share of
  tokens that would have to move), against the fitted runs' own nearest-neighbour distances
  (their 95th percentile, ``typical``); farther than that is outside too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

#: Shares within this much of the fitted range (absolute) count as inside: an optimum on the
#: range's edge is not an extrapolation.
SHARE_MARGIN = 0.005


@dataclass(frozen=True)
class MixtureRange:
    """The fitted runs' mixtures: ``low``/``high`` share per training domain (M,), ``runs``
    (n, M), ``typical`` (95th percentile of their nearest-neighbour total variation)."""

    train_domains: tuple[str, ...]
    low: np.ndarray
    high: np.ndarray
    runs: np.ndarray
    typical: float

    @classmethod
    def of(cls, mixtures: pd.DataFrame) -> MixtureRange:
        """From the fitted runs' mixtures (DataFrame: rows runs, columns training domains)."""
        r = mixtures.to_numpy(float)
        if len(r) > 1:
            d = _tv(r, r)
            np.fill_diagonal(d, np.inf)
            typical = float(np.quantile(d.min(axis=1), 0.95))
        else:
            typical = 0.0
        return cls(tuple(mixtures.columns), r.min(axis=0), r.max(axis=0), r, typical)

    def check(self, mixtures) -> pd.DataFrame:
        """One row per mixture: ``outside`` (domains beyond the share range, "" when none),
        ``nearest`` (total variation to the nearest fitted run), ``far`` (nearest > typical),
        ``inside`` (neither). ``mixtures``: DataFrame with the training domains as columns,
        or an (n, M) array in their order."""
        mixtures = self._frame(mixtures)
        r = mixtures[list(self.train_domains)].to_numpy(float)
        above = r > self.high + SHARE_MARGIN
        below = r < self.low - SHARE_MARGIN
        nearest = _tv(r, self.runs).min(axis=1)
        names = np.asarray(self.train_domains)
        outside = [", ".join(names[above[i] | below[i]]) for i in range(len(r))]  # domain names
        far = nearest > max(self.typical, SHARE_MARGIN) + 1e-12
        return pd.DataFrame(
            {
                "mixture": list(mixtures.index),
                "outside": outside,
                "nearest": nearest,
                "far": far,
                "inside": ~(above.any(axis=1) | below.any(axis=1) | far),
            }
        )

    def _frame(self, mixtures) -> pd.DataFrame:
        if isinstance(mixtures, pd.DataFrame):
            return mixtures
        return pd.DataFrame(np.atleast_2d(np.asarray(mixtures, float)), columns=self.train_domains)

    def notes(self, mixtures, what: str = "mixture") -> list[str]:
        """One line per mixture outside the fitted runs, with the numbers."""
        mixtures = self._frame(mixtures)
        table = self.check(mixtures)
        r = mixtures[list(self.train_domains)].to_numpy(float)
        lines = []
        for i, row in table.iterrows():
            if row["inside"]:
                continue
            parts = []
            for j, dom in enumerate(self.train_domains):
                if r[i, j] > self.high[j] + SHARE_MARGIN:
                    parts.append(f"{dom} {r[i, j]:.3f} above the largest fitted {self.high[j]:.3f}")
                elif r[i, j] < self.low[j] - SHARE_MARGIN:
                    parts.append(f"{dom} {r[i, j]:.3f} below the smallest fitted {self.low[j]:.3f}")
            if row["far"]:
                parts.append(
                    f"the nearest fitted run is {row['nearest']:.2f} away in total variation "
                    f"where the fitted runs' own neighbours are within {self.typical:.2f}"
                )
            lines.append(
                f"{what} {row['mixture']!r} lies outside the fitted runs: "
                + "; ".join(parts)
                + "; its prediction rests on the law's form"
            )
        return lines


def _tv(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Total variation distances (n_a, n_b) between mixtures (rows)."""
    return 0.5 * np.abs(a[:, None, :] - b[None, :, :]).sum(axis=-1)
