"""Finds the installed detector plugins and collects the event types they declare."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType

import attrs
import pluggy

from hisparc_datastore.plugin import hookspecs
from hisparc_datastore.plugin.eventtype import EventType

ENTRY_POINT_GROUP = "hisparc_datastore"

#: Plugins that ship inside the core distribution. There are none today: every
#: detector family is a distribution of its own, found like any external plugin.
DEFAULT_PLUGINS: tuple = ()


class PluginError(Exception):
    """An installed plugin the datastore cannot use; the message names it."""


class PluginConflict(PluginError):
    """Two plugins claim the same upload code or table name, or one claims the core's."""


class PluginLoadError(PluginError):
    """A plugin's module fails to import, or declares an event type that is refused."""


@attrs.frozen
class Registry:
    """Every event type the installed plugins declare, by upload code."""

    by_code: Mapping[str, EventType] = attrs.field(converter=lambda m: MappingProxyType(dict(m)))
    owners: Mapping[str, str] = attrs.field(converter=lambda m: MappingProxyType(dict(m)))

    def get(self, upload_code: str) -> EventType | None:
        return self.by_code.get(upload_code)

    def __iter__(self):
        return iter(self.by_code.values())

    def __len__(self) -> int:
        return len(self.by_code)


def get_plugin_manager(extra_plugins: Iterable[object] = (), *,
                       load_installed: bool = True) -> pluggy.PluginManager:
    """Build the plugin manager: hook specs, entry-point plugins (unless not
    ``load_installed``: a test of one plugin alone), then ``extra_plugins``."""
    pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
    pm.add_hookspecs(hookspecs)
    if load_installed:
        try:
            pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
        except Exception as exc:  # noqa: BLE001 - whatever a plugin raises, name the plugin
            raise PluginLoadError(_failed_entry_point(exc)) from exc
    for plugin in (*DEFAULT_PLUGINS, *extra_plugins):
        pm.register(plugin)
    return pm


def _failed_entry_point(exc: Exception) -> str:
    """Which installed plugin raised ``exc`` when loaded, as one line. A failed import leaves
    no module behind, so loading each entry point again finds the one that fails."""
    import importlib.metadata

    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            entry_point.load()
        except Exception as again:  # noqa: BLE001
            dist = entry_point.dist
            who = f"{dist.name} {dist.version}" if dist is not None else entry_point.value
            return (f"plugin {who} ({entry_point.name} = {entry_point.value}) cannot be loaded: "
                    f"{_one_line(again)}")
    return f"a plugin cannot be loaded: {_one_line(exc)}"


def _one_line(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if not isinstance(exc, ValueError) else text


def plugin_name(pm: pluggy.PluginManager, plugin: object) -> str:
    """The name an operator recognises: the distribution for entry points."""
    for dist_plugin, dist in pm.list_plugin_distinfo():
        if dist_plugin is plugin:
            return f"{dist.project_name} {dist.version}"
    return getattr(plugin, "__name__", None) or type(plugin).__name__


def build_registry(pm: pluggy.PluginManager) -> Registry:
    """Collect every plugin's event types; a code or table claimed twice stops start-up."""
    # Here, not at the top: storage.layout imports the plugin package.
    from hisparc_datastore.storage.layout import CORE_NODES

    by_code: dict[str, EventType] = {}
    owners: dict[str, str] = {}
    table_owner: dict[str, str] = {}
    for impl in pm.hook.datastore_event_types.get_hookimpls():
        owner = plugin_name(pm, impl.plugin)
        for event_type in impl.function() or ():
            code = event_type.upload_code
            if event_type.table_name in CORE_NODES:
                raise PluginConflict(
                    f"{owner}: event type {code} names its table {event_type.table_name!r}, a node the "
                    f"core keeps in every station group ({', '.join(sorted(CORE_NODES))}): "
                    "choose another table_name"
                )
            if code in by_code:
                raise PluginConflict(
                    f"upload code {code} is declared by both {owners[code]} and {owner}"
                )
            if event_type.table_name in table_owner:
                raise PluginConflict(
                    f"table {event_type.table_name!r} is declared by both "
                    f"{table_owner[event_type.table_name]} and {owner}"
                )
            by_code[code] = event_type
            owners[code] = owner
            table_owner[event_type.table_name] = owner
    return Registry(by_code, owners)


def load_registry(extra_plugins: Iterable[object] = ()) -> Registry:
    """The registry of everything installed (plus ``extra_plugins``, for tests)."""
    return build_registry(get_plugin_manager(extra_plugins))
