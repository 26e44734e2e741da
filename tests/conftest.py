"""Shared fixtures: the real proxy-run data in ``../shared/data`` (never copied into the repo)."""

from __future__ import annotations

from pathlib import Path

import pytest

#: ``<repository>/../shared/data``, computed from this file so no machine path is written down.
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to the shared real data (RegMix, Ye et al.); skips the test when it is absent."""
    if not (SHARED_DATA / "regmix").is_dir() or not (SHARED_DATA / "mixinglaws").is_dir():
        pytest.skip("real data absent: ../shared/data/regmix and ../shared/data/mixinglaws "
                    "(relative to the repository root) are needed for this test")
    return SHARED_DATA
