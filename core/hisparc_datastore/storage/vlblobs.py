"""Appends a batch of blobs to a ``blobs`` VLArray without PyTables' per-blob Python conversions.

``VLArray.append`` was half the writer's time, most of it Python around the
one HDF5 call per row (``convert_to_np_atom2``, ``_getnobjects``, numpy
reductions). Here each blob goes straight to the private ``VLArray._append``,
the HDF5 write ``append`` itself ends in, with the blob's bytes as a uint8
array; as ``append`` does, the caller then raises ``nrows``. The rows on disk
are those ``append`` makes (tests read every row back).

Not used, though faster still: one ``H5Dwrite`` for all of a batch's blobs
through ctypes. After a writer was killed mid-batch, HDF5 found heap ids of
the lost attempt in the chunk it extended into, failed to delete them, and
then crashed (``make chaos``); PyTables' own one-row write did not.

Private PyTables API used, pinned by the ``tables`` range in pyproject.toml:
``VLArray._append(nparr, nobjects)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tables


def append_blobs(node: tables.VLArray, blobs: Sequence[bytes]) -> int:
    """Append ``blobs`` as rows of ``node`` (a VLStringAtom VLArray); return its row count.

    If an append fails the node is closed, as its row counters may then
    disagree: re-fetch it from the file before using it again.
    """
    append = node._append
    try:
        for blob in blobs:
            if blob:
                append(np.frombuffer(blob, dtype=np.uint8), len(blob))
            else:
                append(None, 0)  # what append() passes for an empty row
            # _append counts the row at the C level only; append() raises nrows itself.
            node.nrows += 1
    except BaseException:
        node._f_close()
        raise
    return int(node.nrows)
