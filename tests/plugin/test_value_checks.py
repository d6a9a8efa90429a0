"""Value checks: what a plugin's check refuses goes to quarantine with a reason naming the
plugin, the column and the value, and the rest of the upload is stored; what the three
plugins declare passes every real upload, sapphire's test data and (see
tests/test_differential.py) every value the deployed datastore stores."""

import datetime
import math
from pathlib import Path

import numpy as np
import pytest
import tables

import datastore_hisparc
import datastore_lightning
import datastore_weather
from hisparc_datastore import BOOLEAN, EventType, OneOf, Range, boolean_checks, hookimpl, text_blob
from hisparc_datastore.testing import event, queue_file_events, upload_events

MOMENT = datetime.datetime(2026, 3, 1, 12, 0, 0)
PLUGINS = (datastore_hisparc, datastore_weather, datastore_lightning)


class Probe(tables.IsDescription):
    event_id = tables.UInt32Col(pos=0)
    timestamp = tables.Time32Col(pos=1)
    level = tables.Float32Col(dflt=-1, pos=2)
    mode = tables.Int16Col(dflt=-1, pos=3)
    armed = tables.BoolCol(pos=4)
    note = tables.Int32Col(dflt=-1, pos=5)


def no_shouting(value):
    return "shouted" if isinstance(value, str) and value.isupper() else None


PROBE = EventType(
    upload_code="PRB", table_name="probe", table_title="Probe readings", description=Probe,
    columns={"PRB_LEVEL": "level", "PRB_MODE": "mode", "PRB_ARMED": "armed", "PRB_NOTE": "note"},
    blobs={"PRB_NOTE": text_blob},
    checks={"level": Range(0, 100), "mode": OneOf({1, 2, 5}), "armed": BOOLEAN, "note": no_shouting},
)


class ProbePlugin:
    @hookimpl
    def datastore_event_types(self):
        return [PROBE]


def test_a_range_accepts_its_bounds_and_refuses_beyond_and_nan():
    check = Range(0, 100)
    assert [check(v) for v in (0, 0.0, 100, np.float32(55.5), True)] == [None] * 5
    assert check(-0.001) == "outside 0..100"
    assert check(100.5) == "outside 0..100"
    assert check(math.nan) == "outside 0..100"
    assert check("50") == "outside 0..100"
    assert Range(low=0)(1e300) is None and Range(high=0)(-math.inf) is None
    assert Range()(math.nan) is None


@pytest.mark.parametrize("low, high", [(5, 1), (0.5, -0.5), (math.nan, 1), (0, math.nan)])
def test_a_range_that_would_refuse_every_value_is_refused_when_declared(low, high):
    with pytest.raises(ValueError, match=r"Range\(.*would refuse every value|Range bound .* is NaN"):
        Range(low, high)


def test_a_range_of_one_value_or_open_at_one_end_is_accepted():
    assert Range(1, 1)(1) is None and Range(1, 1)(1.5) == "outside 1..1"
    assert Range(-5, None)(1e9) is None and Range(None, -5)(-1e9) is None


def test_allowed_values_compare_as_numbers():
    assert [BOOLEAN(v) for v in (True, False, 0, 1, 1.0, np.bool_(True), np.int64(0))] == [None] * 7
    assert BOOLEAN(2) == "not one of {False, True}"
    assert BOOLEAN(math.nan) is not None and BOOLEAN([1]) is not None
    assert OneOf({1, 2, 5})(3) == "not one of {1, 2, 5}"


def test_boolean_checks_cover_every_flag_of_a_description():
    assert boolean_checks(Probe) == {"armed": BOOLEAN}


def test_a_check_on_a_column_no_code_fills_is_refused_at_load():
    with pytest.raises(ValueError, match="PRB: a check names column 'event_id', which no data code"):
        EventType(upload_code="PRB", table_name="probe", table_title="t", description=Probe,
                  columns={"PRB_LEVEL": "level"}, checks={"event_id": Range(1)})
    with pytest.raises(ValueError, match="the check of column 'level' is a int, not a function"):
        EventType(upload_code="PRB", table_name="probe", table_title="t", description=Probe,
                  columns={"PRB_LEVEL": "level"}, checks={"level": 5})


