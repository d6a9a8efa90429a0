"""hisparc-datastore: the ingest framework of the HiSPARC raw datastore."""

# First, before the imports below take their quarter second: a SIGHUP then must not end a
# service (see _hangup).
from hisparc_datastore import _hangup

_hangup.hold()

from hisparc_datastore.plugin.eventtype import (  # noqa: E402
           BOOLEAN,
           EventType,
           OneOf,
           Range,
           base64_blob,
           boolean_checks,
           text_blob,
)
from hisparc_datastore.plugin.hookspecs import SimulatedStation, hookimpl  # noqa: E402
from hisparc_datastore.plugin.stationevent import station_event  # noqa: E402

__all__ = ["BOOLEAN", "EventType", "OneOf", "Range", "SimulatedStation", "base64_blob", "boolean_checks",
           "hookimpl", "station_event", "text_blob"]
__version__ = "0.1.0"
