"""Makes sure only one writer works on a ``data_dir`` at a time."""

from __future__ import annotations

import datetime
import fcntl
import os
import socket
from pathlib import Path


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
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise WriterAlreadyRunning(
                f"another writer is running on {self.path.parent} ({holder}); "
                f"only one writer may write a data_dir"
            ) from None
        os.ftruncate(fd, 0)
        started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {started}\n".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc_info) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
