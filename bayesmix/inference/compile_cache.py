"""Compiled models persisted across processes, so a fresh process does not recompile.

What costs the time in a fresh process (fit_speed problem, measured on an idle machine): pytensor's
graph rewriting ~1.5 s; numba compiling pytensor's logp/gradient and expansion functions ~25 s with
an empty pytensor cache (pytensor then caches them in its own compiledir); numba compiling nutpie's
C-callback wrappers around them ~9 s in every process (they close over per-compile random names and
data, so numba's own cache never hits). This module stores the finished machine code of nutpie's two
C callbacks (logp + gradient, and the expansion to all model variables: numba's object code plus the
numba environments they reference) with the layout nutpie needs (variable names, shapes,
shared-variable order), and rebuilds nutpie's compiled model around a freshly built ``pm.Model``
(initial-point function, data pointers, coordinates) without any numba compilation.

Key: sha256 of the caller's structure string, a fingerprint of the model's logp and
deterministics graph (ops, constants, variable types: a changed law or prior is a new key),
the shapes of every sampled and derived variable, the CPU target, pytensor's fastmath flag and
the versions of bayesmix, pymc, pytensor, nutpie, numba, llvmlite, numpy and Python. Data
*sizes* (number of runs, observations) are not in the key: the compiled functions read them
at run time, like the in-process cache in :mod:`bayesmix.inference.fitting` relies on.

Storage: one file ``<key>.nbm`` (pickle) per entry in :func:`cache_dir` (``BAYESMIX_CACHE_DIR``,
else the user cache dir of platformdirs), written to a temporary file and renamed, so processes
racing on one key both succeed (the last rename wins; both wrote the same thing). An unreadable
entry is a miss. ``BAYESMIX_NO_COMPILE_CACHE=1`` turns the cache off (nothing read or written).
"""

from __future__ import annotations

import ctypes
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

from bayesmix.inference.nutpie_loader import import_nutpie

ENV_DIR = "BAYESMIX_CACHE_DIR"
ENV_OFF = "BAYESMIX_NO_COMPILE_CACHE"
#: Bump when the entry layout changes.
FORMAT = 1
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
    """Versions that invalidate an entry: the packages, Python, the CPU target of numba."""
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
    from numba.core.registry import cpu_target

    out["python"] = sys.version
    out["machine"] = platform.machine()
    out["target"] = repr(cpu_target.target_context.codegen().magic_tuple())
    out["fastmath"] = str(pytensor.config.numba__fastmath)
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


def model_key(model, structure: str = "") -> str:
    """The cache key of ``model`` (see the module docstring); ``structure`` is the caller's
    own identity of the model (e.g. :func:`bayesmix.model.model.structure_key`)."""
    import_nutpie()
    from nutpie.compile_pymc import _compute_shapes

    fingerprint, _ = _graph(model)
    return _key(structure, fingerprint, _compute_shapes(model))


