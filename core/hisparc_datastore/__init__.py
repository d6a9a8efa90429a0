"""hisparc-datastore: the ingest framework of the HiSPARC raw datastore."""

from .eventtype import EventType, base64_blob, text_blob
from .hookspecs import SimulatedStation, hookimpl
from .stationevent import station_event

__all__ = ["EventType", "SimulatedStation", "base64_blob", "hookimpl", "station_event", "text_blob"]
__version__ = "0.1.0"
