"""Durable queueing of an accepted upload: the station hears ``100`` only once the file is safe.

The file is written into ``tmp/``, fsynced (the file, then ``tmp/``), renamed
into ``incoming/`` (or ``suspicious/``) and the directory fsynced. A crash at any point leaves
either nothing in the queue or the whole file; a failure removes what was
written, so the station's retry cannot produce a second copy.

Between the fsync and the rename the caller's duplicate memory is told the
file is whole (``commit``); from then on "``tmp/NAME`` is gone" means "it was
queued", so a file that failed to be queued is removed from ``tmp/`` only
after the claim naming it was dropped (``release``).

A ``tmp/`` file's name carries the pid and time of the process writing it;
one whose process is gone was never answered ``100`` and is removed
(:meth:`Spool.remove_dead_tmp`).
"""

from __future__ import annotations

import datetime
import itertools
import logging
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

from hisparc_datastore.codec.decoding import Upload, event_datetime
from hisparc_datastore.queue.folders import REASON_SUFFIX, Queue
from hisparc_datastore.receiver.owner import pid_may_have_named
from hisparc_datastore.util import faults
from hisparc_datastore.util.brief import printable
from hisparc_datastore.util.durable import TEMPORARY_NAME, fsync_dir, write_atomically

log = logging.getLogger(__name__)

# Temporary files of write_atomically (a requeue's) are removed once they are this old;
# younger ones may still be being written.
STALE_TMP_SECONDS = 3600
# A name Spool.unique_name makes: time (ns), pid, counter, station, checksum.
_UNIQUE_NAME = re.compile(r"([0-9]{1,20})-([0-9]{1,10})-[0-9]+-[0-9]{1,9}-[0-9a-f]{8}")


class ClaimLost(Exception):
    """The upload's claim was taken over by another request (after its time-out): this
    request must not queue it."""


def suspicious_reason(event_list: list, minimum_year: int, max_days: int) -> str | None:
    """Why the upload goes to ``suspicious/``, or None: an event dated before 1 January of
    ``minimum_year`` (a DAQ without GPS fix), or events on more than ``max_days`` dates (each
    date is a day file the writer opens: one upload could hold every station up)."""
    cutoff = datetime.datetime(minimum_year, 1, 1)
    dates = set()
    for event in event_list:
        moment = event_datetime(event)
        if moment is None:
            continue
        moment = moment.replace(tzinfo=None)
        if moment < cutoff:
            return f"an event of {moment} is before minimum_year {minimum_year}"
        dates.add(moment.date())
    if len(dates) > max_days:
        return (f"events on {len(dates)} dates ({min(dates)} to {max(dates)}), more than "
                f"max_days_per_upload {max_days}")
    return None


