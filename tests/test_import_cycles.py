"""The core's modules import each other without a cycle, lazily or not: each can be read alone."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import hisparc_datastore

PACKAGE = Path(hisparc_datastore.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The package modules ``path`` imports, anywhere in it (inside functions too)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = ".".join(filter(None, [base, node.module]))
            else:
                base = node.module or ""
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found & known


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports_of(path, set(found)) - {name} for name, path in found.items()}


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


def test_the_graph_sees_absolute_relative_and_lazy_imports():
    edges = graph()
    assert "hisparc_datastore.writer.batch" in edges["hisparc_datastore.writer.service"]
    assert "hisparc_datastore.writer.rebuild" in edges["hisparc_datastore.writer.recovery"]
    assert "hisparc_datastore.ops.status" in edges["hisparc_datastore.cli"]  # imported inside a function


def test_no_module_of_the_core_takes_part_in_an_import_cycle():
    edges = graph()
    assert "hisparc_datastore.writer.service" not in edges["hisparc_datastore.writer.rebuild"]
    assert cycle(edges) is None


def test_every_module_imports_alone():
    # one interpreter, the package forgotten before each module: a module that only imports
    # because another was imported first fails here
    script = (
        "import importlib, sys\n"
        "for name in sys.argv[1:]:\n"
        "    for loaded in [m for m in sys.modules if m.split('.')[0] == 'hisparc_datastore']:\n"
        "        del sys.modules[loaded]\n"
        "    importlib.import_module(name)\n"
    )
    names = modules()
    subprocess.run([sys.executable, "-c", script, *names], check=True, timeout=600)


# -- import direction: lower layers never reach up ---------------------------------------------------

LOW = ("util", "plugin", "codec", "storage", "queue")  # what every service builds on
SERVICES = ("writer", "receiver", "stations")
VIEWS = {"hisparc_datastore.ops.status"}  # what an operator reads; a service never needs it
COMMAND_LINE = "hisparc_datastore.cli"  # dispatches every command, the simulator's too


def layer(module: str) -> str:
    """The subpackage ``module`` is in (or its own name, for a module at the root)."""
    return module.split(".")[1] if "." in module else ""


def wrong_way(edges: dict[str, set[str]]) -> list[tuple[str, str]]:
    """The imports that go against the layers, as (importer, imported)."""
    found = []
    for module, imported in edges.items():
        for other in imported:
            here, there = layer(module), layer(other)
            reaches_up = here in LOW and there in (*SERVICES, "ops", "sim")
            # the testing kit posts as a station does, as the simulator's client
            uses_sim = there == "sim" and here not in ("sim", "testing") and module != COMMAND_LINE
            uses_view = other in VIEWS and here != "ops" and module != COMMAND_LINE
            if reaches_up or uses_sim or uses_view:
                found.append((module, other))
    return sorted(found)


def test_the_direction_check_sees_an_import_that_reaches_up():
    edges = {
        "hisparc_datastore.storage.layout": {"hisparc_datastore.writer.batch"},
        "hisparc_datastore.writer.service": {"hisparc_datastore.sim.simulate", "hisparc_datastore.ops.status",
                                             "hisparc_datastore.storage.layout"},
        "hisparc_datastore.cli": {"hisparc_datastore.sim.simulate", "hisparc_datastore.ops.status"},
    }
    assert wrong_way(edges) == [
        ("hisparc_datastore.storage.layout", "hisparc_datastore.writer.batch"),
        ("hisparc_datastore.writer.service", "hisparc_datastore.ops.status"),
        ("hisparc_datastore.writer.service", "hisparc_datastore.sim.simulate"),
    ]


def test_imports_go_one_way_storage_below_services_sim_and_views_on_top():
    edges = graph()
    assert "hisparc_datastore.sim.simulate" in edges[COMMAND_LINE]  # the check sees the real edges
    assert wrong_way(edges) == []
