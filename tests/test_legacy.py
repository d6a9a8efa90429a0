"""The seed writer's API names keep working with their signatures."""

import datetime
import inspect
import shutil

import pytest
import tables

from hisparc_datastore import legacy
from hisparc_datastore.codec.decoding import Upload
from hisparc_datastore.testing.helpers import event

SEED_SIGNATURES = {
    "writer": ["configfile"],
    "process_data": ["file", "data_dir"],
    "store_event": ["datafile", "cluster", "station_id", "event"],
    "data_is_blob": ["uploadcode", "blob_types"],
    "open_or_create_file": ["data_dir", "date"],
    "get_or_create_cluster_group": ["file", "cluster"],
    "get_or_create_station_group": ["file", "cluster", "station_id"],
    "get_or_create_node": ["file", "cluster", "node"],
}


@pytest.mark.parametrize("name, parameters", SEED_SIGNATURES.items())
def test_seed_functions_keep_their_parameters(name, parameters):
    signature = inspect.signature(getattr(legacy, name))
    required = [p.name for p in signature.parameters.values() if p.default is p.empty]
    assert required == parameters


def test_process_data_stores_a_real_queue_file(tmp_path, testdata):
    queue_file = tmp_path / "writer_py2_CIC"
    shutil.copy(testdata / "queue/writer_py2_CIC", queue_file)
    rejected = legacy.process_data(str(queue_file), str(tmp_path), minimum_year=2016)
    assert rejected == []
    with tables.open_file(tmp_path / "2017/2/2017_2_26.h5") as f:
        station = f.root.hisparc.cluster_amsterdam.station_99
        assert list(station.events[0]["pulseheights"]) == [625, 972, 923, 724]
        assert station.blobs.nrows == 4


def test_process_data_returns_what_it_could_not_store(tmp_path, testdata):
    queue_file = tmp_path / "old"
    queue_file.write_bytes(Upload(99, "amsterdam", [
        event("SIN", datetime.datetime(2011, 2, 22), {"MAS_CH1_LOW": 1})]).to_queue_bytes())
    rejected = legacy.process_data(queue_file, tmp_path)
    assert len(rejected) == 1 and "minimum_year 2020" in rejected[0].reason


def test_the_group_helpers_build_the_contract_layout(tmp_path):
    date = datetime.date(2017, 2, 6)
    with legacy.open_or_create_file(tmp_path, date) as f:
        assert f.filename == str(tmp_path / "2017/2/2017_2_6.h5")
        cluster = legacy.get_or_create_cluster_group(f, "Amsterdam")
        station = legacy.get_or_create_station_group(f, "Amsterdam", 99)
        assert legacy.get_or_create_station_group(f, "Amsterdam", 99) is station
        assert f.root.hisparc._v_title == "HiSPARC data"
        assert cluster._v_pathname == "/hisparc/cluster_amsterdam"
        assert cluster._v_title == "HiSPARC cluster Amsterdam data"
        assert station._v_title == "HiSPARC station 99 data"
        blobs = legacy.get_or_create_node(f, station, "blobs")
        assert isinstance(blobs, tables.VLArray) and blobs.title == "HiSPARC binary data"
        singles = legacy.get_or_create_node(f, station, "singles")
        assert singles.title == "HiSPARC single messages"
        with pytest.raises(ValueError, match="no installed plugin declares a table named 'nope'"):
            legacy.get_or_create_node(f, station, "nope")

        legacy.store_event(f, "Amsterdam", 99, event("SIN", datetime.datetime(2017, 2, 6, 1),
                                                     {"SLV_CH2_HIGH": 12}))
        assert singles[0]["slv_ch2_high"] == 12 and singles[0]["event_id"] == 1
        with pytest.raises(ValueError, match="out of bounds"):
            legacy.store_event(f, "Amsterdam", 99, event("SIN", datetime.datetime(2017, 2, 6, 1),
                                                         {"SLV_CH2_HIGH": 2**40}))
        assert singles.nrows == 1


@pytest.mark.parametrize("code, expected", [("TR1", True), ("TR", True), ("PH1", False), ("ERRMSG", True)])
def test_data_is_blob(code, expected):
    assert legacy.data_is_blob(code, ["TR", "ERRMSG"]) is expected
