"""Stores one batch of claimed uploads exactly once: decode, screen, build the rows, journal,
append, release (see docs/exactly-once.md)."""

from __future__ import annotations

import datetime
import logging
import threading
import traceback
from collections import Counter
from pathlib import Path

import attrs
import tables

from . import faults
from .brief import brief
from .config import Settings
from .dayfiles import OpenFiles
from .decoding import DecodeError, Upload, event_datetime, parse_queue_file
from .heldfiles import HeldFiles
from .journal import APPLIED, APPLYING, Journal, Transaction
from .plugins import Registry
from .queue import Queue
from .rows import StationRows, log_unknown_codes
from .storage import BLOBS, day_file_path, station_path
from .storeerrors import StorageError, describe, held_by_another
from .writerstate import WriterState

log = logging.getLogger(__name__)

MAX_REASON = 4000  # characters of a traceback kept in a reason file
MAX_REASON_LINES = 1000  # events named one per line in a reason file; the rest are counted by kind


@attrs.define
class Tally:
    """What the writer did, for the log and for ``--once`` callers."""

    uploads: int = 0
    stored: Counter = attrs.field(factory=Counter)  # upload code -> events stored
    quarantined_events: Counter = attrs.field(factory=Counter)  # reason kind -> events
    quarantined_files: int = 0
    storage_errors: int = 0  # failed attempts to store a batch (each is retried)

    @property
    def events(self) -> int:
        return sum(self.stored.values())


@attrs.frozen
class _Decoded:
    """A claimed upload, decoded and sorted into storable and rejected events."""

    name: str
    payload: bytes
    upload: Upload
    dates: frozenset
    rejected: list  # (event, reason)


class Interrupted(Exception):
    """A stop was asked for while a batch was being decoded; its uploads stay claimed."""


def cut_batches(files: list[tuple[str, int]], max_files: int, max_bytes: int) -> list[list[str]]:
    """Cut ``(name, size)`` pairs, in order, into batches of at most ``max_files``
    files and ``max_bytes`` bytes (a larger file goes alone). Decoded uploads take
    about ten times their pickled size: this bounds memory whatever the backlog."""
    batches: list[list[str]] = []
    batch: list[str] = []
    size = 0
    for name, file_size in files:
        if batch and (len(batch) >= max_files or size + file_size > max_bytes):
            batches.append(batch)
            batch, size = [], 0
        batch.append(name)
        size += file_size
    if batch:
        batches.append(batch)
    return batches


def claimed_batches(queue: Queue, names: list[str], settings: Settings) -> list[list[str]]:
    """The claimed uploads ``names`` cut into batches by their sizes on disk."""
    sizes = []
    for name in names:
        try:
            sizes.append((name, (queue.partial / name).stat().st_size))
        except FileNotFoundError:
            sizes.append((name, 0))
    return cut_batches(sizes, settings.batch_uploads, settings.batch_bytes)