@pytest.mark.datastore(plugins=[ProbePlugin()], installed=False)
def test_a_refused_value_is_quarantined_with_plugin_column_and_value_the_rest_stored(datastore):
    good = [event("PRB", MOMENT, {"PRB_LEVEL": 0, "PRB_MODE": 5, "PRB_ARMED": True, "PRB_NOTE": "calm"}),
            event("PRB", MOMENT, {"PRB_LEVEL": 100.0, "PRB_ARMED": 0})]
    bad = [event("PRB", MOMENT, {"PRB_LEVEL": 101.5}),
           event("PRB", MOMENT, {"PRB_MODE": 3}),
           event("PRB", MOMENT, {"PRB_ARMED": 7}),
           event("PRB", MOMENT, {"PRB_NOTE": "LOUD"})]
    assert datastore.post(501, [bad[0], good[0], bad[1], bad[2], good[1], bad[3]]) == "100"
    tally = datastore.store()
    assert tally.events == 2
    datastore.assert_stored(good)
    # the refused events' blob left no row behind: the one blob is the stored event's
    assert datastore.blobs(501, MOMENT.date()) == [b"calm"]
    [kept] = datastore.quarantined()
    reasons = kept.reason.splitlines()
    assert reasons == [
        # numbered as the station sent them: good ones were 1 and 4
        "station 501, event 0: value check of ProbePlugin: PRB column 'level' value 101.5 "
        "(data code PRB_LEVEL) refused: outside 0..100",
        "station 501, event 2: value check of ProbePlugin: PRB column 'mode' value 3 "
        "(data code PRB_MODE) refused: not one of {1, 2, 5}",
        "station 501, event 3: value check of ProbePlugin: PRB column 'armed' value 7 "
        "(data code PRB_ARMED) refused: not one of {False, True}",
        "station 501, event 5: value check of ProbePlugin: PRB column 'note' value 'LOUD' "
        "(data code PRB_NOTE) refused: shouted",
    ]


def test_an_installed_plugin_is_named_by_its_distribution(datastore):
    cfg = event("CFG", MOMENT, {"CFG_DETNUM": 4, "CFG_REDUCE": 2})
    datastore.store([cfg])
    [kept] = datastore.quarantined()
    assert ("value check of hisparc-datastore-hisparc 0.1.0: CFG column 'reduce_data' value 2 "
            "(data code CFG_REDUCE) refused: not one of {False, True}") in kept.reason


def all_checks():
    for plugin in PLUGINS:
        for event_type in plugin.datastore_event_types():
            for column, check in event_type.checks.items():
                yield event_type, column, check


def test_the_three_plugins_check_only_their_flags():
    # The differential test sends every value a column's type holds (NaN, infinities, its
    # extremes) and the deployed datastore stores them all, so a range would refuse what it
    # stores. A flag it only ever gets as a boolean.
    declared = list(all_checks())
    assert len(declared) == 7 + 1 + 15 + 2 + 2
    for event_type, column, check in declared:
        assert check is BOOLEAN
        assert event_type.dtype[column].kind == "b", (event_type.upload_code, column)


def refused(events: list) -> list[str]:
    """What the three plugins' checks refuse of ``events``."""
    types = {t.upload_code: t for plugin in PLUGINS for t in plugin.datastore_event_types()}
    found = []
    for ev in events:
        event_type = types[ev["header"]["eventtype_uploadcode"]]
        for item in ev["datalist"]:
            slot = event_type.slots.get(item["data_uploadcode"])
            check = event_type.checks.get(slot.column) if slot else None
            if check and check(item["data"]):
                found.append(f"{item['data_uploadcode']}={item['data']!r}")
    return found


def test_every_real_upload_passes_the_checks(testdata):
    uploads = [path for path in (testdata / "uploads").iterdir() if path.is_file()]
    queued = sorted((testdata / "queue").iterdir())
    events = [ev for path in uploads for ev in upload_events(path)]
    events += [ev for path in queued for ev in queue_file_events(path)]
    codes = {ev["header"]["eventtype_uploadcode"] for ev in events}
    assert {"CIC", "SIN", "CFG", "WTR"} <= codes and len(events) >= 100
    assert refused(events) == []


@pytest.mark.datastore(minimum_year=2010)
def test_every_real_upload_is_stored_whole(datastore, testdata):
    for i, path in enumerate(sorted(p for p in (testdata / "uploads").iterdir() if p.is_file())):
        datastore.store(upload_events(path), station=600 + i)
    for path in sorted((testdata / "queue").iterdir()):
        datastore.queue_file(path)
    datastore.store()
    assert datastore.quarantined() == []


SAPPHIRE_FILES = ("tests/test_data/publicdb.h5", "tests/test_data/publicdb_src.h5",
                  "tests/analysis/test_data/process_events.h5", "tests/test_data/esd_load_data.h5")


def test_sapphire_test_data_passes_the_checks():
    import sapphire

    root = Path(sapphire.__file__).parent
    by_table = {t.table_name: t for plugin in PLUGINS for t in plugin.datastore_event_types()}
    checked = 0
    for name in SAPPHIRE_FILES:
        with tables.open_file(root / name) as h5:
            for table in h5.walk_nodes("/", "Table"):
                event_type = by_table.get(table.name)
                if event_type is None:
                    continue
                rows = table.read()
                for column, check in event_type.checks.items():
                    if column in rows.dtype.names:
                        refused = [v for v in rows[column].tolist() if check(v)]
                        assert refused == [], (name, table.name, column)
                        checked += len(rows)
    assert checked >= 300  # the events' data_reduction and the configurations' flags
