"""The real station uploads in ../shared/testdata produce the values its README lists,
and sapphire, the downstream reader, processes what we write."""

import base64
import calendar
import datetime
import zlib

import numpy as np
import pytest
import tables

from hisparc_datastore.testing import queue_file_events, upload_events

DAY = datetime.date(2017, 2, 26)
# the test data is from 2017
pytestmark = pytest.mark.datastore(minimum_year=2016)


def store_queue_file(datastore, path):
    # the queue file goes in as the receiver wrote it, byte for byte
    datastore.queue_file(path)
    tally = datastore.store()
    assert tally.events == 1 and tally.quarantined_files == 0
    return datastore.read_station(99, DAY)


@pytest.mark.parametrize("python", ["py2", "py3"])
def test_coincidence_queue_file(datastore, testdata, python):
    path = testdata / "queue" / f"writer_{python}_CIC"
    nodes = store_queue_file(datastore, path)
    row = nodes["events"][0]
    assert row["timestamp"] == 1488093964
    assert row["nanoseconds"] == 130245552
    assert row["ext_timestamp"] == 1488093964 * 10**9 + 130245552
    assert list(row["pulseheights"]) == [625, 972, 923, 724]
    assert list(row["traces"]) == [0, 1, 2, 3]
    assert len(nodes["blobs"]) == 4
    tr1 = next(d["data"] for d in queue_file_events(path)[0]["datalist"]
               if d["data_uploadcode"] == "TR1")
    assert tr1.startswith("eJxtkFkOAyEMQy/kD7KH+1+sBmZppU")
    assert nodes["blobs"][0] == base64.decodebytes(tr1.encode())


@pytest.mark.parametrize("python", ["py2", "py3"])
def test_singles_queue_file(datastore, testdata, python):
    nodes = store_queue_file(datastore, testdata / "queue" / f"writer_{python}_SIN")
    row = nodes["singles"][0]
    assert row["timestamp"] == 1488094031
    assert (row["mas_ch1_low"], row["mas_ch1_high"]) == (345, 98)
    assert (row["slv_ch1_low"], row["slv_ch1_high"]) == (329, 95)
    assert "blobs" not in nodes


@pytest.mark.parametrize("python", ["py2", "py3"])
def test_configuration_queue_file(datastore, testdata, python):
    nodes = store_queue_file(datastore, testdata / "queue" / f"writer_{python}_CFG")
    row = nodes["config"][0]
    assert row["timestamp"] == 1488125225
    assert row["mas_ch1_thres_high"] == 320
    assert row["mas_ch1_thres_low"] == 250
    assert not row["reduce_data"]
    assert row["mas_ch1_voltage"] == 300.0
    assert row["slv_ch1_current"] == 0.0
    assert nodes["blobs"] == [b"", b"Hardware: 0 FPGA: 0"]
    assert (row["mas_version"], row["slv_version"]) == (0, 1)


@pytest.mark.parametrize("name", ["py2event", "py3event"])
def test_single_event_uploads_from_both_pythons(datastore, testdata, name):
    events = upload_events(testdata / "uploads" / name)
    datastore.store(events, station=99)
    datastore.assert_stored(events, station=99)
    nodes = datastore.read_station(99, datetime.date(2017, 2, 22))
    row = nodes["events"][0]
    assert row["timestamp"] == 1487769897  # 13:24:57.656, fraction dropped
    assert row["nanoseconds"] == 731509026
    assert list(row["pulseheights"]) == [4, 4, -1, -1]
    assert list(row["n_peaks"]) == [-999, -999, -999, -999]
    assert row["event_rate"] == -1.0
    # a two-detector station: two traces, the other slots keep -1
    assert list(row["traces"]) == [0, 1, -1, -1]
    assert [zlib.decompress(blob) for blob in nodes["blobs"]] == [b"0,1,2,3,4,5,6,7,8,9"] * 2


def test_pysparc_configuration_without_date_keys(datastore, testdata):
    events = upload_events(testdata / "uploads" / "py2_pysparc_config")
    datastore.store(events, station=99)
    datastore.assert_stored(events, station=99)
    row = datastore.read("config", 99, DAY)[0]
    assert row["timestamp"] == 1488125225  # 16:07:05.667, fraction dropped
    assert (row["mas_ch1_thres_low"], row["mas_ch1_thres_high"]) == (250, 320)
    assert row["trig_high_signals"] == 1


def test_hundred_event_batch(datastore, testdata):
    events = upload_events(testdata / "uploads" / "py2_s510_100events")
    assert datastore.post(510, events) == "100"
    datastore.store()
    datastore.assert_stored(events, station=510)
    nodes = datastore.read_station(510, DAY)
    assert len(nodes["events"]) == 36
    assert len(nodes["singles"]) == 64
    assert len(nodes["blobs"]) == 36 * 4
    assert list(nodes["events"]["event_id"]) == list(range(1, 37))
    # stored in the order the station sent them, which is not time order
    sent = [calendar.timegm(e["header"]["datetime"].utctimetuple()) * 10**9 + e["header"]["nanoseconds"]
            for e in events if e["header"]["eventtype_uploadcode"] == "CIC"]
    assert list(nodes["events"]["ext_timestamp"]) == sent


def test_sapphire_processes_the_station_group_we_wrote(datastore, testdata):
    from sapphire.analysis.process_events import ProcessEvents

    events = upload_events(testdata / "uploads" / "py2_s510_100events")
    datastore.store(events, station=510)
    with tables.open_file(datastore.day_file(DAY), "a") as h5:
        process = ProcessEvents(h5, "/hisparc/cluster_amsterdam/station_510", progress=False)
        process.process_and_store_results()
        results = h5.get_node("/hisparc/cluster_amsterdam/station_510/events").read()
    assert len(results) == 36
    densities = np.stack([results[f"n{i}"] for i in range(1, 5)], axis=1)
    arrival = np.stack([results[f"t{i}"] for i in range(1, 5)], axis=1)
    # every event triggered in at least two detectors: a particle density there
    assert np.all((densities > 0).sum(axis=1) >= 2)
    # sapphire read the traces from our blobs: an arrival time (ns into the
    # trace) exactly where it found particles, its "no signal" -999 elsewhere
    assert np.all((arrival >= 0) == (densities > 0))
    assert np.all(arrival[densities == 0] == -999)
    assert np.all(arrival[densities > 0] < 10_000)
    first_pulseheights = [625, 972, 923, 724]
    assert list(results[0]["pulseheights"]) == first_pulseheights
