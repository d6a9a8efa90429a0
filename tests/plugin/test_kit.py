"""The testing kit's own defences: assert_stored fails on every kind of difference, the
fixture is opt-in, and plugins passed as objects stay in-process."""

import copy
import datetime
import importlib.metadata
import math

import numpy as np
import pytest
import tables

from hisparc_datastore import EventType, hookimpl, text_blob
from hisparc_datastore.testing import Datastore, ProcessesSeeInstalledPluginsOnly, event

MOMENT = datetime.datetime(2026, 3, 1, 12, 0, 0)


class Gauge(tables.IsDescription):
    event_id = tables.UInt32Col(pos=0)
    timestamp = tables.Time32Col(pos=1)
    nanoseconds = tables.UInt32Col(pos=2)
    ext_timestamp = tables.UInt64Col(pos=3)
    level = tables.Float32Col(dflt=-1, pos=4)
    counts = tables.Int32Col(shape=2, dflt=-1, pos=5)
    note = tables.Int32Col(dflt=-1, pos=6)


GAUGE = EventType(upload_code="GAU", table_name="gauge", table_title="Gauge", description=Gauge,
                  columns={"GAU_LEVEL": "level", "GAU_COUNT1": "counts", "GAU_COUNT2": "counts",
                           "GAU_NOTE": "note"},
                  blobs={"GAU_NOTE": text_blob}, extended_time=True)


class GaugePlugin:
    @hookimpl
    def datastore_event_types(self):
        return [GAUGE]


def gauge(level=2.5, note="fine", nanoseconds=7, **more):
    return event("GAU", MOMENT, {"GAU_LEVEL": level, "GAU_NOTE": note, **more}, nanoseconds=nanoseconds)


@pytest.fixture
def gauges(datastore):
    datastore.register(GaugePlugin())
    return datastore


def test_stored_events_pass_and_nan_equals_nan(gauges):
    sent = [gauge(), gauge(level=math.nan, GAU_COUNT2=4)]
    gauges.store(sent)
    gauges.assert_stored(sent)
    rows = gauges.read("gauge", 501, MOMENT.date())
    assert list(rows["event_id"]) == [1, 2] and list(rows["counts"][1]) == [-1, 4]


@pytest.mark.parametrize("change, complaint", [
    (lambda e: e["datalist"][0].update(data=2.75), "level is 2.5, expected 2.75"),
    (lambda e: e["datalist"][1].update(data="other"), "note holds b'fine', expected the blob b'other'"),
    (lambda e: e["header"].update(nanoseconds=8), "nanoseconds is 7, expected 8"),
    (lambda e: e["header"].update(datetime=MOMENT + datetime.timedelta(seconds=1)), "timestamp is"),
    (lambda e: e["datalist"].append({"data_uploadcode": "GAU_COUNT1", "data": 3}),
     "counts[0] is -1, expected 3"),
])
def test_assert_stored_names_every_kind_of_difference(gauges, change, complaint):
    sent = gauge()
    gauges.store([sent])
    other = copy.deepcopy(sent)
    change(other)
    with pytest.raises(AssertionError, match=complaint.replace("[", r"\[").replace("]", r"\]")):
        gauges.assert_stored([other])


def test_assert_stored_fails_for_an_event_not_stored(gauges):
    gauges.store([gauge()])
    with pytest.raises(AssertionError, match="2 events sent, 1 rows stored"):
        gauges.assert_stored([gauge(), gauge()])


def test_assert_stored_finds_a_later_upload_among_the_rows(gauges):
    first, second = [gauge(level=1.0)], [gauge(level=2.0), gauge(level=3.0)]
    gauges.store(first)
    assert gauges.post(501, second) == "100"
    gauges.store()
    gauges.assert_stored(second)
    with pytest.raises(AssertionError, match="event 1: level is 3.0, expected 1.0"):
        # stored events, but not as consecutive rows in this order
        gauges.assert_stored([gauge(level=2.0), gauge(level=1.0)])


def test_a_table_with_no_rows_reads_as_an_empty_array_of_its_type(gauges):
    rows = gauges.read("gauge", 501, MOMENT.date())
    assert len(rows) == 0 and rows.dtype == GAUGE.dtype
    with pytest.raises(LookupError, match="'nothing'"):
        gauges.read("nothing", 501, MOMENT.date())


def test_plugin_objects_cannot_reach_child_processes(tmp_path):
    store = Datastore(tmp_path, plugins=[GaugePlugin()], processes=True)
    with pytest.raises(ProcessesSeeInstalledPluginsOnly, match="cannot use plugins registered as objects"):
        store.store([gauge()])
    with pytest.raises(ProcessesSeeInstalledPluginsOnly, match="datastore serve"):
        store.post(501, [gauge()])
    store.close()


@pytest.mark.datastore(installed=False)
def test_installed_false_leaves_out_the_installed_plugins(datastore):
    assert len(datastore.registry) == 0
    datastore.register(GaugePlugin())
    assert [t.upload_code for t in datastore.registry] == ["GAU"]
    assert datastore.registry.owners["GAU"] == "GaugePlugin"


def test_the_fixtures_are_opt_in():
    # nothing of the core's is registered for every pytest run of every project
    registered = [ep.value for ep in importlib.metadata.entry_points(group="pytest11")]
    assert not [value for value in registered if value.startswith("hisparc_datastore")]


def test_a_station_listed_while_the_receiver_runs_is_read_where_it_put_it(gauges):
    assert gauges.post(501, [gauge(level=1.0)]) == "100"
    assert gauges.post(7001, [gauge()], cluster="Groningen") == "100"
    gauges.store()
    assert gauges.read_station(7001, MOMENT.date())["blobs"] == [b"fine"]
    assert np.asarray(gauges.read("gauge", 7001)["level"]).tolist() == [2.5]
    assert np.asarray(gauges.read("gauge", 501)["level"]).tolist() == [1.0]
    assert (gauges.data_dir / "2026/3/2026_3_1.h5").exists()