class BatchStore:
    """Stores batches of claimed uploads into the day files, counting what it did in ``tally``.

    ``held`` (the service's) sets aside uploads for day files a reader holds open;
    without it (a rebuild) no file is taken as held.
    """

    def __init__(self, settings: Settings, registry: Registry, queue: Queue, journal: Journal,
                 files: OpenFiles, tally: Tally, state: WriterState, stop: threading.Event,
                 held: HeldFiles | None = None) -> None:
        self.settings = settings
        self.registry = registry
        self.queue = queue
        self.journal = journal
        self.files = files
        self.tally = tally
        self.state = state
        self.stop = stop
        self.held = held
        self.min_date = datetime.datetime(settings.minimum_year, 1, 1)

    def store(self, names: list[str]) -> None:
        """Store the claimed uploads ``names`` exactly once (see docs/exactly-once.md)."""
        faults.point("claimed")
        decoded = []
        for name in names:
            if self.stop.is_set():
                # Nothing is journaled yet: the uploads stay claimed and the next start stores them.
                raise Interrupted(f"stopped while decoding: {len(names)} uploads stay claimed")
            item = self.decode(name)
            if item is not None:
                decoded.append(item)
        if self.held is not None:
            decoded = self._set_aside_held(decoded, self.held)
        groups = self._group(decoded)
        built, sizes, misfits = self._build(groups)
        for item in decoded:
            item.rejected.extend(misfits.get(item.name, ()))
            if item.rejected:
                self._quarantine_events(item)
        if built:
            try:
                self._apply(tuple(d.name for d in decoded), built, sizes)
            except (OSError, tables.HDF5ExtError) as exc:
                raise StorageError(describe(exc)) from exc
        self._release(decoded)
        self.state.held = self.held.describe() if self.held is not None else []
        self.state.batch_stored(decoded, self.tally)

    def _set_aside_held(self, decoded: list[_Decoded], held_files: HeldFiles) -> list[_Decoded]:
        """The uploads of ``decoded`` whose day files can be written now; those touching a day
        file another process holds open wait, claimed, until it is released."""
        held = {path: True for path in held_files.since}  # known held: look again only when due
        kept = []
        for item in decoded:
            paths = sorted(day_file_path(self.settings.data_dir, date) for date in item.dates)
            for path in paths:
                if path not in held:
                    held[path] = self.is_held(path)
            busy = [path for path in paths if held[path]]
            if busy:
                held_files.set_aside(item.name, busy)
            else:
                kept.append(item)
        return kept

    def is_held(self, path: Path) -> bool:
        """Whether another process holds the day file ``path`` open (else it is open here now)."""
        if not path.exists():
            return False  # nothing to hold; made only if an event is stored in it
        try:
            self.files.get(path)
        except tables.HDF5ExtError as exc:
            if held_by_another(exc):
                return True
            raise
        return False

    def decode(self, name: str) -> _Decoded | None:
        path = self.queue.partial / name
        try:
            payload = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            upload = parse_queue_file(payload)
            rejected, dates = self.screen(upload)
        except DecodeError as exc:
            self.queue.quarantine_file(name, f"{name}: {exc}")
            self.tally.quarantined_files += 1
            return None
        except Exception:  # noqa: BLE001 - bad input must never stop the writer
            error = traceback.format_exc(limit=8)[-MAX_REASON:]
            self.queue.quarantine_file(name, f"{name}: unexpected error\n{error}")
            self.tally.quarantined_files += 1
            return None
        return _Decoded(name, payload, upload, frozenset(dates), rejected)

    def screen(self, upload: Upload) -> tuple[list, set]:
        """Find the events that cannot be stored; return them and the dates of the rest."""
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
            return f"{code} event of {moment} is before minimum_year {self.settings.minimum_year}"
        return None

    def _group(self, decoded: list[_Decoded]) -> dict[tuple, StationRows]:
        groups: dict[tuple, StationRows] = {}
        for item in decoded:
            upload = item.upload
            rejected = {id(event) for event, _ in item.rejected}
            for event in upload.event_list:
                if id(event) in rejected:
                    continue
                header = event["header"]
                moment = header["datetime"]
                key = (moment.date(), upload.cluster, upload.station_id)
                rows = groups.get(key)
                if rows is None:
                    rows = groups[key] = StationRows()
                event_type = self.registry.get(header["eventtype_uploadcode"])
                try:
                    reason = rows.add(event_type, event, moment, origin=item.name)
                except Exception as exc:  # noqa: BLE001 - one odd event must not stop the writer
                    # add() changes nothing before it succeeds, so the event is simply left out.
                    reason = f"{event_type.upload_code} event cannot be stored: {describe(exc)}"
                if reason:
                    item.rejected.append((event, reason))
        return groups

    def _build(self, groups: dict[tuple, StationRows]) -> tuple[dict, dict, dict]:
        """Record arrays per (date, cluster, station), the journal's node sizes per day file,
        and misfit events per upload name.

        Day files are visited one at a time in date order, here and in :meth:`_apply`, so a
        batch may span any number of days with at most MAX_OPEN_FILES of them open.
        """
        built, sizes, misfits = {}, {}, {}
        for key in sorted(groups, key=lambda key: (key[0], key[1].lower(), key[2])):
            rows = groups[key]
            date, cluster, station_id = key
            if rows.unknown_codes:
                log_unknown_codes(rows.unknown_codes, f"station {station_id}")
            path = day_file_path(self.settings.data_dir, date)
            # A new day file is made when rows are appended, not here: if every event turns
            # out a misfit, no file without a /hisparc group is left for readers to trip over.
            day_file = self.files.get(path) if path.exists() else None
            base = station_path(cluster, station_id)
            blob_base = (day_file.node_size(f"{base}/{BLOBS}") if day_file else None) or 0
            arrays, rejected = rows.build(blob_base)
            for item in rejected:
                misfits.setdefault(item.origin, []).append((item.event, item.reason))
            if not arrays:
                continue
            record = sizes.setdefault(str(path), {})
            for node in [BLOBS, *(event_type.table_name for event_type in arrays)]:
                record[f"{base}/{node}"] = day_file.node_size(f"{base}/{node}") if day_file else None
            built[key] = (arrays, rows.blobs)
        return built, sizes, misfits

    def _apply(self, names: tuple[str, ...], built: dict, sizes: dict) -> None:
        self.journal.write(Transaction(names, sizes, APPLYING))
        faults.point("journaled")
        current = None
        stored: Counter = Counter()  # counted once applied: an undone attempt stored nothing
        for (date, cluster, station_id), (arrays, blobs) in built.items():  # in date order
            day_file = self.files.get(day_file_path(self.settings.data_dir, date))
            if current is not None and day_file is not current:
                current.flush(self.settings.fsync)  # before it may be closed to open another
            current = day_file
            day_file.append_blobs(cluster, station_id, blobs)
            faults.point("blobs-appended")
            for event_type, records in arrays.items():
                day_file.append_rows(cluster, station_id, event_type, records)
                stored[event_type.upload_code] += len(records)
                faults.point("table-appended")
        if current is not None:
            current.flush(self.settings.fsync)
        faults.point("flushed")
        self.journal.write(Transaction(names, sizes, APPLIED))
        self.tally.stored.update(stored)
        faults.point("applied")

    def _release(self, decoded: list[_Decoded]) -> None:
        if self.settings.archive_days > 0:
            # If this fails the journal still says applied: the retry archives
            # and releases without storing again.
            self.queue.archive_claimed((item.name, item.dates) for item in decoded if item.dates)
        for item in decoded:
            self.queue.release(item.name)
            self.tally.uploads += 1
        self.queue.sync_partial()
        faults.point("released")
        self.journal.clear()

    def _quarantine_events(self, item: _Decoded) -> None:
        events = [event for event, _ in item.rejected]
        kinds = Counter(reason.split(":")[0] for _, reason in item.rejected)
        reasons = [
            f"station {item.upload.station_id}, event {i}: {reason}"
            for i, (_, reason) in enumerate(item.rejected[:MAX_REASON_LINES])
        ]
        if len(item.rejected) > MAX_REASON_LINES:
            # A reason file an operator can read: the rest by kind, not a million lines.
            rest = Counter(reason.split(":")[0] for _, reason in item.rejected[MAX_REASON_LINES:])
            reasons.append(f"... and {len(item.rejected) - MAX_REASON_LINES} more events: "
                           + "; ".join(f"{n} x {kind}" for kind, n in rest.most_common(20)))
        payload = Upload(item.upload.station_id, item.upload.cluster, events).to_queue_bytes()
        target = self.queue.quarantine_events(item.name, payload, reasons)
        self.tally.quarantined_events.update(kinds)
        log.warning("%s: %d of %d events quarantined in %s (first: %s)", item.name,
                    len(events), len(item.upload.event_list), target, item.rejected[0][1])

