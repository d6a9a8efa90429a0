"""``datastore new-plugin NAME``: a new detector plugin's distribution, ready to install and
test, from the templates in ``template/`` beside this module."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import shlex
import string
import sys
from pathlib import Path

import attrs

from hisparc_datastore.plugin.eventtype import UPLOAD_CODE
from hisparc_datastore.plugin.registry import ENTRY_POINT_GROUP, Registry, load_registry

TEMPLATE = Path(__file__).with_name("template")
# \Z, not $: '$' also matches before a final newline, and 'muon\n' would make broken source.
_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")
_DISTRIBUTION = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?\Z")
# Well within a file name (the folder), an HDF5 node name and a module name.
MAX_NAME = 64
MAX_DISTRIBUTION = 100
MAX_TITLE = 200
CORE_DISTRIBUTION = "hisparc-datastore"


class ScaffoldError(ValueError):
    """A name or code the new plugin cannot have, or a folder that exists already."""


@attrs.frozen
class PluginNames:
    """Every name the new plugin's files use."""

    name: str  # the entry-point name and the table: muon
    code: str  # the upload code: MUO
    distribution: str  # hisparc-datastore-muon
    title: str  # Muon detector events

    @property
    def package(self) -> str:
        return f"datastore_{self.name}"

    def substitutions(self) -> dict[str, str]:
        words = self.name.split("_")
        return {
            "name": self.name, "code": self.code, "distribution": self.distribution,
            "table": self.name, "package": self.package,
            "description": "".join(word.capitalize() for word in words) + "Event",
            "constant": self.name.upper(),
            # The title is free text: each file gets it in its own quoting. A JSON string is
            # a valid Python literal and TOML basic string for printable text.
            "title": self.title,
            "title_literal": json.dumps(self.title, ensure_ascii=False),
            "title_docstring": self.title.replace("\\", "\\\\").replace('"', '\\"'),
            "summary_literal": json.dumps(f"hisparc-datastore plugin: {self.title}", ensure_ascii=False),
        }


def plugin_names(name: str, code: str | None = None, distribution: str | None = None,
                 title: str | None = None) -> PluginNames:
    """The names for plugin ``name``, with the defaults: the upload code is the name's
    first three letters in upper case, the distribution ``hisparc-datastore-NAME``."""
    if len(name) > MAX_NAME:
        raise ScaffoldError(f"plugin name {name[:20]!r}... is {len(name)} characters long: "
                            f"at most {MAX_NAME} (it names the folder, the table and the module)")
    if not _NAME.match(name):
        raise ScaffoldError(f"plugin name {name!r}: use lower-case letters, digits and _, "
                            "beginning with a letter (it names the table and the module)")
    if code is None:
        code = name.replace("_", "")[:3].upper()
        if not UPLOAD_CODE.match(code):
            raise ScaffoldError(f"no upload code follows from {name!r}: give one with --code")
    if not UPLOAD_CODE.match(code):
        raise ScaffoldError(f"upload code {code!r} is not three upper-case characters "
                            "(a letter, then letters or digits)")
    distribution = distribution or f"{CORE_DISTRIBUTION}-{name.replace('_', '-')}"
    if len(distribution) > MAX_DISTRIBUTION or not _DISTRIBUTION.match(distribution):
        raise ScaffoldError(f"distribution name {distribution[:MAX_DISTRIBUTION]!r} is not a valid project "
                            f"name (letters, digits, '.', '-' and '_', at most {MAX_DISTRIBUTION})")
    if title is None:
        title = f"{name.replace('_', ' ').capitalize()} detector events"
    if not title.strip() or len(title) > MAX_TITLE or not title.isprintable():
        raise ScaffoldError(f"title {title[:MAX_TITLE]!r}: give one line of printable text, at most "
                            f"{MAX_TITLE} characters")
    return PluginNames(name, code, distribution, title)


