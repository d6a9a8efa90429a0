"""Loads station pickles without ever constructing anything beyond plain data."""

from __future__ import annotations

import datetime
import io
import pickle
from typing import Any

import attrs


class DecodeError(ValueError):
    """A payload or queue file that is not a well-formed station message."""


class ForbiddenPickle(DecodeError):
    """A pickle that names a class or function other than ``datetime.datetime``."""


# The one global a station pickle needs. Python 2 writes its module as
# 'datetime' too, so no renaming table is needed.
_ALLOWED_GLOBALS = {("datetime", "datetime"): datetime.datetime}


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise ForbiddenPickle(f"pickle names {module}.{name}, which is not plain data") from None

    def persistent_load(self, pid: Any) -> Any:
        raise ForbiddenPickle("pickle uses persistent ids, which station data never does")


def loads(payload: bytes) -> Any:
    """Unpickle Python 2 or 3 station data, refusing every global but ``datetime``.

    Python 2 ``str`` objects are decoded as latin-1: it maps each byte to one
    character, so nothing is lost, and it is what Python 3 needs to restore a
    Python 2 ``datetime`` (whose state is such a string).
    """
    try:
        return _PlainUnpickler(io.BytesIO(payload), encoding="latin1").load()
    except DecodeError:
        raise
    except Exception as exc:  # a truncated or garbled pickle raises almost anything
        raise DecodeError(f"cannot unpickle: {type(exc).__name__}: {exc}") from exc


def dumps(value: Any) -> bytes:
    """Pickle plain data the way the receiver writes queue files."""
    return pickle.dumps(value, protocol=4)


@attrs.frozen
class Upload:
    """One station's batch of events, as a queue file holds it."""

    station_id: int = attrs.field(validator=attrs.validators.instance_of(int))
    cluster: str = attrs.field(validator=attrs.validators.instance_of(str))
    event_list: list = attrs.field(validator=attrs.validators.instance_of(list))

    def to_queue_bytes(self) -> bytes:
        return dumps(
            {"station_id": self.station_id, "cluster": self.cluster, "event_list": self.event_list}
        )


def parse_queue_file(payload: bytes) -> Upload:
    """Decode a queue file: ``{'station_id': int, 'cluster': str, 'event_list': [...]}``."""
    data = loads(payload)
    if not isinstance(data, dict):
        raise DecodeError(f"queue file holds a {type(data).__name__}, not a dict")
    missing = {"station_id", "cluster", "event_list"} - set(data)
    if missing:
        raise DecodeError(f"queue file lacks {', '.join(sorted(missing))}")
    station_id, cluster, event_list = data["station_id"], data["cluster"], data["event_list"]
    if isinstance(station_id, bool) or not isinstance(station_id, int):
        raise DecodeError(f"station_id is {station_id!r}, not an integer")
    if not isinstance(cluster, str) or not cluster:
        raise DecodeError(f"cluster is {cluster!r}, not a name")
    if not isinstance(event_list, list):
        raise DecodeError(f"event_list is a {type(event_list).__name__}, not a list")
    return Upload(station_id, cluster, event_list)


def parse_event_list(payload: bytes) -> list:
    """Decode the ``data`` field of an upload: a list of event dicts."""
    data = loads(payload)
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
