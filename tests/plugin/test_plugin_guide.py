"""docs/plugin-guide.md is tested: every hook and hook argument is in it, every field of
EventType, and every snippet is run somewhere.

The guide's snippets are of three kinds: ``console`` blocks, the commands a plugin author
types (tests/plugin/test_new_plugin.py runs them in a fresh venv and compares the output);
``file=muon/...`` blocks, excerpts of what ``datastore new-plugin muon`` writes (checked
here, verbatim); other ``file=`` blocks, the hand-written plugin of the guide
(tests/plugin/test_external_plugin.py installs and tests it).
"""

import inspect
import re
from pathlib import Path

import attrs
import pytest

from hisparc_datastore.plugin import eventtype, hookspecs
from hisparc_datastore.plugin.scaffold import plugin_names, render

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs/plugin-guide.md"
FENCE = re.compile(r"^```(\w+)(?: file=(\S+))?\n(.*?)^```", re.S | re.M)


def guide_text() -> str:
    return GUIDE.read_text(encoding="utf-8")


def fences() -> list[tuple[str, str | None, str]]:
    """Every fenced block of the guide: (language, file or None, text)."""
    return [(language, name or None, text) for language, name, text in FENCE.findall(guide_text())]


def hooks() -> dict[str, list[str]]:
    """Every hook of the plugin API, with its arguments."""
    return {name: list(inspect.signature(function).parameters)
            for name, function in vars(hookspecs).items()
            if callable(function) and hasattr(function, "hisparc_datastore_spec")}


def test_the_hooks_are_found():
    assert hooks()["datastore_simulate_events"] == ["station", "start", "seconds", "rng"]
    assert "datastore_event_types" in hooks()


@pytest.mark.parametrize("hook", sorted(hooks()))
def test_every_hook_is_documented_with_its_arguments(hook):
    call = f"`{hook}({', '.join(hooks()[hook])})`"
    assert call in guide_text(), f"docs/plugin-guide.md does not document {call}"


@pytest.mark.parametrize("field", [f.name for f in attrs.fields(eventtype.EventType) if f.init])
def test_every_event_type_field_is_documented(field):
    rows = [line for line in guide_text().splitlines() if line.startswith("| `")]
    assert any(f"`{field}`" in row.split(" | ")[0] for row in rows), f"EventType.{field} is not in the guide"


@pytest.mark.parametrize("name", ["Range", "OneOf", "BOOLEAN"])
def test_the_value_checks_are_documented(name):
    assert f"`{name}" in guide_text()


def test_every_snippet_is_of_a_kind_a_test_runs():
    kinds = [(language, name) for language, name, _ in fences()]
    assert kinds, "no snippets found: has the fence syntax changed?"
    for language, name in kinds:
        assert language == "console" or name is not None, (
            f"a {language} snippet without file=: no test runs it")


def test_the_scaffold_excerpts_are_what_new_plugin_writes():
    files = {str(Path("muon", path)): text for path, text in render(plugin_names("muon")).items()}
    excerpts = [(name, text) for _, name, text in fences() if name and name.startswith("muon/")]
    assert excerpts
    for name, text in excerpts:
        assert name in files, f"new-plugin writes no {name}"
        assert text in files[name], f"the guide's excerpt of {name} is not what new-plugin writes"


def test_the_walkthrough_fits_in_a_page():
    text = guide_text()
    start = text.index("## From nothing to a day file")
    end = text.index("\n## ", start + 1)
    assert len(text[start:end].splitlines()) <= 70


def test_every_plugin_of_the_repository_is_wired_as_the_guide_says():
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    folders = sorted(p.name for p in (ROOT / "plugins").iterdir() if (p / "pyproject.toml").is_file())
    assert folders == ["hisparc", "lightning", "weather"]
    assert "## A plugin in this repository" in guide_text()
    makefile = (ROOT / "Makefile").read_text()
    [line] = [line for line in makefile.splitlines() if line.startswith("PLUGINS :=")]
    assert sorted(line.split(":=")[1].split()) == [f"plugins/{name}" for name in folders]
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for name in folders:
        project = tomllib.loads((ROOT / "plugins" / name / "pyproject.toml").read_text())["project"]
        distribution = project["name"]
        assert extras[name] == [distribution], name
        assert distribution in extras["all"], name