def _key(structure: str, fingerprint: str, shapes: dict) -> str:
    text = json.dumps(
        {
            "format": FORMAT,
            "structure": structure,
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
def compile_model(model, structure: str = "", on_compile=None):
    """nutpie's compiled ``model`` (``nutpie.compile_pymc_model`` with default options): loaded
    from the cache when an entry with this key exists, else compiled and stored. The result
    holds ``model``'s current data; swap data with ``.with_data(...)`` as usual.
    ``on_compile()`` is called just before a real compilation (e.g. to say it takes a while)."""
    nutpie = import_nutpie()

    if not enabled():
        stats["misses"] += 1
        if on_compile is not None:
            on_compile()
        return nutpie.compile_pymc_model(model)
    from nutpie.compile_pymc import _compute_shapes

    fingerprint, shared = _graph(model)
    key = _key(structure, fingerprint, _compute_shapes(model))
    entry = _LOADED.get(key) or _read(cache_dir() / (key + SUFFIX))
    if entry is not None:
        compiled = _assemble(entry, model, shared)
        if compiled is not None:
            _LOADED[key] = entry
            stats["hits"] += 1
            return compiled
    stats["misses"] += 1
    if on_compile is not None:
        on_compile()
    compiled = nutpie.compile_pymc_model(model)
    entry = _entry(compiled)
    if entry is not None:
        _LOADED[key] = entry
        if _write(cache_dir() / (key + SUFFIX), entry):
            stats["stores"] += 1
        # Returned as a later hit assembles it, so that a seed draws the same chains whether
        # this process compiled the model or loaded it. With nutpie's own object it did not:
        # a small logshare fit (simulate_law, then fit, seed 1) drew other chains in the
        # process that compiled than with the cache loaded or off (those two agreed); the
        # initial points were equal. Not reproduced inside the test suite's process.
        compiled = _assemble(entry, model, shared) or compiled
    return compiled


class _LoadedCFunc:
    """Stands in for a ``numba.cfunc`` result: nutpie only uses ``.address``."""

    def __init__(self, library, name: str, envs: tuple):
        for env in envs:  # numba functions read constants through these; keep them alive
            library.codegen.set_env(env.env_name, env)
        self._library, self._envs = library, envs
        self.address = library.get_pointer_to_function(name)


def _cfunc_state(cfunc):
    """(object code, wrapper symbol, environments) of a compiled ``numba.cfunc``; None when
    numba would not cache it either (dynamic globals)."""
    from numba.core.environment import lookup_environment

    library = cfunc._library
    if library.has_dynamic_globals:
        return None
    envs = []
    for gv in library._final_module.global_variables:
        if gv.name.startswith("_ZN08NumbaEnv"):
            env = lookup_environment(gv.name)
            if env is not None and env.can_cache():  # what numba's own cache keeps
                envs.append(env)
    return library.serialize_using_object_code(), cfunc.native_name, tuple(envs)


def _entry(compiled) -> dict | None:
    """What to store of a freshly compiled model; None when it cannot be rebuilt later
    (unnamed or duplicate shared variables, or machine code numba would not cache)."""
    try:
        names = [var.name for var in compiled.shared_var_keys]
        if any(not n for n in names) or len(set(names)) != len(names):
            return None
        logp = _cfunc_state(compiled.compiled_logp_func)
        expand = _cfunc_state(compiled.compiled_expand_func)
        if logp is None or expand is None:
            return None
        return {
            "format": FORMAT,
            "logp": logp,
            "expand": expand,
            "functions": (compiled.compiled_logp_func, compiled.compiled_expand_func),
            "n_dim": int(compiled.n_dim),
            "n_expanded": int(compiled.n_expanded),
            "shape_info": compiled.shape_info,
            "reparameterized_names": list(compiled.reparameterized_names or []),
            "shared": [
                (var.name, key, var.ndim, str(compiled.shared_data[key].dtype))
                for var, key in compiled.shared_var_keys.items()
            ],
        }
    except Exception:  # noqa: BLE001 - nutpie or numba internals changed: no caching
        return None


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


def _assemble(entry: dict, model, shared: dict):
    """nutpie's ``CompiledPyMCModel`` for ``model`` from a stored entry; None if it does not
    fit ``model`` (then the caller compiles). Called after :func:`compile_model` imported
    nutpie."""
    from nutpie import compile_pymc as cp
    from pymc.initial_point import make_initial_point_fn

    try:
        keys = {}
        for name, key, ndim, dtype in entry["shared"]:
            found = shared.get(name, [])
            if len(found) != 1 or found[0].ndim != ndim or found[0].dtype != dtype:
                return None
            keys[found[0]] = key
        if "functions" not in entry:
            from numba.core.registry import cpu_target

            ctx = cpu_target.target_context
            ctx.refresh()  # installs numba's runtime symbols (NRT_Allocate, ...) if needed
            entry["functions"] = tuple(
                _LoadedCFunc(ctx.codegen().unserialize_library(state[0]), state[1], state[2])
                for state in (entry["logp"], entry["expand"])
            )
        logp_fn, expand_fn = entry["functions"]
        data = {}
        for var, key in keys.items():
            value = np.array(var.get_value(), order="C", copy=True)
            value.flags.writeable = False
            data[key] = value
        names, _, shapes = entry["shape_info"]
        n_free = len(model.free_RVs)
        # as nutpie.compile_pymc_model does with its default options
        point_fn = make_initial_point_fn(
            model=model,
            overrides=None,
            default_strategy="support_point",
            jitter_rvs=set(model.free_RVs),
            return_transformed=True,
        )
        point_fn = cp._rv_dict_to_flat_array_wrapper(
            cp._wrap_with_lock(point_fn), names=names[:n_free], shapes=shapes[:n_free]
        )
        dims, coords = cp._prepare_dims_and_coords(
            model, entry["shape_info"], entry["reparameterized_names"]
        )
        return cp.CompiledPyMCModel(
            _n_dim=entry["n_dim"],
            dims=dims,
            _coords=coords,
            _shapes={name: tuple(shape) for name, _, shape in zip(*entry["shape_info"])},
            compiled_logp_func=logp_fn,
            compiled_expand_func=expand_fn,
            initial_point_func=point_fn,
            shared_data=data,
            shared_var_keys=keys,
            user_data=cp.make_user_data(keys, data),
            n_expanded=entry["n_expanded"],
            shape_info=entry["shape_info"],
            logp_func=None,
            expand_func=None,
            reparameterized_names=entry["reparameterized_names"],
        )
    except Exception:  # noqa: BLE001 - an entry that does not load is a miss
        return None


def logp_and_grad(compiled, x) -> tuple[float, np.ndarray]:
    """Log density and its gradient of a nutpie compiled model at the unconstrained point
    ``x`` [n_dim], through the same C callback the sampler calls (for checks and tests)."""
    x = np.ascontiguousarray(x, dtype=np.float64)
    if x.shape != (compiled.n_dim,):
        raise ValueError(f"x must have shape ({compiled.n_dim},), got {x.shape}")
    ptr = ctypes.POINTER(ctypes.c_double)
    fn = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_uint64, ptr, ptr, ptr, ctypes.c_void_p)(
        compiled.compiled_logp_func.address
    )
    grad, logp = np.zeros_like(x), np.zeros(())
    code = fn(
        len(x),
        x.ctypes.data_as(ptr),
        grad.ctypes.data_as(ptr),
        logp.ctypes.data_as(ptr),
        compiled.user_data.ctypes.data,
    )
    if code not in (0, 3, 4):  # 3, 4: non-finite gradient or density, still returned
        raise RuntimeError(f"logp function returned error code {code}")
    return float(logp), grad


__all__ = [
    "CompileCacheWarning",
    "cache_dir",
    "clear",
    "compile_model",
    "enabled",
    "entries",
    "forget",
    "logp_and_grad",
    "model_key",
    "stats",
    "versions",
]
