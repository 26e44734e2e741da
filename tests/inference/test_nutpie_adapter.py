"""The adapter to nutpie's, numba's and NumPy's internals: the fast paths are on with the tested
nutpie, and off, with one warning saying what and why, when the version is outside that range,
an internal is missing or nutpie is absent; the fit then takes the public path."""

from __future__ import annotations

import sys
import tomllib
import warnings
from pathlib import Path

import numpy as np
import pytest

from bayesmix.inference import compile_cache
from bayesmix.inference import nutpie_adapter as adapter
from bayesmix.inference.nutpie_adapter import (
    DISK_CACHE,
    FAST_PATHS,
    IMPORT,
    PAGES,
    UPDATE_FREQ,
    Adapter,
    SamplerFallbackWarning,
)

ROOT = Path(__file__).resolve().parents[2]


def test_the_tested_range_is_the_bound_in_pyproject_and_holds_the_installed_nutpie():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert adapter.tested_range() in deps  # "nutpie>=0.16,<0.17"
    assert adapter.tested(adapter.nutpie_version())
    low, high = adapter.TESTED_NUTPIE
    assert adapter.tested(f"{low[0]}.{low[1]}.0") and not adapter.tested(f"{high[0]}.{high[1]}.0")
    for version in ("0.15.9", "1.0.0", "dev", None):
        assert not adapter.tested(version)


def test_with_the_tested_nutpie_every_fast_path_is_on_without_a_warning():
    state = Adapter.detect()
    with warnings.catch_warnings():
        warnings.simplefilter("error", SamplerFallbackWarning)
        assert all(state.usable(path) for path in FAST_PATHS)
    assert state.status() == dict.fromkeys(state.status())  # every path: None (on)
    assert adapter.choose_sampler("nutpie") == "nutpie"


def test_outside_the_tested_versions_the_nutpie_paths_are_off_with_one_warning():
    state = Adapter.detect("0.99.1")
    with pytest.warns(SamplerFallbackWarning) as caught:
        assert not state.usable(DISK_CACHE)
        assert not state.usable(UPDATE_FREQ) and not state.usable(IMPORT)
    assert len(caught) == 1  # one warning for the three paths turned off for one reason
    text = str(caught[0].message)
    for part in (IMPORT, DISK_CACHE, UPDATE_FREQ, "nutpie 0.99.1", adapter.tested_range()):
        assert part in text
    assert "nutpie.compile_pymc_model" in text  # what the fit does instead
    with warnings.catch_warnings():
        warnings.simplefilter("error", SamplerFallbackWarning)
        assert state.usable(PAGES)  # NumPy's switch does not depend on nutpie


def test_a_missing_internal_turns_its_path_off_and_names_it(monkeypatch):
    adapter.import_nutpie()
    monkeypatch.delattr(sys.modules["nutpie.compile_pymc"], "_compute_shapes")
    state = Adapter.detect()
    with pytest.warns(SamplerFallbackWarning, match=r"compile_pymc\._compute_shapes is missing"):
        assert not state.usable(DISK_CACHE)
    assert "_compute_shapes" in (state.status()[DISK_CACHE] or "")
    with warnings.catch_warnings():
        warnings.simplefilter("error", SamplerFallbackWarning)
        assert state.usable(UPDATE_FREQ)  # the other paths stay on


def test_without_nutpie_fits_use_pymcs_sampler_with_one_warning(monkeypatch):
    monkeypatch.setattr(adapter, "current", Adapter.detect(installed=False))
    with pytest.warns(SamplerFallbackWarning, match="nutpie is not installed") as caught:
        assert adapter.choose_sampler("nutpie") == "pymc"
        assert adapter.choose_sampler("nutpie") == "pymc"
    assert len(caught) == 1
    assert adapter.choose_sampler("pymc") == "pymc"


@pytest.mark.slow
def test_with_the_disk_cache_off_a_model_is_compiled_and_nothing_is_stored(tmp_path, monkeypatch):
    """nutpie outside the tested versions: compile_model takes nutpie.compile_pymc_model, reads
    and writes no entry, and the compiled model computes the density."""
    from test_compile_cache import tiny_model

    monkeypatch.setenv("BAYESMIX_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(adapter, "current", Adapter.detect("0.99.1"))
    misses = compile_cache.stats["misses"]
    with pytest.warns(SamplerFallbackWarning, match=DISK_CACHE):
        compiled = compile_cache.compile_model(tiny_model(6))
    assert compile_cache.stats["misses"] == misses + 1
    assert not compile_cache.entries()
    logp, grad = adapter.logp_and_grad(compiled, np.zeros(compiled.n_dim))
    assert np.isfinite(logp) and grad.shape == (compiled.n_dim,)


def test_ordinary_pages_switches_numpy_huge_pages_off_and_restores_them():
    """fit() assembles its posterior with NumPy's huge-page advice off (a speed setting,
    docs/performance.md); NumPy's own setting comes back afterwards, also after an error."""
    from numpy._core.multiarray import _set_madvise_hugepage

    original = _set_madvise_hugepage(True)
    try:
        with adapter.ordinary_pages():
            assert _set_madvise_hugepage(False) is False  # off inside the block
        assert _set_madvise_hugepage(True) is True  # restored on leaving
        with pytest.raises(RuntimeError), adapter.ordinary_pages():
            raise RuntimeError("boom")
        assert _set_madvise_hugepage(True) is True  # restored after an error too
    finally:
        _set_madvise_hugepage(original)


def test_without_numpys_switch_ordinary_pages_leaves_numpy_alone_with_a_warning(monkeypatch):
    import numpy._core.multiarray as multiarray

    monkeypatch.delattr(multiarray, "_set_madvise_hugepage")
    monkeypatch.setattr(adapter, "current", Adapter.detect())
    with pytest.warns(SamplerFallbackWarning, match="huge-page advice"), adapter.ordinary_pages():
        pass
    with warnings.catch_warnings():
        warnings.simplefilter("error", SamplerFallbackWarning)
        with adapter.ordinary_pages():  # warned once
            pass
