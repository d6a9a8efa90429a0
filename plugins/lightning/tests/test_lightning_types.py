"""Every lightning event type is stored, into the columns the seed names.

The deployed writer lost every LIT, LCG and LST message: it looked for
columns called ``*_angle`` variants, ``squelch_setting`` and ``severe_alarm``
that the tables do not have.
"""

import datetime

import numpy as np
import pytest

import datastore_lightning as plugin
from hisparc_datastore.testing import description_columns, event, sample_values, seed_columns

MOMENT = datetime.datetime(2023, 6, 30, 23, 59, 59)
TIMESTAMP = 1688169599


def store_events(datastore, events):
    datastore.store(events, station=8001, cluster="Aarhus")
    datastore.assert_stored(events, station=8001)
    return datastore.read_station(8001, MOMENT.date())


@pytest.mark.parametrize("event_type", plugin.EVENT_TYPES, ids=lambda t: t.upload_code)
def test_descriptions_are_the_seeds_exactly(event_type, seed_text):
    assert description_columns(event_type.description) == seed_columns(
        seed_text, event_type.description.__name__)


def test_the_plugin_declares_the_five_lightning_types():
    assert {t.upload_code: (t.table_name, t.table_title) for t in plugin.datastore_event_types()} == {
        "LIT": ("lightning", "HiSPARC lightning data"),
        "LER": ("lightning_errors", "HiSPARC lightning error messages"),
        "LCG": ("lightning_config", "HiSPARC lightning configuration messages"),
        "LST": ("lightning_status", "HiSPARC lightning status messages"),
        "LNS": ("lightning_noise", "HiSPARC lightning noise messages"),
    }


def test_strikes_keep_both_angles(datastore):
    nodes = store_events(datastore, [event("LIT", MOMENT, {
        "LIT_CORR_DIST": 12, "LIT_UNCORR_DIST": 14, "LIT_UNCORR_ANGLE": 271.5, "LIT_CORR_ANGLE": 273.0})])
    row = nodes["lightning"][0]
    assert (row["event_id"], row["timestamp"]) == (1, TIMESTAMP)
    assert (row["corr_distance"], row["uncorr_distance"]) == (12, 14)
    assert (row["uncorr_angle"], row["corr_angle"]) == (np.float32(271.5), np.float32(273.0))


def test_status_fills_the_seeds_sever_alarm(datastore):
    nodes = store_events(datastore, [event("LST", MOMENT, {
        "LST_CLOSE_RATE": 3, "LST_TOTAL_RATE": 41, "LST_CLOSE_ALARM": False,
        "LST_SEVERE_ALARM": True, "LST_CURR_HEADING": 182.25})])
    row = nodes["lightning_status"][0]
    assert (row["close_rate"], row["total_rate"]) == (3, 41)
    assert not row["close_alarm"]
    assert row["sever_alarm"]
    assert row["current_heading"] == np.float32(182.25)


def test_every_configuration_code_fills_its_column(datastore):
    values = sample_values(plugin.LIGHTNING_CONFIG)
    assert len(values) == 15  # every column but event_id and timestamp
    assert plugin.LIGHTNING_CONFIG.columns["LCG_SQUELCH_SETTING"] == "squelch_seting"
    nodes = store_events(datastore, [event("LCG", MOMENT, values)])
    row = nodes["lightning_config"][0]
    for code, column in plugin.LIGHTNING_CONFIG.columns.items():
        if code in plugin.LIGHTNING_CONFIG.blobs:
            assert nodes["blobs"][row[column]] == values[code].encode()
        else:
            assert row[column] == values[code], code


def test_error_and_noise_messages(datastore):
    nodes = store_events(datastore, [
        event("LER", MOMENT, {"LER_ERRMSG": "Antenne übersteuert"}),
        event("LNS", MOMENT, {}),
        event("LNS", MOMENT, {}),
    ])
    assert nodes["lightning_errors"][0]["messages"] == 0
    assert nodes["blobs"] == ["Antenne übersteuert".encode("iso-8859-1")]
    noise = nodes["lightning_noise"]
    assert list(noise["event_id"]) == [1, 2]
    assert list(noise["timestamp"]) == [TIMESTAMP, TIMESTAMP]
