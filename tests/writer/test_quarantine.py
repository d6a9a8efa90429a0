"""Nothing a station sent is dropped silently: what cannot be stored is kept with its reason."""

import datetime
import pickle

import tables

from hisparc_datastore.cli import main
from hisparc_datastore.codec.decoding import Upload, parse_queue_file
from hisparc_datastore.config import Settings
from hisparc_datastore.plugin.registry import load_registry
from hisparc_datastore.queue.folders import Queue
from hisparc_datastore.testing.helpers import event, queue_uploads, settings_for, store
from hisparc_datastore.writer.service import Writer

GOOD = datetime.datetime(2021, 5, 4, 3, 2, 1)


def singles(moment: datetime.datetime, low: int = 345) -> dict:
    return event("SIN", moment, {"MAS_CH1_LOW": low, "MAS_CH1_HIGH": 98})


def test_bad_events_are_quarantined_with_reasons_and_the_rest_is_stored(tmp_path):
    events = [
        singles(GOOD),
        event("XXX", GOOD, {"A": 1}),                                  # unknown type
        singles(datetime.datetime(2019, 4, 7, 0, 0, 0)),                # before minimum_year
        {"header": {"eventtype_uploadcode": "SIN"}, "datalist": []},    # no datetime
        singles(GOOD + datetime.timedelta(seconds=1), low=2**40),       # does not fit Int32
        event("CIC", GOOD, {"PH1": 5}, nanoseconds=-3),                 # bad nanoseconds
        "not an event",
        singles(GOOD + datetime.timedelta(seconds=2), low=7),
    ]
    tally = store(tmp_path, [Upload(501, "Utrecht", events)], minimum_year=2020)

    assert tally.stored["SIN"] == 2
    with tables.open_file(tmp_path / "2021/5/2021_5_4.h5") as f:
        rows = f.root.hisparc.cluster_utrecht.station_501.singles.read()
        assert list(rows["mas_ch1_low"]) == [345, 7]
        assert list(rows["event_id"]) == [1, 2]
        assert "events" not in f.root.hisparc.cluster_utrecht.station_501

    entries = dict(Queue(tmp_path).quarantined())
    assert len(entries) == 1
    (name, reason), = entries.items()
    assert name.endswith(".events")
    lines = reason.splitlines()
    # each event named by its place in the upload the station sent, whichever step refused it
    # (the screen, the row builder or the table's types), and in that order
    expected = {1: "unknown event type 'XXX'", 2: "before minimum_year 2020", 3: "no datetime",
                4: "out of bounds for int32", 5: "nanoseconds -3 is outside", 6: "not a dict"}
    assert len(lines) == len(expected), lines
    for line, (position, text) in zip(lines, expected.items(), strict=True):
        assert line.startswith(f"station 501, event {position}: ") and text in line, line

    kept = parse_queue_file((tmp_path / "quarantine" / name).read_bytes())
    assert kept.station_id == 501 and kept.cluster == "Utrecht"
    assert kept.event_list == events[1:7]


def test_a_file_that_cannot_be_decoded_is_quarantined_and_the_next_one_stored(tmp_path):
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    (incoming / "000-garbled").write_bytes(b"\x80\x04garbage")
    (incoming / "001-evil").write_bytes(pickle.dumps({"station_id": 1, "cluster": "x",
                                                      "event_list": [datetime.date(2021, 1, 1)]}))
    queue_uploads(tmp_path, [Upload(501, "Utrecht", [singles(GOOD)])])
    tally = Writer(settings_for(tmp_path), load_registry()).run(once=True)

    assert tally.stored["SIN"] == 1 and tally.quarantined_files == 2
    reasons = dict(Queue(tmp_path).quarantined())
    assert "cannot unpickle" in reasons["000-garbled"]
    assert "datetime.date, which is not plain data" in reasons["001-evil"]
    assert reasons["000-garbled"].startswith("000-garbled:")
    assert (tmp_path / "quarantine/000-garbled").read_bytes() == b"\x80\x04garbage"
    assert list((tmp_path / "partial").iterdir()) == []
    assert list((tmp_path / "incoming").iterdir()) == []


