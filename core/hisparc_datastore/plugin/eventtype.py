"""What a plugin declares about one event type, checked once when it is loaded."""

from __future__ import annotations

import binascii
import math
import re
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import attrs
import numpy as np
import tables

#: Turns the value a station sent for a blob code into the bytes stored in ``blobs``.
BlobDecoder = Callable[[Any], bytes]

UPLOAD_CODE = re.compile(r"^[A-Z][A-Z0-9]{2}\Z")
# \Z, not $: '$' also matches before a final newline, which would let 'muon\n' through.
TABLE_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")
_TRAILING_DIGITS = re.compile(r"(\d+)$")


def base64_blob(value: Any) -> bytes:
    """Decode a base64 text value (traces: zlib-compressed samples) into its bytes."""
    if isinstance(value, str):
        value = value.encode("ascii")
    if not isinstance(value, bytes):
        raise TypeError(f"expected base64 text, got {type(value).__name__}")
    # a2b_base64 is the C routine behind base64.decodebytes: it accepts the
    # line breaks some station software inserts every 76 characters.
    return binascii.a2b_base64(value)


def text_blob(value: Any) -> bytes:
    """Store a text value as iso-8859-1 bytes, the encoding the day files have always used."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("iso-8859-1")
    if isinstance(value, (int, float)):
        return str(value).encode("iso-8859-1")
    raise TypeError(f"expected text, got {type(value).__name__}")


#: A value check: None to accept the value a station sent for a column, or a short text
#: saying why it is refused, which the quarantine reason shows after "refused: ".
ValueCheck = Callable[[Any], "str | None"]


def _check_bounds(instance: Range, attribute: attrs.Attribute, value: float | None) -> None:
    if value is not None and math.isnan(value):
        raise ValueError(f"Range bound {attribute.name} is NaN: it would refuse every value")


@attrs.frozen
class Range:
    """A value from ``low`` to ``high``, both included (None: no bound). Not a number (NaN)
    is refused unless both are None."""

    low: float | None = attrs.field(default=None, validator=_check_bounds)
    high: float | None = attrs.field(default=None, validator=_check_bounds)

    def __attrs_post_init__(self) -> None:
        if self.low is not None and self.high is not None and self.low > self.high:
            raise ValueError(f"Range({self.low!r}, {self.high!r}): low is above high, so it would "
                             "refuse every value")

    def __call__(self, value: Any) -> str | None:
        try:
            inside = (self.low is None or value >= self.low) and (self.high is None or value <= self.high)
        except TypeError:
            inside = False
        return None if inside else f"outside {self}"

    def __str__(self) -> str:
        low = "" if self.low is None else f"{self.low:g}"
        high = "" if self.high is None else f"{self.high:g}"
        return f"{low}..{high}"


@attrs.frozen
class OneOf:
    """One of ``values`` (compared as numbers: ``True == 1``, ``1.0 == 1``)."""

    values: frozenset = attrs.field(converter=frozenset)

    def __call__(self, value: Any) -> str | None:
        try:
            known = value in self.values
        except TypeError:  # unhashable
            known = False
        return None if known else f"not one of {self}"

    def __str__(self) -> str:
        return "{" + ", ".join(sorted(map(repr, self.values))) + "}"


#: The check of a flag: False or True (0 or 1). numpy would store any number at all as True.
BOOLEAN = OneOf({False, True})


def boolean_checks(description: type[tables.IsDescription]) -> dict[str, OneOf]:
    """:data:`BOOLEAN` for every boolean column of ``description``."""
    return {name: BOOLEAN for name, column in description.columns.items()
            if isinstance(column, tables.BoolCol)}


def _frozen_mapping(value: Mapping) -> Mapping:
    return MappingProxyType(dict(value))


@attrs.frozen
class ColumnSlot:
    """Where one data code lands: a column, and for array columns the element."""

    column: str
    index: int | None = None
    blob: BlobDecoder | None = None


def _check_upload_code(instance: EventType, attribute: attrs.Attribute, value: str) -> None:
    if not isinstance(value, str) or not UPLOAD_CODE.match(value):
        raise ValueError(f"upload code {value!r} is not three upper-case characters")


def _check_table_name(instance: EventType, attribute: attrs.Attribute, value: str) -> None:
    # One line naming the event type, rather than attrs' message with the Attribute's repr.
    if not isinstance(value, str) or not TABLE_NAME.match(value):
        raise ValueError(f"event type {instance.upload_code}: table_name {value!r} is not lower-case "
                         "letters, digits and _, beginning with a letter")


@attrs.frozen(eq=False)
class EventType:
    """One kind of station message and the table it is stored in.

    ``columns`` maps each data code to a column name of ``description``. A code
    that ends in a digit N and names an array column fills element N-1.
    ``blobs`` maps the codes whose value is stored as a row of the station's
    ``blobs`` array (the column then holds that row's index) to the function
    that turns the value into bytes. ``checks`` maps a column to a value check
    (:class:`Range`, :class:`OneOf` or any function of the value sent that returns
    None to accept it, or a short text saying why it is refused): an event with a value
    it refuses is quarantined.
    """

    upload_code: str = attrs.field(validator=_check_upload_code)
    table_name: str = attrs.field(validator=_check_table_name)
    table_title: str
    description: type[tables.IsDescription]
    columns: Mapping[str, str] = attrs.field(converter=_frozen_mapping)
    blobs: Mapping[str, BlobDecoder] = attrs.field(converter=_frozen_mapping, factory=dict)
    extended_time: bool = False
    checks: Mapping[str, ValueCheck] = attrs.field(converter=_frozen_mapping, factory=dict)
    slots: Mapping[str, ColumnSlot] = attrs.field(init=False, eq=False, repr=False)
    dtype: np.dtype = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        dtype = tables.description.Description(self.description.columns)._v_dtype
        object.__setattr__(self, "dtype", dtype)
        object.__setattr__(self, "slots", MappingProxyType(self._resolve_slots()))

    def _resolve_slots(self) -> dict[str, ColumnSlot]:
        fields = self.dtype.fields
        where = f"event type {self.upload_code}"
        required = ["event_id", "timestamp"]
        if self.extended_time:
            required += ["nanoseconds", "ext_timestamp"]
        for name in required:
            if name not in fields:
                raise ValueError(f"{where}: description has no {name!r} column")
        unknown_blobs = set(self.blobs) - set(self.columns)
        if unknown_blobs:
            raise ValueError(f"{where}: blob codes {sorted(unknown_blobs)} map to no column")
        slots = {}
        for code, column in self.columns.items():
            if column not in fields:
                raise ValueError(f"{where}: data code {code} names unknown column {column!r}")
            if column in required:
                raise ValueError(f"{where}: data code {code} may not fill {column!r}")
            shape = fields[column][0].shape
            index = None
            if shape:
                digits = _TRAILING_DIGITS.search(code)
                if digits is None or not 1 <= int(digits.group(1)) <= shape[0]:
                    raise ValueError(
                        f"{where}: data code {code} fills array column {column!r} of "
                        f"length {shape[0]} but does not end in a digit 1..{shape[0]}"
                    )
                index = int(digits.group(1)) - 1
            blob = self.blobs.get(code)
            if blob is not None and fields[column][0].base.kind not in "iu":
                raise ValueError(f"{where}: blob code {code} needs an integer column")
            slots[code] = ColumnSlot(column, index, blob)
        filled = {slot.column for slot in slots.values()}
        for column, check in self.checks.items():
            if column not in filled:
                raise ValueError(f"{where}: a check names column {column!r}, which no data code fills")
            if not callable(check):
                raise ValueError(f"{where}: the check of column {column!r} is a "
                                 f"{type(check).__name__}, not a function of the value")
        return slots
