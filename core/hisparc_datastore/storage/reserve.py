"""Room set aside in a day file before a batch writes to it, so that no write of the batch
can meet a full disk.

HDF5 adds a node by rewriting a few blocks of metadata in place (the superblock, the
parent group's symbol table, B-tree and heap: 1 to 5 blocks of 4 kB, measured in a
0.4 GB file) and writing the new node at the end of the file. A full disk in the middle
of that left a file whose earlier groups could not be reached. A rewrite in place needs
no new block, so only the writes past the end of the file can fail for want of room:
``fallocate(FALLOC_FL_KEEP_SIZE)`` gives the file those blocks before the batch (and
any holes inside it) without changing its size or its bytes, so readers and HDF5 see
the same file. What the batch did not use is given back by :func:`release`.
"""

from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path

_FALLOC_FL_KEEP_SIZE = 0x01
_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong]

# Room a batch is given per node it writes to: a new table or blobs node allocates its
# first 64 kB chunk (every table's chunkshape comes to ~64 kB), a node grown may start
# one; and per day file for the metadata HDF5 writes at the end (heaps, B-tree nodes).
PER_NODE = 256 * 1024
PER_FILE = 1024 * 1024

# The file system cannot set room aside (fallocate is not supported there)
UNSUPPORTED = (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


def room_for(data_bytes: int, nodes: int) -> int:
    """Bytes to set aside for a batch that writes ``data_bytes`` of rows and blobs to
    ``nodes`` nodes of one day file: twice the data (blobs go into heap collections with
    their own headers and free space), plus :data:`PER_NODE` each and :data:`PER_FILE`."""
    return 2 * data_bytes + PER_NODE * nodes + PER_FILE


def reserve(path: Path, room: int) -> bool:
    """Give the existing day file ``path`` blocks for everything up to ``room`` bytes past
    its end, and for any hole inside it; its size and bytes stay as they are.

    Returns False when the file system cannot (then nothing is set aside). Raises
    OSError (ENOSPC: too little free space) with nothing changed but the space.
    """
    fd = os.open(path, os.O_RDWR)
    try:
        size = os.fstat(fd).st_size
        if _libc.fallocate(fd, _FALLOC_FL_KEEP_SIZE, 0, size + room) == 0:
            return True
        code = ctypes.get_errno()
        if code in UNSUPPORTED:
            return False
        raise OSError(code, f"{os.strerror(code)}: setting {room} bytes aside for a batch", str(path))
    finally:
        os.close(fd)


def release(path: Path) -> None:
    """Give back the blocks set aside past the (flushed) day file's end: cutting a file
    to its own size frees them, in ext4, XFS, btrfs and tmpfs alike."""
    fd = os.open(path, os.O_RDWR)
    try:
        os.ftruncate(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)
