"""A day file keeps a bounded number of tables and blobs open, so memory does not grow with
stations, and loses no row when it lets one go and opens it again."""

from __future__ import annotations

import datetime

import tables

from hisparc_datastore.plugin.registry import load_registry
from hisparc_datastore.storage import layout as storage
from hisparc_datastore.storage.layout import DayFile
from hisparc_datastore.testing.helpers import event
from hisparc_datastore.writer.rows import StationRows


def test_a_day_file_keeps_at_most_max_tables_and_max_nodes_open_and_loses_no_row(tmp_path, monkeypatch):
    monkeypatch.setattr(storage, "MAX_NODES", 3)
    monkeypatch.setattr(storage, "MAX_TABLES", 3)
    singles = load_registry().get("SIN")
    path = tmp_path / "2026_11_24.h5"
    day_file = DayFile(path)
    moment = datetime.datetime(2026, 11, 24, 1, 2, 3)
    for round_ in range(3):  # each station's table is let go and fetched again every round
        for station in range(10):
            rows = StationRows()
            rows.add(singles, event("SIN", moment, {"MAS_CH1_LOW": 100 * round_ + station}), moment)
            arrays, rejected = rows.build(0)
            assert not rejected
            day_file.append_rows("Utrecht", station, singles, arrays[singles])
            day_file.append_blobs("Utrecht", station, [f"{round_}-{station}".encode()])
            assert len(day_file._tables) <= 3 and len(day_file._nodes) <= 3
            path_ = f"/hisparc/cluster_utrecht/station_{station}"
            assert day_file.node_size(f"{path_}/singles") == round_ + 1
            assert day_file.node_size(f"{path_}/blobs") == round_ + 1
    assert day_file.node_size("/hisparc/cluster_utrecht/station_99/singles") is None
    day_file.flush(fsync=False)
    day_file.close()
    with tables.open_file(str(path)) as h5:
        for station in range(10):
            table = h5.get_node(f"/hisparc/cluster_utrecht/station_{station}/singles")
            assert list(table.col("event_id")) == [1, 2, 3]
            assert list(table.col("mas_ch1_low")) == [station, 100 + station, 200 + station]
            assert table.attrs.NROWS == 3
            blobs = h5.get_node(f"/hisparc/cluster_utrecht/station_{station}/blobs")
            assert list(blobs[:]) == [f"{round_}-{station}".encode() for round_ in range(3)]


def test_a_table_whose_append_failed_is_opened_afresh_with_the_rows_on_disk(tmp_path, monkeypatch):
    """An append that fails after HDF5 extended the table (a full disk at NROWS, say) leaves
    no stale row count behind: the next size asked for is the file's, which the writer's
    journal then cuts back; appends after that number on from the rows really there."""
    from hisparc_datastore.storage import hdf5calls

    singles = load_registry().get("SIN")
    path = tmp_path / "2026_11_24.h5"
    node = "/hisparc/cluster_utrecht/station_7/singles"
    moment = datetime.datetime(2026, 11, 24, 1, 2, 3)

    def records(*lows):
        rows = StationRows()
        for low in lows:
            rows.add(singles, event("SIN", moment, {"MAS_CH1_LOW": low}), moment)
        return rows.build(0)[0][singles]

    day_file = DayFile(path)
    day_file.append_rows("Utrecht", 7, singles, records(1, 2))
    real = hdf5calls.Dataset._set_nrows_attribute

    def failing(self, nrows):
        raise tables.HDF5ExtError("disk full (simulated)")

    monkeypatch.setattr(hdf5calls.Dataset, "_set_nrows_attribute", failing)
    try:
        day_file.append_rows("Utrecht", 7, singles, records(3))
    except tables.HDF5ExtError:
        pass
    else:
        raise AssertionError("the append did not fail")
    monkeypatch.setattr(hdf5calls.Dataset, "_set_nrows_attribute", real)
    assert day_file.node_size(node) == 3  # extended and written before NROWS failed
    day_file.truncate({node: 2})  # what recovery does with the journal's size
    assert day_file.node_size(node) == 2
    day_file.append_rows("Utrecht", 7, singles, records(4))
    day_file.flush(fsync=False)
    day_file.close()
    with tables.open_file(str(path)) as h5:
        table = h5.get_node(node)
        assert list(table.col("mas_ch1_low")) == [1, 2, 4]
        assert list(table.col("event_id")) == [1, 2, 3]
        assert table.attrs.NROWS == 3
