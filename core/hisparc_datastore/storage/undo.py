"""Undoes, in a day file, what a batch that never finished wrote where no row count shows it.

A writer killed mid-batch leaves two kinds of bytes behind that cutting the
nodes back to their journaled row counts does not reach:

* **Heap ids in the blobs array's chunk, past its committed rows.** The writer
  runs without a chunk cache, so each blob's 16-byte slot (length, heap
  collection address, object index) reaches the file at once, while the row
  count (the dataset's extent) and the heap collection holding the blob's bytes
  are metadata that HDF5 writes later. After the kill the slots past the
  journaled rows still name heap objects of the lost attempt. HDF5 reads a vlen
  slot before writing it and deletes the heap object the old slot names, so the
  next append into such a slot deleted whatever object now has that id: by then,
  often a blob of a stored and acknowledged batch (``H5HG bad heap pointer``).
  :func:`scrub` grows each node to the rows the batch was to reach and cuts it
  back to the journaled rows: HDF5 then drops chunks wholly past them from the
  chunk index and fills the tail of the last one with null slots, without
  deleting anything the old slots name.
* **Space past the end of allocation the file's superblock records.** The
  superblock is written when the file is flushed; the batch's new heap
  collections, chunks and index nodes were allocated after that. On reopening,
  HDF5 would hand that space out again while metadata written by the lost
  attempt (a heap collection of stored blobs grown in place, an index node) may
  still point into it: two objects in one place. :func:`keep_unfinished_space`
  moves the recorded end of allocation up to the file's size, so nothing the
  attempt wrote is ever overwritten; the few megabytes it held stay unused.

Both leave every stored row and blob as it was; the day files keep the format
the deployed writer and its readers use. See docs/exactly-once.md.
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Mapping
from pathlib import Path

import tables

from hisparc_datastore.util.durable import fsync_file

log = logging.getLogger(__name__)

_SIGNATURE = b"\x89HDF\r\n\x1a\n"
# Superblock versions 0 and 1 (what PyTables writes): base address, free-space address and
# end-of-file address follow the fixed fields, 8 bytes each; version 1 adds 4 bytes first.
_EOA_OFFSET = {0: 40, 1: 44}
_BASE_OFFSET = {0: 24, 1: 28}


def keep_unfinished_space(path: Path, fsync: bool = True) -> int:
    """Make the day file ``path`` (closed) record its whole length as allocated; returns the
    bytes a lost attempt wrote past the recorded end (0 when there were none).

    A file whose superblock records more than the file holds (HDF5 wrote the superblock but
    the kill came before the data) is extended with zeros to that length, so that it opens;
    what it then lacks is found by the checks that follow an undo.
    """
    with open(path, "r+b") as file:
        head = file.read(64)
        if len(head) < 64 or not head.startswith(_SIGNATURE) or head[13] != 8:
            return 0  # not a superblock this knows (a newer format keeps a checksum): left as is
        version = head[8]
        if version not in _EOA_OFFSET:
            return 0
        (base,) = struct.unpack_from("<Q", head, _BASE_OFFSET[version])
        (recorded,) = struct.unpack_from("<Q", head, _EOA_OFFSET[version])
        if base != 0:
            return 0
        size = os.fstat(file.fileno()).st_size
        if size > recorded:
            file.seek(_EOA_OFFSET[version])
            file.write(struct.pack("<Q", size))
            log.warning("%s: the %d bytes an unfinished batch wrote past the end HDF5 recorded "
                        "are kept unused, so that none of it is handed out twice", path, size - recorded)
        elif size < recorded:
            file.truncate(recorded)
            log.warning("%s: %d bytes short of the end HDF5 recorded: extended with zeros",
                        path, recorded - size)
        else:
            return 0
    if fsync:
        fsync_file(path)
    return max(0, size - recorded)


def scrub(node: tables.Leaf, rows: int, reached: int) -> None:
    """Cut ``node`` back to ``rows``, clearing every slot up to ``reached`` (the rows a lost
    attempt may have written) whatever extent the file recorded for it."""
    top = max(int(node.nrows), reached)
    if top <= rows:
        return
    if node.nrows < top:
        node.truncate(top)  # grown first, so that the cut-back below covers every slot written
    node.truncate(rows)


def scrub_nodes(h5: tables.File, sizes: Mapping[str, int | None], reached: Mapping[str, int]) -> list[str]:
    """:func:`scrub` every node of ``sizes`` that existed before the batch; returns those
    that did not (the caller removes them)."""
    new = []
    for node_path, size in sizes.items():
        if size is None:
            new.append(node_path)
            continue
        try:
            node = h5.get_node(node_path)
        except tables.NoSuchNodeError:
            continue
        scrub(node, size, reached.get(node_path, size))
        # PyTables' VLArray.truncate leaves the row counter its appends use as it was: an
        # append through this node object would write past a gap. Closed, the next use
        # fetches it afresh with the true count.
        node._f_close()
    return new
