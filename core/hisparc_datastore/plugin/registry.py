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


class PluginConflict(Exception):
    """Two plugins claim the same upload code or table name."""


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
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    for plugin in (*DEFAULT_PLUGINS, *extra_plugins):
        pm.register(plugin)
    return pm


def plugin_name(pm: pluggy.PluginManager, plugin: object) -> str:
    """The name an operator recognises: the distribution for entry points."""
    for dist_plugin, dist in pm.list_plugin_distinfo():
        if dist_plugin is plugin:
            return f"{dist.project_name} {dist.version}"
    return getattr(plugin, "__name__", None) or type(plugin).__name__


def build_registry(pm: pluggy.PluginManager) -> Registry:
    """Collect every plugin's event types; a code or table claimed twice stops start-up."""
    by_code: dict[str, EventType] = {}
    owners: dict[str, str] = {}
    table_owner: dict[str, str] = {}
    for impl in pm.hook.datastore_event_types.get_hookimpls():
        owner = plugin_name(pm, impl.plugin)
        for event_type in impl.function() or ():
            code = event_type.upload_code
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
