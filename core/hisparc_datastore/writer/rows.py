"""Turns a station's events into one numpy record array per table, plus its blobs.

This is the writer's hot path. Each event becomes a flat tuple (array
columns spread out one slot per element) filled from the event type's
defaults; numpy then converts all tuples of a table in one call, against a
flat dtype that has the same memory layout as the table's, so the result is
viewed, not copied, as the table's rows.
"""

from __future__ import annotations

import datetime
import functools
import logging
from collections import Counter

import attrs
import numpy as np

from hisparc_datastore.plugin.eventtype import EventType
from hisparc_datastore.util.brief import brief, clip

log = logging.getLogger(__name__)

_EPOCH = datetime.datetime(1970, 1, 1)
_NUMBERS = frozenset({int, float, bool})
_ONE_SECOND = datetime.timedelta(seconds=1)


@attrs.frozen
class RowPlan:
    """Where every data code of one event type goes in a flat row."""

    defaults: list
    flat_dtype: np.dtype
    positions: dict  # data code -> flat position
    blob_decoders: dict  # data code -> decoder, for blob codes only
    blob_positions: tuple  # flat positions that hold blob indices
    checks: dict  # data code -> (column, value check), for the codes of checked columns only
    timestamp: int
    nanoseconds: int | None
    ext_timestamp: int | None


@functools.cache
def row_plan(event_type: EventType) -> RowPlan:
    dtype = event_type.dtype
    names, formats, offsets, defaults = [], [], [], []
    start: dict[str, int] = {}
    column_defaults = {
        name: col.dflt for name, col in event_type.description.columns.items()
    }
    for name in dtype.names:
        base, offset = dtype.fields[name][:2]
        start[name] = len(names)
        default = column_defaults[name]
        if isinstance(default, np.generic):
            default = default.item()
        if base.shape:
            element = base.base
            for i in range(base.shape[0]):
                names.append(f"{name}[{i}]")
                formats.append(element)
                offsets.append(offset + i * element.itemsize)
                defaults.append(default)
        else:
            names.append(name)
            formats.append(base)
            offsets.append(offset)
            defaults.append(default)
    flat = np.dtype(
        {"names": names, "formats": formats, "offsets": offsets, "itemsize": dtype.itemsize}
    )
    positions = {
        code: start[slot.column] + (slot.index or 0) for code, slot in event_type.slots.items()
    }
    blob_decoders = {code: slot.blob for code, slot in event_type.slots.items() if slot.blob}
    return RowPlan(
        defaults=defaults,
        flat_dtype=flat,
        positions=positions,
        blob_decoders=blob_decoders,
        blob_positions=tuple(sorted({positions[code] for code in blob_decoders})),
        checks={code: (slot.column, event_type.checks[slot.column])
                for code, slot in event_type.slots.items() if slot.column in event_type.checks},
        timestamp=start["timestamp"],
        nanoseconds=start["nanoseconds"] if event_type.extended_time else None,
        ext_timestamp=start["ext_timestamp"] if event_type.extended_time else None,
    )


@attrs.frozen
class Rejected:
    """An event that cannot be stored, and why."""

    event: object
    reason: str


def unix_timestamp(moment: datetime.datetime) -> int:
    """``calendar.timegm(moment.utctimetuple())`` for a naive UTC datetime, without the tuple."""
    return (moment - _EPOCH) // _ONE_SECOND


