"""Turns one claimed queue file into what the writer appends: its rows per day as record
arrays, its blobs, and the events that cannot be stored, with their reasons.

It touches no day file, so it can run in a second process (:mod:`.prefetch`)
while the writer appends the batch before; the writer decides what is stored.
"""

from __future__ import annotations

import datetime
import traceback
from collections import Counter
from pathlib import Path

import attrs
import numpy as np

from hisparc_datastore.codec.decoding import DecodeError, Upload, event_datetime, parse_queue_file
from hisparc_datastore.config import Settings
from hisparc_datastore.plugin.registry import Registry
from hisparc_datastore.queue.folders import REQUEUED_PREFIX
from hisparc_datastore.storage.errors import describe
from hisparc_datastore.util.brief import brief
from hisparc_datastore.writer.reasons import kind_of
from hisparc_datastore.writer.rows import StationRows

MAX_REASON = 4000  # characters of a traceback kept in a reason file
MAX_REASON_LINES = 1000  # events named one per line in a reason file; the rest are counted by kind


@attrs.frozen
class Bounds:
    """What the writer stores of one upload: events from ``minimum_year`` on, and whole uploads
    only within the bounds per upload (an upload over them is set aside in ``suspicious/``)."""

    minimum_year: int = 2020
    max_days: int = 31  # distinct dates of the events
    max_events: int = 20_000

    @classmethod
    def of(cls, settings: Settings) -> Bounds:
        return cls(settings.minimum_year, settings.max_days_per_upload, settings.max_events_per_upload)

    @classmethod
    def given(cls, bounds: Bounds | int) -> Bounds:
        """``bounds``, or a minimum year alone with the default bounds per upload."""
        return bounds if isinstance(bounds, Bounds) else cls(bounds)


@attrs.frozen
class DayRows:
    """One upload's rows for one day file: a record array per upload code, and its blobs,
    whose indices in the arrays count from 0."""

    arrays: dict  # upload code -> record array (the event type's dtype)
    blobs: list  # bytes
    unknown_codes: Counter  # (upload code, data code) -> events that carried it


@attrs.frozen
class PreparedUpload:
    """A claimed upload made ready to append, or the reason it cannot be read at all."""

    name: str
    fault: str | None = None  # the file cannot be decoded: it goes to quarantine whole
    station_id: int = 0
    cluster: str = ""
    events: int = 0  # in the upload, stored or not
    dates: frozenset = frozenset()  # of the storable events
    days: dict = attrs.field(factory=dict)  # date -> DayRows, in date order
    rejected: list = attrs.field(factory=list)  # (event, reason), for the quarantine: the first ones
    # Rejected past MAX_REASON_LINES, which a reason file only counts by kind: the events alone,
    # and the counts, so that many bad events cost the writer (and the pipe) little beyond them.
    unnamed: list = attrs.field(factory=list)
    unnamed_kinds: Counter = attrs.field(factory=Counter)
    aside: str | None = None  # over a bound per upload: the whole file goes to suspicious/, why
    # Where each of ``rejected`` was in the upload, 0-based: reasons name an event as the
    # station sent it, not by its place in the quarantine file.
    rejected_at: tuple = ()

    @property
    def upload(self) -> Upload:
        """The rejected events as an upload of their own, for the quarantine."""
        return Upload(self.station_id, self.cluster, [event for event, _ in self.rejected] + self.unnamed)

    @property
    def rejected_events(self) -> int:
        return len(self.rejected) + len(self.unnamed)


@attrs.frozen
class StoredUpload:
    """What releasing an upload and ``datastore status`` need of it once its rows are
    appended: kept until the commit instead of its rows and blobs."""

    name: str
    station_id: int
    events: int  # in the upload, stored or not
    rejected_events: int
    dates: frozenset  # of the storable events
    counts: Counter  # upload code -> rows appended

    @classmethod
    def of(cls, item: PreparedUpload) -> StoredUpload:
        counts: Counter = Counter()
        for day in item.days.values():
            for code, rows in day.arrays.items():
                counts[code] += len(rows)
        return cls(item.name, item.station_id, item.events, item.rejected_events, item.dates, counts)


