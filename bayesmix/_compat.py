"""Deprecated keyword names, kept until bayesmix :data:`REMOVAL_VERSION`.

Argument names follow PyMC and ArviZ where they overlap: ``random_seed`` (was ``seed``),
``progressbar`` (was ``progress``) and ``ci_prob`` (was ``prob`` for an interval's mass). The old
names still work for one release: passing one emits a ``FutureWarning`` (PyMC's habit for
renamed arguments) naming the new one; passing both an old and its new name is an
:class:`~bayesmix.errors.OptionError`. The handling lives here once: :func:`renamed_kwargs`
decorates a function, :func:`rename_kwargs` translates a ``**options`` dict that is passed on.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from bayesmix import errors

F = TypeVar("F", bound=Callable[..., Any])

#: The release that deletes this module and the old names (the warnings say so).
REMOVAL_VERSION = "0.2.0"
#: The renames of this release: old keyword -> new keyword.
SEED = {"seed": "random_seed"}
PROGRESS = {"progress": "progressbar"}
CI_PROB = {"prob": "ci_prob"}


def rename_kwargs(
    where: str, kwargs: dict[str, Any], renames: Mapping[str, str], *, stacklevel: int = 3
) -> dict[str, Any]:
    """``kwargs`` with every deprecated name in ``renames`` (old -> new) replaced by its new one.

    Each old name found emits one ``FutureWarning``; an old name given together with its new
    one raises :class:`~bayesmix.errors.OptionError`. ``where`` names the function in messages;
    ``stacklevel`` points the warning at the caller (3: the caller of a function that calls this
    helper). ``kwargs`` is changed in place and returned.
    """
    for old, new in renames.items():
        if old not in kwargs:
            continue
        if new in kwargs:
            raise errors.OptionError(
                f"{where}() got both `{old}` and `{new}`",
                hint=f"pass only `{new}` (`{old}` is its deprecated name)",
            )
        warnings.warn(
            f"`{old}` is deprecated, use `{new}` ({where}(); the old name goes in bayesmix "
            f"{REMOVAL_VERSION})",
            FutureWarning,
            stacklevel=stacklevel,
        )
        kwargs[new] = kwargs.pop(old)
    return kwargs


def renamed_kwargs(**renames: str) -> Callable[[F], F]:
    """Decorator: accept the old keyword names ``renames`` (``old="new"``) for one release.

    The decorated function keeps its signature (``inspect.signature`` follows ``__wrapped__``)
    and docstring; ``__deprecated_kwargs__`` holds the renames, so tests can check every alias.

    Examples
    --------
    >>> import warnings
    >>> @renamed_kwargs(seed="random_seed")
    ... def draw(n, *, random_seed=None):
    ...     return n, random_seed
    >>> draw(3, random_seed=1)
    (3, 1)
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     draw(3, seed=1)
    (3, 1)
    >>> print(caught[0].category.__name__, caught[0].message)  # doctest: +ELLIPSIS
    FutureWarning `seed` is deprecated, use `random_seed` (draw(); ...)
    """

    def decorate(func: F) -> F:
        where = func.__qualname__.replace(".__init__", "")

        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            if kwargs:
                rename_kwargs(where, kwargs, renames)
            return func(*args, **kwargs)

        wrapper.__deprecated_kwargs__ = dict(renames)  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate
