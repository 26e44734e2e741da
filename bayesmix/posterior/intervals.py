"""Credible intervals over posterior draws: the one interval function (arviz-stats' eti or hdi).

Every interval bayesmix reports (predictions, decisions, reports, comparisons) comes from
:func:`credible_interval`, with ``ci_prob`` (the mass) and ``ci_kind`` ("eti" or "hdi") checked
here.
"""

from __future__ import annotations

import numpy as np

from bayesmix import errors

#: Default probability mass of the intervals in summaries (``ci_prob``).
DEFAULT_PROB = 0.9
#: Interval kinds of :func:`credible_interval`: equal-tailed (default) or highest density.
CI_KINDS = ("eti", "hdi")


def check_prob(ci_prob: float) -> float:
    """``ci_prob`` as a float, or an ObjectiveError when it is not in (0, 1)."""
    if not 0.0 < float(ci_prob) < 1.0:
        raise errors.ObjectiveError(f"interval probability must be in (0, 1), got {ci_prob}")
    return float(ci_prob)


def check_ci_kind(ci_kind: str) -> str:
    """``ci_kind`` if it is one of :data:`CI_KINDS`, else an OptionError."""
    if ci_kind not in CI_KINDS:
        raise errors.OptionError(
            f"unknown interval kind {ci_kind!r}",
            hint="use 'eti' (equal-tailed) or 'hdi' (highest density)",
        )
    return ci_kind


def credible_interval(
    values,
    ci_prob: float = DEFAULT_PROB,
    *,
    axis: int = 0,
    ci_kind: str = "eti",
    skipna: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bounds of the interval of mass ``ci_prob`` over ``axis`` of ``values``.

    The one place bayesmix computes intervals over posterior draws, by arviz-stats:
    ``ci_kind="eti"`` the equal-tailed interval (:func:`arviz_stats.eti`: the
    ``(1 - ci_prob) / 2`` and ``(1 + ci_prob) / 2`` quantiles, linear interpolation, as
    ``numpy.quantile``), ``"hdi"`` the highest density interval (:func:`arviz_stats.hdi`, the
    shortest interval holding ``ci_prob`` of the draws). ``skipna`` leaves NaN draws out.

    Parameters
    ----------
    values : array_like
        Draws, with the sample axis ``axis`` (e.g. (S,) or (S, n, K)).
    ci_prob : float, default 0.9
        Probability mass of the interval, in (0, 1).
    axis : int, default 0
        The sample axis, reduced.
    ci_kind : {"eti", "hdi"}, default "eti"
        Equal-tailed or highest density interval.
    skipna : bool, default False
        Leave NaN draws out (else a NaN draw makes the bounds NaN for "eti").

    Returns
    -------
    lower, upper : numpy.ndarray or numpy.float64
        The bounds, each of the shape of ``values`` without ``axis`` (scalars for 1-D input).

    Examples
    --------
    >>> import numpy as np
    >>> from bayesmix.posterior.intervals import credible_interval
    >>> draws = np.arange(101.0)
    >>> credible_interval(draws, 0.5)
    (np.float64(25.0), np.float64(75.0))
    >>> lo, hi = credible_interval(np.stack([draws, 2 * draws], axis=1), 0.5)
    >>> lo.tolist(), hi.tolist()
    ([25.0, 50.0], [75.0, 150.0])
    >>> skewed = np.concatenate([np.zeros(80), np.arange(1.0, 21.0)])  # 80% of draws at 0
    >>> [round(float(b), 2) for b in credible_interval(skewed, 0.8)]
    [0.0, 10.1]
    >>> [float(b) for b in credible_interval(skewed, 0.8, ci_kind="hdi")]
    [0.0, 1.0]
    """
    import arviz_stats  # about 0.3 s: imported when the first interval is computed

    ci_prob = check_prob(ci_prob)
    check_ci_kind(ci_kind)
    arr = np.asarray(values, dtype=float)
    if ci_kind == "eti":
        bounds = arviz_stats.eti(arr, ci_prob, axis=axis, skipna=skipna)
    else:
        bounds = arviz_stats.hdi(arr, ci_prob, axis=axis, skipna=skipna)
    bounds = np.asarray(bounds)  # (..., 2): lower, upper last
    return bounds[..., 0][()], bounds[..., 1][()]  # [()]: a scalar for 1-D values
