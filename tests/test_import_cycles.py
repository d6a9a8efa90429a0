"""The core's modules import each other without a cycle, lazily or not: each can be read alone."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import hisparc_datastore

PACKAGE = Path(hisparc_datastore.__file__).parent


def imports_of(path: Path) -> set[str]:
    """The package modules ``path`` imports, anywhere in it (inside functions too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("hisparc_datastore."):
            found.add(node.module.split(".")[1])
    return found


def graph() -> dict[str, set[str]]:
    modules = {path.stem: path for path in PACKAGE.glob("*.py")}
    modules.update({path.name: path / "__init__.py" for path in PACKAGE.iterdir()
                    if (path / "__init__.py").exists()})
    return {name: imports_of(path) & modules.keys() - {name} for name, path in modules.items()
            if name != "__init__"}


def cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 on the path, 2 done
    path: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        path.append(name)
        for other in sorted(edges.get(name, ())):
            if state.get(other) == 1:
                return path[path.index(other):] + [other]
            if other not in state and (found := visit(other)):
                return found
        state[name] = 2
        path.pop()
        return None

    for name in sorted(edges):
        if name not in state and (found := visit(name)):
            return found
    return None


def test_the_finder_sees_a_cycle():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_of_the_core_takes_part_in_an_import_cycle():
    edges = graph()
    assert {"writer", "batch", "recovery", "rebuild"} <= edges.keys()
    assert "writer" not in edges["rebuild"]  # the cycle the writer's split removed
    assert cycle(edges) is None


def test_the_writer_parts_import_alone():
    for name in ("writer", "batch", "recovery", "rebuild", "tidying", "dayfiles", "storeerrors"):
        subprocess.run([sys.executable, "-c", f"import hisparc_datastore.{name}"], check=True)
