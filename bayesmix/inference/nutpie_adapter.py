"""The one adapter to nutpie's, numba's and NumPy's private or version-specific internals.

bayesmix's fits are faster for four fast paths that reach past those libraries' public API
(docs/performance.md); every such touch lives here, behind a small interface, so the rest of the
package calls only public functions:

* :data:`IMPORT` - nutpie imported without arviz-stats and arviz-plots: while nutpie imports,
  its ``arviz`` name forwards to arviz-base (else the real ArviZ) through a ``sys.modules``
  entry taken out right after (1.5-2 s less in a fresh process; :func:`import_nutpie`);
* :data:`DISK_CACHE` - nutpie's compiled model stored and rebuilt from numba's object code and
  nutpie's private helpers (:func:`snapshot`, :func:`restore`; storage and key in
  :mod:`bayesmix.inference.compile_cache`): a fresh process loads instead of compiling;
* :data:`UPDATE_FREQ` - nutpie's low-rank mass matrix estimated every
  :data:`LARGE_UPDATE_FREQ` tuning draws in large models, through nutpie's settings object and
  background sampler (:func:`sample`);
* :data:`PAGES` - NumPy's huge-page advice off while a fit assembles (:func:`ordinary_pages`).

nutpie's internals change between minor versions, so they are used only with the nutpie
versions bayesmix was tested on (:data:`TESTED_NUTPIE`, also the bound in ``pyproject.toml``);
the installed version is read when this module is imported (:data:`current`). Outside that
range, or when an internal a path uses is missing, the path is off and the fit takes nutpie's
public path (``nutpie.compile_pymc_model`` + ``nutpie.sample``; without nutpie, PyMC's sampler),
with one :class:`SamplerFallbackWarning` saying what was turned off and why. Results are the
same; only speed differs.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import os
import sys
import types
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import numpy as np

#: nutpie minor versions the fast paths were tested on: (first, first not tested).
TESTED_NUTPIE = ((0, 16), (0, 17))

#: The fast paths (module docstring), as named in warnings and :meth:`Adapter.status`.
IMPORT = "nutpie import without arviz-stats and arviz-plots"
DISK_CACHE = "compile cache on disk"
UPDATE_FREQ = "low-rank mass matrix update frequency"
PAGES = "NumPy huge-page advice off during a fit"
NUTPIE = "nutpie sampler"
FAST_PATHS = (IMPORT, DISK_CACHE, UPDATE_FREQ, PAGES)
#: What a fit does instead when a path is off (same results, only slower).
INSTEAD = {
    NUTPIE: "fits use PyMC's NUTS sampler",
    IMPORT: "nutpie is imported with all of ArviZ",
    DISK_CACHE: "every process compiles its models (nutpie.compile_pymc_model)",
    UPDATE_FREQ: "large models tune with nutpie.sample's defaults",
    PAGES: "NumPy keeps its huge-page advice",
}

#: Models with at least this many sampled dimensions update nutpie's low-rank mass matrix every
#: :data:`LARGE_UPDATE_FREQ` tuning draws instead of nutpie's 20 (:func:`update_freq`).
LARGE_DIM = 200
LARGE_UPDATE_FREQ = 60

#: The internals each path reads: (module, attribute), checked before the path's first use.
INTERNALS: dict[str, tuple[tuple[str, str], ...]] = {
    NUTPIE: (),
    IMPORT: (),
    DISK_CACHE: (
        ("nutpie.compile_pymc", "_compute_shapes"),
        ("nutpie.compile_pymc", "_rv_dict_to_flat_array_wrapper"),
        ("nutpie.compile_pymc", "_wrap_with_lock"),
        ("nutpie.compile_pymc", "_prepare_dims_and_coords"),
        ("nutpie.compile_pymc", "make_user_data"),
        ("nutpie.compile_pymc", "CompiledPyMCModel"),
        ("numba.core.registry", "cpu_target"),
        ("numba.core.environment", "lookup_environment"),
        ("numba.core.compiler_lock", "global_compiler_lock"),
        ("llvmlite.binding", "parse_bitcode"),
    ),
    UPDATE_FREQ: (("nutpie._lib", "PyNutsSettings"), ("nutpie.sample", "_BackgroundSampler")),
    PAGES: (("numpy._core.multiarray", "_set_madvise_hugepage"),),
}


class SamplerFallbackWarning(UserWarning):
    """A fast path is off (nutpie outside the tested versions, or an internal missing): the
    fit takes the libraries' public path, with the same results, maybe slower."""


