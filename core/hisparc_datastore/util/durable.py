"""Writes files so that after a crash they are either whole or absent."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path


def fsync_dir(directory: str | os.PathLike) -> None:
    """Make a rename or unlink in ``directory`` survive a power cut."""
    _fsync(directory, os.O_RDONLY | os.O_DIRECTORY)


def fsync_file(path: str | os.PathLike) -> None:
    """Make the data of the file at ``path`` survive a power cut, when whoever wrote it (HDF5,
    a copy) keeps no descriptor we could fsync: one of our own reaches the same inode's pages."""
    _fsync(path, os.O_RDONLY)


def fsync_appended(path: str | os.PathLike) -> None:
    """Like :func:`fsync_file`, for a file that is appended to again after it (a day file
    between commits): its pages are then dropped from the page cache.

    Linux caches a file in large folios (ext4 since 6.16) and counts a folio whole as
    written each time it is dirtied again. The next commit's appends at the end of every
    table dirtied the folio they share with what this fsync wrote, and counted all of it
    again: 13 % more bytes written in the day benchmark (kernel 6.18). Dropped, the next
    append reads back the page it continues and counts only the pages it writes.
    """
    _fsync(path, os.O_RDONLY, drop_pages=True)


def _fsync(path: str | os.PathLike, flags: int, drop_pages: bool = False) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
        if drop_pages and hasattr(os, "posix_fadvise"):  # not on macOS; nothing to drop there
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


# The name write_atomically gives its temporary file: another program's files never match it.
TEMPORARY_NAME = re.compile(r"\..+\.\d+\.tmp")


def temporary_name(name: str) -> str:
    return f".{name}.{os.getpid()}.tmp"


def write_atomically(target: Path, data: bytes, tmp_dir: Path | None = None, fsync: bool = True,
                     like: os.stat_result | None = None) -> None:
    """Write ``data`` to a temporary file, fsync it, then rename it onto ``target``.

    ``tmp_dir`` must be on the same file system as ``target``; by default the
    temporary file sits beside the target with a leading dot. ``like``: the new file
    gets this mode and, as far as this user may give them, this owner and group
    (the station list keeps the 0600 an operator set: it holds passwords); it is
    private from its first byte.
    """
    tmp_dir = tmp_dir or target.parent
    tmp = tmp_dir / temporary_name(target.name)
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        with open(os.open(tmp, flags, 0o600 if like is not None else 0o666), "wb") as fh:
            if like is not None:
                _take_owner_and_mode(fh.fileno(), like)
            fh.write(data)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if fsync:
        fsync_dir(target.parent)


def _take_owner_and_mode(fd: int, like: os.stat_result) -> None:
    for uid, gid in ((like.st_uid, like.st_gid), (-1, like.st_gid)):
        try:
            os.fchown(fd, uid, gid)
            break
        except PermissionError:
            continue  # not root: the group, if this user is in it; else this user's own
    os.fchmod(fd, stat.S_IMODE(like.st_mode))


def move(source: Path, target: Path, fsync: bool = True) -> None:
    """Rename ``source`` to ``target`` (same file system) and make both directories durable."""
    os.replace(source, target)
    if fsync:
        fsync_dir(target.parent)
        if source.parent != target.parent:
            fsync_dir(source.parent)
