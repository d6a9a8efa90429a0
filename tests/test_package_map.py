"""Each subpackage's ``__init__`` maps its modules, one line each (``name``  what it does):
a reader finds where a module fits without opening the folder, and the map stays true to it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import hisparc_datastore

PACKAGE = Path(hisparc_datastore.__file__).parent
SUBPACKAGES = sorted(path.parent for path in PACKAGE.glob("*/__init__.py"))
_ENTRY = re.compile(r"^``(\w+)/?``\s{2,}", re.MULTILINE)  # aligned: ``name``  text


def mapped(init: Path) -> set[str]:
    """The names the docstring's map lists, one per line starting with ``name``."""
    module = compile(init.read_text(), str(init), "exec")
    doc = module.co_consts[0] if module.co_consts and isinstance(module.co_consts[0], str) else ""
    return set(_ENTRY.findall(doc))


def present(folder: Path) -> set[str]:
    """Its modules, and folders of data that ship inside it (such as plugin/template)."""
    modules = {path.stem for path in folder.glob("*.py") if path.name != "__init__.py"}
    data = {path.name for path in folder.iterdir()
            if path.is_dir() and path.name != "__pycache__" and not (path / "__init__.py").exists()}
    return modules | data


def test_every_subpackage_is_found():
    assert {path.name for path in SUBPACKAGES} >= {"codec", "ops", "plugin", "queue", "receiver", "sim",
                                                    "stations", "storage", "testing", "util", "writer"}


@pytest.mark.parametrize("folder", SUBPACKAGES, ids=lambda path: path.name)
def test_the_init_maps_each_module_present_and_none_that_is_gone(folder):
    shown, there = mapped(folder / "__init__.py"), present(folder)
    assert not there - shown, f"{folder.name}/__init__.py does not map {sorted(there - shown)}"
    assert not shown - there, f"{folder.name}/__init__.py maps {sorted(shown - there)}, which are not there"


def test_the_map_is_read_from_the_docstring():
    assert mapped(PACKAGE / "plugin" / "__init__.py") >= {"eventtype", "registry", "scaffold"}
