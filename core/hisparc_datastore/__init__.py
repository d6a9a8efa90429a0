"""hisparc-datastore: the ingest framework of the HiSPARC raw datastore."""

from hisparc_datastore.plugin.eventtype import EventType, base64_blob, text_blob
from hisparc_datastore.plugin.hookspecs import SimulatedStation, hookimpl
from hisparc_datastore.plugin.stationevent import station_event

__all__ = ["EventType", "SimulatedStation", "base64_blob", "hookimpl", "station_event", "text_blob"]
__version__ = "0.1.0"
