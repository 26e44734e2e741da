"""The README's 5-minute start uses files that are shipped, and its links resolve."""

from __future__ import annotations

import re
from pathlib import Path

import bayesmix as bm
from bayesmix.data.mixtures import read_mixtures

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_quickstart_data_is_shipped_and_valid():
    runs = bm.load(ROOT / "examples" / "data" / "runs.csv")
    assert runs.n_runs == 24 and runs.train_domains == ("web", "code", "books")
    cands = read_mixtures(ROOT / "examples" / "data" / "candidates.csv", runs.train_domains)
    assert len(cands) == 3
    assert "examples/data/runs.csv" in README and "candidates.csv" in README


def test_readme_is_a_first_read_and_its_links_resolve():
    assert len(README.splitlines()) < 250
    for target in re.findall(r"\]\(((?!https?://)[^)]+)\)", README):
        assert (ROOT / target).exists(), target