class Screen:
    """Finds the events of an upload that cannot be stored at all."""

    def __init__(self, registry: Registry, bounds: Bounds | int) -> None:
        """``bounds``: or just the minimum year, with the default bounds per upload."""
        bounds = Bounds.given(bounds)
        self.registry = registry
        self.bounds = bounds
        self.minimum_year = bounds.minimum_year
        self.min_date = datetime.datetime(bounds.minimum_year, 1, 1)

    def over_bounds(self, name: str, events: int, dates: set | None) -> str | None:
        """Why the upload ``name`` is over a bound per upload (``dates`` None: not yet known),
        or None. One upload's cost must stay bounded, so that it delays no other station
        long. A requeued upload (``requeued-NAME``) was let through by an operator."""
        if name.startswith(REQUEUED_PREFIX):
            return None
        if events > self.bounds.max_events:
            return (f"{events} events, more than max_events_per_upload {self.bounds.max_events}; "
                    "requeue it to store it anyway")
        if dates is not None and len(dates) > self.bounds.max_days:
            return (f"events on {len(dates)} dates ({min(dates)} to {max(dates)}), more than "
                    f"max_days_per_upload {self.bounds.max_days}; requeue it to store it anyway")
        return None

    def __call__(self, upload: Upload) -> tuple[list, set]:
        """The rejected events with their reasons, and the dates of the rest."""
        rejected, dates = [], set()
        for event in upload.event_list:
            reason = self._reject_reason(event)
            if reason:
                rejected.append((event, reason))
            else:
                dates.add(event["header"]["datetime"].date())
        return rejected, dates

    def _reject_reason(self, event) -> str | None:
        if not isinstance(event, dict) or not isinstance(event.get("header"), dict):
            return f"event is not a dict with a header: {brief(event)}"
        code = event["header"].get("eventtype_uploadcode")
        if not isinstance(code, str) or self.registry.get(code) is None:
            return f"unknown event type {brief(code)}: no installed plugin declares it"
        moment = event_datetime(event)
        if moment is None:
            return f"{code} event has no datetime in its header"
        if moment < self.min_date:
            return f"{code} event of {moment} is before minimum_year {self.minimum_year}"
        return None


def prepare_file(path: Path, screen: Screen) -> PreparedUpload | None:
    """Prepare the queue file ``path``; None when it is gone (already stored)."""
    try:
        payload = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        upload = parse_queue_file(payload)
        return _prepare(path.name, upload, screen)
    except DecodeError as exc:
        return PreparedUpload(path.name, fault=f"{path.name}: {exc}")
    except Exception:  # noqa: BLE001 - bad input must never stop the writer
        error = traceback.format_exc(limit=8)[-MAX_REASON:]
        return PreparedUpload(path.name, fault=f"{path.name}: unexpected error\n{error}")


def _prepare(name: str, upload: Upload, screen: Screen) -> PreparedUpload:
    events = len(upload.event_list)
    # Counted before anything is built per event: an upload over the bound costs no more.
    if reason := screen.over_bounds(name, events, None):
        return PreparedUpload(name, None, upload.station_id, upload.cluster, events, aside=reason)
    rejected, dates = screen(upload)
    if reason := screen.over_bounds(name, events, dates):
        return PreparedUpload(name, None, upload.station_id, upload.cluster, events, aside=reason)
    skip = {id(event) for event, _ in rejected}
    by_day: dict[datetime.date, StationRows] = {}
    for event in upload.event_list:
        if id(event) in skip:
            continue
        header = event["header"]
        moment = header["datetime"]
        rows = by_day.get(moment.date())
        if rows is None:
            rows = by_day[moment.date()] = StationRows()
        event_type = screen.registry.get(header["eventtype_uploadcode"])
        try:
            reason = rows.add(event_type, event, moment, screen.registry.owners.get(event_type.upload_code))
        except Exception as exc:  # noqa: BLE001 - one odd event must not stop the writer
            # add() changes nothing before it succeeds, so the event is simply left out.
            reason = f"{event_type.upload_code} event cannot be stored: {describe(exc)}"
        if reason:
            rejected.append((event, reason))
    days = {}
    for date in sorted(by_day):
        rows = by_day[date]
        arrays, misfits = rows.build(0)
        rejected.extend((item.event, item.reason) for item in misfits)
        if arrays or rows.unknown_codes:
            days[date] = DayRows({event_type.upload_code: records for event_type, records in arrays.items()},
                                 rows.blobs, rows.unknown_codes)
    if rejected:
        # in upload order, whichever step refused them
        at = {id(event): i for i, event in enumerate(upload.event_list)}
        rejected.sort(key=lambda pair: at[id(pair[0])])
    named, rest = rejected[:MAX_REASON_LINES], rejected[MAX_REASON_LINES:]
    return PreparedUpload(name, None, upload.station_id, upload.cluster, len(upload.event_list),
                          frozenset(dates), days, named,
                          [event for event, _ in rest], Counter(kind_of(reason) for _, reason in rest),
                          rejected_at=tuple(at[id(event)] for event, _ in named) if rejected else ())


def concatenate(pieces: list[np.ndarray]) -> np.ndarray:
    """One record array of ``pieces`` (all of one dtype), without a copy for a single piece."""
    return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
