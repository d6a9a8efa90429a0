"""Every weather event type is stored with the right values, defaults and blobs."""

import datetime

import numpy as np
import pytest

import datastore_weather as plugin
from hisparc_datastore.testing import description_columns, event, sample_values, seed_columns

MOMENT = datetime.datetime(2022, 8, 1, 12, 0, 5)
TIMESTAMP = 1659355205


def store_one(datastore, ev):
    datastore.store([ev], station=7001, cluster="Groningen")
    datastore.assert_stored([ev], station=7001)
    return datastore.read_station(7001, MOMENT.date())


@pytest.mark.parametrize("event_type", plugin.EVENT_TYPES, ids=lambda t: t.upload_code)
def test_descriptions_are_the_seeds_exactly(event_type, seed_text):
    assert description_columns(event_type.description) == seed_columns(
        seed_text, event_type.description.__name__)


def test_the_plugin_declares_the_three_weather_types():
    assert {t.upload_code: (t.table_name, t.table_title) for t in plugin.datastore_event_types()} == {
        "WTR": ("weather", "HiSPARC weather data"),
        "WER": ("weather_errors", "HiSPARC weather error messages"),
        "WCG": ("weather_config", "HiSPARC weather configuration messages"),
    }


@pytest.mark.datastore(minimum_year=2016)
@pytest.mark.parametrize("python", ["py2", "py3"])
def test_weather_queue_file_from_a_real_station(datastore, testdata, python):
    datastore.queue_file(testdata / "queue" / f"writer_{python}_WTR")
    datastore.store()
    nodes = datastore.read_station(99, datetime.date(2017, 2, 26))
    row = nodes["weather"][0]
    assert row["timestamp"] == 1488094084
    assert row["uv"] == -999
    assert row["barometer"] == np.float32(1004.365)
    assert row["humidity_inside"] == 25
    assert "blobs" not in nodes


def test_every_weather_code_fills_its_column(datastore):
    values = {code: i * 1.5 if plugin.WEATHER.dtype[column].kind == "f" else i
              for i, (code, column) in enumerate(plugin.WEATHER.columns.items(), start=1)}
    row = store_one(datastore, event("WTR", MOMENT, values))["weather"][0]
    assert row["event_id"] == 1 and row["timestamp"] == TIMESTAMP
    for code, column in plugin.WEATHER.columns.items():
        assert row[column] == values[code], code
    assert plugin.WEATHER.columns["WTR_ET"] == "evapotranspiration"


def test_missing_weather_codes_keep_their_defaults(datastore):
    row = store_one(datastore, event("WTR", MOMENT, {"WTR_TEMP_OUTSIDE": -4.5}))["weather"][0]
    assert row["temp_outside"] == -4.5
    assert (row["temp_inside"], row["humidity_outside"], row["barometer"]) == (0.0, 0, 0.0)


def test_weather_error_is_a_latin1_blob(datastore):
    nodes = store_one(datastore, event("WER", MOMENT, {"WER_ERRMSG": "Capteur d'humidité: erreur"}))
    assert nodes["weather_errors"][0]["messages"] == 0
    assert nodes["blobs"] == ["Capteur d'humidité: erreur".encode("iso-8859-1")]


def test_every_weather_configuration_code_fills_its_column(datastore):
    values = sample_values(plugin.WEATHER_CONFIG)
    assert len(values) == 30  # every column but event_id and timestamp
    assert plugin.WEATHER_CONFIG.columns["WCG_OFFSET_BAR_SEA_LEVEL"] == "offset_bar_sea_level"
    nodes = store_one(datastore, event("WCG", MOMENT, values))
    row = nodes["weather_config"][0]
    for code, column in plugin.WEATHER_CONFIG.columns.items():
        if code in plugin.WEATHER_CONFIG.blobs:
            assert nodes["blobs"][row[column]] == values[code].encode()
        else:
            assert row[column] == values[code], code
