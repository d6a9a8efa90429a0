"""The on-disk queue: where an upload file is tells what has happened to it.

``tmp/``        being written by the receiver
``incoming/``   accepted, waiting for the writer
``partial/``    claimed by the writer, not yet stored
``suspicious/`` accepted, but dated before ``minimum_year``, or over a bound per upload
                (``NAME.reason`` says which): kept for an operator
``quarantine/`` cannot be stored as it is; ``NAME.reason`` beside it says why
``archive/``    stored; kept once per upload in ``archive/uploads/`` for rebuilding
                day files, with ``NAME.dates`` (its dates) beside it: first as a
                hard link to the claimed file (no copy, no extra write on the hot
                path), compressed to ``NAME.gz`` when the writer is idle
"""

from __future__ import annotations

import datetime
import gzip
import hashlib
import logging
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

import attrs

from hisparc_datastore.queue.holding import Holding, HoldLimits
from hisparc_datastore.queue.names import (  # noqa: F401 - the names queue.folders has always offered
    EVENTS_SUFFIX,
    REASON_SUFFIX,
    REFUSED_SUFFIX,
    REQUEUED_PREFIX,
    station_of,
)
from hisparc_datastore.util.brief import printable
from hisparc_datastore.util.durable import fsync_dir, move, write_atomically

log = logging.getLogger(__name__)

QUEUE_DIRS = ("tmp", "incoming", "partial", "suspicious", "quarantine", "archive")
UPLOADS = "uploads"  # archive/uploads/: each stored upload once, with its dates beside it
DATES_SUFFIX = ".dates"
RELIST_S = 2.0  # seconds a listing of incoming/ is used for claims before incoming/ is listed again
# Refusals of the same bytes from the same station are one entry; its count is rewritten
# in place, one thread at a time (processes may race and lose a count, never the bytes).
_REFUSED_LOCK = threading.Lock()
_COUNT_PREFIX = "refused "


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


# the receiver's memory of accepted uploads (receiver/claims.py), read by ``datastore status``
DB_NAME = "receiver.sqlite"
# the folders whose files are uploads not yet stored, as status and metrics count them
FOLDERS = ("incoming", "partial", "suspicious", "quarantine")


