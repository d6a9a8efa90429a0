"""The archive: each stored upload kept once, for rebuilding day files.

Part of :class:`~hisparc_datastore.queue.folders.Queue` (mixed in). ``archive/uploads/NAME``
is a hard link to the claimed file, with ``NAME.dates`` (its dates) beside it, compressed to
``NAME.gz`` when the writer is idle only if ``archive_compress`` is set; pruned by age.
"""

from __future__ import annotations

import datetime
import gzip
import os
import time
from collections.abc import Iterable
from pathlib import Path

from hisparc_datastore.util.durable import fsync_dir, write_atomically

UPLOADS = "uploads"  # archive/uploads/: each stored upload once, with its dates beside it
DATES_SUFFIX = ".dates"


class ArchiveMixin:
    """Queue's archive methods. They use the Queue's folders, ``fsync`` and
    ``_uncompressed``."""

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


def read_archived(path: Path) -> bytes:
    """The queue file an archive entry holds, compressed or not."""
    data = path.read_bytes()
    return gzip.decompress(data) if path.suffix == ".gz" else data


def compress(payload: bytes) -> bytes:
    """The archive's format: gzip at the fastest level, with no timestamp, so equal uploads compress equal."""
    return gzip.compress(payload, compresslevel=1, mtime=0)