# ---------------------------------------------------------------------------- the state
def nutpie_version() -> str | None:
    """The installed nutpie's version (package metadata: nutpie is not imported), or None."""
    try:
        return metadata.version("nutpie")
    except metadata.PackageNotFoundError:
        return None


def tested(version: str | None) -> bool:
    """Whether nutpie ``version`` ("0.16.11") lies in :data:`TESTED_NUTPIE`."""
    if version is None:
        return False
    try:
        minor = tuple(int(p) for p in version.split(".")[:2])
    except ValueError:
        return False
    low, high = TESTED_NUTPIE
    return low <= minor < high


def tested_range() -> str:
    """The tested versions as a requirement, ``"nutpie>=0.16,<0.17"``."""
    (a, b), (c, d) = TESTED_NUTPIE
    return f"nutpie>={a}.{b},<{c}.{d}"


@dataclass
class Adapter:
    """What this process may use: the installed nutpie's version, and the paths that are off
    with why (filled at import for the version, at a path's first use for missing internals)."""

    version: str | None
    off: dict[str, str] = field(default_factory=dict)
    checked: set[str] = field(default_factory=set)
    warned: set[str] = field(default_factory=set)

    @classmethod
    def detect(cls, version: str | None = None, *, installed: bool = True) -> Adapter:
        """The state for nutpie ``version`` (default: the installed one; ``installed=False``:
        no nutpie)."""
        version = (version or nutpie_version()) if installed else None
        state = cls(version)
        if version is None:
            state.off[NUTPIE] = "nutpie is not installed"
        elif not tested(version):
            why = (
                f"nutpie {version} is outside the versions bayesmix was tested with "
                f"({tested_range()})"
            )
            state.off.update(dict.fromkeys((IMPORT, DISK_CACHE, UPDATE_FREQ), why))
        return state

    def status(self) -> dict[str, str | None]:
        """Every fast path -> None when on (or not yet checked), else why it is off."""
        return {path: self.off.get(path) for path in (NUTPIE, *FAST_PATHS)}

    def usable(self, path: str) -> bool:
        """Whether ``path`` may be used: checks its internals on first use; when it is off,
        warns once for every path turned off for the same reason."""
        if path not in self.off and path not in self.checked:
            self.checked.add(path)
            missing = _missing_internal(path)
            if missing:
                self.off[path] = f"{missing} is missing ({self._versions()})"
        if path not in self.off:
            return True
        why = self.off[path]
        if why not in self.warned:
            self.warned.add(why)
            paths = [p for p, w in self.off.items() if w == why]
            them = "them" if len(paths) > 1 else "it"
            fix = f"; {tested_range()} turns {them} back on" if PAGES not in paths else ""
            warnings.warn(
                f"{', '.join(paths)} turned off: {why}. Instead "
                f"{'; '.join(INSTEAD[p] for p in paths)} (same results, slower){fix}",
                SamplerFallbackWarning,
                stacklevel=4,
            )
        return False

    def _versions(self) -> str:
        return f"nutpie {self.version}, numba {_version('numba')}, numpy {np.__version__}"


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "none"


def _missing_internal(path: str) -> str | None:
    """The first ``module.attribute`` of ``path``'s internals that cannot be found, or None."""
    if path in (DISK_CACHE, UPDATE_FREQ):
        import_nutpie()
    for module, name in INTERNALS[path]:
        try:
            found = hasattr(importlib.import_module(module), name)
        except ImportError:
            found = False
        if not found:
            return f"{module}.{name}"
    if path == UPDATE_FREQ and low_rank_settings(0, LARGE_UPDATE_FREQ) is None:
        return "nutpie's adapt_options.mass_matrix_update_freq"
    return None


#: This process's state: tests replace it (``Adapter.detect("0.99.0")``) to see the fallbacks.
current = Adapter.detect()


