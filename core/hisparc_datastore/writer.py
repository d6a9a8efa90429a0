"""Drains the upload queue into the day files, one journaled batch at a time."""

from __future__ import annotations

import datetime
import errno
import logging
import os
import shutil
import signal
import threading
import time
import traceback
from collections import Counter
from pathlib import Path

import attrs
import tables

from . import faults
from .brief import brief
from .config import ConfigError, Settings
from .decoding import DecodeError, Upload, event_datetime, parse_queue_file
from .durable import fsync_dir
from .heldfiles import HeldFiles
from .journal import APPLIED, APPLYING, Journal, Transaction
from .lock import WriterLock
from .plugins import Registry
from .queue import REASON_SUFFIX, Queue
from .rows import StationRows, log_unknown_codes
from .storage import BLOBS, DayFile, date_of_day_file, day_file_path, station_path
from .writerstate import WriterState

log = logging.getLogger(__name__)

MAX_OPEN_FILES = 4
FIRST_BACKOFF = 1.0  # seconds; doubles up to MAX_BACKOFF while storing keeps failing
MAX_BACKOFF = 60.0
PRUNE_EVERY = 3600.0  # seconds between walks of the archive for expired uploads
_MAX_REASON = 4000  # characters of a traceback kept in a reason file
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


class StorageError(Exception):
    """Appending to a day file failed (disk full, I/O error); the batch is retried."""


class Interrupted(Exception):
    """A stop was asked for while a batch was being decoded; its uploads stay claimed."""


