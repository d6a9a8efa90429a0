"""Makes sure only one writer works on a ``data_dir`` at a time."""

from __future__ import annotations

import datetime
import fcntl
import os
import socket
import time
from pathlib import Path

# `datastore status` tests the lock by taking it for an instant; a writer starting in
# that instant tries again for this long before it concludes another writer runs.
RETRY_S = 1.0


class WriterAlreadyRunning(RuntimeError):
    """Another writer holds the lock of this ``data_dir``."""


class WriterLock:
    """An exclusive ``flock`` on ``data_dir/writer.lock``; the kernel drops it when we die."""

    def __init__(self, data_dir: str | os.PathLike) -> None:
        self.path = Path(data_dir) / "writer.lock"
        self._fd: int | None = None

    def __enter__(self) -> WriterLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if not _lock_within(fd, RETRY_S):
            holder = os.read(fd, 200).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise WriterAlreadyRunning(
                f"another writer is running on {self.path.parent} ({holder}); "
                f"only one writer may write a data_dir"
            )
        os.ftruncate(fd, 0)
        started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {started}\n".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc_info) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _lock_within(fd: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)


def writer_holding(data_dir: str | os.PathLike) -> str | None:
    """What the running writer of ``data_dir`` wrote into its lock ("pid N on HOST since
    ISO"), or None when no writer runs. It tries the lock, since a killed writer leaves
    the file behind; the lock is held for an instant and never created."""
    path = Path(data_dir) / "writer.lock"
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return os.read(fd, 200).decode(errors="replace").strip() or "unknown"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