def choose_sampler(sampler: str) -> str:
    """``sampler``, or "pymc" when "nutpie" was asked for and nutpie is not installed (one
    warning)."""
    if sampler == "nutpie" and not current.usable(NUTPIE):
        return "pymc"
    return sampler


# ---------------------------------------------------------------------------- import
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
    """The ``nutpie`` module, imported once per process; on the :data:`IMPORT` path without
    loading arviz-stats and arviz-plots when ArviZ is not imported yet.

    nutpie's sampling module runs ``import arviz``, and ArviZ 1.x imports arviz-stats (with
    ``scipy.stats``) and arviz-plots (with matplotlib); nutpie calls only arviz-base's
    converters (``from_dict``, ``dict_to_dataset``). So ``arviz`` is bound to
    :class:`_ArvizForward` in ``sys.modules`` during nutpie's import and removed right after:
    ``import arviz`` anywhere else gets the real package."""
    if "nutpie" in sys.modules or "arviz" in sys.modules or not current.usable(IMPORT):
        import nutpie

        return nutpie
    forward = _ArvizForward("arviz", "arviz-base, else ArviZ (bayesmix.inference.nutpie_adapter)")
    sys.modules["arviz"] = forward
    try:
        import nutpie
    finally:
        if sys.modules.get("arviz") is forward:
            del sys.modules["arviz"]
    return nutpie


# ---------------------------------------------------------------------------- compile
def compile_public(model):
    """``nutpie.compile_pymc_model(model)`` with nutpie's default options."""
    return import_nutpie().compile_pymc_model(model)


def shapes(model) -> dict:
    """Shape of every sampled and derived variable of ``model``, as nutpie computes them (part
    of the compile cache's key)."""
    import_nutpie()
    from nutpie.compile_pymc import _compute_shapes

    return _compute_shapes(model)


def machine_target() -> str:
    """numba's CPU target (machine code compiled for one CPU does not run on another)."""
    try:
        from numba.core.registry import cpu_target

        return repr(cpu_target.target_context.codegen().magic_tuple())
    except (ImportError, AttributeError):
        return "unknown"


def optimisation_level() -> str:
    """numba's LLVM optimisation level (``NUMBA_OPT``; another level is other machine code)."""
    import numba

    return str(getattr(numba.config, "OPT", "unknown"))


def with_data(compiled, values: Mapping[str, Any]):
    """``compiled`` reading ``values`` (name -> array); names the density does not read (only
    the initial point does) are left out, since nutpie refuses them."""
    used = {var.name for var in compiled.shared_var_keys}
    return compiled.with_data(**{k: v for k, v in values.items() if k in used})


class _LoadedCFunc:
    """Stands in for a ``numba.cfunc`` result: nutpie only uses ``.address``."""

    def __init__(self, library, name: str, envs: tuple):
        for env in envs:  # numba functions read constants through these; keep them alive
            library.codegen.set_env(env.env_name, env)
        self._library, self._envs = library, envs
        self.address = library.get_pointer_to_function(name)


#: Appended to the entry point of a callback's self-contained copy (:func:`_self_contained`).
OWN_SUFFIX = "$bayesmix"


def _self_contained(cfunc):
    """(live callback, (object code, entry symbol, environments)) of a copy of the compiled
    ``numba.cfunc`` whose functions are all private to it; None when numba would not cache it
    (dynamic globals).

    Why: numba emits the functions a callback calls (pytensor's kernels, numba's helpers) as
    weak symbols, and the JIT binds a weak symbol to a definition already loaded in the
    process. nutpie's own callback thus ran the kernels pytensor had compiled in that process,
    and the same machine code loaded in a fresh process ran its own copies, which round
    differently: 1 ulp of the log density at 8 of 2,100 points of the stage-1 curve model, and
    chains with one seed that part after a few draws. The copy is the callback's optimised
    module with every function made internal and the entry point renamed, turned into machine
    code without further optimisation; every process (compiling, loading, cache off) runs it."""
    import llvmlite.binding as ll  # type: ignore[import-untyped]
    from numba.core.compiler_lock import global_compiler_lock
    from numba.core.environment import lookup_environment
    from numba.core.registry import cpu_target

    library = cfunc._library
    if library.has_dynamic_globals:
        return None
    envs = []
    for gv in library._final_module.global_variables:
        if gv.name.startswith("_ZN08NumbaEnv"):
            env = lookup_environment(gv.name)
            if env is not None and env.can_cache():  # what numba's own cache keeps
                envs.append(env)
    module = ll.parse_bitcode(library._final_module.as_bitcode())
    entry = cfunc.native_name + OWN_SUFFIX
    for fn in module.functions:
        if fn.is_declaration:
            continue
        if fn.name == cfunc.native_name:
            fn.name = entry
        else:
            fn.linkage = "internal"
    own = cpu_target.target_context.codegen().create_library(entry)
    own.enable_object_caching()  # keeps the machine code for serialize_using_object_code
    with global_compiler_lock:  # as numba's unserialize_library of bitcode: no optimisation
        own._final_module = module
        own._finalize_final_module()
    live = _LoadedCFunc(own, entry, tuple(envs))
    return live, (own.serialize_using_object_code(), entry, tuple(envs))


