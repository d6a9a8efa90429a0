"""Requeue: a quarantined or suspicious upload goes back into ``incoming/``.

Part of :class:`~hisparc_datastore.queue.folders.Queue` (mixed in). A refused upload's raw
bytes go back only once they decode, and never when they were stored meanwhile (the
receiver's duplicate memory and the archive tell).
"""

from __future__ import annotations

import datetime
import gzip
import hashlib
import logging
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from hisparc_datastore.queue.archive import read_archived
from hisparc_datastore.queue.names import REASON_SUFFIX, REFUSED_SUFFIX, REQUEUED_PREFIX
from hisparc_datastore.util.durable import move, write_atomically

# The Queue's log, whichever part of it speaks: its lines read as they always have.
log = logging.getLogger("hisparc_datastore.queue.folders")


class AlreadyStored(Exception):
    """A refused upload that was stored meanwhile (the station's retry was accepted):
    requeueing it would store its events a second time."""


# What UploadMemory.claim answers: first sight, already queued, or being queued by another request.
NEW, DUPLICATE, IN_FLIGHT = "new", "duplicate", "in flight"


class UploadMemory(Protocol):
    """The receiver's duplicate memory, as ``requeue`` consults it (receiver/claims.py)."""

    def claim(self, station_id: int, checksum: str, name: str = "") -> str: ...

    def remember(self, station_id: int, checksum: str) -> None: ...

    def forget(self, station_id: int, checksum: str, name: str | None = None) -> bool: ...


class RequeueMixin:
    """Queue's ``requeue``. It uses the Queue's folders, ``fsync`` and ``archived``."""

    def requeue(self, name: str, memory: UploadMemory | None = None) -> Path:
        """Put a quarantined (or suspicious) file back into ``incoming/``.

        A refused upload's raw bytes go back only if they can be decoded now
        (by a decoder that has learnt to), and only if they were not stored
        meanwhile (:class:`AlreadyStored`), which ``memory`` (the receiver's
        duplicate memory) and the archive tell; they become a queue file then.
        """
        if name.endswith(REFUSED_SUFFIX):
            return self._requeue_refused(name, memory)
        for directory in (self.quarantine, self.suspicious):
            source = directory / name
            if source.exists():
                target = self.incoming / requeued_name(name)
                move(source, target, fsync=self.fsync)
                (directory / (name + REASON_SUFFIX)).unlink(missing_ok=True)
                return target
        raise FileNotFoundError(f"no file {name!r} in {self.quarantine} or {self.suspicious}")

    def _requeue_refused(self, name: str, memory: UploadMemory | None) -> Path:
        from hisparc_datastore.codec.decoding import DecodeError, Upload, event_datetime, parse_event_list
        from hisparc_datastore.storage.clusters import cluster_problem

        source = self.quarantine / name
        reason_file = self.quarantine / (name + REASON_SUFFIX)
        if not source.exists():
            raise FileNotFoundError(f"no file {name!r} in {self.quarantine}")
        # 'station N cluster NAME': the name may hold spaces, so it is the rest of the line.
        words = reason_file.read_text().split("\n", 1)[0].split(" ", 3)
        if (len(words) != 4 or words[0] != "station" or words[2] != "cluster"
                or not (words[1].isascii() and words[1].isdigit())
                or cluster_problem(words[3]) is not None):
            raise DecodeError(f"{reason_file}: first line should be 'station N cluster NAME'")
        station_id, cluster = int(words[1]), words[3]
        data = source.read_bytes()
        try:
            events = parse_event_list(data)
        except DecodeError as exc:
            raise DecodeError(f"{source} still cannot be decoded: {exc}") from exc
        payload = Upload(station_id, cluster, events).to_queue_bytes()
        checksum = hashlib.md5(data).hexdigest()
        target = self.incoming / requeued_name(name[:-len(REFUSED_SUFFIX)])
        dates = {moment.date() for moment in map(event_datetime, events) if moment is not None}
        archived = self._archived_copy(payload, dates)
        if archived is not None:
            self._drop_stored(source, reason_file, f"its events are stored: the archive holds "
                              f"the same upload as {archived}")
        if memory is not None:
            verdict = memory.claim(station_id, checksum, target.name)
            if verdict == DUPLICATE:
                self._drop_stored(source, reason_file, f"station {station_id} sent the same bytes "
                                  f"(md5 {checksum}) again and they were accepted")
            if verdict != NEW:
                raise BlockingIOError(f"{name}: the receiver is queueing the same upload right now; "
                                      "try again in a minute")
        try:
            write_atomically(target, payload, tmp_dir=self.tmp, fsync=self.fsync)
        except BaseException:
            if memory is not None:
                memory.forget(station_id, checksum, target.name)
            raise
        if memory is not None:
            # The station's next retry of these bytes is now a duplicate, not a second copy.
            memory.remember(station_id, checksum)
        source.unlink()
        reason_file.unlink(missing_ok=True)
        return target

    def _drop_stored(self, source: Path, reason_file: Path, why: str) -> None:
        # The bytes are stored; keeping them would invite a second requeue.
        source.unlink()
        reason_file.unlink(missing_ok=True)
        log.warning("%s not requeued and removed: %s", source.name, why)
        raise AlreadyStored(f"{source.name}: not requeued, {why}; removed from quarantine")

    def _archived_copy(self, payload: bytes, dates: Iterable[datetime.date]) -> Path | None:
        """An archived upload whose queue file is ``payload`` (the receiver writes the same
        bytes for the same station, cluster and events), under any of ``dates``."""
        for date in dates:
            for path in self.archived(date):
                if path.suffix != ".gz" and path.stat().st_size != len(payload):
                    continue
                try:
                    if read_archived(path) == payload:
                        return path
                except (OSError, EOFError, gzip.BadGzipFile):
                    continue
        return None


def requeued_name(name: str) -> str:
    """``requeued-TIME-NAME``, with NAME as first queued: one prefix however often a file
    goes round (it grew to ``requeued-T-requeued-T-NAME``)."""
    parts = name.split("-", 2)
    while len(parts) == 3 and parts[0] + "-" == REQUEUED_PREFIX and parts[1].isdigit():
        name = parts[2]
        parts = name.split("-", 2)
    return f"{REQUEUED_PREFIX}{int(time.time())}-{name}"
