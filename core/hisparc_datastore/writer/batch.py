"""Stores one batch of claimed uploads exactly once: decode, screen, build the rows, journal,
append, release (see docs/exactly-once.md)."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
from collections import Counter
from pathlib import Path

import attrs
import tables

from hisparc_datastore.config import Settings
from hisparc_datastore.plugin.registry import Registry
from hisparc_datastore.queue.folders import Queue
from hisparc_datastore.storage.errors import DamagedDayFile, StorageError, describe, held_by_another
from hisparc_datastore.storage.heldfiles import HELD, HeldFiles
from hisparc_datastore.storage.layout import (
    BLOBS,
    copy_day_file,
    day_file_path,
    drop_copies,
    snapshot_path,
    station_path,
)
from hisparc_datastore.storage.reserve import PER_FILE, PER_NODE, release, reserve, room_for
from hisparc_datastore.storage.verify import unreadable_rows
from hisparc_datastore.util import faults
from hisparc_datastore.util.durable import fsync_appended
from hisparc_datastore.writer.context import StoreContext
from hisparc_datastore.writer.journal import APPLIED, APPLYING, NEW, Transaction
from hisparc_datastore.writer.prepare import MAX_REASON_LINES as MAX_REASON_LINES  # the tests read it here
from hisparc_datastore.writer.prepare import (
    Bounds,
    DayRows,
    PreparedUpload,
    Screen,
    StoredUpload,
    concatenate,
    prepare_file,
)
from hisparc_datastore.writer.reasons import kind_of
from hisparc_datastore.writer.rows import log_unknown_codes, shift_blob_indices
from hisparc_datastore.writer.state import WriterState

log = logging.getLogger(__name__)


@attrs.define
class Tally:
    """What the writer did, for the log and for ``--once`` callers."""

    uploads: int = 0
    stored: Counter = attrs.field(factory=Counter)  # upload code -> events stored
    quarantined_events: Counter = attrs.field(factory=Counter)  # reason kind -> events
    quarantined_files: int = 0
    suspicious_files: int = 0  # over a bound per upload: set aside whole in suspicious/
    storage_errors: int = 0  # failed attempts to store a batch (each is retried)

    @property
    def events(self) -> int:
        return sum(self.stored.values())


@attrs.define
class Group:
    """Batches appended since the last durable point, journaled as one transaction and made
    durable and released together by :meth:`BatchStore.commit`."""

    transaction: Transaction
    uploads: list[StoredUpload]  # every upload of its batches, in claim order
    started: float  # time.monotonic() of its first batch
    batches: int = 0
    day_files: set[Path] = attrs.field(factory=set)  # the day files it appended to
    reserved: list[Path] = attrs.field(factory=list)  # files given room (see _reserve)


class NoRoom(StorageError):
    """Too little free disk for the next batch and the reserve: the writer waits (a storage
    error, retried with back-off) and ``datastore status`` says so."""


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
    without it (a rebuild) no file is taken as held. Without ``undo_copies`` (a rebuild,
    which discards its scratch files on any error) no room is set aside and no day file
    copied before a batch adds nodes to it.

    ``commit_s``: batches stored within that many seconds of the first are one transaction
    (a :class:`Group`): one fsync per day file and one release for all of them, so that the
    pages HDF5 writes again at every durable point (a table's last page, its object header,
    the chunk index, the heap) are paid per ``commit_s``, not per batch. 0: every batch is
    made durable on its own. A batch that adds a node is always its own transaction.
    """

    def __init__(self, context: StoreContext, registry: Registry, tally: Tally, state: WriterState,
                 stop: threading.Event, held: HeldFiles | None = None, undo_copies: bool = True,
                 commit_s: float = 0.0) -> None:
        self.undo_copies = undo_copies
        self.commit_s = commit_s
        self.group: Group | None = None
        self.context = context
        self.settings = context.settings
        self.registry = registry
        self.queue, self.journal, self.files = context.queue, context.journal, context.files
        self.tally = tally
        self.state = state
        self.stop = stop
        self.held = held
        self.screen = Screen(registry, Bounds.of(context.settings))
        # Set after a batch was undone: the next one reads back every blob it wrote before
        # it is marked applied (see storage.undo), and a damaged file is healed, not appended to.
        self.check_written = False

    def store(self, names: list[str], prepared: list[PreparedUpload | None] | None = None) -> tuple[int, int]:
        """Store the claimed uploads ``names`` exactly once (see docs/exactly-once.md); returns
        the uploads and events the batch appended (made durable by the commit).

        ``prepared``: the uploads as :mod:`.prefetch` made them ready in a second process,
        else they are prepared here. They are used up: a retry prepares them again.
        """
        faults.point("claimed")
        if prepared is None:
            prepared = []
            for name in names:
                if self.stop.is_set():
                    # Nothing is journaled yet: the uploads stay claimed and the next start stores them.
                    raise Interrupted(f"stopped while decoding: {len(names)} uploads stay claimed")
                prepared.append(self.prepare(name))
        uploads = [item for item in prepared if item is not None and self._readable(item)]
        if self.held is not None:
            uploads = self._set_aside_held(uploads, self.held)
            uploads = self._within_days(uploads)
        built, sizes = self._build(uploads)
        if built:
            self._check_room(uploads, sizes)
        held = self.held.describe() if self.held is not None else []
        waits_changed = self.state.no_room is not None or held != self.state.held
        if self.state.no_room is not None:
            log.info("the disk has room again: storing")
            self.state.no_room = None
        self.state.held = held
        for item in uploads:
            if item.rejected_events:
                self._quarantine_events(item)
        try:
            if built and self._adds_nodes(sizes):
                # Room set aside or a copy describes one batch: it is a transaction alone.
                self.commit()
                self._apply(uploads, built, sizes)
                self.commit()
            else:
                self._apply(uploads, built, sizes)
                if time.monotonic() - self.group.started >= self.commit_s:
                    self.commit()
        except (OSError, tables.HDF5ExtError) as exc:
            raise StorageError(describe(exc)) from exc
        if self.group is not None and waits_changed:
            self.state.save(self.tally)  # what waits (held files, room) is seen before the commit
        return len(uploads), sum(len(records) for arrays, _ in built.values() for records in arrays.values())

    def commit(self) -> None:
        """Make the batches stored since the last commit durable and release their uploads:
        flush and fsync every day file they appended to, journal them applied, archive.
        An OSError or HDF5 error is the caller's to undo and retry, as for a batch."""
        group = self.group
        if group is None:
            return
        for path in sorted(group.day_files):
            if path in self.files:
                self.files.get(path).flush(self.settings.fsync)
            elif self.settings.fsync:
                fsync_appended(path)  # closed since (HDF5 flushed it then): its pages still count
        faults.point("flushed")
        transaction = attrs.evolve(group.transaction, state=APPLIED)
        if transaction.uploads:  # else nothing was journaled: nothing of it is stored
            self.journal.write(transaction)
        drop_copies(transaction.copies, self.settings.fsync)
        for day_file in group.reserved:
            # The room the batch did not use, given back (every file flushed above). If the
            # writer dies before, the next batch that adds a node to the file gives it back.
            release(day_file)
        # counted once committed: an undone attempt stored nothing
        stored = sum((item.counts for item in group.uploads), Counter())
        self.tally.stored.update(stored)
        log.info("committed: %d uploads of %d batches, %d events", len(group.uploads), group.batches,
                 stored.total())
        faults.point("applied")
        self.group = None
        self._release(group.uploads)
        self.state.batch_stored(group.uploads, self.tally, group.batches)

    def abandon(self) -> list[str]:
        """Forget the batches not yet committed (a batch failed: recovery undoes them all, as
        the journal says); returns their uploads, still claimed, to be stored again."""
        group, self.group = self.group, None
        return [item.name for item in group.uploads] if group is not None else []

    def prepare(self, name: str) -> PreparedUpload | None:
        """Prepare the claimed upload ``name`` here; None when it is gone (already stored)."""
        return prepare_file(self.queue.partial / name, self.screen)

    def _readable(self, item: PreparedUpload) -> bool:
        if item.aside is not None:
            self.queue.set_aside(item.name, f"station {item.station_id} cluster {item.cluster}: "
                                 f"{item.aside}")
            self.tally.suspicious_files += 1
            return False
        if item.fault is None:
            return True
        self.queue.quarantine_file(item.name, item.fault)
        self.tally.quarantined_files += 1
        return False

    def _set_aside_held(self, uploads: list[PreparedUpload], held_files: HeldFiles) -> list[PreparedUpload]:
        """The uploads whose day files can be written now; those touching a day file another
        process holds open, or one that cannot be written (its mode, owner, an immutable
        flag), wait, claimed, until it can."""
        # known held: look again only when due
        held = {path: held_files.reasons.get(path) or HELD for path in held_files.since}
        kept = []
        for item in uploads:
            paths = sorted(day_file_path(self.settings.data_dir, date) for date in item.dates)
            for path in paths:
                if path not in held:
                    held[path] = self.blocked(path)
            busy = [path for path in paths if held[path]]
            if busy:
                held_files.set_aside(item.name, busy, {path: held[path] for path in busy})
            else:
                kept.append(item)
        return kept

    def _within_days(self, uploads: list[PreparedUpload]) -> list[PreparedUpload]:
        """The uploads that keep the batch within ``batch_days`` dates (the first always);
        the others go back to ``incoming/``, to be claimed again in turn with other stations'
        uploads. Each date is a day file to open: so no batch holds the queue up for long,
        whatever dates one station's uploads name."""
        dates: set = set()
        kept, back = [], []
        for item in uploads:
            more = dates | item.dates
            if kept and len(more) > self.settings.batch_days:
                back.append(item.name)
                continue
            kept.append(item)
            dates = more
        if back:
            self.queue.unclaim(back)
            log.info("%d uploads put back into incoming/: with them the batch would store more "
                     "than batch_days %d dates", len(back), self.settings.batch_days)
        return kept

    def blocked(self, path: Path) -> str | None:
        """Why the day file ``path`` cannot be written now: HELD (another process holds it
        open) or what refuses it; None when it can (and it is open here now)."""
        if not path.exists():
            # made only if an event is stored in it: its folder must take it
            folder = next(parent for parent in path.parents if parent.exists())
            if not os.access(folder, os.W_OK | os.X_OK):
                return f"its folder {folder} cannot be written"
            return None
        try:
            self.files.get(path)
        except tables.HDF5ExtError as exc:
            if held_by_another(exc):
                return HELD
            raise
        except PermissionError as exc:
            # Retrying the batch would fail for ever; only this file's uploads need to wait.
            return f"cannot be opened for writing ({exc}): mode, owner or an immutable flag?"
        return None

    def _build(self, uploads: list[PreparedUpload]) -> tuple[dict, dict]:
        """Record arrays per (date, cluster, station), with blob indices counted on from the
        station's blobs on disk, and the journal's node sizes per day file.

        Day files are visited one at a time in date order, here and in :meth:`_apply`, so a
        batch may span any number of days with at most MAX_OPEN_FILES of them open.
        """
        stations: dict[tuple, list[DayRows]] = {}
        for item in uploads:  # in claim order, so each table gets its rows in that order
            for date, day in item.days.items():
                stations.setdefault((date, item.cluster, item.station_id), []).append(day)
        built, sizes = {}, {}
        for item in uploads:  # one line per upload, however many days and codes it holds
            unknown = sum((day.unknown_codes for day in item.days.values()), Counter())
            if unknown:
                log_unknown_codes(unknown, f"{item.name} (station {item.station_id})")
        for key in sorted(stations, key=lambda key: (key[0], key[1].lower(), key[2])):
            date, cluster, station_id = key
            days = [day for day in stations[key] if day.arrays]
            if not days:
                continue
            path = day_file_path(self.settings.data_dir, date)
            # A new day file is made when rows are appended, not here: if every event turns
            # out a misfit, no file without a /hisparc group is left for readers to trip over.
            day_file = self.files.get(path) if path.exists() else None
            base = station_path(cluster, station_id)
            offset = (day_file.node_size(f"{base}/{BLOBS}") if day_file else None) or 0
            pieces: dict[str, list] = {}
            blobs: list[bytes] = []
            for day in days:
                for code, records in day.arrays.items():
                    event_type = self.registry.get(code)
                    pieces.setdefault(code, []).append(shift_blob_indices(event_type, records, offset))
                offset += len(day.blobs)
                blobs.extend(day.blobs)
            arrays = {self.registry.get(code): concatenate(parts) for code, parts in pieces.items()}
            record = sizes.setdefault(str(path), {})
            # The blobs node only when the batch grows it: a station without traces has none,
            # and recording it as missing would take every batch of it for one adding a node.
            for node in [*([BLOBS] if blobs else []), *(event_type.table_name for event_type in arrays)]:
                record[f"{base}/{node}"] = day_file.node_size(f"{base}/{node}") if day_file else None
            built[key] = (arrays, blobs)
        return built, sizes

    def _check_room(self, uploads: list[PreparedUpload], sizes: dict) -> None:
        """Raise NoRoom unless the disk holds the batch (about twice its queue files), the
        room :meth:`_apply` sets aside, and ``[Writer] reserve_mb`` besides: an append
        that meets a full disk is undone, but one that is never tried costs nothing."""
        need = self.settings.reserve_mb * 2**20
        for item in uploads:
            with contextlib.suppress(OSError):
                need += 2 * (self.queue.partial / item.name).stat().st_size
        for path, nodes in sizes.items():
            if any(size is None for size in nodes.values()) and Path(path).exists():
                # the room set aside in it: the data is counted above, in the queue files
                need += PER_NODE * len(nodes) + PER_FILE
        try:
            free = shutil.disk_usage(self.settings.data_dir).free
        except OSError:
            return  # the append itself will say what is wrong
        if free >= need:
            return
        self.state.no_room = {"since": self.state.no_room["since"] if self.state.no_room else time.time(),
                              "free": free, "needed": need, "reserve_mb": self.settings.reserve_mb}
        self.state.save(self.tally)
        raise NoRoom(f"disk full: {free / 2**20:.1f} MB free in {self.settings.data_dir}, the next "
                     f"batch needs about {need / 2**20:.1f} MB with [Writer] reserve_mb = "
                     f"{self.settings.reserve_mb}; waiting for room")

    def _adds_nodes(self, sizes: dict) -> list[str]:
        """The day files the batch adds a node (group, table, blobs) to."""
        return [path for path, nodes in sizes.items() if any(size is None for size in nodes.values())]

    def _reserve(self, built: dict, sizes: dict) -> tuple[dict[str, str], list[Path]]:
        """Set room aside in each existing day file the batch adds a node to (see
        :mod:`..storage.reserve`); returns the journal's copies and the files given room.

        HDF5 interrupted by a full disk while it makes a group can leave a file whose
        earlier groups cannot be reached, which no cut-back repairs; with the room set
        aside no write of the batch to that file can meet a full disk. Where the file
        system cannot set room aside, the file is copied whole before, as the journal
        says (``copies``); NEW for each day file the batch makes (removed on undo).
        """
        copies: dict[str, str] = {}
        reserved: list[Path] = []
        if not self.undo_copies:
            return copies, reserved
        data: Counter = Counter()
        for (date, _, _), (arrays, blobs) in built.items():
            path = str(day_file_path(self.settings.data_dir, date))
            data[path] += sum(records.nbytes for records in arrays.values()) + sum(map(len, blobs))
        for path in self._adds_nodes(sizes):
            day_file = Path(path)
            if not day_file.exists():
                copies[path] = NEW
            elif reserve(day_file, room_for(data[path], len(sizes[path]))):
                reserved.append(day_file)
            else:
                copies[path] = str(snapshot_path(day_file))
        return copies, reserved

    def _reached(self, built: dict, sizes: dict) -> dict[str, dict[str, int]]:
        """Rows each node will hold once the batch is stored: how far an attempt may write."""
        reached: dict[str, dict[str, int]] = {}
        for (date, cluster, station_id), (arrays, blobs) in built.items():
            path = str(day_file_path(self.settings.data_dir, date))
            base = station_path(cluster, station_id)
            counts = {t.table_name: len(r) for t, r in arrays.items()}
            if blobs:
                counts[BLOBS] = len(blobs)
            for node, count in counts.items():
                node_path = f"{base}/{node}"
                reached.setdefault(path, {})[node_path] = (sizes[path].get(node_path) or 0) + count
        return reached

    def _open_group(self, uploads: list[PreparedUpload]) -> Group:
        """The group this batch joins (a new one after a commit), with its uploads added."""
        if self.group is None:
            self.group = Group(Transaction((), {}, APPLYING), [], time.monotonic())
        self.group.uploads.extend(StoredUpload.of(item) for item in uploads)
        self.group.batches += 1
        return self.group

    @staticmethod
    def _joined(before: Transaction, uploads: list[PreparedUpload], sizes: dict, reached: dict,
                copies: dict[str, str]) -> Transaction:
        """``before`` with this batch added: for a node it touches first, the size it has now,
        which is what the last commit made durable."""
        joined_sizes = {path: dict(nodes) for path, nodes in before.sizes.items()}
        for path, nodes in sizes.items():
            for node, size in nodes.items():
                joined_sizes.setdefault(path, {}).setdefault(node, size)
        joined_reached = {path: dict(nodes) for path, nodes in before.reached.items()}
        for path, nodes in reached.items():
            joined_reached.setdefault(path, {}).update(nodes)  # a batch only grows a node
        return Transaction(before.uploads + tuple(item.name for item in uploads), joined_sizes, APPLYING,
                           {**before.copies, **copies}, joined_reached)

    def _apply(self, uploads: list[PreparedUpload], built: dict, sizes: dict) -> None:
        group = self._open_group(uploads)
        if not built:
            # Nothing to append; released with the group (journaled or not, nothing of them
            # is stored, so a restart that stores them again stores nothing twice).
            return
        # Before the journal: room set aside changes no byte of a day file, and a full
        # disk here leaves nothing to undo.
        copies, reserved = self._reserve(built, sizes)
        group.transaction = self._joined(group.transaction, uploads, sizes, self._reached(built, sizes),
                                         copies)
        group.reserved.extend(reserved)
        # Journaled before the copies are made, so that none is ever left unaccounted for:
        # undoing puts back a copy that is whole (made under a temporary name) and cuts back
        # a file whose copy was not made yet, to which nothing was appended either.
        self.journal.write(group.transaction)
        faults.point("journaled")
        for path, copy in copies.items():
            if copy != NEW:
                self.files.get(Path(path)).h5.flush()  # the copy is what the journal's sizes describe
                copy_day_file(Path(path), Path(copy), self.settings.fsync)
        faults.point("copied")
        for (date, cluster, station_id), (arrays, blobs) in built.items():  # in date order
            path = day_file_path(self.settings.data_dir, date)
            day_file = self.files.get(path)
            group.day_files.add(path)
            day_file.append_blobs(cluster, station_id, blobs)
            faults.point("blobs-appended")
            for event_type, records in arrays.items():
                day_file.append_rows(cluster, station_id, event_type, records)
                faults.point("table-appended")
        if self.check_written:
            self._read_back(built, sizes)

    def _read_back(self, built: dict, sizes: dict) -> None:
        """Read every blob the batch wrote; raise DamagedDayFile for a file where one fails."""
        for (date, cluster, station_id), (_, blobs) in built.items():
            if not blobs:
                continue
            path = day_file_path(self.settings.data_dir, date)
            node_path = f"{station_path(cluster, station_id)}/{BLOBS}"
            first = sizes[str(path)].get(node_path) or 0
            damage = unreadable_rows(self.files.get(path).h5.get_node(node_path), path,
                                     first, first + len(blobs))
            if damage is not None:
                log.critical("blobs just stored read back unreadable: %s", damage)
                raise DamagedDayFile(path, str(damage))
        self.check_written = False

    def _release(self, uploads: list[StoredUpload]) -> None:
        if self.settings.archive_days > 0:
            # If this fails the journal still says applied: the retry archives
            # and releases without storing again.
            self.queue.archive_claimed((item.name, item.dates) for item in uploads if item.dates)
        for item in uploads:
            self.queue.release(item.name)
            self.tally.uploads += 1
        self.queue.sync_partial()
        faults.point("released")
        self.journal.clear()

    def _quarantine_events(self, item: PreparedUpload) -> None:
        kinds = Counter(kind_of(reason) for _, reason in item.rejected) + item.unnamed_kinds
        reasons = [f"station {item.station_id}, event {i}: {reason}"
                   for i, (_, reason) in zip(item.rejected_at, item.rejected, strict=True)]
        if item.unnamed:
            # A reason file an operator can read: the rest by kind, not a million lines.
            reasons.append(f"... and {len(item.unnamed)} more events: "
                           + "; ".join(f"{n} x {kind}" for kind, n in item.unnamed_kinds.most_common(20)))
        target = self.queue.quarantine_events(item.name, item.upload.to_queue_bytes(), reasons)
        self.tally.quarantined_events.update(kinds)
        log.warning("%s: %d of %d events quarantined in %s (first: %s)", item.name,
                    item.rejected_events, item.events, target, item.rejected[0][1])