def snapshot(compiled) -> dict | None:
    """What to store of a freshly compiled model to rebuild it in another process (machine
    code of self-contained copies of nutpie's two C callbacks, logp + gradient and the
    expansion to all variables, with numba's environments, and the layout: names, shapes,
    shared-variable order); the key ``"functions"`` holds the live copies and is not stored.
    None when it cannot be rebuilt (unnamed or duplicate shared variables, machine code numba
    would not cache)."""
    try:
        names = [var.name for var in compiled.shared_var_keys]
        if any(not n for n in names) or len(set(names)) != len(names):
            return None
        logp = _self_contained(compiled.compiled_logp_func)
        expand = _self_contained(compiled.compiled_expand_func)
        if logp is None or expand is None:
            return None
        return {
            "logp": logp[1],
            "expand": expand[1],
            "functions": (logp[0], expand[0]),
            "n_dim": int(compiled.n_dim),
            "n_expanded": int(compiled.n_expanded),
            "shape_info": compiled.shape_info,
            "reparameterized_names": list(compiled.reparameterized_names or []),
            "shared": [
                (var.name, key, var.ndim, str(compiled.shared_data[key].dtype))
                for var, key in compiled.shared_var_keys.items()
            ],
        }
    except Exception:  # noqa: BLE001 - an object nutpie or numba lay out otherwise: not stored
        return None


def _functions(entry: dict) -> tuple:
    """The entry's two C callbacks, loaded from their object code once per process."""
    if "functions" not in entry:
        from numba.core.registry import cpu_target

        ctx = cpu_target.target_context
        ctx.refresh()  # installs numba's runtime symbols (NRT_Allocate, ...) if needed
        entry["functions"] = tuple(
            _LoadedCFunc(ctx.codegen().unserialize_library(state[0]), state[1], state[2])
            for state in (entry["logp"], entry["expand"])
        )
    return entry["functions"]


def restore(entry: dict, model, shared: Mapping[str | None, list]):
    """nutpie's compiled model for ``model`` rebuilt from a :func:`snapshot` (no numba
    compilation); ``shared``: the model's shared variables by name. None when the entry does
    not fit ``model`` (then the caller compiles)."""
    import_nutpie()
    from nutpie import compile_pymc as cp
    from pymc.initial_point import make_initial_point_fn

    try:
        keys = {}
        for name, key, ndim, dtype in entry["shared"]:
            found = shared.get(name, [])
            if len(found) != 1 or found[0].ndim != ndim or found[0].dtype != dtype:
                return None
            keys[found[0]] = key
        logp_fn, expand_fn = _functions(entry)
        data = {}
        for var, key in keys.items():
            value = np.array(var.get_value(), order="C", copy=True)
            value.flags.writeable = False
            data[key] = value
        names, _, shape_list = entry["shape_info"]
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
            cp._wrap_with_lock(point_fn), names=names[:n_free], shapes=shape_list[:n_free]
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


