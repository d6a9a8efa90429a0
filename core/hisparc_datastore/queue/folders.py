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

import os
import time
from pathlib import Path

import attrs

from hisparc_datastore.queue.archive import (  # noqa: F401 - the names queue.folders has always offered
    DATES_SUFFIX,
    UPLOADS,
    ArchiveMixin,
    compress,
    read_archived,
)
from hisparc_datastore.queue.holding import Holding
from hisparc_datastore.queue.names import (  # noqa: F401 - the names queue.folders has always offered
    EVENTS_SUFFIX,
    REASON_SUFFIX,
    REFUSED_SUFFIX,
    REQUEUED_PREFIX,
    station_of,
)
from hisparc_datastore.queue.quarantine import (  # noqa: F401 - the names queue.folders has always offered
    QuarantineMixin,
    default_hold_limits,
    events_name,
    hold_limits,
)
from hisparc_datastore.queue.requeue import (  # noqa: F401 - the names queue.folders has always offered
    DUPLICATE,
    IN_FLIGHT,
    NEW,
    AlreadyStored,
    RequeueMixin,
    UploadMemory,
    requeued_name,
)
from hisparc_datastore.util.durable import fsync_dir

QUEUE_DIRS = ("tmp", "incoming", "partial", "suspicious", "quarantine", "archive")
RELIST_S = 2.0  # seconds a listing of incoming/ is used for claims before incoming/ is listed again
# the receiver's memory of accepted uploads (receiver/claims.py), read by ``datastore status``
DB_NAME = "receiver.sqlite"
# the folders whose files are uploads not yet stored, as status and metrics count them
FOLDERS = ("incoming", "partial", "suspicious", "quarantine")


class Queue(QuarantineMixin, RequeueMixin, ArchiveMixin):
    """The queue directories under ``data_dir``: their layout and the writer's claims here;
    quarantine (queue/quarantine.py), requeue (queue/requeue.py) and the archive
    (queue/archive.py) mixed in."""

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

    def waiting(self) -> int:
        """About how many uploads wait in ``incoming/``: those of the last listing not
        claimed since (arrivals since then are missed, for at most RELIST_S); when that
        listing is used up, ``incoming/`` is counted again, so 0 means none waits.

        Counting ``incoming/`` after every batch cost a look at every waiting file per
        batch: the square of a backlog's length."""
        if self._pending:
            return len(self._pending)
        try:
            with os.scandir(self.incoming) as entries:
                return sum(1 for entry in entries if not entry.name.startswith("."))
        except OSError:
            return 0

    def unclaim(self, names: list[str]) -> None:
        """Put claimed uploads nothing was stored of back into ``incoming/``, keeping their
        receipt time; the next claim lists ``incoming/`` again."""
        for name in names:
            os.rename(self.partial / name, self.incoming / name)
        self._pending = []
        if self.fsync:
            fsync_dir(self.incoming)
            fsync_dir(self.partial)

    def batch_waiting(self, uploads: int, size: int) -> bool:
        """Whether a whole batch waits in ``incoming/``: ``uploads`` files, or ``size`` bytes.
        Stops at the first whole batch, unlike :func:`folder_usage`, which counts a backlog
        of any length."""
        count = total = 0
        with os.scandir(self.incoming) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                try:
                    total += entry.stat().st_size
                except FileNotFoundError:
                    continue  # requeued or removed by an operator meanwhile, as claim() allows
                count += 1
                if count >= uploads or total >= size:
                    return True
        return False

    def has_incoming(self) -> bool:
        with os.scandir(self.incoming) as entries:
            return any(not entry.name.startswith(".") for entry in entries)

    def release(self, name: str) -> None:
        """Forget a stored upload: its rows are safely in the day files."""
        (self.partial / name).unlink(missing_ok=True)

    def sync_partial(self) -> None:
        if self.fsync:
            fsync_dir(self.partial)


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