class Spool:
    """Writes queue files into ``data_dir``'s queue directories."""

    def __init__(self, data_dir: str | os.PathLike, fsync: bool = True) -> None:
        self.queue = Queue(data_dir, fsync=fsync)
        self.fsync = fsync
        self._counter = itertools.count()  # next() on it is atomic under the GIL
        self._foreign_named = False  # tmp/ entries not ours are named in the log once

    def unique_name(self, station_id: int, checksum: str) -> str:
        # time, pid and a per-process counter: unique across threads and processes.
        return f"{time.time_ns()}-{os.getpid()}-{next(self._counter)}-{station_id}-{checksum[:8]}"

    def store(self, upload: Upload, name: str, suspicious: str | None = None,
              commit: Callable[[], bool] | None = None,
              release: Callable[[], bool] | None = None) -> Path:
        """Queue ``upload`` as ``name``; returns its path once durable, raises OSError otherwise.

        ``suspicious``: why it goes to ``suspicious/`` (kept beside it as ``NAME.reason``)
        rather than ``incoming/``.

        ``commit`` is called once the file is whole in ``tmp/``, just before the rename; if it
        says False the claim is someone else's and :class:`ClaimLost` is raised. ``release``
        drops the claim of a file that could not be queued (False: it could not, so the file
        stays in ``tmp/`` for the dead-file sweep, which drops the claim first).
        """
        payload = upload.to_queue_bytes()
        target_dir = self.queue.suspicious if suspicious else self.queue.incoming
        tmp = self.queue.tmp / name
        target = target_dir / name
        reason = f"station {upload.station_id} cluster {upload.cluster}: {suspicious}"
        if suspicious and not self.queue.holding(target_dir).admit(name, len(payload)):
            return self._store_beyond(upload, name, payload, reason, commit, release)
        try:
            self._write(tmp, payload)
        except BaseException:
            _remove(tmp)
            if release is not None:
                release()  # nothing was committing yet: order does not matter here
            raise
        faults.point("receiver-tmp-durable")
        if commit is not None and not commit():
            _remove(tmp)  # no claim names this file: the claim is another request's now
            raise ClaimLost(name)
        faults.point("receiver-committing")
        try:
            os.rename(tmp, target)
        except BaseException:
            self._take_back(tmp, release)
            raise
        faults.point("receiver-renamed")
        try:
            if self.fsync:
                fsync_dir(target_dir)
        except BaseException:
            # Not known to be durable, so the station will be told to retry: take the
            # file back, or the retry would be stored twice.
            try:
                os.rename(target, tmp)
            except FileNotFoundError:
                # The writer claimed it already (and made that durable): it is queued.
                log.warning("%s could not be made durable, but the writer has claimed it", name)
                return target
            except OSError as exc:
                # It stays queued and its claim says committing with tmp/ empty, so the
                # station's retry is answered 100 without a second copy.
                log.error("cannot take back %s after a failed directory fsync: %s", name, exc.strerror)
                raise
            if not self._take_back(tmp, release):
                # A retry saw it queued meanwhile (and was answered 100), or the claim cannot
                # be dropped: a committing claim without its tmp file must mean queued.
                os.rename(tmp, target)
                log.error("%s stays queued though its directory fsync failed", name)
                return target
            raise
        if suspicious:
            self._keep_reason(name, reason)
        faults.point("receiver-queued")
        return target

    def _store_beyond(self, upload: Upload, name: str, payload: bytes, reason: str,
                      commit: Callable[[], bool] | None, release: Callable[[], bool] | None) -> Path:
        """Keep a suspicious upload past the bound of its station (queue/holding.py) as the
        first or latest sample, counted; as :meth:`store` does, from ``tmp/`` by a rename."""
        tmp = self.queue.tmp / name
        try:
            self._write(tmp, payload)
        except BaseException:
            _remove(tmp)
            if release is not None:
                release()
            raise
        if commit is not None and not commit():
            _remove(tmp)
            raise ClaimLost(name)
        held = self.queue.holding(self.queue.suspicious)
        try:
            with held.beyond(name, len(payload), reason) as target:
                os.rename(tmp, target)
                if self.fsync:
                    fsync_dir(target.parent)
        except BaseException:
            if tmp.exists():
                self._take_back(tmp, release)
            raise
        return target

    def _keep_reason(self, name: str, reason: str) -> None:
        # After the upload is queued, so no reason is left without its upload; a failure here
        # costs the operator the reason, not the station its upload.
        try:
            write_atomically(self.queue.suspicious / (name + REASON_SUFFIX), reason.encode() + b"\n",
                             fsync=self.fsync)
        except OSError as exc:
            log.error("cannot keep the reason for suspicious/%s (%s): %s", name, exc.strerror, reason)

    @staticmethod
    def _take_back(tmp: Path, release: Callable[[], bool] | None) -> bool:
        """Remove a file that was not queued, once its claim is dropped; False (file kept)
        when the claim could not be dropped."""
        # The claim first: a committing claim whose tmp file is gone reads as queued.
        if release is None or release():
            _remove(tmp)
            return True
        log.error("cannot drop the claim of %s; it stays in tmp/ until its process is gone", tmp.name)
        return False

    def _write(self, path: Path, payload: bytes) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(payload)
            half = len(view) // 2
            _write_all(fd, view[:half])
            faults.point("receiver-tmp-half")  # a crash here leaves a half-written file
            _write_all(fd, view[half:])
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        if self.fsync:
            # The file's creation too: once the claim says committing, "gone from tmp/"
            # is read as "renamed into the queue", which a power cut that undid the
            # creation would make true of a file never queued.
            fsync_dir(path.parent)

    def remove_dead_tmp(self, release: Callable[[str], bool] | None = None,
                        max_age: float = STALE_TMP_SECONDS) -> int:
        """Remove the files in ``tmp/`` whose writing process is gone (never answered ``100``),
        keeping those of processes still running. ``release(name)`` first drops any claim
        naming a file; a file whose claim cannot be dropped is kept.

        Only names the datastore makes are removed: :meth:`unique_name`'s, and
        ``write_atomically``'s once ``max_age`` seconds old. Anything else is left alone
        and named in the log once: ``data_dir`` set to a folder such as ``/var`` makes
        ``tmp/`` another program's.
        """
        now = time.time()
        removed = 0
        foreign = []
        for entry in os.scandir(self.queue.tmp):
            try:
                if not entry.is_file(follow_symlinks=False):
                    foreign.append(entry.name)
                    continue
                dead = _is_dead_tmp(entry, now, max_age)
                if dead is None:
                    foreign.append(entry.name)
                if not dead:
                    continue
                if release is not None and not release(entry.name):
                    continue
                os.unlink(entry.path)
                removed += 1
            except OSError:
                continue
        if removed:
            log.warning("removed %d file(s) of receiver requests that died from %s", removed,
                        self.queue.tmp)
        if foreign and not self._foreign_named:
            self._foreign_named = True
            log.warning("%s holds %d entr(ies) the datastore did not make (%s): left alone; is "
                        "data_dir a folder of its own?", self.queue.tmp, len(foreign),
                        ", ".join(printable(name) for name in sorted(foreign)[:5]))
        return removed

    def remove_stale_tmp(self, max_age: float = STALE_TMP_SECONDS) -> int:
        """Remove files a crashed receiver left half-written in ``tmp/`` (claims not consulted:
        for a receiver without duplicate memory)."""
        return self.remove_dead_tmp(None, max_age)


