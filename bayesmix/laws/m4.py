"""Data mixing law M4 of Ye et al.: ``L_i(r) = c_i + k_i * exp(sum_j t_ij r_j)``.

Identifiable parameterisation used everywhere in bayesmix:

* each row ``t_i.`` sums to zero over training domains (otherwise a constant added to the row and
  a factor e^-a on ``k_i`` leave L unchanged);
* ``m_i = c_i + k_i`` is then the loss at the uniform mixture, pinned by data;
* ``rho_i = k_i / m_i`` in (0, 1) is the reducible fraction of that loss.

So ``L_i(r) = m_i * (1 - rho_i + rho_i * exp(t_i . r))``, with ``c = m (1 - rho)`` and
``k = m rho``. Shapes: ``r`` (..., n, M); ``m``, ``rho`` (..., K); ``t`` (..., K, M); result
(..., n, K) in the loss's units (nats per token).
"""

from __future__ import annotations

import numpy as np

PARAMS = ("m", "rho", "t")


def exponent(r, t, xp=np):
    """``t_i . r`` for every mixture and validation domain: (..., n, K)."""
    return xp.matmul(r, xp.swapaxes(t, -1, -2))


def mean_loss(r, params, xp=np):
    """Expected loss (..., n, K) of mixtures ``r`` (..., n, M) under M4 ``params``."""
    m = params["m"][..., None, :]
    rho = params["rho"][..., None, :]
    return m * (1.0 - rho + rho * xp.exp(exponent(r, params["t"], xp)))


def to_ck(params):
    """Paper coefficients ``(c, k, t)`` from the identifiable ones (NumPy arrays)."""
    m, rho = np.asarray(params["m"]), np.asarray(params["rho"])
    return m * (1.0 - rho), m * rho, np.asarray(params["t"])


def from_ck(c, k, t):
    """Identifiable ``{m, rho, t}`` from paper coefficients; rows of ``t`` are centred to sum 0.

    Centring shifts ``t_i.`` by its mean a_i and rescales ``k_i`` by e^{a_i}: the law is unchanged
    on the simplex.
    """
    c, k, t = np.asarray(c, float), np.asarray(k, float), np.asarray(t, float)
    a = t.mean(axis=-1)
    k = k * np.exp(a)
    t = t - a[..., None]
    m = c + k
    return {"m": m, "rho": k / m, "t": t}
