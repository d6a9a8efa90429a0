"""Every HiSPARC event type is stored with the right values, defaults, blobs and array positions."""

import base64
import datetime
import logging
import zlib

import numpy as np
import pytest

import datastore_hisparc as plugin
from hisparc_datastore.testing import description_columns, event, sample_values, seed_columns

MOMENT = datetime.datetime(2021, 3, 14, 15, 9, 26)
TIMESTAMP = 1615734566  # calendar.timegm of MOMENT


def store_one(datastore, ev):
    datastore.store([ev], station=501, cluster="Utrecht")
    datastore.assert_stored([ev])
    return datastore.read_station(501, MOMENT.date())


@pytest.mark.parametrize("event_type", plugin.EVENT_TYPES, ids=lambda t: t.upload_code)
def test_descriptions_are_the_seeds_exactly(event_type, seed_text):
    assert description_columns(event_type.description) == seed_columns(
        seed_text, event_type.description.__name__)


def test_the_plugin_declares_the_six_hisparc_types():
    assert {t.upload_code: (t.table_name, t.table_title) for t in plugin.datastore_event_types()} == {
        "CIC": ("events", "HiSPARC event data"),
        "ERR": ("errors", "HiSPARC error messages"),
        "CFG": ("config", "HiSPARC configuration messages"),
        "CMP": ("comparator", "HiSPARC comparator messages"),
        "SIN": ("singles", "HiSPARC single messages"),
        "SAT": ("satellites", "HiSPARC satellite messages"),
    }


def test_coincidence_values_arrays_defaults_and_traces(datastore):
    traces = [zlib.compress(f"{200 + i},{201 + i},{950 + i},".encode()) for i in range(4)]
    data = {"RED": 1, "EVENTRATE": 0.55, "TRIGPATTERN": 1788, "PH3": 923, "IN1": 9798,
            "BL2": 25, "STDDEV4": 1450, "NP1": 2,
            "TR1": base64.encodebytes(traces[0]).decode(), "TR3": base64.b64encode(traces[2]).decode()}
    nodes = store_one(datastore, event("CIC", MOMENT, data, nanoseconds=999_999_999))
    row = nodes["events"][0]
    assert row["event_id"] == 1
    assert row["timestamp"] == TIMESTAMP
    assert row["nanoseconds"] == 999_999_999
    assert row["ext_timestamp"] == TIMESTAMP * 1_000_000_000 + 999_999_999
    assert row["data_reduction"]
    assert row["event_rate"] == np.float32(0.55)
    assert row["trigger_pattern"] == 1788
    assert list(row["pulseheights"]) == [-1, -1, 923, -1]
    assert list(row["integrals"]) == [9798, -1, -1, -1]
    assert list(row["baseline"]) == [-1, 25, -1, -1]
    assert list(row["std_dev"]) == [-1, -1, -1, 1450]
    assert list(row["n_peaks"]) == [2, -1, -1, -1]
    assert list(row["traces"]) == [0, -1, 1, -1]
    assert list(nodes["blobs"]) == [traces[0], traces[2]]


def test_error_message_is_a_latin1_blob(datastore):
    nodes = store_one(datastore, event("ERR", MOMENT, {"ERRMSG": "Température: capteur hors ligne"}))
    row = nodes["errors"][0]
    assert (row["event_id"], row["timestamp"], row["messages"]) == (1, TIMESTAMP, 0)
    assert nodes["blobs"] == ["Température: capteur hors ligne".encode("iso-8859-1")]


def test_every_configuration_code_fills_its_column(datastore):
    blob_codes = ["CFG_MAS_VERSION", "CFG_SLV_VERSION", "CFG_PASSWORD", "CFG_BUFFER"]
    data = sample_values(plugin.CONFIG)
    assert len(plugin.CONFIG_COLUMNS) == 87  # every column but event_id and timestamp
    assert plugin.CONFIG_COLUMNS["CFG_SLV_CH2OFFNEG"] == "slv_ch2_offset_neg"
    nodes = store_one(datastore, event("CFG", MOMENT, data))
    row = nodes["config"][0]
    for code, column in plugin.CONFIG_COLUMNS.items():
        if code not in blob_codes:
            assert row[column] == data[code], code
    blob_rows = [row[plugin.CONFIG_COLUMNS[code]] for code in blob_codes]
    assert sorted(blob_rows) == [0, 1, 2, 3]
    for code, index in zip(blob_codes, blob_rows, strict=True):
        assert nodes["blobs"][index] == f"text of {code}".encode()


def test_configuration_defaults_where_codes_are_missing(datastore):
    nodes = store_one(datastore, event("CFG", MOMENT, {"CFG_DETNUM": 4}))
    row = nodes["config"][0]
    assert row["detnum"] == 4
    assert row["mas_version"] == -1 and row["buffer"] == -1 and row["password"] == -1
    assert row["gps_latitude"] == 0.0 and not row["mas_reset"]
    assert "blobs" not in nodes


def test_comparator_has_extended_time(datastore):
    nodes = store_one(datastore, event("CMP", MOMENT, {"CMP_DEVICE": 1, "CMP_COMPARATOR": 3,
                                                      "CMP_COUNT": 65535}, nanoseconds=42))
    row = nodes["comparator"][0]
    assert (row["device"], row["comparator"], row["count"]) == (1, 3, 65535)
    assert row["ext_timestamp"] == TIMESTAMP * 1_000_000_000 + 42


def test_singles_and_their_defaults(datastore):
    nodes = store_one(datastore, event("SIN", MOMENT, {"MAS_CH1_LOW": 345, "SLV_CH2_HIGH": 95}))
    row = nodes["singles"][0]
    assert (row["mas_ch1_low"], row["slv_ch2_high"]) == (345, 95)
    assert (row["mas_ch1_high"], row["slv_ch1_low"]) == (-1, -1)


def test_satellites(datastore):
    nodes = store_one(datastore, event("SAT", MOMENT, {"MIN_N": 4, "MEAN_N": 7.5, "MAX_N": 11,
                                                      "MIN_SIGNAL": 30, "MEAN_SIGNAL": 41.25,
                                                      "MAX_SIGNAL": 50}))
    row = nodes["satellites"][0]
    assert [row[c] for c in ("min_n", "mean_n", "max_n", "min_signal", "mean_signal", "max_signal")] == [
        4, 7.5, 11, 30, 41.25, 50]


def test_unknown_data_code_is_ignored_with_a_warning(datastore, caplog):
    with caplog.at_level(logging.WARNING):
        nodes = store_one(datastore, event("SIN", MOMENT, {"MAS_CH1_LOW": 345, "MAS_CH3_LOW": 1}))
    assert nodes["singles"][0]["mas_ch1_low"] == 345
    assert any("MAS_CH3_LOW" in record.getMessage() for record in caplog.records)


def test_event_ids_run_on_across_uploads(datastore):
    first = [event("SIN", MOMENT + datetime.timedelta(seconds=s), {"MAS_CH1_LOW": s}) for s in range(3)]
    second = [event("SIN", MOMENT + datetime.timedelta(seconds=s), {"MAS_CH1_LOW": s}) for s in (3, 4)]
    datastore.store(first, station=501, cluster="Utrecht")
    datastore.store(second, station=501)
    datastore.assert_stored(first + second)
    rows = datastore.read("singles", 501, MOMENT.date())
    assert list(rows["event_id"]) == [1, 2, 3, 4, 5]
    assert list(rows["mas_ch1_low"]) == [0, 1, 2, 3, 4]
