"""Simulated phased runs from a known law of phased runs (:mod:`bayesmix.laws.phases`).

:func:`simulate_phases` draws a run table whose runs are trained in phases (fixed phase shares of
the steps, each phase's mixture drawn at random; a share of the runs static) and whose losses
are a known ``<law>+phases`` truth plus Gaussian noise, with the phase columns of
:mod:`bayesmix.data.phases`. The benchmark ``benchmarks/phases.py`` and the tests fit it back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from bayesmix.data.phases import frac_columns, mix_columns
from bayesmix.data.table import RunTable
from bayesmix.laws import get_law
from bayesmix.laws.phases import FRAC_DATA, MIX_DATA


def simulate_phases(
    law,
    params: Mapping[str, np.ndarray],
    train_domains: Sequence[str],
    eval_domains: Sequence[str],
    *,
    fractions: Sequence[float] = (0.8, 0.2),
    n_runs: int = 40,
    static_share: float = 0.25,
    noise_sd: float = 0.01,
    concentration: float = 1.0,
    random_seed: int,
) -> RunTable:
    """A run table of ``n_runs`` phased runs under the true ``law`` (a ``<law>+phases`` name or
    Law) with ``params`` (one draw: the law's parameters with their declared dims, no draw
    axis). Every run has the phase shares ``fractions``; each phase's mixture is
    Dirichlet(``concentration``); a ``static_share`` of the runs has one mixture in every phase
    (its phase cells left empty). Losses: the law's mean + Normal(0, ``noise_sd``) (nats)."""
    law = get_law(law)
    rng = np.random.default_rng(random_seed)
    train, evals = list(train_domains), list(eval_domains)
    frac = np.asarray(fractions, float)
    n_p, n_m = frac.size, len(train)
    mixes = rng.dirichlet(np.full(n_m, concentration), size=(n_runs, n_p))  # (run, P, M)
    static = np.arange(n_runs) < round(static_share * n_runs)
    mixes[static] = mixes[static, :1]
    fr = np.broadcast_to(frac, (n_runs, n_p))
    whole = np.einsum("np,npm->nm", fr, mixes)
    inputs = {"r": whole, FRAC_DATA: fr, MIX_DATA: mixes}
    loss = np.asarray(law.mean(inputs, {k: np.asarray(v, float) for k, v in params.items()}))
    loss = loss + rng.normal(0.0, noise_sd, size=loss.shape)
    frame: dict[str, object] = {"run": [f"run{i:03d}" for i in range(n_runs)]}
    for j, d in enumerate(train):
        frame[f"mix.{d}"] = whole[:, j]
    for k, col in enumerate(frac_columns(n_p)):
        frame[col] = np.where(static, np.nan, fr[:, k])
    for k, cols in enumerate(mix_columns(n_p, train)):
        for j, col in enumerate(cols):
            frame[col] = np.where(static, np.nan, mixes[:, k, j])
    for i, d in enumerate(evals):
        frame[f"loss.{d}"] = loss[:, i]
    return RunTable.from_frame(pd.DataFrame(frame), source="simulate_phases")
