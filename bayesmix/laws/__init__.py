"""Law families: the extension point of bayesmix (see :mod:`bayesmix.laws.base`).

Every module in this package that defines a :class:`~bayesmix.laws.base.Law` subclass with a
``name`` is imported and registered on first use, so a new law is one file here plus one TOML
specification in ``models/``. Laws defined elsewhere are added with :func:`register` (or named in
a specification as ``law = "package.module:ClassName"``).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

from bayesmix.laws import absence, phases, repetition
from bayesmix.laws.base import INPUTS, BuildContext, Law, Param

__all__ = [
    "DEFAULT_LAW",
    "INPUTS",
    "BuildContext",
    "Law",
    "Param",
    "available_laws",
    "get_law",
    "model_with",
    "register",
]

#: The law of a specification that names none, and of draws given as a plain dict without one.
DEFAULT_LAW = "m4"

_REGISTRY: dict[str, Law] = {}
_DISCOVERED = False


def register[L: (Law, type[Law])](law: L, *, replace: bool = False) -> L:
    """Add a law (an instance or a class) to the registry under its ``name``; returns it.

    Usable as a class decorator. A different law under a taken name is refused unless
    ``replace``.
    """
    from bayesmix.errors import SpecError

    instance = law() if isinstance(law, type) else law
    if not isinstance(instance, Law) or not instance.name:
        raise SpecError(f"{law!r} is not a Law with a name")
    if not instance.params or "r" not in instance.inputs:
        raise SpecError(f"law {instance.name!r} must declare params and take the input 'r'")
    old = _REGISTRY.get(instance.name)
    if old is not None and type(old) is not type(instance) and not replace:
        raise SpecError(
            f"a different law is already registered as {instance.name!r}",
            hint="choose another name or pass replace=True",
        )
    _REGISTRY[instance.name] = instance
    return law


def _discover() -> None:
    """Import every module of this package and register the laws they define."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    _DISCOVERED = True
    for info in pkgutil.iter_modules(__path__):
        if info.name == "base":
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        for obj in vars(module).values():
            if (
                isinstance(obj, type)
                and issubclass(obj, Law)
                and not inspect.isabstract(obj)
                and obj.__module__ == module.__name__
                and obj.name
                and "r" in obj.inputs  # mixing laws; the pipeline's curve laws are not
                and obj.name not in _REGISTRY
            ):
                _REGISTRY[obj.name] = obj()


def available_laws() -> dict[str, Law]:
    """Registered laws by name."""
    _discover()
    return dict(_REGISTRY)


def get_law(name: str | Law) -> Law:
    """The law called ``name`` (e.g. ``"m4"``), ``"module:Class"`` imported on demand, or
    ``"<law>+absent"``: that law plus the exact-absence term (:mod:`bayesmix.laws.absence`), or
    ``"<law>+repeat"``: that law on effective shares under repetition
    (:mod:`bayesmix.laws.repetition`), or ``"<law>+phases"``: that law at the effective mixture
    of phased runs (:mod:`bayesmix.laws.phases`)."""
    from bayesmix.errors import SpecError

    if isinstance(name, Law):
        return name
    _discover()
    if name in _REGISTRY:
        return _REGISTRY[name]
    if str(name).endswith(absence.SUFFIX):  # any law plus the exact-absence term
        _REGISTRY[name] = absence.with_absence(get_law(str(name)[: -len(absence.SUFFIX)]))
        return _REGISTRY[name]
    if str(name).endswith(repetition.SUFFIX):  # any law on effective shares under repetition
        base = get_law(str(name)[: -len(repetition.SUFFIX)])
        _REGISTRY[name] = repetition.with_repetition(base)
        return _REGISTRY[name]
    if str(name).endswith(phases.SUFFIX):  # any law at the effective mixture of phased runs
        _REGISTRY[name] = phases.with_phases(get_law(str(name)[: -len(phases.SUFFIX)]))
        return _REGISTRY[name]
    if ":" in str(name):
        module_name, _, attr = str(name).partition(":")
        try:
            obj = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as err:
            raise SpecError(f"cannot import law {name!r}: {err}") from None
        instance = obj() if isinstance(obj, type) else obj
        if not isinstance(instance, Law):
            raise SpecError(f"{name!r} is not a bayesmix Law")
        _REGISTRY[name] = instance
        return instance
    raise SpecError(
        f"unknown law {name!r}",
        hint=f"known laws: {', '.join(sorted(_REGISTRY))}; a law defined elsewhere "
        "is registered with bayesmix.laws.register or named 'module:Class'",
    )


def model_with(*, dim: str | None = None, takes: str | None = None) -> str:
    """The shipped specification (:attr:`Law.model`) of the first law of this package, by
    name, that has the extra dim ``dim`` and takes the input ``takes`` (e.g. ``dim="latent"``:
    the law of latent domains; ``takes="tokens"``: the joint law over size and tokens)."""
    from bayesmix.errors import SpecError

    _discover()
    for name in sorted(_REGISTRY):
        law = _REGISTRY[name]
        shipped = type(law).__module__.startswith(f"{__name__}.") and law.model
        if shipped and (dim is None or dim in law.extra_dims) and (takes in (None, *law.inputs)):
            return law.model
    raise SpecError(f"no shipped law has {f'dim {dim!r}' if dim else f'input {takes!r}'}")