class Queue:
    """The queue directories under ``data_dir``."""

    def __init__(self, data_dir: str | os.PathLike, fsync: bool = True, create: bool = True) -> None:
        """``create``: make the queue folders that are missing (not for a reader such as
        ``datastore quarantine``, which must leave ``data_dir`` as it found it)."""
        self.data_dir = Path(data_dir)
        self.fsync = fsync
        self._holdings: dict[str, Holding] = {}
        self.hold_limits = default_hold_limits()
        for name in QUEUE_DIRS if create else ():
            (self.data_dir / name).mkdir(parents=True, exist_ok=True)
        self._pending: list[str] = []
        self._listed = 0.0  # time.monotonic() of the listing _pending came from
        self._uncompressed: list[Path] | None = None  # archive links to compress; None: not yet looked

    @property
    def tmp(self) -> Path:
        return self.data_dir / "tmp"

    @property
    def incoming(self) -> Path:
        return self.data_dir / "incoming"

    @property
    def partial(self) -> Path:
        return self.data_dir / "partial"

    @property
    def suspicious(self) -> Path:
        return self.data_dir / "suspicious"

    @property
    def quarantine(self) -> Path:
        return self.data_dir / "quarantine"

    def holding(self, folder: Path) -> Holding:
        """The bound of ``quarantine/`` or ``suspicious/`` (queue/holding.py)."""
        held = self._holdings.get(folder.name)
        if held is None or held.limits != self.hold_limits:
            held = self._holdings[folder.name] = Holding(folder, self.hold_limits, self.fsync)
        return held

    def _hold(self, folder: Path, name: str, size: int, reason: str, put) -> Path:
        """Keep ``name`` in ``folder`` by ``put(target)``, with its reason (lines already
        printable); beyond the bound of its station and kind, as the first or latest sample,
        counted."""
        held = self.holding(folder)
        if held.admit(name, size):
            target = folder / name
            write_atomically(folder / (name + REASON_SUFFIX), reason.encode() + b"\n",
                             fsync=self.fsync)
            put(target)
            return target
        with held.beyond(name, size, reason) as target:
            put(target)
        log.warning("%s/%s: %s beyond the bound of its station and kind (hold_files, hold_mb): counted "
                    "in %s.reason, kept only as a sample", folder.name, name, _size_text(size), target.name)
        return target

    @property
    def archive(self) -> Path:
        return self.data_dir / "archive"

    # -- the writer's side -------------------------------------------------

    def claimed(self) -> list[str]:
        """Uploads a previous writer claimed and did not finish, oldest first."""
        return _oldest_first(self.partial)

    def claim(self, limit: int) -> list[str]:
        """Move up to ``limit`` waiting uploads into ``partial/``: the oldest of each station in
        turn (:func:`_round_robin`), so that a backlog of one station waits behind a new upload
        of another rather than the other way round."""
        claimed = []
        if self._pending and time.monotonic() - self._listed > RELIST_S:
            self._pending = []  # look again: new uploads of other stations go before this backlog
        while len(claimed) < limit:
            if not self._pending:
                self._pending = _round_robin(_oldest_first(self.incoming))
                self._listed = time.monotonic()
                self._pending.reverse()  # pop() from the end takes the oldest
                if not self._pending:
                    break
            name = self._pending.pop()
            try:
                os.rename(self.incoming / name, self.partial / name)
            except FileNotFoundError:
                continue  # requeued or removed by an operator meanwhile
            claimed.append(name)
        if claimed and self.fsync:
            fsync_dir(self.partial)
            fsync_dir(self.incoming)
        return claimed

    def unclaim(self, names: list[str]) -> None:
        """Put claimed uploads nothing was stored of back into ``incoming/``, keeping their
        receipt time; the next claim lists ``incoming/`` again."""
        for name in names:
            os.rename(self.partial / name, self.incoming / name)
        self._pending = []
        if self.fsync:
            fsync_dir(self.incoming)
            fsync_dir(self.partial)

    def has_incoming(self) -> bool:
        with os.scandir(self.incoming) as entries:
            return any(not entry.name.startswith(".") for entry in entries)

    def release(self, name: str) -> None:
        """Forget a stored upload: its rows are safely in the day files."""
        (self.partial / name).unlink(missing_ok=True)

    def sync_partial(self) -> None:
        if self.fsync:
            fsync_dir(self.partial)

    # -- quarantine ----------------------------------------------------------

    def quarantine_file(self, name: str, reason: str) -> Path:
        """Move a claimed upload that cannot be read at all into quarantine."""
        target = self._hold(self.quarantine, name, _size_of(self.partial / name), printable(reason),
                            lambda target: move(self.partial / name, target, fsync=self.fsync))
        log.error("quarantined %s: %s", name, reason)
        return target

    def set_aside(self, name: str, reason: str) -> Path:
        """Move a claimed upload over a bound per upload into ``suspicious/``, with why; a
        ``datastore requeue`` stores it anyway."""
        target = self._hold(self.suspicious, name, _size_of(self.partial / name), printable(reason),
                            lambda target: move(self.partial / name, target, fsync=self.fsync))
        log.warning("set aside %s in %s: %s", name, self.suspicious, reason)
        return target

    def quarantine_events(self, name: str, payload: bytes, reasons: Iterable[str]) -> Path:
        """Keep the events of an upload that cannot be stored, as a queue file of their own."""
        return self._hold(self.quarantine, events_name(name), len(payload),
                          "\n".join(map(printable, reasons)),
                          lambda target: write_atomically(target, payload, fsync=self.fsync))

    def keep_refused(self, data: bytes, station_id: int, cluster: str, reason: str) -> tuple[Path, int]:
        """Keep the raw bytes of an authenticated upload the receiver refused, with why; the
        same bytes from the same station again only count once more. Returns the entry and
        how many times it was refused."""
        checksum = hashlib.md5(data).hexdigest()
        target = self.quarantine / f"{station_id}-{checksum}{REFUSED_SUFFIX}"
        reason_file = target.with_name(target.name + REASON_SUFFIX)
        now = _utc_stamp()
        with _REFUSED_LOCK:
            count, first = 0, now
            try:
                for line in reason_file.read_text().splitlines():
                    if line.startswith(_COUNT_PREFIX):
                        words = line.split()
                        count, first = int(words[1]), words[4].rstrip(",")
            except (OSError, ValueError, IndexError):
                count, first = 0, now
            if count and not target.exists():
                count = 0  # requeued meanwhile: a new entry
            count += 1
            if count == 1 and not self.holding(self.quarantine).admit(target.name, len(data)):
                with self.holding(self.quarantine).beyond(target.name, len(data), reason) as sample:
                    write_atomically(sample, data, fsync=self.fsync)
                return sample, 1
            header = f"station {station_id} cluster {printable(cluster)}\n"
            reason = printable(reason)
            tally = f"{_COUNT_PREFIX}{count} time(s), first {first}, last {now}\n"
            # The bytes first: a reason file never names a count of bytes not kept.
            if not target.exists():
                write_atomically(target, data, fsync=self.fsync)
            write_atomically(reason_file, (header + reason + "\n" + tally).encode(), fsync=self.fsync)
        return target, count

    def quarantined(self) -> list[tuple[str, str]]:
        """Every quarantined file with its reason."""
        entries = []
        if not self.quarantine.is_dir():
            return entries
        for name in sorted(os.listdir(self.quarantine)):
            if name.endswith(REASON_SUFFIX) or name.startswith("."):
                continue
            reason_file = self.quarantine / (name + REASON_SUFFIX)
            reason = reason_file.read_text() if reason_file.exists() else "(no reason recorded)"
            entries.append((name, reason.strip()))
        return entries

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

    # -- archive -------------------------------------------------------------

    def archive_claimed(self, names: Iterable[tuple[str, Iterable[datetime.date]]]) -> None:
        """Keep stored uploads, with the dates they have events for, before release.

        Each upload is kept once, in ``archive/uploads/``: a hard link to the claimed file,
        whose data the receiver already made durable (no copy on the hot path), and
        ``NAME.dates`` beside it, the dates it has events for, by which :meth:`archived`
        finds it. One link and one small file per upload, however many dates it names.
        """
        directory = self.archive / UPLOADS
        directory.mkdir(parents=True, exist_ok=True)
        linked = False
        for name, dates in names:
            target = directory / name
            if target.exists() or (directory / f"{name}.gz").exists():
                continue  # archived by an attempt that was cut short
            # The dates first: an upload in the archive is always found by them.
            write_atomically(directory / (name + DATES_SUFFIX),
                             "".join(f"{date.isoformat()}\n" for date in sorted(set(dates))).encode(),
                             fsync=False)
            tmp = directory / f".{name}.link"
            tmp.unlink(missing_ok=True)
            os.link(self.partial / name, tmp)
            os.replace(tmp, target)
            linked = True
            if self._uncompressed is not None:
                self._uncompressed.append(target)
        if linked and self.fsync:
            fsync_dir(directory)

    def compress_archive(self, limit: int = 100) -> int:
        """Compress up to ``limit`` archived uploads still stored as plain links.

        The archive holds weeks of uploads, so it is walked once per process
        (for what an earlier writer left); after that only the links this
        process made are visited.
        """
        if self._uncompressed is None:
            self._uncompressed = [
                Path(root, name)
                for root, _, files in os.walk(self.archive)
                for name in files
                if not name.endswith((".gz", DATES_SUFFIX)) and not name.startswith(".")
            ]
        done = 0
        while self._uncompressed and done < limit:
            path = self._uncompressed.pop()
            if not path.exists():
                continue  # pruned, or compressed by an earlier attempt
            _compress_keeping_mtime(path, fsync=self.fsync)
            path.unlink()
            done += 1
        return done

    def archived(self, date: datetime.date) -> list[Path]:
        """The archived uploads with events on ``date``, in the order they were received."""
        paths = []
        directory = self.archive / UPLOADS
        wanted = f"{date.isoformat()}\n"
        if directory.is_dir():
            for entry in os.scandir(directory):
                if not entry.name.endswith(DATES_SUFFIX) or entry.name.startswith("."):
                    continue
                try:
                    with open(entry.path, encoding="ascii") as fh:
                        if wanted not in fh.readlines():
                            continue
                except FileNotFoundError:
                    continue  # pruned meanwhile
                name = entry.name.removesuffix(DATES_SUFFIX)
                for candidate in (directory / name, directory / f"{name}.gz"):
                    if candidate.exists():
                        paths.append(candidate)
                        break
        # Archives an earlier version kept: a link (or .gz) per upload under each date.
        legacy = self.archive_dir(date)
        if legacy.is_dir():
            paths += [p for p in legacy.iterdir() if not p.name.startswith(".")]
        # names are unique per upload; plain and .gz copies of one never coexist
        return sorted(paths, key=lambda p: (p.stat().st_mtime_ns, p.name))

    def archive_dir(self, date: datetime.date) -> Path:
        """Where an earlier version archived the uploads of ``date``."""
        return self.archive / str(date.year) / str(date.month) / str(date.day)

    def prune_archive(self, keep_days: int, now: float | None = None) -> int:
        """Remove archived uploads stored more than ``keep_days`` days ago."""
        if keep_days <= 0:
            return 0
        cutoff = (now or time.time()) - keep_days * 86400
        removed = 0
        for root, _, files in os.walk(self.archive):
            for name in files:
                path = Path(root, name)
                if name.endswith(DATES_SUFFIX):
                    continue  # goes with its upload
                try:
                    old = path.stat().st_mtime < cutoff
                except FileNotFoundError:
                    continue
                if old:
                    path.unlink()
                    removed += 1
                    # The dates after the upload: an upload in the archive is always found by them.
                    Path(root, name.removesuffix(".gz") + DATES_SUFFIX).unlink(missing_ok=True)
        return removed


