"""What a station sent, as bytes, into plain data and back: nothing here builds an object
a pickle names.

``plainpickle``  interprets pickle opcodes into plain data only, at a cost bounded by its size
``allowlist``    the few globals a station pickle may name, and how each is called
``decoding``     uploads and queue files: decoded, checked (``Upload``), written back
"""

from hisparc_datastore.codec.decoding import (
    DecodeError,
    Upload,
    event_datetime,
    parse_event_list,
    parse_queue_file,
)
from hisparc_datastore.codec.plainpickle import NotPlainData, PickleError, load_plain

__all__ = [
    "DecodeError", "NotPlainData", "PickleError", "Upload", "event_datetime", "load_plain",
    "parse_event_list", "parse_queue_file",
]
