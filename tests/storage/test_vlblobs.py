"""The blob append below PyTables' conversions: every row read back, and its row counters."""

from __future__ import annotations

import random

import pytest
import tables

from hisparc_datastore.storage import vlblobs
from hisparc_datastore.storage.layout import BLOBS, BLOBS_TITLE, DayFile, get_or_create_blobs

# empty rows, trailing and leading NULs, a zlib-sized row, one byte
ODD = [b"", b"abc\x00\x00", b"\x00", b"\x00trace", bytes(range(256)) * 5, b"x", b""]


def _blobs(path, mode="a") -> tuple[tables.File, tables.VLArray]:
    h5 = tables.open_file(str(path), mode)
    return h5, get_or_create_blobs(h5, h5.root)


def _read(path) -> list[bytes]:
    with tables.open_file(str(path)) as h5:
        node = h5.get_node(f"/{BLOBS}")
        assert isinstance(node, tables.VLArray)
        assert isinstance(node.atom, tables.VLStringAtom)
        assert node.chunkshape == (4096,)
        assert node.title == BLOBS_TITLE
        assert node.nrows == len(node[:])
        return list(node[:])


def test_rows_equal_those_of_the_public_append(tmp_path):
    rng = random.Random(5)
    batches = [ODD] + [[rng.randbytes(rng.randint(0, 1500)) for _ in range(rng.randint(1, 5000))]
                       for _ in range(4)]
    h5, node = _blobs(tmp_path / "public.h5", "w")
    for batch in batches:
        for blob in batch:
            node.append(blob)
    h5.close()
    h5, _ = _blobs(tmp_path / "fast.h5", "w")
    for batch in batches:
        node = h5.get_node(f"/{BLOBS}")
        assert vlblobs.append_blobs(node, batch) == node.nrows == h5.get_node(f"/{BLOBS}").nrows
    h5.close()
    expected = [blob for batch in batches for blob in batch]
    assert _read(tmp_path / "public.h5") == expected
    assert _read(tmp_path / "fast.h5") == expected
    assert _read(tmp_path / "fast.h5")[:7] == ODD


def test_the_node_counts_its_rows_so_a_later_append_or_truncate_loses_nothing(tmp_path):
    # The trap of writes below PyTables: a stale row counter in the node object makes a
    # later append through it set the extent too small, cutting rows off on disk. That
    # node object refuses PyTables' append; one fetched again from the file counts right.
    h5, node = _blobs(tmp_path / "f.h5", "w")
    for blob in (b"a", b"b", b"c"):
        node.append(blob)
    assert vlblobs.append_blobs(node, [b"d", b"e", b"f", b"g", b"h"]) == 8
    assert node.nrows == 8
    with pytest.raises(RuntimeError, match="fetch the node again"):
        node.append(b"i")
    node._f_close()
    node = h5.get_node(f"/{BLOBS}")
    node.append(b"i")  # the public append after ours, on a node fetched again
    assert vlblobs.append_blobs(node, [b"j", b""]) == 11
    h5.close()
    assert _read(tmp_path / "f.h5") == [b"a", b"b", b"c", b"d", b"e", b"f", b"g", b"h", b"i", b"j", b""]


def test_a_failed_append_writes_nothing_and_closes_the_node(tmp_path):
    h5, node = _blobs(tmp_path / "f.h5", "w")
    node.append(b"a")
    with pytest.raises(TypeError):
        vlblobs.append_blobs(node, [b"b", "not bytes"])
    assert not node._v_isopen
    assert h5.get_node(f"/{BLOBS}").nrows == 1
    h5.close()
    assert _read(tmp_path / "f.h5") == [b"a"]


def test_a_write_hdf5_refuses_is_an_hdf5_error_and_closes_the_node(tmp_path):
    h5, node = _blobs(tmp_path / "f.h5", "w")
    node.append(b"a")
    h5.close()
    h5 = tables.open_file(str(tmp_path / "f.h5"), "r")  # read-only: HDF5 refuses to extend
    node = h5.get_node(f"/{BLOBS}")
    with pytest.raises(tables.HDF5ExtError, match="extending the blobs failed for /blobs"):
        vlblobs.append_blobs(node, [b"b"])
    assert not node._v_isopen
    h5.close()
    assert _read(tmp_path / "f.h5") == [b"a"]


def test_an_empty_batch_changes_nothing(tmp_path):
    h5, node = _blobs(tmp_path / "f.h5", "w")
    node.append(b"a")
    assert vlblobs.append_blobs(node, []) == 1
    h5.close()
    assert _read(tmp_path / "f.h5") == [b"a"]


def test_day_file_appends_across_batches_and_reopen(tmp_path):
    path = tmp_path / "2026_11_24.h5"
    day_file = DayFile(path)
    day_file.append_blobs("Amsterdam", 501, [b"t1", b"t2"])
    node_path = "/hisparc/cluster_amsterdam/station_501/blobs"
    assert day_file.node_size(node_path) == 2
    day_file.append_blobs("Amsterdam", 501, [b"t3"])
    assert day_file.node_size(node_path) == 3
    # PyTables' truncate leaves the node's C row counter as it was; appending through that
    # node object would leave a gap. DayFile.truncate closes what it cut back.
    day_file.truncate({node_path: 2})
    day_file.append_blobs("Amsterdam", 501, [b"t4", b""])
    day_file.close()
    day_file = DayFile(path)
    day_file.append_blobs("Amsterdam", 501, [b"t5"])
    day_file.close()
    with tables.open_file(str(path)) as h5:
        assert list(h5.get_node(node_path)[:]) == [b"t1", b"t2", b"t4", b"", b"t5"]

