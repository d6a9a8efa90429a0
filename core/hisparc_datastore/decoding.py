"""Loads station pickles without ever constructing anything beyond plain data."""

from __future__ import annotations

import datetime
import io
import pickle
import re
from typing import Any

import attrs
import numpy as np


class DecodeError(ValueError):
    """A payload or queue file that is not a well-formed station message."""


class ForbiddenPickle(DecodeError):
    """A pickle that names a class or function other than ``datetime.datetime``."""


def _latin1_bytes(text: Any, encoding: str = "utf-8") -> bytes:
    # Protocol 2 pickles from Python 3 spell a bytes object (a datetime's
    # state, say) as _codecs.encode(text, 'latin1'). Only that form is
    # honoured: it can make bytes and nothing else.
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise ForbiddenPickle(f"pickle calls _codecs.encode with {type(text).__name__}, {encoding!r}")
    return text.encode("latin-1")


_NUMERIC_DTYPE = re.compile(r"^[biuf][1248]$")


class _NumpyDtype:
    """Stands in for ``numpy.dtype`` while unpickling: it records a numeric type code, nothing more.

    The Raspberry Pi DAQ sends some values as numpy scalars. They are
    decoded into plain Python numbers; numpy itself is never asked to
    unpickle anything.
    """

    def __init__(self, code: Any, align: Any = 0, copy: Any = 1) -> None:
        if not isinstance(code, str) or not _NUMERIC_DTYPE.match(code):
            raise ForbiddenPickle(f"pickle asks for numpy dtype {code!r}, not a plain number type")
        self.code = code
        self.byteorder = "|"

    def __setstate__(self, state: Any) -> None:
        # (version, byteorder, subarray, names, fields, elsize, alignment, flags)
        if (not isinstance(state, tuple) or len(state) < 5 or state[1] not in ("<", ">", "|", "=")
                or any(part is not None for part in state[2:5])):
            raise ForbiddenPickle("pickle describes a numpy dtype that is not a plain number type")
        self.byteorder = state[1]

    def to_numpy(self) -> np.dtype:
        order = "" if self.byteorder == "|" else self.byteorder
        return np.dtype(order + self.code)


def _numpy_scalar(dtype: Any, data: Any = None) -> int | float | bool:
    if isinstance(data, str):  # a Python 2 pickle's str, decoded as latin-1
        data = data.encode("latin-1")
    if not isinstance(dtype, _NumpyDtype) or not isinstance(data, bytes):
        raise ForbiddenPickle("pickle builds a numpy scalar from something other than raw bytes")
    numpy_dtype = dtype.to_numpy()
    if len(data) != numpy_dtype.itemsize:
        raise ForbiddenPickle(f"numpy scalar of {len(data)} bytes for dtype {numpy_dtype}")
    return np.frombuffer(data, numpy_dtype)[0].item()


# The globals station pickles need, each replaced by a guarded stand-in where
# the real one could construct more than plain data. Python 2 writes the
# datetime module as 'datetime' too, so no renaming table is needed.
_ALLOWED_GLOBALS = {
    ("datetime", "datetime"): datetime.datetime,
    ("_codecs", "encode"): _latin1_bytes,
    ("numpy", "dtype"): _NumpyDtype,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
}


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise ForbiddenPickle(f"pickle names {module}.{name}, which is not plain data") from None

    def persistent_load(self, pid: Any) -> Any:
        raise ForbiddenPickle("pickle uses persistent ids, which station data never does")


def loads(payload: bytes) -> Any:
    """Unpickle Python 2 or 3 station data, refusing every global but the few above.

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