# ---------------------------------------------------------------------------- sample
def update_freq(n_dim: int, adaptation: str) -> int | None:
    """Tuning draws between two estimates of nutpie's low-rank mass matrix, or None for
    nutpie's default (20).

    Why: each estimate takes eigendecompositions that grow with the cube of the model's
    dimension. Measured on RegMix 512 ``logshare`` (509 dimensions, one chain, 300 tuning
    draws): tuning took 23.1 s at the default and 7.0 s every 60 draws (4.8 s every 100),
    for the same 15 leapfrog steps per draw; the chains' draws themselves cost the same. At
    4 chains x 1000 draws, min bulk ESS over seeds 1-3 was 547/557/786 at the default and
    496/694/495 every 60 draws (every 100: 324, seed 1 before the shear of m4log). Small
    models keep nutpie's default: there an estimate costs milliseconds."""
    if adaptation != "low_rank" or n_dim < LARGE_DIM:
        return None
    return LARGE_UPDATE_FREQ


def low_rank_settings(seed, freq: int):
    """nutpie's low-rank NUTS settings with the mass matrix estimated every ``freq`` tuning
    draws, or None if this nutpie has no way to set it."""
    try:
        import_nutpie()
        from nutpie import _lib

        settings = _lib.PyNutsSettings.LowRank(seed)
        tree = settings.as_dict()["settings"]
        if "mass_matrix_update_freq" not in tree["adapt_options"]:
            return None
        tree["adapt_options"]["mass_matrix_update_freq"] = int(freq)
        settings.update_settings(tree)
    except (ImportError, AttributeError, KeyError, TypeError, ValueError):
        return None
    return settings


def sample(compiled, *, adaptation: str, **kwargs) -> tuple[Any, int | None]:
    """(tree, update frequency used or None): ``nutpie.sample(compiled, adaptation=...,
    **kwargs)``, with the low-rank mass matrix updated every :func:`update_freq` tuning draws
    where that differs from nutpie's default (:data:`UPDATE_FREQ`: nutpie's ``sample`` does
    not take that setting, so the sampler is built the way ``nutpie.sample`` builds it)."""
    nutpie = import_nutpie()
    freq = update_freq(compiled.n_dim, adaptation)
    if not freq or not current.usable(UPDATE_FREQ):
        return nutpie.sample(compiled, adaptation=adaptation, **kwargs), None
    started = _low_rank_sampler(compiled, freq, **kwargs)
    try:
        return started.wait(), freq
    except KeyboardInterrupt:  # as nutpie.sample: keep the draws so far
        return started.abort(), freq
    except BaseException:
        started.cancel()
        raise


def _low_rank_sampler(compiled, freq, *, draws, tune, chains, seed, target_accept, **kwargs):
    """A started nutpie background sampler with the mass matrix estimated every ``freq``."""
    from nutpie.sample import _BackgroundSampler

    settings = low_rank_settings(seed, freq)
    settings.update(
        {"num_tune": tune, "num_draws": draws, "num_chains": chains, "target_accept": target_accept}
    )
    # as nutpie.sample: the CPUs this process may use (Python >= 3.13), else all of them
    available = getattr(os, "process_cpu_count", os.cpu_count)() or 1
    return _BackgroundSampler(
        compiled, settings, np.zeros(compiled.n_dim), min(chains, available), **kwargs
    )


# ---------------------------------------------------------------------------- pages
@contextlib.contextmanager
def ordinary_pages() -> Iterator[None]:
    """Within the block, NumPy does not ask the kernel for transparent huge pages for large
    arrays (its ``madvise(MADV_HUGEPAGE)``); NumPy's setting is restored on leaving.

    Why: where the kernel compacts memory to serve such a fault (THP defrag "madvise", as on
    a 2-core VM, docs/performance.md), the first touch of a fresh 320 MB array took 1.5-3.2 s
    against 0.2 s with ordinary pages, and a fit's posterior assembly makes several (the
    predictive and log-likelihood groups of RegMix 512 x 6,000 draws: 10.4-10.7 s with huge
    pages, 4.1 s without). A no-op (:data:`PAGES` off) where NumPy lacks the switch.
    """
    if not current.usable(PAGES):
        yield
        return
    from numpy._core.multiarray import _set_madvise_hugepage

    before = _set_madvise_hugepage(False)
    try:
        yield
    finally:
        _set_madvise_hugepage(before)
