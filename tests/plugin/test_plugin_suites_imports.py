"""The three plugins' suites, and the suite new-plugin writes, use the public testing kit and
the plugin API only: what an outside plugin's suite can use is enough for ours."""

import ast
from pathlib import Path

import pytest

from hisparc_datastore.plugin.scaffold import plugin_names, render

ROOT = Path(__file__).resolve().parents[2]
PUBLIC = {"hisparc_datastore", "hisparc_datastore.testing"}


def core_imports(source: str) -> set[str]:
    """Every module of the core that ``source`` imports."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            # "from hisparc_datastore import writer" imports a module too
            found |= {f"{node.module}.{alias.name}" for alias in node.names
                      if node.module == "hisparc_datastore" and not alias.name[0].isupper()
                      and alias.name not in ("hookimpl", "station_event", "text_blob", "base64_blob",
                                             "boolean_checks")}
    return {name for name in found if name.split(".")[0] == "hisparc_datastore"}


def test_the_check_sees_an_internal_import():
    assert core_imports("from hisparc_datastore.writer import Writer\nimport hisparc_datastore.testing") == {
        "hisparc_datastore.writer", "hisparc_datastore.testing"}
    assert core_imports("from hisparc_datastore import cli") == {
        "hisparc_datastore", "hisparc_datastore.cli"}


SUITES = sorted(ROOT.glob("plugins/*/tests/*.py"))


@pytest.mark.parametrize("path", SUITES, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_plugin_suites_import_only_the_kit_and_the_api(path):
    assert core_imports(path.read_text(encoding="utf-8")) <= PUBLIC


def test_the_suites_are_found():
    assert len(SUITES) >= 4


def test_the_new_plugin_suite_imports_only_the_kit_and_the_api():
    files = render(plugin_names("muon"))
    sources = [text for path, text in files.items() if path.suffix == ".py"]
    assert len(sources) == 3
    for source in sources:
        assert core_imports(source) <= PUBLIC
