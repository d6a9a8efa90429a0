"""What a writer killed mid-batch leaves in a day file beyond its row counts, and its undo.

The leftovers are made as a kill leaves them: the blobs array's chunk holds the
lost attempt's heap ids past the journaled rows (the writer runs without a chunk
cache, so slots reach the file at once, the row count and heap later), and the
superblock's end of allocation lags the file's size.
"""

import os
import struct
from pathlib import Path

import numpy as np
import tables

from hisparc_datastore.storage import undo
from hisparc_datastore.storage.layout import BLOBS, DayFile
from hisparc_datastore.storage.verify import unreadable_rows, verify_day_file

A, B = "/hisparc/cluster_amsterdam/station_501", "/hisparc/cluster_amsterdam/station_502"
SLOT = 16  # bytes of one blob's slot on disk: length, heap collection address, object index


def blob(station: int, i: int) -> bytes:
    return bytes([station % 251, i % 251]) * (40 + i)


def stored_day_file(path: Path) -> None:
    """Stations 501 and 502 with ten stored blobs each, sharing the global heap's collection."""
    day_file = DayFile(path)
    for station in (501, 502):
        day_file.append_blobs("amsterdam", station, [blob(station, i) for i in range(10)])
    day_file.flush(fsync=False)
    day_file.close()


def leave_lost_attempt(path: Path, node_path: str, rows: int, named: list[int]) -> None:
    """Write into ``node_path``'s chunk, past its ``rows``, the slots of a lost attempt: heap
    ids naming the objects ``named`` (indices in the heap collection of its last blob)."""
    with tables.open_file(str(path), "a") as h5:
        node = h5.get_node(node_path)
        slots = np.frombuffer(node.read_chunk((0,)), dtype=np.uint8).reshape(-1, SLOT).copy()
        for k, index in enumerate(named):
            slots[rows + k] = slots[rows - 1]
            slots[rows + k, 12:16] = np.frombuffer(struct.pack("<I", index), dtype=np.uint8)
        node.write_chunk((0,), slots.tobytes())


def heap_index(path: Path, node_path: str, row: int) -> int:
    with tables.open_file(str(path), "r") as h5:
        raw = h5.get_node(node_path).read_chunk((0,))
    return struct.unpack_from("<I", raw, row * SLOT + 12)[0]


def blobs_of(path: Path, node_path: str) -> list[bytes]:
    with tables.open_file(str(path), "r") as h5:
        node = h5.get_node(node_path)
        return [node[i] for i in range(node.nrows)]


def append_after_a_lost_attempt(path: Path, undo_with_reached: bool) -> None:
    """501's lost attempt named the heap ids that 502's next stored blobs are then given;
    501's batch is undone (as the journal says), 502 stores blobs, then 501 appends again."""
    first_free = heap_index(path, f"{B}/{BLOBS}", 9) + 1
    leave_lost_attempt(path, f"{A}/{BLOBS}", 10, list(range(first_free, first_free + 3)))
    day_file = DayFile(path)
    sizes = {f"{A}/{BLOBS}": 10}
    day_file.truncate(sizes, {f"{A}/{BLOBS}": 13} if undo_with_reached else None)
    # Reading a stored blob (as the undo's check does) loads its heap collection, which has room:
    # HDF5 then puts new blobs into it, under the lowest free ids: those the lost attempt named.
    assert day_file.h5.get_node(f"{B}/{BLOBS}")[9] == blob(502, 9)
    day_file.append_blobs("amsterdam", 502, [blob(502, i) for i in range(10, 13)])
    day_file.flush(fsync=False)
    day_file.append_blobs("amsterdam", 501, [blob(501, i) for i in range(10, 13)])
    day_file.close()


def test_a_lost_attempts_heap_ids_are_cleared_so_no_stored_blob_is_deleted(tmp_path):
    path = tmp_path / "2026_12_6.h5"
    stored_day_file(path)
    append_after_a_lost_attempt(path, undo_with_reached=True)
    assert blobs_of(path, f"{A}/{BLOBS}") == [blob(501, i) for i in range(13)]
    assert blobs_of(path, f"{B}/{BLOBS}") == [blob(502, i) for i in range(13)]
    assert verify_day_file(path) == []


def test_without_clearing_them_the_next_append_deletes_another_stations_stored_blobs(tmp_path):
    # The failure the undo prevents, shown on the same leftovers: HDF5 reads each slot before
    # writing it and deletes the heap object the old slot names, here 502's stored blobs.
    path = tmp_path / "2026_12_6.h5"
    stored_day_file(path)
    append_after_a_lost_attempt(path, undo_with_reached=False)
    damages = verify_day_file(path)
    assert [(d.node, d.rows) for d in damages] == [(f"{B}/{BLOBS}", (10, 11, 12))]
    assert "13 rows" not in str(damages[0]) and "3 rows unreadable" in str(damages[0])


def test_the_space_a_lost_attempt_wrote_is_never_handed_out_again(tmp_path):
    path = tmp_path / "2026_12_6.h5"
    stored_day_file(path)
    recorded = os.path.getsize(path)
    with open(path, "ab") as file:
        file.write(b"\xff" * 70_000)  # what the attempt wrote past the recorded end
    assert undo.keep_unfinished_space(path, fsync=False) == 70_000
    assert undo.keep_unfinished_space(path, fsync=False) == 0  # done once: nothing to do again
    day_file = DayFile(path)
    day_file.append_blobs("amsterdam", 501, [blob(501, i) for i in range(10, 20)])
    day_file.close()
    with open(path, "rb") as file:
        file.seek(recorded)
        assert file.read(70_000) == b"\xff" * 70_000  # new blobs went after it
    assert blobs_of(path, f"{A}/{BLOBS}") == [blob(501, i) for i in range(20)]


def test_a_superblock_ahead_of_the_file_is_met_by_extending_the_file(tmp_path):
    path = tmp_path / "2026_12_6.h5"
    stored_day_file(path)
    size = os.path.getsize(path)
    os.truncate(path, size - 100)  # the superblock says 100 bytes more than the file holds
    undo.keep_unfinished_space(path, fsync=False)
    assert os.path.getsize(path) == size
    with tables.open_file(str(path), "r"):
        pass


def test_files_of_other_formats_are_left_alone(tmp_path):
    path = tmp_path / "not-hdf5.h5"
    path.write_bytes(b"plain text, not a day file" * 10)
    assert undo.keep_unfinished_space(path, fsync=False) == 0
    assert path.read_bytes() == b"plain text, not a day file" * 10


def test_verify_names_the_node_and_rows_it_cannot_read(tmp_path):
    path = tmp_path / "2026_12_6.h5"
    stored_day_file(path)
    with tables.open_file(str(path), "a") as h5:
        node = h5.get_node(f"{A}/{BLOBS}")
        slots = np.frombuffer(node.read_chunk((0,)), dtype=np.uint8).reshape(-1, SLOT).copy()
        slots[4, 4:12] = 0xEE  # row 4 names a heap collection at a nonsense address
        node.write_chunk((0,), slots.tobytes())
        damage = unreadable_rows(node, path)
    assert damage is not None and damage.rows == (4,) and damage.count == 1
    assert [d.node for d in verify_day_file(path)] == [f"{A}/{BLOBS}"]
    assert f"{A}/{BLOBS}: 1 rows unreadable (rows 4)" in str(verify_day_file(path)[0])
