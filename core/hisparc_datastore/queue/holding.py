"""What ``quarantine/`` and ``suspicious/`` keep, bounded per station and kind.

One station's password was enough to fill a disk through them: bad checksums added 12 MB/s
to ``quarantine/``, uploads dated before ``minimum_year`` 845 files/s to ``suspicious/``.
Each (station, kind) may now keep ``hold_files`` files and ``hold_mb`` MB in a folder. Past
that, nothing more of it is kept whole, and nothing is dropped without a trace: the first
upload beyond the bound is kept as ``overflow-STATION-KIND.first``, the latest as
``overflow-STATION-KIND.last`` (each later one replaces it), and the reason file beside each
counts them all (how many, how many bytes, from when to when) and says that only these two
were kept. ``datastore status`` and the writer's ``/metrics`` show the count.

The kind is what the name tells: in ``quarantine/`` the receiver's refusals (``.refused``:
bad checksum, cannot be unpickled, too many events), the writer's events it cannot store
(``.events``), and whole files it cannot read; in ``suspicious/`` every file is one kind.
Counts are kept per process and re-read from the folder now and then, so several processes
together may exceed a bound by at most the bound once each.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import os
import re
import threading
import time
from pathlib import Path

import attrs

from hisparc_datastore.queue.names import EVENTS_SUFFIX, REASON_SUFFIX, REFUSED_SUFFIX, station_of
from hisparc_datastore.util.brief import printable
from hisparc_datastore.util.durable import write_atomically

OVERFLOW_PREFIX = "overflow-"
RESCAN_SECONDS = 30.0  # counts are re-read from the folder this often (other processes add too)
_LOCK_NAME = ".overflow.lock"
# A damaged day file the writer moved aside (writer/recovery.py): not a station's upload,
# so neither counted nor pruned.
_DAMAGED = ".damaged-"
_TALLY = re.compile(r"^beyond the bound: (\d+) upload\(s\), (\d+) bytes, first (\S+), last (\S+)$", re.M)


@attrs.frozen
class HoldLimits:
    files: int
    bytes: int


def kind_of_name(folder: str, name: str) -> str:
    """The kind of a file ``name`` in ``folder`` (``quarantine`` or ``suspicious``)."""
    if folder != "quarantine":
        return "set-aside"
    if name.endswith(REFUSED_SUFFIX):
        return "refused"
    if name.endswith(EVENTS_SUFFIX):
        return "unstorable"
    return "unreadable"


def _station_of(name: str) -> str:
    if name.endswith(REFUSED_SUFFIX):
        return name.split("-", 1)[0]
    station = station_of(name.removesuffix(EVENTS_SUFFIX))
    return station if station.isdigit() else "?"


class Holding:
    """The bound of one folder; thread-safe, one per process and folder."""

    def __init__(self, folder: Path, limits: HoldLimits, fsync: bool = True) -> None:
        self.folder = folder
        self.name = folder.name
        self.limits = limits
        self.fsync = fsync
        self._lock = threading.Lock()
        self._usage: dict[tuple[str, str], list[int]] = {}
        self._scanned = -RESCAN_SECONDS

    def key(self, name: str) -> tuple[str, str]:
        return _station_of(name), kind_of_name(self.name, name)

    def admit(self, name: str, size: int) -> bool:
        """Whether ``name`` (``size`` bytes) may be kept whole; if so it is counted."""
        key = self.key(name)
        with self._lock:
            if time.monotonic() - self._scanned >= RESCAN_SECONDS:
                self._usage = usage_by_key(self.folder)
                self._scanned = time.monotonic()
            files, size_now = self._usage.get(key, (0, 0))
            if files + 1 > self.limits.files or size_now + size > self.limits.bytes:
                return False
            self._usage[key] = [files + 1, size_now + size]
            return True

    @contextlib.contextmanager
    def beyond(self, name: str, size: int, reason: str):
        """Keep ``name`` beyond the bound: yields the path to put its bytes at (the first
        sample, or the latest), then counts it in both samples' reason files. One process
        at a time per folder (a lock file), so no count is lost."""
        station, kind = self.key(name)
        stem = f"{OVERFLOW_PREFIX}{station}-{kind}"
        first, last = self.folder / f"{stem}.first", self.folder / f"{stem}.last"
        with self._lock, open(self.folder / _LOCK_NAME, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                target = last if first.exists() else first
                yield target
                self._count(first, last, target, station, kind, name, size, reason)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _count(self, first: Path, last: Path, target: Path, station: str, kind: str, name: str,
               size: int, reason: str) -> None:
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        count, total, since = 0, 0, now
        with contextlib.suppress(OSError):
            match = _TALLY.search((first.parent / (first.name + REASON_SUFFIX)).read_text())
            if match:
                count, total, since = int(match.group(1)), int(match.group(2)), match.group(3)
        count, total = count + 1, total + size
        tally = (f"station {station}: {kind} uploads beyond the bound of {self.limits.files} files or "
                 f"{self.limits.bytes // 1_000_000} MB in {self.name}/; of these only the first "
                 f"({first.name}) and the latest ({last.name}) are kept whole\n"
                 f"beyond the bound: {count} upload(s), {total} bytes, first {since}, last {now}\n")
        this = f"this sample: {printable(name)}: {printable(reason)}\n"
        if target == first:
            write_atomically(first.parent / (first.name + REASON_SUFFIX), (tally + this).encode(),
                             fsync=self.fsync)
            return
        kept = ""
        with contextlib.suppress(OSError):
            kept = (first.parent / (first.name + REASON_SUFFIX)).read_text().split("\n", 2)[2]
        write_atomically(first.parent / (first.name + REASON_SUFFIX), (tally + kept).encode(),
                         fsync=self.fsync)
        write_atomically(last.parent / (last.name + REASON_SUFFIX), (tally + this).encode(),
                         fsync=self.fsync)


def usage_by_key(folder: Path) -> dict[tuple[str, str], list[int]]:
    """Files and bytes per (station, kind) in ``folder``; samples and reason files aside."""
    usage: dict[tuple[str, str], list[int]] = {}
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return usage
    for entry in entries:
        name = entry.name
        if name.startswith((".", OVERFLOW_PREFIX)) or name.endswith(REASON_SUFFIX) or _DAMAGED in name:
            continue
        try:
            size = entry.stat(follow_symlinks=False).st_size
        except OSError:
            continue
        counts = usage.setdefault((_station_of(name), kind_of_name(folder.name, name)), [0, 0])
        counts[0] += 1
        counts[1] += size
    return usage


def beyond_the_bound(folder: Path) -> dict[str, int]:
    """Uploads counted beyond the bound in ``folder``, in all and per (station, kind) entry:
    ``{"uploads": N, "bytes": B, "entries": E}``."""
    uploads = total = entries = 0
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(folder):
            if entry.name.startswith(OVERFLOW_PREFIX) and entry.name.endswith(".first" + REASON_SUFFIX):
                with contextlib.suppress(OSError):
                    match = _TALLY.search(Path(entry.path).read_text())
                    if match:
                        uploads += int(match.group(1))
                        total += int(match.group(2))
                        entries += 1
    return {"uploads": uploads, "bytes": total, "entries": entries}


def prune(folder: Path, keep_days: int, now: float | None = None) -> int:
    """Remove files (with their reason files) kept more than ``keep_days``; the number
    removed. 0 days keeps everything. A file's own time is when the station sent it (a move
    keeps it), so the time it was kept is its reason file's, written as it was put here."""
    if keep_days <= 0:
        return 0
    cutoff = (now or time.time()) - keep_days * 86400
    removed = 0
    with contextlib.suppress(FileNotFoundError):
        for entry in list(os.scandir(folder)):
            if entry.name.startswith(".") or entry.name.endswith(REASON_SUFFIX) or _DAMAGED in entry.name:
                continue
            reason = Path(entry.path + REASON_SUFFIX)
            try:
                kept = (reason if reason.exists() else Path(entry.path)).stat().st_mtime
                if kept >= cutoff:
                    continue
                os.unlink(entry.path)
            except OSError:
                continue
            reason.unlink(missing_ok=True)
            removed += 1
    return removed
