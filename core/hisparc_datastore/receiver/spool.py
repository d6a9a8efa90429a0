"""Durable queueing of an accepted upload: the station hears ``100`` only once the file is safe.

The file is written into ``tmp/``, fsynced, renamed into ``incoming/`` (or
``suspicious/``) and the directory fsynced. A crash at any point leaves
either nothing in the queue or the whole file; a failure removes what was
written, so the station's retry cannot produce a second copy.
"""

from __future__ import annotations

import datetime
import itertools
import logging
import os
import time
from pathlib import Path

from ..decoding import Upload, event_datetime
from ..durable import fsync_dir
from ..queue import Queue

log = logging.getLogger(__name__)

# Files a crashed receiver left in tmp/ are removed at start-up once they are this old;
# younger ones may belong to another receiver process that is still writing them.
STALE_TMP_SECONDS = 3600


def is_suspicious(event_list: list, minimum_year: int) -> bool:
    """True when any event is dated before 1 January of ``minimum_year`` (a DAQ without GPS fix)."""
    cutoff = datetime.datetime(minimum_year, 1, 1)
    for event in event_list:
        moment = event_datetime(event)
        if moment is not None and moment.replace(tzinfo=None) < cutoff:
            return True
    return False


class Spool:
    """Writes queue files into ``data_dir``'s queue directories."""

    def __init__(self, data_dir: str | os.PathLike, fsync: bool = True) -> None:
        self.queue = Queue(data_dir, fsync=fsync)
        self.fsync = fsync
        self._counter = itertools.count()  # next() on it is atomic under the GIL

    def unique_name(self, station_id: int, checksum: str) -> str:
        # time, pid and a per-process counter: unique across threads and processes.
        return f"{time.time_ns()}-{os.getpid()}-{next(self._counter)}-{station_id}-{checksum[:8]}"

    def store(self, upload: Upload, name: str, suspicious: bool = False) -> Path:
        """Queue ``upload`` as ``name``; returns its path once durable, raises OSError otherwise."""
        payload = upload.to_queue_bytes()
        target_dir = self.queue.suspicious if suspicious else self.queue.incoming
        tmp = self.queue.tmp / name
        target = target_dir / name
        try:
            self._write(tmp, payload)
            os.rename(tmp, target)
        except BaseException:
            _remove(tmp)
            raise
        try:
            if self.fsync:
                fsync_dir(target_dir)
        except BaseException:
            # Not known to be durable, so the station will be told to retry: take the
            # file back, or the retry would be stored twice.
            _remove(target)
            raise
        return target

    def _write(self, path: Path, payload: bytes) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(payload)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)

    def remove_stale_tmp(self, max_age: float = STALE_TMP_SECONDS) -> int:
        """Remove files a crashed receiver left half-written in ``tmp/``."""
        cutoff = time.time() - max_age
        removed = 0
        for entry in os.scandir(self.queue.tmp):
            try:
                if entry.is_file() and entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
            except OSError:
                continue
        if removed:
            log.warning("removed %d stale file(s) from %s", removed, self.queue.tmp)
        return removed


class NullSpool(Spool):
    """Accepts everything and writes nothing: for measuring the cost of the durable write."""

    def store(self, upload: Upload, name: str, suspicious: bool = False) -> Path:
        upload.to_queue_bytes()  # keep the serialisation cost in the comparison
        return self.queue.incoming / name


def _remove(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.error("cannot remove %s after a failed queue write: %s", path, exc.strerror)
