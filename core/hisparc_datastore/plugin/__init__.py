"""The plugin API: what a detector plugin declares, the hooks it implements, and the
registry that finds the installed plugins (entry-point group ``hisparc_datastore``).

``eventtype``     ``EventType``: one event type's upload code, table and columns, checked at load
``hookspecs``     the hooks a plugin implements, ``hookimpl``, ``SimulatedStation``
``registry``      finds the installed plugins and collects their event types (``Registry``)
``stationevent``  ``station_event``: an event dict as the station software builds it
"""

from hisparc_datastore.plugin.eventtype import EventType, base64_blob, text_blob
from hisparc_datastore.plugin.hookspecs import SimulatedStation, hookimpl, hookspec
from hisparc_datastore.plugin.registry import PluginConflict, Registry, get_plugin_manager, load_registry
from hisparc_datastore.plugin.stationevent import station_event

__all__ = [
    "EventType", "PluginConflict", "Registry", "SimulatedStation", "base64_blob",
    "get_plugin_manager", "hookimpl", "hookspec", "load_registry", "station_event", "text_blob",
]
