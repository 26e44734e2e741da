"""Law families. Each module writes its formula once, for any array namespace.

A law module defines ``mean_loss(r, params, xp)``: ``r`` has shape (..., n, M) (mixtures over M
training domains), ``params`` maps names to arrays with matching leading dims, ``xp`` is ``numpy``
or ``pytensor.tensor``. The same function builds the PyMC model and predicts over posterior draws.
"""

from bayesmix.laws import m4, m4log

LAWS = {"m4": m4, "m4log": m4log}


def get_law(name: str):
    """The law module called ``name`` (e.g. ``"m4"``)."""
    from bayesmix.errors import SpecError

    try:
        return LAWS[name]
    except KeyError:
        raise SpecError(f"unknown law {name!r}", hint=f"known laws: {', '.join(LAWS)}") from None
