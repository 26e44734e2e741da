"""The vectorised R-hat and ESS of bayesmix.posterior.diagnostics against arviz-stats' own
estimators.

The gate computes rank-normalised split R-hat and bulk / tail ESS for every scalar at once; these
must be the same numbers arviz-stats gives one scalar at a time (they are the same formulas, so
the tolerance is floating-point round-off of FFTs and sums: 1e-9 relative).
"""

from __future__ import annotations

import numpy as np
import pytest
from arviz_stats.base import array_stats
from arviz_stats.validate import validate_ci_prob

from bayesmix.posterior import diagnostics


def _ar1(rng, n_par: int, chains: int, draws: int, phi: float) -> np.ndarray:
    """(P, chain, draw) AR(1) chains with autocorrelation ``phi``."""
    eps = rng.standard_normal((n_par, chains, draws))
    x = np.empty_like(eps)
    x[..., 0] = eps[..., 0]
    for t in range(1, draws):
        x[..., t] = phi * x[..., t - 1] + eps[..., t]
    return x


def _cases():
    rng = np.random.default_rng(20261201)
    yield "iid", rng.standard_normal((5, 4, 200))
    yield "sticky", _ar1(rng, 5, 4, 300, 0.95)
    yield "antithetic", _ar1(rng, 5, 4, 200, -0.8)  # the Geyer sequence stops at once
    yield "heavy tails", rng.standard_cauchy((4, 3, 150))
    stuck = rng.standard_normal((3, 4, 100))
    stuck[:, 0] += 3.0  # one chain elsewhere: R-hat far above 1
    yield "stuck chain", stuck
    yield "one chain", _ar1(rng, 3, 1, 120, 0.5)
    for draws in (4, 5, 6, 7, 8, 9):  # the lag caps of the Geyer loop
        yield f"{draws} draws", _ar1(rng, 4, 2, draws, 0.3)
    yield "ties", rng.integers(0, 3, size=(4, 2, 60)).astype(float)


@pytest.mark.parametrize(("name", "x"), list(_cases()), ids=[n for n, _ in _cases()])
def test_same_as_arviz_stats(name, x):
    prob = validate_ci_prob(None)
    bulk = array_stats.ess(x, chain_axis=-2, draw_axis=-1, method="bulk")
    tail = array_stats.ess(x, chain_axis=-2, draw_axis=-1, method="tail", prob=prob)
    np.testing.assert_allclose(diagnostics.ess_bulk(x), bulk, rtol=1e-9, err_msg=name)
    np.testing.assert_allclose(diagnostics.ess_tail(x, prob), tail, rtol=1e-9, err_msg=name)
    if x.shape[1] > 1:
        rhat = array_stats.rhat(x, chain_axis=-2, draw_axis=-1, method="rank")
        np.testing.assert_allclose(diagnostics.rhat_rank(x), rhat, rtol=1e-9, err_msg=name)


def test_constant_and_nan_parameters():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 2, 50))
    x[1] = 0.25  # a constant: arviz-stats gives ESS = every draw
    x[2, 0, 7] = np.nan  # a NaN: no figure
    bulk = diagnostics.ess_bulk(x)
    assert bulk[1] == 100.0
    assert np.isnan(bulk[2]) and np.isnan(diagnostics.rhat_rank(x)[2])
    assert np.isfinite(bulk[0])


def test_gate_names_the_worst_scalar():
    """diagnose() reports the scalar with the lowest bulk ESS by name and coordinate."""
    import xarray as xr

    rng = np.random.default_rng(2)
    good = rng.standard_normal((2, 200, 3))
    bad = _ar1(rng, 1, 2, 200, 0.995)[0][..., None]  # (chain, draw, 1): ESS of a few
    post = xr.Dataset(
        {
            "a": (("chain", "draw", "eval_domain"), good),
            "b": (("chain", "draw", "train_domain"), bad),
        },
        coords={"eval_domain": ["x", "y", "z"], "train_domain": ["web"]},
    )
    stats = xr.Dataset({"diverging": (("chain", "draw"), np.zeros((2, 200), bool))})
    tree = xr.DataTree.from_dict({"posterior": post, "sample_stats": stats})
    report = diagnostics.diagnose(tree)
    assert report.worst_ess == "b[web]" and report.min_ess_bulk < 100
    assert not report.ok and any("bulk ESS" in f for f in report.failed)


def test_gate_e_bfmi_is_arviz_stats_bfmi():
    """The gate's E-BFMI (own code, no arviz-stats import) equals arviz-stats' per chain, and a
    chain whose energy barely moves between draws fails the gate on it."""
    import arviz_stats
    import xarray as xr

    rng = np.random.default_rng(3)
    energy = np.stack([rng.standard_normal(300), _ar1(rng, 1, 1, 300, 0.97)[0, 0]])
    stats = xr.Dataset({"energy": (("chain", "draw"), energy)})
    post = xr.Dataset({"a": (("chain", "draw"), rng.standard_normal((2, 300)))})
    tree = xr.DataTree.from_dict({"posterior": post, "sample_stats": stats})
    expected = arviz_stats.bfmi(tree)["energy"].values
    np.testing.assert_allclose(diagnostics.bfmi(energy), expected, rtol=1e-12)
    report = diagnostics.diagnose(tree)
    assert report.min_bfmi == pytest.approx(expected.min(), rel=1e-12)
    assert expected.min() < diagnostics.BFMI_MIN and any("E-BFMI" in f for f in report.failed)


def test_average_ranks_match_scipy_on_heavily_tied_rows():
    """The vectorised tie handling of the rank transform equals scipy's average ranks (every
    folded row has a tie, so this path runs on every fit)."""
    from scipy import stats

    from bayesmix.posterior.diagnostics import _average_ties

    rng = np.random.default_rng(1)
    x = rng.integers(0, 5, size=(50, 37)).astype(float)  # about 7 copies of each value per row
    x[0] = 2.0  # one row all tied
    order = np.argsort(x, axis=1)
    ranks = np.empty(x.shape)
    np.put_along_axis(ranks, order, np.arange(1.0, x.shape[1] + 1.0)[None, :], axis=1)
    _average_ties(ranks, np.take_along_axis(x, order, axis=1), order)
    np.testing.assert_array_equal(ranks, stats.rankdata(x, method="average", axis=1))


@pytest.mark.parametrize("block_elements", [1, 700, 10**9])
def test_block_by_block_checks_equal_whole_array_ones(block_elements):
    """The gate computes R-hat and ESS in blocks of rows across variables (in threads); every
    blocking, from one row per block to one block per variable, gives the figures of the
    whole stacked array (same operations per row, so exactly equal)."""
    rng = np.random.default_rng(3)
    rows = [
        _ar1(rng, 5, 4, 120, 0.6),
        _ar1(rng, 1, 4, 120, 0.9),
        rng.standard_normal((7, 4, 120)),
    ]
    whole = np.concatenate(rows)
    prob = validate_ci_prob(None)
    rhat, bulk, tail = diagnostics.scalar_checks(rows, prob, block_elements=block_elements)
    np.testing.assert_allclose(rhat, diagnostics.rhat_rank(whole), rtol=1e-12)
    np.testing.assert_allclose(bulk, diagnostics.ess_bulk(whole), rtol=1e-12)
    np.testing.assert_allclose(tail, diagnostics.ess_tail(whole, prob), rtol=1e-12)
