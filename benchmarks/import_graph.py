"""Prints which of raynerf's top-level packages import which (imports inside functions
included), in layer order, and exits non-zero on an import that points up a layer.

    python benchmarks/import_graph.py [PACKAGE_DIR]      # default: the raynerf/ beside this folder

The layers, bottom to top: the foundation modules (config, errors, hostmem, mesh, storage), then
data -> model -> training -> render -> eval -> distributed -> bench -> cli. A package may
import its own layer and those below it.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

LAYERS = (
    ("errors", "config", "hostmem", "mesh", "storage"),
    ("data",),
    ("model",),
    ("training",),
    ("render",),
    ("eval", "export"),
    ("view",),
    ("distributed",),
    ("bench",),
    ("cli",),
)
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def imported_packages(tree: ast.AST) -> set[str]:
    """The raynerf top-level packages a module's imports name (``raynerf.X...`` -> X)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "raynerf" and len(parts) > 1:
                found.add(parts[1])
    return found


def import_graph(package_dir: Path) -> dict[str, set[str]]:
    """``{package: packages it imports}`` over the top-level packages of ``package_dir``
    (a module ``x.py`` counts as the package ``x``)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for path in sorted(package_dir.rglob("*.py")):
        top = path.relative_to(package_dir).parts[0].removesuffix(".py")
        if top == "__init__":
            continue
        graph[top] |= imported_packages(ast.parse(path.read_text())) - {top}
    return dict(graph)


def upward_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """``(importer, imported)`` pairs that point to a higher layer or to an unknown one."""
    return sorted(
        (a, b)
        for a, targets in graph.items()
        for b in targets
        if RANK.get(a, -1) < RANK.get(b, len(LAYERS)) or a not in RANK
    )


def main(argv: list[str]) -> int:
    package_dir = Path(argv[0]) if argv else Path(__file__).resolve().parents[1] / "raynerf"
    graph = import_graph(package_dir)
    for name in sorted(graph, key=lambda n: (RANK.get(n, -1), n)):
        print(f"{name:12s} -> {', '.join(sorted(graph[name], key=lambda n: RANK.get(n, -1))) or '(nothing)'}")
    bad = upward_imports(graph)
    for a, b in bad:
        print(f"upward import: {a} -> {b}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