def _compress_keeping_mtime(path: Path, fsync: bool) -> None:
    # The mtime is the upload's place in the queue: rebuilds replay in that order.
    stat = path.stat()
    target = path.with_name(path.name + ".gz")
    tmp = path.with_name(f".{path.name}.gz.tmp")
    with open(tmp, "wb") as fh:
        fh.write(compress(path.read_bytes()))
        fh.flush()
        os.utime(fh.fileno(), ns=(stat.st_atime_ns, stat.st_mtime_ns))
        if fsync:
            os.fsync(fh.fileno())
    os.replace(tmp, target)
    if fsync:
        fsync_dir(path.parent)


def _utc_stamp() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def read_archived(path: Path) -> bytes:
    """The queue file an archive entry holds, compressed or not."""
    data = path.read_bytes()
    return gzip.decompress(data) if path.suffix == ".gz" else data


def compress(payload: bytes) -> bytes:
    """The archive's format: gzip at the fastest level, with no timestamp, so equal uploads compress equal."""
    return gzip.compress(payload, compresslevel=1, mtime=0)


def requeued_name(name: str) -> str:
    """``requeued-TIME-NAME``, with NAME as first queued: one prefix however often a file
    goes round (it grew to ``requeued-T-requeued-T-NAME``)."""
    parts = name.split("-", 2)
    while len(parts) == 3 and parts[0] + "-" == REQUEUED_PREFIX and parts[1].isdigit():
        name = parts[2]
        parts = name.split("-", 2)
    return f"{REQUEUED_PREFIX}{int(time.time())}-{name}"