class Writer:
    """The one writer of a ``data_dir``."""

    def __init__(self, settings: Settings, registry: Registry, *, resilient: bool = True) -> None:
        """``resilient``: retry storage errors and heal damaged day files (the service);
        without it they propagate (a rebuild, which must not heal itself)."""
        self.settings = settings
        self.registry = registry
        self.queue = Queue(settings.data_dir, fsync=settings.fsync)
        self.journal = Journal(settings.data_dir, fsync=settings.fsync)
        self.min_date = datetime.datetime(settings.minimum_year, 1, 1)
        self.tally = Tally()
        self.state = WriterState(settings.data_dir)  # for `datastore status`
        self._files: dict[Path, DayFile] = {}
        self._suspects: set[Path] = set()  # day files open when a batch failed
        self.resilient = resilient
        self._last_prune = -PRUNE_EVERY
        self._stop = threading.Event()
        self.held = HeldFiles()  # day files a reader holds open, and the uploads waiting for them

    # -- running -------------------------------------------------------------

    def run(self, once: bool = False) -> Tally:
        """Drain the queue; with ``once`` stop when it is empty, else on SIGTERM/SIGINT."""
        with WriterLock(self.settings.data_dir):
            self._install_signal_handlers()
            try:
                self._drain(self.queue.claimed(), recover=True)
                while not self._stop.is_set():
                    if self.held.due():
                        free = self.held.released(self._still_held)
                        if free:
                            self._drain(free)
                    names = self.queue.claim(self.settings.batch_uploads)
                    if names:
                        self._drain(names)
                        continue
                    self.close_files()
                    if once:
                        self._leave_waiting()
                        self.queue.prune_archive(self.settings.archive_days)
                        break
                    self._tidy_archive()
                    # Waiting on an Event sleeps in the kernel and wakes at once on a signal.
                    self._stop.wait(self.settings.sleep)
            except Interrupted as exc:
                log.info("%s", exc)
            finally:
                self.close_files()
        log.info("writer stopped: %d uploads, %d events stored", self.tally.uploads,
                 self.tally.events)
        return self.tally

    def _tidy_archive(self) -> None:
        """Idle work: compress archived uploads and drop those past retention, a
        slice at a time so that new uploads and signals are not kept waiting."""
        try:
            # Pruning walks the whole archive: once an hour is plenty for a retention in days.
            if time.monotonic() - self._last_prune > PRUNE_EVERY:
                self.queue.prune_archive(self.settings.archive_days)
                self._last_prune = time.monotonic()
            while not self._stop.is_set() and not self.queue.has_incoming():
                if not self.queue.compress_archive(limit=20):
                    break
        except OSError as exc:
            log.error("tidying the archive failed (%s); will retry when idle", _describe(exc))

    def stop(self) -> None:
        self._stop.set()

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def handle(signum, frame):
            log.info("received %s: finishing the batch in hand", signal.Signals(signum).name)
            self._stop.set()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)

    def _drain(self, names: list[str], recover: bool = False) -> None:
        """Store ``names`` in batches, retrying storage errors with back-off.

        A batch that fails twice with an HDF5 error while the disk has room
        points at a damaged day file: the next recovery rebuilds the files
        that were open from the archive (see docs/exactly-once.md).
        """
        for batch in self._batches(names) or [[]]:
            delay, failures = FIRST_BACKOFF, 0
            while True:
                try:
                    if recover or failures:
                        self.recover(suspect=failures >= 2)  # undo what a failed attempt left
                        recover = False
                    if batch:
                        self.store_batch(batch)
                    break
                except (StorageError, OSError, tables.HDF5ExtError) as exc:
                    if not self.resilient:
                        raise
                    self.tally.storage_errors += 1
                    # Disk full or an I/O error: keep the uploads claimed and retry
                    # until space returns; never lose them, never stop.
                    log.error("could not store %d uploads (%s); they stay claimed in %s, "
                              "retrying in %.0f s", len(batch), _describe(exc), self.queue.partial, delay)
                    cause = exc.__cause__ if isinstance(exc, StorageError) else exc
                    # Only HDF5's own errors hint at damage: an OSError is the disk's, and
                    # a lock held by a reader is no damage either.
                    hint = isinstance(cause, tables.HDF5ExtError) and not _held_by_another(cause)
                    failures = failures + 1 if hint else max(failures, 1)
                    self._suspects.update(self._files)
                    self.close_files()
                    try:
                        # Cut back at once what the attempt appended, so that no
                        # reader sees half a batch while we wait for space.
                        self.recover()
                    except (StorageError, OSError, tables.HDF5ExtError) as again:
                        log.error("undoing the failed batch failed too (%s); will retry",
                                  _describe(again))
                        self.close_files()
                    if self._stop.wait(delay):
                        return
                    delay = min(delay * 2, MAX_BACKOFF)
                except Interrupted:
                    raise
                except Exception:  # noqa: BLE001 - no upload may stop the writer
                    if not self.resilient:
                        raise
                    self._isolate(batch, traceback.format_exc(limit=8))
                    break
            self._suspects.clear()

    def _isolate(self, batch: list[str], error: str) -> None:
        """A batch failed in a way no storage error explains: something in an upload that no
        check foresaw. Undo the attempt and store the uploads one at a time; the one that
        still fails alone is quarantined with the traceback, and the queue goes on."""
        self.close_files()
        self.recover()
        if len(batch) > 1:
            log.error("a batch of %d uploads failed unexpectedly; storing them one at a time:\n%s",
                      len(batch), error[-_MAX_REASON:])
            for name in batch:
                self._drain([name])
            return
        name = batch[0]
        if not (self.queue.partial / name).exists():
            return  # the attempt got as far as storing it
        # The whole file goes to quarantine: a copy of its rejected events would be a second copy.
        stale = self.queue.quarantine / f"{name}.events"
        stale.unlink(missing_ok=True)
        stale.with_name(stale.name + REASON_SUFFIX).unlink(missing_ok=True)
        reason = f"{name}: cannot be stored, unexpected error:\n{error[-_MAX_REASON:]}"
        self.queue.quarantine_file(name, reason)
        self.tally.quarantined_files += 1

    def _batches(self, names: list[str]) -> list[list[str]]:
        sizes = []
        for name in names:
            try:
                sizes.append((name, (self.queue.partial / name).stat().st_size))
            except FileNotFoundError:
                sizes.append((name, 0))
        return cut_batches(sizes, self.settings.batch_uploads, self.settings.batch_bytes)

    # -- one batch -----------------------------------------------------------

    def store_batch(self, names: list[str]) -> None:
        """Store the claimed uploads ``names`` exactly once (see docs/exactly-once.md)."""
        faults.point("claimed")
        decoded = []
        for name in names:
            if self._stop.is_set():
                # Nothing is journaled yet: the uploads stay claimed and the next start stores them.
                raise Interrupted(f"stopped while decoding: {len(names)} uploads stay claimed")
            item = self._decode(name)
            if item is not None:
                decoded.append(item)
        decoded = self._set_aside_held(decoded)
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
                raise StorageError(_describe(exc)) from exc
        self._release(decoded)
        self.state.batch_stored(decoded, self.tally)

    def _set_aside_held(self, decoded: list[_Decoded]) -> list[_Decoded]:
        """The uploads of ``decoded`` whose day files can be written now; those touching a day
        file another process holds open wait, claimed, until it is released."""
        held = {path: True for path in self.held.since}  # known held: look again only when due
        kept = []
        for item in decoded:
            paths = sorted(day_file_path(self.settings.data_dir, date) for date in item.dates)
            for path in paths:
                if path not in held:
                    held[path] = self._held(path)
            busy = [path for path in paths if held[path]]
            if busy:
                self.held.set_aside(item.name, busy)
            else:
                kept.append(item)
        return kept

    def _held(self, path: Path) -> bool:
        """Whether another process holds the day file ``path`` open (else it is open here now)."""
        try:
            self._day_file(path)
        except tables.HDF5ExtError as exc:
            if _held_by_another(exc):
                return True
            raise
        return False

    def _still_held(self, path: Path) -> bool:
        try:
            return self._held(path)
        except (OSError, tables.HDF5ExtError):
            return False  # some other fault: storing the uploads meets it and retries as usual

    def _leave_waiting(self) -> None:
        names = self.held.forget()
        if names:
            log.warning("%d uploads wait for day files held by another process; they stay claimed "
                        "in %s and the next run stores them", len(names), self.queue.partial)

    def _decode(self, name: str) -> _Decoded | None:
        path = self.queue.partial / name
        try:
            payload = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            upload = parse_queue_file(payload)
            rejected, dates = self._screen(upload)
        except DecodeError as exc:
            self.queue.quarantine_file(name, f"{name}: {exc}")
            self.tally.quarantined_files += 1
            return None
        except Exception:  # noqa: BLE001 - bad input must never stop the writer
            error = traceback.format_exc(limit=8)[-_MAX_REASON:]
            self.queue.quarantine_file(name, f"{name}: unexpected error\n{error}")
            self.tally.quarantined_files += 1
            return None
        return _Decoded(name, payload, upload, frozenset(dates), rejected)

    def _screen(self, upload: Upload) -> tuple[list, set]:
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
                    reason = f"{event_type.upload_code} event cannot be stored: {_describe(exc)}"
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
            day_file = self._day_file(day_file_path(self.settings.data_dir, date))
            base = station_path(cluster, station_id)
            blob_base = day_file.node_size(f"{base}/{BLOBS}") or 0
            arrays, rejected = rows.build(blob_base)
            for item in rejected:
                misfits.setdefault(item.origin, []).append((item.event, item.reason))
            if rows.unknown_codes:
                log_unknown_codes(rows.unknown_codes, f"station {station_id}")
            if not arrays:
                continue
            record = sizes.setdefault(str(day_file.path), {})
            for node in [BLOBS, *(event_type.table_name for event_type in arrays)]:
                record[f"{base}/{node}"] = day_file.node_size(f"{base}/{node}")
            built[key] = (arrays, rows.blobs)
        return built, sizes, misfits

    def _apply(self, names: tuple[str, ...], built: dict, sizes: dict) -> None:
        self.journal.write(Transaction(names, sizes, APPLYING))
        faults.point("journaled")
        current = None
        stored: Counter = Counter()  # counted once applied: an undone attempt stored nothing
        for (date, cluster, station_id), (arrays, blobs) in built.items():  # in date order
            day_file = self._day_file(day_file_path(self.settings.data_dir, date))
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

    # -- recovery ------------------------------------------------------------

    def recover(self, suspect: bool = False) -> None:
        """Finish or undo the batch a previous writer (or attempt) left in the journal.

        With ``suspect`` (a batch keeps failing with HDF5 errors though the
        disk has room) the day files that were open are taken as damaged.
        """
        transaction = self.journal.read()
        damaged = (set(self._suspects) if self.resilient and suspect
                   and not _disk_full(self.settings.data_dir) else set())
        if transaction is not None and transaction.state == APPLYING:
            log.warning("undoing an unfinished batch of %d uploads", len(transaction.uploads))
            for path, sizes in transaction.sizes.items():
                if Path(path) in damaged or not Path(path).exists():
                    continue
                try:
                    day_file = self._day_file(Path(path))
                    day_file.truncate(sizes)
                    day_file.flush(self.settings.fsync)
                except (tables.HDF5ExtError, tables.NodeError, ValueError, KeyError) as exc:
                    if (not self.resilient or _disk_full(self.settings.data_dir)
                            or _held_by_another(exc)):
                        raise StorageError(_describe(exc)) from exc
                    log.error("%s cannot be cut back (%s): taking it as damaged", path, _describe(exc))
                    damaged.add(Path(path))
            self.close_files()
        for path in sorted(damaged):
            self._heal(path)
        if suspect:
            self._suspects.clear()
        if transaction is None:
            return
        if transaction.state == APPLIED:
            log.info("finishing the release of %d stored uploads", len(transaction.uploads))
            for name in transaction.uploads:
                self._archive_claimed(name)
                self.queue.release(name)
            self.queue.sync_partial()
        self.journal.clear()

    def _heal(self, path: Path) -> None:
        """Replace a damaged day file by one rebuilt from the archive; keep the damaged one."""
        from .rebuild import rebuild_day  # rebuilding runs a Writer of its own

        self.close_files()
        date = date_of_day_file(path)
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        aside = self.queue.quarantine / f"{path.name}.damaged-{stamp}"
        if not path.exists():
            return
        rebuilt = None
        if self.settings.archive_days > 0 and self.queue.archived(date):
            scratch = self.settings.data_dir / f"rebuild-{date:%Y-%m-%d}"
            try:
                rebuilt = rebuild_day(self.settings, date, scratch)
            except ConfigError as exc:  # the archive holds nothing storable for that day
                log.error("cannot rebuild %s: %s", path, exc)
            except BaseException:
                shutil.rmtree(scratch, ignore_errors=True)
                raise  # disk full, say: the batch is retried and healing with it
            finally:
                self._install_signal_handlers()  # the rebuild's writer installed its own
        os.replace(path, aside)
        if rebuilt is not None:
            os.replace(rebuilt, path)
            shutil.rmtree(scratch, ignore_errors=True)
            reason = f"{path} was damaged (a crash inside HDF5): rebuilt from the archive"
        else:
            reason = (f"{path} was damaged and could not be rebuilt from the archive: a new day file "
                      "is started; recover this one's data with HDF5 tools")
        (aside.parent / (aside.name + REASON_SUFFIX)).write_text(reason + "\n")
        log.critical("%s; the damaged file is kept as %s", reason, aside)
        if self.settings.fsync:
            fsync_dir(path.parent)
            fsync_dir(aside.parent)

    def _archive_claimed(self, name: str) -> None:
        path = self.queue.partial / name
        if self.settings.archive_days <= 0 or not path.exists():
            return
        _, dates = self._screen(parse_queue_file(path.read_bytes()))
        self.queue.archive_claimed([(name, dates)])

    # -- open day files ------------------------------------------------------

    def _day_file(self, path: Path) -> DayFile:
        day_file = self._files.pop(path, None)
        if day_file is None:
            if len(self._files) >= MAX_OPEN_FILES:
                oldest = next(iter(self._files))
                self._files.pop(oldest).close()
            day_file = DayFile(path)
        self._files[path] = day_file  # re-inserting keeps the dict in least-recent order
        return day_file

    def close_files(self) -> None:
        while self._files:
            _, day_file = self._files.popitem()
            try:
                day_file.close()
            except (OSError, tables.HDF5ExtError) as exc:
                log.error("closing %s failed: %s", day_file.path, _describe(exc))


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


def _held_by_another(exc: BaseException) -> bool:
    """HDF5 refused to open a day file because another process (a reader) has it locked."""
    return "unable to lock file" in str(exc)


def _disk_full(data_dir: Path, margin: int = 64 * 2**20) -> bool:
    """Too little room left to trust an HDF5 error as damage rather than a full disk."""
    try:
        return shutil.disk_usage(data_dir).free < margin
    except OSError:
        return True


def _describe(exc: BaseException) -> str:
    if isinstance(exc, StorageError):
        return str(exc)  # described when it was raised
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"disk full: {exc}"
    if _held_by_another(exc):
        return f"a day file is locked by another process (a reader?): {str(exc).strip().splitlines()[-1]}"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else ''}"

