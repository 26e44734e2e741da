"""ARCHITECTURE.md's module map names every module of the package, and only modules that exist;
the structure checks of ``make lint`` hold (no module imports another's private names)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _mapped() -> set[str]:
    text = (ROOT / "ARCHITECTURE.md").read_text()
    section = text[text.index("## Modules") : text.index("## Data flow")]
    return set(re.findall(r"^\|[^|]*\| `([^`*]+\.py)` \|", section, re.M))


def test_the_module_map_matches_the_tree():
    package = ROOT / "bayesmix"
    tree = {
        p.relative_to(package).as_posix()
        for p in package.rglob("*.py")
        if p.parent.name != "cli"  # one module per subcommand: `cli/*.py`
        and not (p.parent != package and p.name == "__init__.py" and p.parent.name != "laws")
    }
    mapped = {m for m in _mapped() if not m.startswith("cli/")}
    assert tree - mapped == set(), "modules missing from ARCHITECTURE.md"
    assert mapped - tree == set(), "ARCHITECTURE.md names modules that do not exist"


def test_no_module_imports_another_modules_private_names():
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "check_imports.py"), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout


def test_the_tests_mirror_the_package():
    """Every folder of ``tests/`` is a subpackage of ``bayesmix/`` or ``integration/``, and no
    two test files share a name (pytest's default import mode needs unique basenames)."""
    subpackages = {p.name for p in (ROOT / "bayesmix").iterdir() if (p / "__init__.py").exists()}
    folders = {p.name for p in (ROOT / "tests").iterdir() if p.is_dir() and p.name[0] not in "._"}
    assert folders - subpackages - {"integration"} == set()
    names = [p.name for p in (ROOT / "tests").rglob("test_*.py")]
    assert len(names) == len(set(names))


def test_every_benchmark_is_run_by_make_benchmarks():
    """Each script in benchmarks/ is a line of the Makefile's ``benchmarks`` target (a
    benchmark nothing runs goes stale)."""
    makefile = (ROOT / "Makefile").read_text()
    target = makefile.split("\nbenchmarks:", 1)[1].split("\n\n", 1)[0]
    listed = set(re.findall(r"benchmarks/(\w+\.py)", target))
    scripts = {p.name for p in (ROOT / "benchmarks").glob("*.py")}
    assert scripts - listed == set(), "benchmarks not in `make benchmarks`"
