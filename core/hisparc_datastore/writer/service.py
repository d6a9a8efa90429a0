"""The writer service: claims uploads and stores them batch by batch, retrying storage errors
with back-off, isolating an upload that fails unexpectedly, and waiting for day files a reader
holds open; idle, it tidies the archive.

The parts it runs: :mod:`.batch` stores one batch exactly once, :mod:`.recovery` puts things
back as the journal says after a failure (healing damaged day files), :mod:`.tidying` keeps
the archive, :mod:`hisparc_datastore.storage.openfiles` keeps the day files open.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import signal
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

import tables

from hisparc_datastore import __version__, _hangup
from hisparc_datastore.config import Settings
from hisparc_datastore.ops.logsetup import reopen as reopen_logs
from hisparc_datastore.plugin.registry import Registry
from hisparc_datastore.queue.folders import REASON_SUFFIX, events_name
from hisparc_datastore.storage.errors import DamagedDayFile, StorageError, describe, held_by_another
from hisparc_datastore.storage.heldfiles import HeldFiles
from hisparc_datastore.writer.batch import BatchStore, Interrupted, NoRoom, Tally, claimed_batches
from hisparc_datastore.writer.context import StoreContext
from hisparc_datastore.writer.lock import WriterLock
from hisparc_datastore.writer.prefetch import AHEAD, Preparer
from hisparc_datastore.writer.prepare import MAX_REASON, Bounds
from hisparc_datastore.writer.recovery import Recovery
from hisparc_datastore.writer.state import WriterState
from hisparc_datastore.writer.tidying import ArchiveTidier, prune_held

log = logging.getLogger(__name__)

FIRST_BACKOFF = 1.0  # seconds; doubles up to MAX_BACKOFF while storing keeps failing
MAX_BACKOFF = 60.0

__all__ = ["GaveUp", "Tally", "Writer"]


_GATHER_LOOK_S = 0.2  # how often a gathering writer looks whether a whole batch is there


class GaveUp(Exception):
    """``--once`` met what only the operator can end (too little disk): the batch stays
    claimed in ``partial/`` for the next run, and the message says why."""


class Writer:
    """The one writer of a ``data_dir``."""

    def __init__(self, settings: Settings, registry: Registry, *, resilient: bool = True) -> None:
        """``resilient``: retry storage errors and heal damaged day files (the service);
        without it they propagate."""
        self.settings = settings
        self.registry = registry
        self.resilient = resilient
        self.context = StoreContext.open(settings)
        self.queue, self.journal, self.files = self.context.queue, self.context.journal, self.context.files
        self.tally = Tally()
        self.started = time.time()  # for /metrics
        self.state = WriterState(settings.data_dir, fsync=settings.fsync)  # for `datastore status`
        self.held = HeldFiles()  # day files a reader holds open, and the uploads waiting for them
        self._stop = threading.Event()
        self._hangups: list[int] = []
        self.batches = BatchStore(self.context, registry, self.tally, self.state, self._stop, self.held,
                                  commit_s=settings.commit_s)
        self.recovery = Recovery(self.context, self.batches.screen, resilient)
        self.tidier = ArchiveTidier(settings, self.queue, self._stop)
        self.preparer = Preparer(self.queue.partial, registry, Bounds.of(settings),
                                 enabled=settings.prepare_process)
        self._once = False

    def run(self, once: bool = False, lock: WriterLock | None = None) -> Tally:
        """Drain the queue; with ``once`` stop when it is empty, else on SIGTERM/SIGINT.
        ``lock``: the data_dir's lock, when the caller took it already."""
        self._once = once
        with contextlib.nullcontext() if lock is not None else WriterLock(self.settings.data_dir):
            previous = self._install_signal_handlers()
            log.info("writer started: hisparc-datastore %s; plugins %s; data_dir %s; %d waiting in "
                     "incoming/", __version__, ", ".join(sorted(set(self.registry.owners.values())))
                     or "none", self.settings.data_dir, self.queue.waiting())
            try:
                self._drain(self.queue.claimed(), recover=True)
                while not self._stop.is_set():
                    self._reopen_log_if_asked()
                    if self.held.due():
                        free = self.held.released(self._still_held)
                        if free:
                            self._drain(free)
                    names = self._claim()
                    if names:
                        self._drain(names, more=True)
                        continue
                    self._commit()
                    self.files.close_all()
                    # The queue is drained: the child's ~50 MB are not needed until a backlog.
                    self.preparer.close()
                    if once:
                        self._leave_waiting()
                        self.queue.prune_archive(self.settings.archive_days)
                        prune_held(self.queue, self.settings.hold_days)
                        break
                    self.tidier.tidy()
                    # Waiting on an Event sleeps in the kernel and wakes at once on a signal.
                    self._stop.wait(self.settings.sleep)
                self._commit()
            except Interrupted as exc:
                log.info("%s", exc)
                self._commit()  # the batches before the interrupted one are whole
            finally:
                self.preparer.close()
                self.files.close_all()
                # A stopped writer's handlers would swallow the signals meant for its caller.
                for signum, handler in previous.items():
                    signal.signal(signum, handler)
        log.info("writer stopped: %d uploads, %d events stored; %d batches prepared ahead in a "
                 "second process, %d of their uploads by the writer rather than wait",
                 self.tally.uploads, self.tally.events, self.preparer.batches_ahead,
                 self.preparer.uploads_here)
        return self.tally

    def stop(self) -> None:
        self._stop.set()

    def _install_signal_handlers(self) -> dict:
        """Make SIGTERM and SIGINT stop the writer after the batch in hand; return the handlers
        they had."""
        if threading.current_thread() is not threading.main_thread():
            return {}

        def handle(signum, frame):
            log.info("received %s: finishing the batch in hand", signal.Signals(signum).name)
            self._stop.set()

        def hangup(signum, frame):
            self._hangups.append(signum)  # the log is reopened between batches

        previous = {signum: signal.signal(signum, handle) for signum in (signal.SIGTERM, signal.SIGINT)}
        previous[signal.SIGHUP] = _hangup.take_over(hangup)
        return previous

    def _reopen_log_if_asked(self) -> None:
        if self._hangups:
            self._hangups.clear()
            reopen_logs()
            log.info("SIGHUP: log reopened")

    def _drain(self, names: list[str], recover: bool = False, more: bool = False) -> None:
        """Store ``names`` in batches; with ``more``, go on with what arrives meanwhile.

        While a batch is stored, the next AHEAD are prepared in a second process
        (:mod:`.prefetch`); the first, and any retry, is prepared here.
        """
        batches = self._batches(names, more)
        batch = next(batches, [])
        upcoming = collections.deque()
        while True:
            prepared = self.preparer.take(batch, self._stop)
            while len(upcoming) < AHEAD and (following := next(batches, None)):
                upcoming.append(following)
                self.preparer.submit(following)
            if not self._store(batch, prepared, recover) or not upcoming:
                return
            recover = False
            batch = upcoming.popleft()

    def _batches(self, names: list[str], more: bool) -> Iterator[list[str]]:
        yield from claimed_batches(self.queue, names, self.settings)
        # A day file a reader let go of comes first: its uploads have waited longest.
        while more and not self._stop.is_set() and not self.held.due():
            if self._gathering() and not self._whole_batch_waiting():
                return  # the rest gathers first (see _claim)
            names = self.queue.claim(self.settings.batch_uploads)
            if not names:
                return
            yield from claimed_batches(self.queue, names, self.settings)

    def _gathering(self) -> bool:
        return self.settings.gather_s > 0 and not self._once

    def _whole_batch_waiting(self) -> bool:
        return self.queue.batch_waiting(self.settings.batch_uploads, self.settings.batch_bytes)

    def _claim(self) -> list[str]:
        """The next batch. When less than a whole batch waits, the uploads gather for up to
        ``gather_s`` from when the writer found them: each batch costs a journal write and
        a look-up of every node it touches, paid per batch, not per event."""
        if self._gathering():
            found = time.monotonic()
            while (self.queue.has_incoming() and not self._whole_batch_waiting()
                   and time.monotonic() - found < self.settings.gather_s):
                if self._stop.wait(_GATHER_LOOK_S):
                    return []
        return self.queue.claim(self.settings.batch_uploads)

    def _commit(self) -> None:
        """Make the batches stored so far durable and release them (see BatchStore.commit)."""
        self._store([], None, recover=False, commit=True)

    def _store(self, batch: list[str], prepared: list | None, recover: bool, commit: bool = False) -> bool:
        """Store one batch, retrying storage errors with back-off; False when asked to stop
        while waiting to retry. With ``commit``, make it durable before returning.

        A failure undoes every batch not yet committed (the journal describes them
        together), so the retry stores their uploads again, before this batch's.
        A batch that fails twice with an HDF5 error while the disk has room
        points at a damaged day file: the next recovery rebuilds the files
        that were open from the archive (see docs/exactly-once.md).
        """
        delay, failures = FIRST_BACKOFF, 0
        parts = [batch] if batch else []
        try:
            while True:
                try:
                    if recover or failures:
                        self.recovery.recover(suspect=failures >= 2)  # undo what a failed attempt left
                        self.batches.check_written |= self.recovery.undid
                        recover = False
                    while parts:
                        self._store_and_log(parts[0], prepared)
                        prepared = None
                        parts.pop(0)
                    if commit:
                        self.batches.commit()
                    return True
                except (StorageError, OSError, tables.HDF5ExtError) as exc:
                    parts = self._again(parts)
                    batch = [name for part in parts for name in part]
                    if not self.resilient:
                        raise
                    if self._once and isinstance(exc, NoRoom):
                        # waiting is the service's way; a run from cron or a shell would hang
                        raise GaveUp(f"{exc.args[0].removesuffix('; waiting for room')}; "
                                     f"{len(batch)} uploads stay claimed in {self.queue.partial} "
                                     "for the next run") from None
                    prepared = None  # used up: the retry prepares the uploads again
                    self.tally.storage_errors += 1
                    # Disk full or an I/O error: keep the uploads claimed and retry
                    # until space returns; never lose them, never stop.
                    log.error("could not store %d uploads (%s); they stay claimed in %s, "
                              "retrying in %.0f s", len(batch), describe(exc), self.queue.partial, delay)
                    cause = exc.__cause__ if isinstance(exc, StorageError) else exc
                    # Only HDF5's own errors hint at damage: an OSError is the disk's, and
                    # a lock held by a reader is no damage either.
                    hint = isinstance(cause, tables.HDF5ExtError) and not held_by_another(cause)
                    failures = failures + 1 if hint else max(failures, 1)
                    self.recovery.suspects.update(self.files)
                    if isinstance(exc, DamagedDayFile):
                        self.recovery.damaged.add(exc.path)
                    self.files.close_all()
                    try:
                        # Cut back at once what the attempt appended, so that no
                        # reader sees half a batch while we wait for space.
                        self.recovery.recover()
                        self.batches.check_written |= self.recovery.undid
                    except (StorageError, OSError, tables.HDF5ExtError) as again:
                        log.error("undoing the failed batch failed too (%s); will retry",
                                  describe(again))
                        self.files.close_all()
                    if self._stop.wait(delay):
                        return False
                    delay = min(delay * 2, MAX_BACKOFF)
                except Interrupted:
                    raise
                except Exception:  # no upload may stop the writer
                    if not self.resilient:
                        raise
                    parts = self._again(parts)
                    self._isolate([name for part in parts for name in part], traceback.format_exc(limit=8))
                    return True
        finally:
            self.recovery.suspects.clear()

    def _again(self, parts: list[list[str]]) -> list[list[str]]:
        """What a failed attempt leaves to store: the uncommitted batches (undone with it),
        then ``parts``, cut into batches again."""
        undone = self.batches.abandon()
        if not undone:
            return parts
        names = dict.fromkeys(undone + [name for part in parts for name in part])
        return claimed_batches(self.queue, list(names), self.settings)

    def _store_and_log(self, batch: list[str], prepared: list | None) -> None:
        started = time.monotonic()
        uploads, events = self.batches.store(batch, prepared)
        log.info("batch stored: %d uploads, %d events in %.2f s; %d left in incoming/",
                 uploads, events, time.monotonic() - started, self.queue.waiting())

    def _isolate(self, batch: list[str], error: str) -> None:
        """A batch failed in a way no storage error explains: something in an upload that no
        check foresaw. Undo the attempt and store the uploads one at a time; the one that
        still fails alone is quarantined with the traceback, and the queue goes on."""
        self.files.close_all()
        self.recovery.recover()
        if len(batch) > 1:
            log.error("a batch of %d uploads failed unexpectedly; storing them one at a time:\n%s",
                      len(batch), error[-MAX_REASON:])
            for name in batch:
                # each its own transaction, so a failing one undoes no other
                self._store([name], None, recover=False, commit=True)
            return
        name = batch[0]
        if not (self.queue.partial / name).exists():
            return  # the attempt got as far as storing it
        # The whole file goes to quarantine: a copy of its rejected events would be a second copy.
        stale = self.queue.quarantine / events_name(name)
        stale.unlink(missing_ok=True)
        stale.with_name(stale.name + REASON_SUFFIX).unlink(missing_ok=True)
        reason = f"{name}: cannot be stored, unexpected error:\n{error[-MAX_REASON:]}"
        self.queue.quarantine_file(name, reason)
        self.tally.quarantined_files += 1

    def _still_held(self, path: Path) -> bool:
        try:
            return bool(self.batches.blocked(path))
        except (OSError, tables.HDF5ExtError):
            return False  # some other fault: storing the uploads meets it and retries as usual

    def _leave_waiting(self) -> None:
        names = self.held.forget()
        if names:
            log.warning("%d uploads wait for day files held by another process or not writable; "
                        "they stay claimed in %s and the next run stores them", len(names),
                        self.queue.partial)

