"""The size law: a curve of the loss against the model size, per mixture and domain.

Per curve (mixture m, validation domain k), with x = log(N_ref / N) and N_ref the geometric
mean of the proxy sizes:

    L = level[m,k] + R[m,k] (exp(alpha[k] x) - 1)

the form of :mod:`bayesmix.laws.curve` with one group: 2-4 sizes per curve cannot tell the
mixtures' exponents apart, so alpha is one per domain. Input ``log_ratio`` (x); parameters
gathered per point (shapes (..., n)).
"""

from __future__ import annotations

from bayesmix.laws.curve import CHINCHILLA, PowerCurve


class SizeLaw(PowerCurve):
    """Loss against the model size (module docstring)."""

    name = "size"
    description = "size curve: level + R (exp(alpha x) - 1), x = log(N_ref / N)"
    chinchilla_exponent = CHINCHILLA["alpha"]
    chinchilla_coefficient = CHINCHILLA["A"]
