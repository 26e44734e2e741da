"""Compiled models persisted across processes, so a fresh process does not recompile.

What costs the time in a fresh process (fit_speed problem, measured on an idle machine): pytensor's
graph rewriting ~1.5 s; numba compiling pytensor's logp/gradient and expansion functions ~25 s with
an empty pytensor cache (pytensor then caches them in its own compiledir); numba compiling nutpie's
C-callback wrappers around them ~9 s in every process (they close over per-compile random names and
data, so numba's own cache never hits). This module stores the finished machine code of nutpie's two
C callbacks with the layout nutpie needs, and rebuilds nutpie's compiled model around a freshly
built ``pm.Model`` without any numba compilation. What to store and how to rebuild it reach into
nutpie and numba, so :mod:`bayesmix.inference.nutpie_adapter` does both (``snapshot``,
``restore``); this module keys, stores and reads the entries. Where the adapter has that path off
(nutpie outside its tested versions, an internal missing), models are compiled and nothing is
stored.

Key: sha256 of a fingerprint of the model's logp and deterministics graph (ops, constants,
variable names and types: a changed law or prior is a new key), the shapes of every sampled and
derived variable, the CPU target, numba's optimisation level, pytensor's fastmath flag and the
versions of bayesmix, pymc, pytensor, nutpie, numba, llvmlite, numpy and Python: what decides
the machine code. Coordinate labels (domain names) and data values are not in it: a fit of one
law on other domains of the same counts loads the entry (the rebuilt model takes its dims and
coords from the new ``pm.Model``), and data *sizes* (number of runs, observations) are read by
the compiled functions at run time, like the in-process cache in
:mod:`bayesmix.inference.fitting` relies on.

Storage: one file ``<key>.nbm`` (pickle) per entry in :func:`cache_dir` (``BAYESMIX_CACHE_DIR``,
else the user cache dir of platformdirs), written to a temporary file and renamed, so processes
racing on one key both succeed (the last rename wins; both wrote the same thing). An unreadable
entry is a miss. ``BAYESMIX_NO_COMPILE_CACHE=1`` turns the cache off (nothing read or written).

Same draws: the model returned runs the same machine code in the process that compiled it, in
one that loaded it and with the cache off (self-contained copies of nutpie's callbacks,
:func:`bayesmix.inference.nutpie_adapter.snapshot`), so one seed draws the same chains in all.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import platform
import sys
import tempfile
import warnings
from importlib import metadata
from pathlib import Path

import numpy as np

from bayesmix.inference import nutpie_adapter

ENV_DIR = "BAYESMIX_CACHE_DIR"
ENV_OFF = "BAYESMIX_NO_COMPILE_CACHE"
#: Bump when the entry layout changes.
FORMAT = 2
SUFFIX = ".nbm"
_PACKAGES = ("bayesmix", "pymc", "pytensor", "nutpie", "numba", "llvmlite", "numpy")

#: key -> loaded entry (the machine code stays loaded for the life of the process)
_LOADED: dict[str, dict] = {}
#: counters for this process: "hits" (loaded from disk or memory), "misses" (compiled), "stores"
stats = {"hits": 0, "misses": 0, "stores": 0}


class CompileCacheWarning(UserWarning):
    """The compile cache could not be written (the fit itself is unaffected)."""


def enabled() -> bool:
    """False when ``BAYESMIX_NO_COMPILE_CACHE`` is set to anything but "", "0" or "false"."""
    return os.environ.get(ENV_OFF, "").strip().lower() in ("", "0", "false")


def cache_dir() -> Path:
    """``$BAYESMIX_CACHE_DIR``, else platformdirs' user cache dir for bayesmix, + ``compiled``."""
    root = os.environ.get(ENV_DIR)
    if not root:
        import platformdirs

        root = platformdirs.user_cache_dir("bayesmix", appauthor=False)
    return Path(root).expanduser() / "compiled"


def versions() -> dict[str, str]:
    """Versions that invalidate an entry: the packages, Python, the CPU target of numba and its
    optimisation level (``NUMBA_OPT``: other machine code)."""
    out = {}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "none"
    if out["bayesmix"] == "none":
        from bayesmix import __version__

        out["bayesmix"] = __version__
    import pytensor

    out["python"] = sys.version
    out["machine"] = platform.machine()
    out["target"] = nutpie_adapter.machine_target()
    out["fastmath"] = str(pytensor.config.numba__fastmath)
    out["numba_opt"] = nutpie_adapter.optimisation_level()
    return out


def entries() -> list[Path]:
    """The entry files in :func:`cache_dir`."""
    d = cache_dir()
    return sorted(d.glob("*" + SUFFIX)) if d.is_dir() else []


def forget() -> None:
    """Forget the entries loaded in this process (the files stay)."""
    _LOADED.clear()


def clear() -> int:
    """Delete every entry on disk (and forget loaded ones); returns how many files went."""
    forget()
    n = 0
    for path in entries():
        try:
            path.unlink()
            n += 1
        except FileNotFoundError:
            pass
    return n


