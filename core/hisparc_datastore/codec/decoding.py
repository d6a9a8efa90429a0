"""Station pickles and queue files: decoded into plain data, checked, and written back."""

from __future__ import annotations

import datetime
import io
import pickle
from typing import Any

import attrs

from hisparc_datastore.codec.plainpickle import MAX_INT_BITS, NotPlainData, PickleError, load_plain
from hisparc_datastore.storage.clusters import cluster_problem
from hisparc_datastore.util.brief import brief


class DecodeError(ValueError):
    """A payload or queue file that is not a well-formed station message."""


class ForbiddenPickle(DecodeError):
    """A pickle that builds anything but plain station data (a class, a set, a cycle, ...)."""


MAX_STATION_ID = 2**31 - 1

#: Containers in an uploaded event list: the list, an event, its header or datalist, a data item.
EVENT_LIST_DEPTH = 4
#: A queue file wraps the event list in one more dict.
QUEUE_FILE_DEPTH = EVENT_LIST_DEPTH + 1


def loads(payload: bytes, max_depth: int = QUEUE_FILE_DEPTH) -> Any:
    """Unpickle Python 2 or 3 station data into plain data, at a cost bounded by its size.

    See :mod:`.plainpickle` for what is refused. Python 2 ``str`` objects
    are decoded as latin-1: it maps each byte to one character, so nothing
    is lost, and a Python 2 ``datetime``'s state is such a string.
    """
    try:
        return load_plain(payload, max_depth)
    except NotPlainData as exc:
        raise ForbiddenPickle(str(exc)) from None
    except PickleError as exc:
        raise DecodeError(f"cannot unpickle: {exc}") from None
    except (MemoryError, RecursionError) as exc:
        raise DecodeError(f"cannot unpickle: {type(exc).__name__}") from None


def dumps(value: Any) -> bytes:
    """Pickle plain data the way the receiver writes queue files."""
    return pickle.dumps(value, protocol=4)


#: The first key of every queue file this package writes: the event list in it was read by the
#: bounded reader (or built here), so it is plain data that Python's C unpickler reads at a cost
#: bounded by its size, many times faster than the bounded reader. A station cannot put the key
#: first: it sends only the event list, and the receiver writes the dict around it.
CHECKED_KEY = "checked_plain_data"
_CHECKED = b"}\x94(\x8c" + bytes([len(CHECKED_KEY)]) + CHECKED_KEY.encode() + b"\x94\x88"
_FRAMED = 11  # PROTO 4 (2 bytes), FRAME and its 8-byte length


def _checked(payload: bytes) -> bool:
    """A queue file this package wrote: a protocol 4 pickle whose dict opens with CHECKED_KEY."""
    return payload[:2] == b"\x80\x04" and (
        payload[2:2 + len(_CHECKED)] == _CHECKED
        or (payload[2:3] == b"\x95" and payload[_FRAMED:_FRAMED + len(_CHECKED)] == _CHECKED))


class _PlainUnpickler(pickle.Unpickler):
    """The C unpickler, naming no global but ``datetime.datetime``: for checked queue files."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("datetime", "datetime"):
            return datetime.datetime
        raise pickle.UnpicklingError(f"a checked queue file names {brief(module)}.{brief(name)}")


_LEAVES = frozenset({str, bytes, float, bool, type(None), datetime.datetime})


def _plain_walk(value: Any, depth: int, budget: int, seen: set[int] | None = None) -> int:
    """Check that ``value`` is what the bounded reader builds: a tree of lists and text-keyed
    dicts no deeper than ``depth`` holding plain leaves. Returns ``budget`` less the entries
    walked, or -1 when it is not, when it holds more entries than ``budget``, or when a
    container is reachable twice (``seen`` holds the ids of those walked): the bounded reader
    then copies what is shared, so that nothing downstream sees a change through another
    reference."""
    if seen is None:
        seen = set()
    kind = type(value)
    if kind is dict:
        for key in value:
            if type(key) is not str:
                return -1
        items = value.values()
    elif kind is list:
        items = value
    else:
        return -1
    budget -= len(items)
    if budget < 0:
        return -1
    for item in items:
        kind = type(item)
        if kind in _LEAVES:
            continue
        if kind is int:
            if item.bit_length() > MAX_INT_BITS:
                return -1
            continue
        if depth <= 1 or id(item) in seen:
            return -1
        seen.add(id(item))
        budget = _plain_walk(item, depth - 1, budget, seen)
        if budget < 0:
            return -1
    return budget


def _load_queue_file(payload: bytes) -> Any:
    if _checked(payload):
        try:
            data = _PlainUnpickler(io.BytesIO(payload)).load()
        except Exception:  # noqa: BLE001 - not what this package writes after all
            data = None
        # Checked again, in one walk: the key promises plain data, it does not prove it.
        # Every entry of a file this package wrote costs at least a byte of it.
        if type(data) is dict and _plain_walk(data, QUEUE_FILE_DEPTH, len(payload)) >= 0:
            del data[CHECKED_KEY]
            return data
    # Anything else, or a file that broke the key's promise: the bounded reader gives the verdict.
    return loads(payload, QUEUE_FILE_DEPTH)


@attrs.frozen
class Upload:
    """One station's batch of events, as a queue file holds it."""

    station_id: int = attrs.field(validator=attrs.validators.instance_of(int))
    cluster: str = attrs.field(validator=attrs.validators.instance_of(str))
    event_list: list = attrs.field(validator=attrs.validators.instance_of(list))

    def to_queue_bytes(self) -> bytes:
        """The queue file: the event list must be plain data (decoded by :func:`loads` or built
        from plain values), which the first key promises to the writer."""
        return dumps({CHECKED_KEY: True, "station_id": self.station_id, "cluster": self.cluster,
                      "event_list": self.event_list})


def parse_queue_file(payload: bytes) -> Upload:
    """Decode a queue file: ``{'station_id': int, 'cluster': str, 'event_list': [...]}``."""
    data = _load_queue_file(payload)
    if not isinstance(data, dict):
        raise DecodeError(f"queue file holds a {type(data).__name__}, not a dict")
    missing = {"station_id", "cluster", "event_list"} - set(data)
    if missing:
        raise DecodeError(f"queue file lacks {', '.join(sorted(missing))}")
    station_id, cluster, event_list = data["station_id"], data["cluster"], data["event_list"]
    if isinstance(station_id, bool) or not isinstance(station_id, int):
        raise DecodeError(f"station_id is {brief(station_id)}, not an integer")
    if not 0 <= station_id <= MAX_STATION_ID:
        raise DecodeError(f"station_id {brief(station_id)} is outside 0..{MAX_STATION_ID}")
    # The cluster names an HDF5 group, which readers must be able to list (clusters.py).
    problem = cluster_problem(cluster)
    if problem is not None:
        raise DecodeError(f"cluster {brief(cluster)} is refused: {problem}")
    if not isinstance(event_list, list):
        raise DecodeError(f"event_list is a {type(event_list).__name__}, not a list")
    return Upload(station_id, cluster, event_list)


def parse_event_list(payload: bytes) -> list:
    """Decode the ``data`` field of an upload: a list of event dicts."""
    data = loads(payload, EVENT_LIST_DEPTH)
    if not isinstance(data, list):
        raise DecodeError(f"upload holds a {type(data).__name__}, not a list of events")
    return data


def event_datetime(event: Any) -> datetime.datetime | None:
    """The event's UTC time, or None when the event carries no usable one."""
    try:
        value = event["header"]["datetime"]
    except (TypeError, KeyError):
        return None
    return value if isinstance(value, datetime.datetime) else None
