"""hisparc-datastore: the ingest framework of the HiSPARC raw datastore."""

from hisparc_datastore.plugin.eventtype import (
           BOOLEAN,
           EventType,
           OneOf,
           Range,
           base64_blob,
           boolean_checks,
           text_blob,
)
from hisparc_datastore.plugin.hookspecs import SimulatedStation, hookimpl
from hisparc_datastore.plugin.stationevent import station_event

__all__ = ["BOOLEAN", "EventType", "OneOf", "Range", "SimulatedStation", "base64_blob", "boolean_checks",
           "hookimpl", "station_event", "text_blob"]
__version__ = "0.1.0"