# ----------------------------------------------------------------------------------- the key
def _describe(x) -> str:
    """A process-independent text for an op or op property (no memory addresses)."""
    props = getattr(x, "__props__", None)
    if props:
        inner = ",".join(f"{k}={_describe(getattr(x, k))}" for k in props)
        return f"{type(x).__module__}.{type(x).__qualname__}({inner})"
    if isinstance(x, (tuple, list)):
        return "(" + ",".join(_describe(v) for v in x) + ")"
    if isinstance(x, np.ndarray):
        return f"{x.dtype}{x.shape}:{hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest()}"
    return f"{type(x).__module__}.{type(x).__qualname__}:{x}"


def _graph(model):
    """(fingerprint of the logp + deterministics graph, its shared variables by name)."""
    from pytensor.compile.sharedvalue import SharedVariable
    from pytensor.graph.basic import Constant
    from pytensor.graph.traversal import toposort

    outputs = [model.logp(), *model.unobserved_value_vars]
    h = hashlib.sha256()
    ids: dict = {}
    shared: dict[str | None, list] = {}

    def ident(v) -> int:
        if v not in ids:
            ids[v] = len(ids)
            if isinstance(v, Constant):
                h.update(f"C{ids[v]}{v.type}".encode())
                h.update(np.ascontiguousarray(v.data).tobytes())
            elif isinstance(v, SharedVariable):
                h.update(f"S{ids[v]}{v.name}{v.type}".encode())
                shared.setdefault(v.name, []).append(v)
            elif v.owner is None:
                h.update(f"I{ids[v]}{v.name}{v.type}".encode())
        return ids[v]

    for node in toposort(outputs):
        inputs = [ident(i) for i in node.inputs]
        h.update(f"N{_describe(node.op)}{inputs}".encode())
        for out in node.outputs:
            ids[out] = len(ids)
            h.update(f"O{out.type}".encode())
    h.update(str([ident(o) for o in outputs]).encode())
    return h.hexdigest(), shared


def model_key(model) -> str:
    """The cache key of ``model`` (see the module docstring)."""
    fingerprint, _ = _graph(model)
    return _key(fingerprint, nutpie_adapter.shapes(model))


def _key(fingerprint: str, shapes: dict) -> str:
    text = json.dumps(
        {
            "format": FORMAT,
            "graph": fingerprint,
            "shapes": {
                k: [int(n) for n in np.atleast_1d(v)] if np.ndim(v) else []
                for k, v in shapes.items()
            },
            "versions": versions(),
        },
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:32]


# ----------------------------------------------------------------------------------- compile
def compile_model(model, on_compile=None):
    """nutpie's compiled ``model`` (``nutpie.compile_pymc_model`` with default options): loaded
    from the cache when an entry with this key exists, else compiled and stored. The result
    holds ``model``'s current data; swap data with ``nutpie_adapter.with_data(...)``.
    ``on_compile()`` is called just before a real compilation (e.g. to say it takes a while).

    Whether compiled here, loaded, or compiled with the cache off, the model runs the same
    machine code (:func:`nutpie_adapter.snapshot` makes it self-contained), so one seed draws
    the same chains in every process."""
    if not nutpie_adapter.current.usable(nutpie_adapter.DISK_CACHE):
        stats["misses"] += 1
        if on_compile is not None:
            on_compile()
        return nutpie_adapter.compile_public(model)
    fingerprint, shared = _graph(model)
    key = _key(fingerprint, nutpie_adapter.shapes(model)) if enabled() else None
    entry = None if key is None else _LOADED.get(key) or _read(cache_dir() / (key + SUFFIX))
    if key is not None and entry is not None:
        compiled = nutpie_adapter.restore(entry, model, shared)
        if compiled is not None:
            _LOADED[key] = entry
            stats["hits"] += 1
            return compiled
    stats["misses"] += 1
    if on_compile is not None:
        on_compile()
    compiled = nutpie_adapter.compile_public(model)
    entry = nutpie_adapter.snapshot(compiled)
    if entry is None:
        return compiled
    entry["format"] = FORMAT
    if key is not None:
        _LOADED[key] = entry
        if _write(cache_dir() / (key + SUFFIX), entry):
            stats["stores"] += 1
    # rebuilt as a later hit rebuilds it: the same machine code, the same initial points
    return nutpie_adapter.restore(entry, model, shared) or compiled


def _write(path: Path, entry: dict) -> bool:
    """Write ``entry`` atomically (temporary file in the same directory, then rename)."""
    data = {k: v for k, v in entry.items() if k != "functions"}
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.stem, suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            pickle.dump(data, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
        return True
    except Exception as err:  # noqa: BLE001 - a cache that cannot be written is not fatal
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        warnings.warn(
            f"compile cache {path.parent} not written ({err}); set {ENV_DIR} to a "
            f"writable directory or {ENV_OFF}=1",
            CompileCacheWarning,
            stacklevel=3,
        )
        return False


def _read(path: Path) -> dict | None:
    """The entry at ``path``; None when absent or unreadable (then it is recompiled)."""
    try:
        with open(path, "rb") as f:
            entry = pickle.load(f)
    except Exception:  # noqa: BLE001 - missing, truncated or from an incompatible version
        return None
    return entry if isinstance(entry, dict) and entry.get("format") == FORMAT else None


__all__ = [
    "CompileCacheWarning",
    "cache_dir",
    "clear",
    "compile_model",
    "enabled",
    "entries",
    "forget",
    "model_key",
    "stats",
    "versions",
]
