"""Failures while storing, told apart and described: a full disk, a reader's lock, HDF5 damage."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path


class StorageError(Exception):
    """Appending to a day file failed (disk full, I/O error); the batch is retried."""


class DamagedDayFile(StorageError):
    """Blobs a batch stored, or stored before it, read back unreadable: the day file is set
    aside and rebuilt from the archive, and the batch is stored again."""

    def __init__(self, path: Path, what: str) -> None:
        super().__init__(f"{path} is damaged: {what}")
        self.path = path


def held_by_another(exc: BaseException) -> bool:
    """HDF5 refused to open a day file because another process (a reader) has it locked."""
    return "unable to lock file" in str(exc)


def disk_full(data_dir: Path, margin: int = 64 * 2**20) -> bool:
    """Too little room left to trust an HDF5 error as damage rather than a full disk."""
    try:
        return shutil.disk_usage(data_dir).free < margin
    except OSError:
        return True


def describe(exc: BaseException) -> str:
    """One line for the log: what failed, without HDF5's error stack."""
    if isinstance(exc, StorageError):
        return str(exc)  # described when it was raised
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"disk full: {exc}"
    if held_by_another(exc):
        return f"a day file is locked by another process (a reader?): {str(exc).strip().splitlines()[-1]}"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else ''}"