class StationRows:
    """Collects one station's events for one day file, then builds its table rows.

    Blob indices are counted from 0 within this batch; :meth:`build` shifts
    them by the number of blobs the station already has.
    """

    def __init__(self) -> None:
        self._rows: dict[EventType, list[tuple]] = {}
        self._events: dict[EventType, list] = {}
        self.blobs: list[bytes] = []
        self.unknown_codes: Counter = Counter()

    def __len__(self) -> int:
        return sum(len(rows) for rows in self._rows.values())

    def add(self, event_type: EventType, event: dict, moment: datetime.datetime,
            owner: str | None = None) -> str | None:
        """Add one event; return the reason it cannot be stored, or None. ``owner``: the
        plugin that declares ``event_type``, named in the reason when a value check fails."""
        plan = row_plan(event_type)
        row = plan.defaults.copy()
        timestamp = unix_timestamp(moment)
        row[plan.timestamp] = timestamp
        if plan.nanoseconds is not None:
            nanoseconds = event["header"].get("nanoseconds")
            if isinstance(nanoseconds, bool) or not isinstance(nanoseconds, int):
                return f"header nanoseconds is {brief(nanoseconds)}, not an integer"
            if not 0 <= nanoseconds < 1_000_000_000:
                return f"header nanoseconds {brief(nanoseconds)} is outside 0..999999999"
            row[plan.nanoseconds] = nanoseconds
            row[plan.ext_timestamp] = timestamp * 1_000_000_000 + nanoseconds
        datalist = event.get("datalist")
        if not isinstance(datalist, list):
            return f"datalist is {type(datalist).__name__}, not a list"
        positions = plan.positions
        checks = plan.checks
        new_blobs = []
        for item in datalist:
            try:
                code = item["data_uploadcode"]
                value = item["data"]
            except (TypeError, KeyError):
                return f"data item {brief(item)} lacks data_uploadcode or data"
            position = positions.get(code) if code.__class__ is str else None
            if position is None:
                self.unknown_codes[(event_type.upload_code, code)] += 1
                continue
            if checks and code in checks:
                column, check = checks[code]
                problem = check(value)
                if problem is not None:
                    return (f"value check of {owner or event_type.upload_code}: {event_type.upload_code} "
                            f"column {column!r} value {brief(value)} (data code {code}) "
                            f"refused: {clip(str(problem))}")
            decoder = plan.blob_decoders.get(code)
            if decoder is not None:
                try:
                    blob = decoder(value)
                except (TypeError, ValueError) as exc:
                    return f"blob {code} cannot be decoded: {clip(str(exc))}"
                value = len(self.blobs) + len(new_blobs)
                new_blobs.append(blob)
            elif value.__class__ not in _NUMBERS:
                # numpy would read '5' as 5 and anything at all as True: refuse instead
                return f"{code} value {brief(value)} is a {type(value).__name__}, not a number"
            row[position] = value
        self.blobs.extend(new_blobs)
        self._rows.setdefault(event_type, []).append(tuple(row))
        self._events.setdefault(event_type, []).append((event, moment))
        return None

    def build(self, blob_base: int) -> tuple[dict[EventType, np.ndarray], list[Rejected]]:
        """Return one record array per event type, and the events whose values do not fit."""
        flats = self._convert()
        rejected = []
        failed = [event_type for event_type, flat in flats.items() if flat is None]
        if failed:
            # Rare: some value does not fit its column. Name the culprits, rebuild without them
            # (which keeps blob indices dense) and convert again.
            rejected = self._find_misfits(failed)
            self._rebuild_without({id(r.event) for r in rejected})
            flats = self._convert()
        arrays = {}
        for event_type, flat in flats.items():
            arrays[event_type] = shift_blob_indices(event_type, flat.view(event_type.dtype), blob_base)
        return arrays, rejected

    def _convert(self) -> dict[EventType, np.ndarray | None]:
        """Each table's rows in one numpy conversion; None for a table where it fails."""
        flats: dict[EventType, np.ndarray | None] = {}
        for event_type, rows in self._rows.items():
            try:
                flats[event_type] = np.array(rows, dtype=row_plan(event_type).flat_dtype)
            except Exception:  # noqa: BLE001 - whatever numpy objects to, _find_misfits names it
                flats[event_type] = None
        return flats

    def _find_misfits(self, event_types: list[EventType]) -> list[Rejected]:
        rejected = []
        for event_type in event_types:
            flat_dtype = row_plan(event_type).flat_dtype
            # Row by row, to name each culprit.
            for row, (event, _) in zip(self._rows[event_type], self._events[event_type],
                                               strict=True):
                try:
                    np.array([row], dtype=flat_dtype)
                except Exception as exc:  # noqa: BLE001
                    reason = (f"{event_type.upload_code} value does not fit its column: "
                              f"{type(exc).__name__}: {clip(str(exc))}")
                    rejected.append(Rejected(event, reason))
        return rejected

    def _rebuild_without(self, bad: set[int]) -> None:
        # Rebuilding from scratch keeps blob indices dense: a rejected event
        # leaves no orphan blob behind.
        events = [
            (event_type, event, moment)
            for event_type, items in self._events.items()
            for event, moment in items
            if id(event) not in bad
        ]
        self.__init__()
        for event_type, event, moment in events:
            self.add(event_type, event, moment)


def shift_blob_indices(event_type: EventType, records: np.ndarray, offset: int) -> np.ndarray:
    """Add ``offset`` to the blob indices in ``records`` (in place; -1, no blob, stays)."""
    if offset:
        plan = row_plan(event_type)
        flat = records.view(plan.flat_dtype)
        for position in plan.blob_positions:
            column = flat[plan.flat_dtype.names[position]]
            column[column >= 0] += offset
    return records


#: Unknown data codes named in the one log line per upload; the rest are counted.
LOGGED_CODES = 5


def log_unknown_codes(counts: Counter, where: str) -> None:
    """One warning for all the unknown data codes of one upload: the most frequent few by
    name, the rest counted (a station may send thousands of distinct ones)."""
    # Codes are whatever a station sent: sort by their description, which any type has.
    common = sorted(counts.items(), key=lambda item: (-item[1], item[0][0], brief(item[0][1])))
    named = ", ".join(f"{brief(code)} of {upload_code} in {n} event(s)"
                      for (upload_code, code), n in common[:LOGGED_CODES])
    rest = len(common) - LOGGED_CODES
    log.warning("%s: ignored %d unknown data code(s): %s%s", where, len(common), named,
                f" and {rest} more" if rest > 0 else "")
