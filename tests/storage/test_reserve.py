"""Room set aside in a day file: its size and bytes stay, the blocks are there, and given back."""

import errno

import numpy as np
import pytest
import tables

from hisparc_datastore.plugin.registry import load_registry
from hisparc_datastore.storage import layout
from hisparc_datastore.storage.reserve import release, reserve

MB = 2**20


def day_file(path, rows=5000):
    with tables.open_file(str(path), "w") as h5:
        group = layout.get_or_create_station_group(h5, "Utrecht", 501)
        table = layout.get_or_create_table(h5, group, load_registry().get("SIN"))
        records = np.zeros(rows, dtype=table.dtype)
        records["event_id"] = np.arange(1, rows + 1)
        records["mas_ch1_low"] = np.arange(rows) % 400
        table.append(records)
    return path


def allocated(path):
    return path.stat().st_blocks * 512


def test_room_set_aside_changes_no_byte_and_is_given_back(tmp_path):
    path = day_file(tmp_path / "2024_2_29.h5")
    before, size = path.read_bytes(), path.stat().st_size
    assert reserve(path, 8 * MB)
    assert path.stat().st_size == size and path.read_bytes() == before
    assert allocated(path) >= size + 8 * MB
    with tables.open_file(str(path), "a") as h5:  # HDF5 takes it as it was, and writes into it
        group = layout.get_or_create_station_group(h5, "Utrecht", 502)
        layout.get_or_create_table(h5, group, load_registry().get("SIN")).append(
            np.zeros(10, dtype=h5.get_node("/hisparc/cluster_utrecht/station_501/singles").dtype))
    release(path)
    assert allocated(path) <= -(-path.stat().st_size // 4096) * 4096
    with tables.open_file(str(path)) as h5:
        assert list(h5.get_node("/hisparc/cluster_utrecht/station_501/singles").col("mas_ch1_low")) == [
            i % 400 for i in range(5000)]
        assert h5.get_node("/hisparc/cluster_utrecht/station_502/singles").nrows == 10


def test_a_disk_too_full_for_the_room_refuses_before_any_byte_changes(tmpfs):
    disk = tmpfs(4)
    path = day_file(disk / "2024_2_29.h5", rows=2000)
    before = path.read_bytes()
    with pytest.raises(OSError) as refused:
        reserve(path, 16 * MB)
    assert refused.value.errno == errno.ENOSPC
    assert str(path) in str(refused.value)  # the operator is told which file
    assert path.read_bytes() == before
    assert reserve(path, 1 * MB)  # what fits is set aside
    release(path)
