"""``datastore new-plugin NAME``: a new detector plugin's distribution, ready to install and
test, from the templates in ``template/`` beside this module."""

from __future__ import annotations

import os
import re
import shlex
import string
import sys
from pathlib import Path

import attrs

from hisparc_datastore.plugin.eventtype import UPLOAD_CODE
from hisparc_datastore.plugin.registry import Registry, load_registry

TEMPLATE = Path(__file__).with_name("template")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


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
            "title": self.title, "table": self.name, "package": self.package,
            "description": "".join(word.capitalize() for word in words) + "Event",
            "constant": self.name.upper(),
        }


def plugin_names(name: str, code: str | None = None, distribution: str | None = None,
                 title: str | None = None) -> PluginNames:
    """The names for plugin ``name``, with the defaults: the upload code is the name's
    first three letters in upper case, the distribution ``hisparc-datastore-NAME``."""
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
    distribution = distribution or f"hisparc-datastore-{name.replace('_', '-')}"
    if not re.match(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$", distribution):
        raise ScaffoldError(f"distribution name {distribution!r} is not a valid project name")
    title = title or f"{name.replace('_', ' ').capitalize()} detector events"
    return PluginNames(name, code, distribution, title)


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
    if target.exists():
        raise ScaffoldError(f"{target} exists already: new-plugin writes into a new folder only")
    written = []
    for relative, text in render(names).items():
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
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