def _is_dead_tmp(entry: os.DirEntry, now: float, max_age: float) -> bool | None:
    """Whether a file in tmp/ is one the datastore made and its writer is gone; None when
    the datastore did not make it."""
    parsed = _parse_name(entry.name)
    if parsed is not None:
        named_at, pid = parsed
        return not pid_may_have_named(pid, named_at)
    if TEMPORARY_NAME.fullmatch(entry.name):
        return entry.stat(follow_symlinks=False).st_mtime < now - max_age
    return None


def _parse_name(name: str) -> tuple[float, int] | None:
    """(Unix time, pid) of a name made by :meth:`Spool.unique_name`, else None."""
    match = _UNIQUE_NAME.fullmatch(name)
    if match is None:
        return None
    return int(match.group(1)) / 1e9, int(match.group(2))


def _write_all(fd: int, view: memoryview) -> None:
    while view:
        written = os.write(fd, view)
        view = view[written:]


class NullSpool(Spool):
    """Accepts everything and writes nothing: for measuring the cost of the durable write."""

    def store(self, upload: Upload, name: str, suspicious: str | None = None,
              commit: Callable[[], bool] | None = None,
              release: Callable[[], bool] | None = None) -> Path:
        upload.to_queue_bytes()  # keep the serialisation cost in the comparison
        return self.queue.incoming / name


def _remove(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        log.error("cannot remove %s after a failed queue write: %s", path, exc.strerror)