def normalized(distribution: str) -> str:
    """A project name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", distribution).lower()


def check_not_installed(names: PluginNames) -> None:
    """Refuse a distribution, module or entry point that is installed already: ``pip install
    -e`` of the new folder would replace it (the core, or a plugin's event types gone)."""
    wanted = normalized(names.distribution)
    if wanted == CORE_DISTRIBUTION:
        raise ScaffoldError(f"distribution {names.distribution!r} is the datastore's own: installing the "
                            "plugin would replace the core; choose another with --distribution")
    for dist in importlib.metadata.distributions():
        if normalized(dist.metadata["Name"] or "") == wanted:
            raise ScaffoldError(f"distribution {names.distribution!r} is installed already "
                                f"({dist.metadata['Name']} {dist.version}): installing the plugin would "
                                "replace it; choose another name or --distribution")
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry_point.name == names.name:
            owner = entry_point.dist.name if entry_point.dist is not None else entry_point.value
            raise ScaffoldError(f"plugin name {names.name!r} is taken by the installed {owner}: "
                                "choose another name")
    try:
        found = importlib.util.find_spec(names.package)
    except (ImportError, ValueError):
        found = None
    if found is not None:
        raise ScaffoldError(f"module {names.package} exists already ({found.origin}): choose another name")


def render(names: PluginNames) -> dict[Path, str]:
    """Every file of the new distribution: its path in the folder, and its text."""
    values = names.substitutions()
    files = {}
    for source in sorted(TEMPLATE.rglob("*.tmpl")):
        relative = source.relative_to(TEMPLATE).with_suffix("")
        if relative.parts[0] == "package":
            relative = Path(names.package, *relative.parts[1:])
        files[relative] = string.Template(source.read_text(encoding="utf-8")).substitute(values)
    return files


def write_plugin(target: str | os.PathLike, names: PluginNames) -> list[Path]:
    """Write the distribution into the new folder ``target``; the paths written."""
    target = Path(target)
    if os.path.lexists(target):  # a dangling symbolic link too: its target would be created
        what = "is a symbolic link" if target.is_symlink() else "exists already"
        raise ScaffoldError(f"{target} {what}: new-plugin writes into a new folder only")
    written = []
    try:
        for relative, text in render(names).items():
            path = target / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            written.append(path)
    except OSError as exc:
        why = (exc.strerror or str(exc)).lower()
        raise ScaffoldError(f"cannot write {exc.filename or target}: {why}") from None
    return written


def check_unclaimed(names: PluginNames, registry: Registry) -> None:
    """Refuse an upload code or table an installed plugin declares: the datastore would not
    start with both installed."""
    if registry.get(names.code) is not None:
        raise ScaffoldError(f"upload code {names.code} is declared by {registry.owners[names.code]} "
                            "already: choose another with --code")
    from hisparc_datastore.storage.layout import CORE_NODES

    if names.name in CORE_NODES:
        raise ScaffoldError(f"table {names.name!r} is a node the core keeps in every station group: "
                            "choose another name")
    for event_type in registry:
        if event_type.table_name == names.name:
            raise ScaffoldError(f"table {names.name!r} is declared by "
                                f"{registry.owners[event_type.upload_code]} already: choose another name")


def new_plugin_command(name: str, code: str | None, distribution: str | None, title: str | None,
                       directory: str | None) -> int:
    try:
        names = plugin_names(name, code, distribution, title)
        check_not_installed(names)
        check_unclaimed(names, load_registry())
        target = Path(directory or name)
        write_plugin(target, names)
    except ScaffoldError as exc:
        print(f"datastore new-plugin: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {names.distribution} into {target}/: upload code {names.code}, table {names.name}, "
          f"module {names.package}")
    print(f"next: {next_steps(target)}")
    return 0


def next_steps(target: Path) -> str:
    """The commands that install the new plugin with its test extra (pytest), then test it,
    runnable as printed: a relative folder gets ./ (pip reads a bare name as a project on
    the index), an absolute one is left alone, and both are quoted for the shell."""
    folder = str(target) if target.is_absolute() else f"./{target}"
    return f"pip install -e {shlex.quote(folder + '[test]')} && pytest {shlex.quote(folder)}"
