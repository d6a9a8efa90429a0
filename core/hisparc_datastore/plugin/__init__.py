"""The plugin API: what a detector plugin declares, the hooks it implements, and the
registry that finds the installed plugins (entry-point group ``hisparc_datastore``).

``eventtype``     ``EventType``: one event type's upload code, table and columns, checked at load
``hookspecs``     the hooks a plugin implements, ``hookimpl``, ``SimulatedStation``
``registry``      finds the installed plugins and collects their event types (``Registry``)
``stationevent``  ``station_event``: an event dict as the station software builds it
``scaffold``      ``datastore new-plugin``: a new plugin's distribution, ready to install and test
``template/``     the files ``scaffold`` fills in: pyproject, package, README, tests
"""

from hisparc_datastore.plugin.eventtype import (
    BOOLEAN,
    EventType,
    OneOf,
    Range,
    base64_blob,
    boolean_checks,
    text_blob,
)
from hisparc_datastore.plugin.hookspecs import SimulatedStation, hookimpl, hookspec
from hisparc_datastore.plugin.registry import (
    PluginConflict,
    PluginError,
    PluginLoadError,
    Registry,
    get_plugin_manager,
    load_registry,
)
from hisparc_datastore.plugin.stationevent import station_event

__all__ = [
    "BOOLEAN", "EventType", "OneOf", "PluginConflict", "PluginError", "PluginLoadError", "Range",
    "Registry", "SimulatedStation",
    "base64_blob", "boolean_checks",
    "get_plugin_manager", "hookimpl", "hookspec", "load_registry", "station_event", "text_blob",
]
