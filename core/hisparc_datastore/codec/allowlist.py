"""What a station pickle may name, and how each of those is called: the whole allow-list of
:mod:`hisparc_datastore.codec.plainpickle`, in one place for a security review.

A pickle builds objects by naming a global and calling it (REDUCE) or setting its state
(BUILD). Plain station data needs five: ``datetime.datetime`` from its 10-byte state,
``bytes()`` and ``_codecs.encode(text, 'latin1')`` (how Python 3 pickles bytes in old
protocols), and ``numpy.dtype`` plus numpy's ``scalar`` for the numbers the Raspberry Pi
DAQ sends. Each is a marker here, never the real callable: :func:`reduce` and
:func:`build` do by hand, with their arguments checked, the one thing each may do.
Anything else a pickle names is refused.
"""

from __future__ import annotations

import datetime
import re
from typing import Any

import numpy as np

_NUMERIC_DTYPE = re.compile(r"^[biuf][1248]$")


class PickleError(ValueError):
    """The bytes are not a pickle (truncated, garbled)."""


class NotPlainData(PickleError):
    """A well-formed pickle that builds something other than plain station data."""


class Global:
    """A callable a station pickle may name; only REDUCE may use it."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


_DATETIME = Global("datetime.datetime")
_CODECS_ENCODE = Global("_codecs.encode")
_NUMPY_DTYPE = Global("numpy.dtype")
_NUMPY_SCALAR = Global("numpy.core.multiarray.scalar")
_BYTES = Global("bytes")
GLOBALS = {
    # Python 3 writes an empty bytes object as bytes() in protocols 0 to 2
    ("__builtin__", "bytes"): _BYTES,
    ("builtins", "bytes"): _BYTES,
    ("datetime", "datetime"): _DATETIME,
    ("_codecs", "encode"): _CODECS_ENCODE,
    ("numpy", "dtype"): _NUMPY_DTYPE,
    ("numpy.core.multiarray", "scalar"): _NUMPY_SCALAR,
    ("numpy._core.multiarray", "scalar"): _NUMPY_SCALAR,
}


class Dtype:
    """A numeric numpy type code, as ``numpy.dtype`` would be built from a pickle; never numpy's own."""

    __slots__ = ("code", "byteorder", "built")

    def __init__(self, code: str) -> None:
        self.code = code
        self.byteorder = "|"
        self.built = False

    def numpy(self) -> np.dtype:
        return np.dtype(("" if self.byteorder == "|" else self.byteorder) + self.code)


def kind(value: Any) -> str:
    """A name for what ``value`` is, never its content: safe in any message."""
    if isinstance(value, Global):
        return f"the callable {value.name}"
    if isinstance(value, Dtype):
        return "a numpy dtype"
    return f"a {type(value).__name__}"


def reduce(func: Any, args: Any) -> Any:
    """The few calls a station pickle makes, each done by hand and checked."""
    if not isinstance(func, Global) or not isinstance(args, tuple):
        raise NotPlainData(f"REDUCE calls {kind(func)} with {kind(args)}")
    if func is _DATETIME:
        if len(args) != 1 or not isinstance(args[0], (bytes, str)) or len(args[0]) != 10:
            raise NotPlainData("datetime.datetime is called with other than its 10-byte state")
        state = args[0].encode("latin-1") if isinstance(args[0], str) else args[0]
        try:
            moment = datetime.datetime(state)
            # The state constructor checks the month only: second 60 or day 31 of
            # February would pass, and fail later, where a station hears 205 and retries.
            datetime.datetime(moment.year, moment.month, moment.day, moment.hour, moment.minute,
                              moment.second, moment.microsecond, fold=moment.fold)
        except (TypeError, ValueError) as exc:
            raise NotPlainData(f"datetime state is invalid: {exc}") from None
        return moment
    if func is _BYTES:
        if args:
            raise NotPlainData("bytes is called with arguments")
        return b""
    if func is _CODECS_ENCODE:
        # Protocol 2 pickles from Python 3 spell bytes as _codecs.encode(text, 'latin1').
        if len(args) != 2 or not isinstance(args[0], str) or args[1] not in ("latin1", "latin-1"):
            raise NotPlainData("_codecs.encode is called other than as encode(text, 'latin1')")
        try:
            return args[0].encode("latin-1")
        except UnicodeEncodeError:
            raise NotPlainData("_codecs.encode is given text that is not latin-1") from None
    if func is _NUMPY_DTYPE:
        code = args[0] if args else None
        if not isinstance(code, str) or not _NUMERIC_DTYPE.match(code):
            raise NotPlainData("numpy.dtype is asked for other than a plain number type")
        return Dtype(code)
    # numpy scalar(dtype, raw bytes): a Python 2 pickle's raw bytes arrive as latin-1 text
    if len(args) != 2 or not isinstance(args[0], Dtype) or not isinstance(args[1], (bytes, str)):
        raise NotPlainData("a numpy scalar is built from other than a dtype and raw bytes")
    raw = args[1].encode("latin-1") if isinstance(args[1], str) else args[1]
    dtype = args[0].numpy()
    if len(raw) != dtype.itemsize:
        raise NotPlainData(f"a numpy scalar of {len(raw)} bytes for dtype {dtype}")
    return np.frombuffer(raw, dtype)[0].item()


def build(target: Any, state: Any) -> None:
    # numpy pickles a dtype's byte order with BUILD: (version, order, subarray, names, fields, ...)
    if not isinstance(target, Dtype) or target.built:
        raise NotPlainData(f"BUILD sets the state of {kind(target)}")
    if (not isinstance(state, tuple) or len(state) < 5 or state[1] not in ("<", ">", "|", "=")
            or any(part is not None for part in state[2:5])):
        raise NotPlainData("BUILD describes a numpy dtype that is not a plain number type")
    target.byteorder = state[1]
    target.built = True
