"""Import nutpie without importing all of ArviZ (issue 10, case c: a fresh process's fit).

nutpie's sampling module runs ``import arviz`` when it is imported, and ArviZ 1.x then imports
arviz-base, arviz-stats (with ``scipy.stats``) and arviz-plots (with matplotlib): 1.5-2 s of a
fresh process on a 2-core VM (docs/performance.md), where fitting a small model from the compile
cache takes 3-4 s. nutpie only calls arviz-base's converters (``from_dict``,
``dict_to_dataset``; ArviZ re-exports the same functions).

So when neither nutpie nor ArviZ is imported yet, nutpie is imported with the name ``arviz``
bound to :class:`_ArvizForward`: a module that answers with arviz-base's attribute where
arviz-base has it, and otherwise imports the real ArviZ and answers with its attribute. It is
taken out of ``sys.modules`` right after nutpie's import, so ``import arviz`` anywhere else
gets the real package. Where ArviZ is already imported, nutpie is imported as usual.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any


class _ArvizForward(types.ModuleType):
    """Stands in for ``arviz`` inside nutpie: arviz-base's attributes, else the real ArviZ's."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # module machinery (__path__, __file__, ...): not ArviZ's
            raise AttributeError(name)
        import arviz_base

        if hasattr(arviz_base, name):
            return getattr(arviz_base, name)
        return getattr(importlib.import_module("arviz"), name)


def import_nutpie() -> types.ModuleType:
    """The ``nutpie`` module, imported (once per process) without loading arviz-stats and
    arviz-plots when ArviZ is not imported yet (module docstring)."""
    if "nutpie" in sys.modules or "arviz" in sys.modules:
        import nutpie

        return nutpie
    forward = _ArvizForward("arviz", "arviz-base, else ArviZ (bayesmix.inference.nutpie_loader)")
    sys.modules["arviz"] = forward
    try:
        import nutpie
    finally:
        if sys.modules.get("arviz") is forward:
            del sys.modules["arviz"]
    return nutpie
