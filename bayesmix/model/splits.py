"""The mixture input of a fit with latent split fractions (see :mod:`bayesmix.data.latent_splits`).

``r = r_obs + sum_g share_g x scatter(f_g)``: ``r_obs`` (record, train_domain) the runs' shares
with the latent parts of old runs set to 0 (``pm.Data`` ``r``), ``share`` (record, split_group)
each record's share of a split group (0 for fully observed runs; ``pm.Data`` ``split_share``), and
``f_g ~ Dirichlet(alpha_g)`` the group's fractions (``pm.Data`` ``split_alpha`` (split_part,)),
one vector per group (shared) or per record and group (per run). Every row of ``r`` still sums to
1 because every ``f_g`` does. The fractions are stored as ``split_fraction`` (split_part,) or
(record, split_part), in the ``posterior`` group.
"""

from __future__ import annotations

import numpy as np
import pymc as pm
import pytensor.tensor as pt

#: The posterior variable of the fractions: (units, meaning).
SPLIT_VARIABLE = {
    "split_fraction": (
        "fraction of the split group's share",
        "latent fraction of an old run's split-domain share that went to each part",
    )
}


def latent_r(r_obs, share, alpha, layout, n_train: int, record_dim: str, n_records: int | None):
    """The mixture expression (record, train_domain) of the docstring; creates the Dirichlet
    fractions (one per group, named ``split_f_<group>``) and the Deterministic
    ``split_fraction``. ``layout``: (group name, the parts' train-domain positions) per group;
    ``alpha``: the Dirichlet parameters (split_part,) in the layout's order; ``n_records``:
    the number of records for one fraction vector per record, None for one per group."""
    per_run = n_records is not None
    fractions = []
    added = pt.zeros_like(r_obs)
    start = 0
    for k, (name, cols) in enumerate(layout):
        n = len(cols)
        a = alpha[start : start + n]
        if per_run:
            a_rows = pt.ones((n_records, 1)) * a[None, :]
            f = pm.Dirichlet(f"split_f_{name}", a=a_rows, shape=(n_records, n))
        else:
            f = pm.Dirichlet(f"split_f_{name}", a=a, shape=(n,))
        fractions.append(f)
        scatter = np.zeros((n, n_train))
        scatter[np.arange(n), list(cols)] = 1.0
        part = share[:, k][:, None] * (f if per_run else f[None, :])  # (record, n)
        added = added + pt.dot(part, pt.as_tensor_variable(scatter))
        start += n
    dims = (record_dim, "split_part") if per_run else ("split_part",)
    pm.Deterministic("split_fraction", pt.concatenate(fractions, axis=-1), dims=dims)
    return r_obs + added