def default_hold_limits() -> HoldLimits:
    """The bounds of quarantine/ and suspicious/ at the settings' defaults (a service sets
    its own from its settings: ``hold_limits``)."""
    from hisparc_datastore.config import SETTINGS

    default = {setting.name: setting.default for setting in SETTINGS}
    return HoldLimits(default["hold_files"], default["hold_mb"] * 1_000_000)


def hold_limits(settings) -> HoldLimits:
    return HoldLimits(settings.hold_files, settings.hold_mb * 1_000_000)


def _size_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _size_text(size: int) -> str:
    return f"{size} bytes"


def events_name(name: str) -> str:
    """The quarantine name of the events kept from the upload ``name``: ``NAME.events``, and
    no second suffix when those events come round again."""
    return name if name.endswith(EVENTS_SUFFIX) else name + EVENTS_SUFFIX


def _round_robin(names: list[str]) -> list[str]:
    """``names`` (oldest first) reordered so that each station's oldest comes first, then each
    station's second oldest, and so on; each station's own uploads keep their order."""
    seen: dict[str, int] = {}
    ranked = []
    for age, name in enumerate(names):
        station = station_of(name)
        rank = seen.get(station, 0)
        seen[station] = rank + 1
        ranked.append((rank, age, name))
    ranked.sort()
    return [name for _, _, name in ranked]


def _oldest_first(directory: Path) -> list[str]:
    entries = [
        (entry.stat().st_mtime_ns, entry.name)
        for entry in os.scandir(directory)
        if entry.is_file() and not entry.name.startswith(".")
    ]
    entries.sort()
    return [name for _, name in entries]


@attrs.frozen
class FolderUsage:
    files: int
    bytes: int
    oldest_mtime: float | None


def folder_usage(folder: Path) -> FolderUsage:
    """Queue files in ``folder``: reason files and dot-files (being written) not counted."""
    files = size = 0
    oldest = None
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return FolderUsage(0, 0, None)
    for entry in entries:
        if entry.name.startswith(".") or entry.name.endswith(REASON_SUFFIX):
            continue
        try:
            stat = entry.stat()
        except FileNotFoundError:
            continue  # claimed or moved meanwhile
        files += 1
        size += stat.st_size
        oldest = stat.st_mtime if oldest is None else min(oldest, stat.st_mtime)
    return FolderUsage(files, size, oldest)
