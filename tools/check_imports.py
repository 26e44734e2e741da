#!/usr/bin/env python3
"""No module of bayesmix imports another module's private names (``from bayesmix.x import _y``).

``lint-imports`` (the import-linter contracts in pyproject.toml) checks the layers and that no
imports form a cycle; this checks what import-linter cannot: a private name (one leading
underscore) is used only inside its module, so the module can change it without breaking
another. A name two modules need is public, in the lower of the two (ARCHITECTURE.md).

usage: python tools/check_imports.py [ROOT]   (exit status 1 and one line per private import)
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path


def modules(package: Path) -> dict[str, Path]:
    out = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def private_imports(package: Path) -> list[str]:
    mods = modules(package)
    found = []
    for name, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.ImportFrom) or node.level or not node.module:
                continue
            if node.module.split(".")[0] != package.name:
                continue
            for alias in node.names:
                private = alias.name.startswith("_") and not alias.name.startswith("__")
                target = f"{node.module}.{alias.name}"
                source = target if target in mods else node.module
                if private and source != name:
                    rel = path.relative_to(package.parent)
                    found.append(f"{rel}:{node.lineno}: imports {alias.name} from {source}")
    return found


def main(argv: list[str]) -> int:
    root = Path(argv[1] if len(argv) > 1 else ".")
    found = private_imports(root / "bayesmix")
    for line in found:
        print(line)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
