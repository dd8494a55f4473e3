"""No import cycle among the project's modules: a cycle ties two jobs into one, and breaks lazy imports.

The graph is read with ``ast`` (no module is imported), and counts every import, also the ones
inside functions: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("lungdemo", "train")


def module_names(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    """Dotted name -> file for every module of the packages (a package's ``__init__`` under its own name)."""
    found = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module an ``ImportFrom`` names (relative imports included)."""
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def import_graph(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    """Module -> the project modules it imports; ``from pkg import mod`` is an edge to ``pkg.mod`` alone.

    The parent package that Python also runs on an import is left out: the project's ``__init__`` files
    import nothing of the project (the test checks it).
    """
    modules = module_names(root, packages)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                source = _resolve(node, name, path.name == "__init__.py")
                for alias in node.names:  # a submodule by its own name, anything else from the module itself
                    targets.add(f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), each sorted; empty when acyclic."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(groups)


def test_the_project_has_no_import_cycle() -> None:
    graph = import_graph(ROOT)
    assert "lungdemo.decode" in graph and "train.data" in graph  # the walk saw the packages
    assert graph["lungdemo"] == graph["train"] == set()  # why leaving out the implicit parent import is safe
    assert find_cycles(graph) == []


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")


@pytest.mark.parametrize(
    ("a_imports", "b_imports"),
    [
        ("from pkg.b import thing\n", "from pkg.a import other\n"),
        ("import pkg.b\n", "def f():\n    from pkg import a  # a lazy import is still an edge\n"),
        ("from . import b\n", "from .a import other\n"),
    ],
    ids=["from-import", "lazy-module-import", "relative"],
)
def test_a_cycle_is_found(tmp_path: Path, a_imports: str, b_imports: str) -> None:
    _write(tmp_path, {"pkg/__init__.py": "", "pkg/a.py": a_imports, "pkg/b.py": b_imports})
    _write(tmp_path, {"pkg/c.py": "import pkg.a\n"})
    graph = import_graph(tmp_path, ("pkg",))
    assert graph["pkg.c"] == {"pkg.a"}
    assert find_cycles(graph) == [["pkg.a", "pkg.b"]]


def test_a_chain_is_not_a_cycle(tmp_path: Path) -> None:
    _write(tmp_path, {"pkg/__init__.py": "", "pkg/a.py": "import os\nimport pkg.b\n"})
    _write(tmp_path, {"pkg/b.py": "from pkg import c\n", "pkg/c.py": "import json\n"})
    graph = import_graph(tmp_path, ("pkg",))
    assert graph == {"pkg": set(), "pkg.a": {"pkg.b"}, "pkg.b": {"pkg.c"}, "pkg.c": set()}
    assert find_cycles(graph) == []