def test_requeued_events_are_stored_once_the_cause_is_fixed(tmp_path):
    old = singles(datetime.datetime(2017, 2, 26, 7, 27, 11))
    store(tmp_path, [Upload(501, "Utrecht", [old])], minimum_year=2020)
    queue = Queue(tmp_path)
    (name, _), = queue.quarantined()

    queue.requeue(name)
    assert queue.quarantined() == []
    tally = store(tmp_path, [], minimum_year=2016)  # the operator lowered minimum_year

    assert tally.stored["SIN"] == 1
    with tables.open_file(tmp_path / "2017/2/2017_2_26.h5") as f:
        assert f.root.hisparc.cluster_utrecht.station_501.singles[0]["timestamp"] == 1488094031


def test_settings_are_what_the_tests_think(tmp_path):
    # guards the helper the suites rely on: fsync off, archive on
    settings = settings_for(tmp_path)
    assert isinstance(settings, Settings) and not settings.fsync and settings.archive_days == 14


def test_an_upload_whose_every_event_is_refused_makes_no_day_file(tmp_path):
    # A day file without the /hisparc group is one a reader (sapphire, publicdb) trips over.
    moment = datetime.datetime(2024, 5, 6, 7, 0, 0)
    tally = store(tmp_path, [Upload(501, "Utrecht", [event("SIN", moment, {"MAS_CH1_LOW": "345"}),
                                                    event("SIN", moment, {"MAS_CH1_LOW": 2**70})])])
    assert tally.events == 0 and sum(tally.quarantined_events.values()) == 2
    assert not list(tmp_path.glob("2024/**/*.h5"))
    assert len(list((tmp_path / "quarantine").glob("*.events"))) == 1


# -- issue 18 -------------------------------------------------------------------------------

def test_requeued_names_do_not_grow(tmp_path):
    """Quarantined again after a requeue (minimum_year not lowered, or the writer not
    restarted), the name gained a prefix and a suffix each round:
    requeued-T-requeued-T-NAME.events.events."""
    old = singles(datetime.datetime(2017, 2, 26, 7, 27, 11))
    store(tmp_path, [Upload(501, "Utrecht", [old])], minimum_year=2020)
    queue = Queue(tmp_path)
    (first, _), = queue.quarantined()
    assert first.endswith(".events")
    base = first[:-len(".events")]
    for _ in range(2):
        (name, _), = queue.quarantined()
        target = queue.requeue(name)
        assert target.name.count("requeued-") == 1
        store(tmp_path, [], minimum_year=2020)  # still refused: quarantined again
    (name, reason), = queue.quarantined()
    assert name.count("requeued-") == 1 and name.endswith(f"-{base}.events"), name
    assert not name.endswith(".events.events")
    assert "before minimum_year 2020" in reason
    queue.requeue(name)
    tally = store(tmp_path, [], minimum_year=2016)  # lowered, and a writer started on it
    assert tally.stored["SIN"] == 1


def test_quarantine_shows_the_reason_not_a_count_of_lines(tmp_path, capsys):
    """A refused upload's reason file starts with 'station N cluster NAME'; the command
    showed that line and '(+2 more lines)' where the reason is."""
    (tmp_path / "stations.csv").write_text("501,Utrecht,pw\n")
    config = tmp_path / "config.ini"
    config.write_text(f"[General]\nstation_list={tmp_path}/stations.csv\ndata_dir={tmp_path}\n")
    queue = Queue(tmp_path)
    queue.keep_refused(b"\x80\x02garbage", 501, "Utrecht", "cannot be unpickled: truncated pickle")
    assert main(["quarantine", str(config)]) == 0
    out = capsys.readouterr().out
    assert "cannot be unpickled: truncated pickle" in out
    assert "refused 1 time(s)" in out
    assert "more lines" not in out
    assert "1 quarantined file(s)" in out
