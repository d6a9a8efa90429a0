"""No upload, alone or in any batch, makes the writer exit, hang or stop the queue: the worst
it can do is be quarantined with a reason while every other upload is stored."""

import datetime
import logging
import os
import pickle
import re
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tables
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hisparc_datastore.codec.decoding import Upload
from hisparc_datastore.plugin.registry import load_registry
from hisparc_datastore.queue.folders import REASON_SUFFIX
from hisparc_datastore.storage import openfiles as dayfiles
from hisparc_datastore.storage.layout import DayFile, day_file_path
from hisparc_datastore.testing.helpers import event, queue_uploads, settings_for
from hisparc_datastore.writer import batch
from hisparc_datastore.writer.rows import StationRows
from hisparc_datastore.writer.service import Writer

BIN = Path(sys.executable).parent
HOSTILE = ["billion-laughs-9", "tuple-hash-key-8", "int-hash-collisions-20k", "int-amplify-100kB-x15k",
           "deep-nesting-100k", "sin-value-billion-laughs-9"]
DAY = datetime.datetime(2024, 5, 6, 7, 0, 0)


def singles(station_id: int, first: datetime.datetime, count: int = 3) -> Upload:
    return Upload(station_id, "Utrecht", [
        event("SIN", first + datetime.timedelta(seconds=i), {"MAS_CH1_LOW": 100 + i})
        for i in range(count)])


def rows_of(data_dir: Path, date: datetime.date, station_id: int, table: str = "singles") -> int:
    path = day_file_path(data_dir, date)
    if not path.exists():
        return 0
    with tables.open_file(path) as h5:
        node = f"/hisparc/cluster_utrecht/station_{station_id}/{table}"
        return h5.get_node(node).nrows if node in h5 else 0


def quarantined(data_dir: Path) -> dict[str, str]:
    folder = data_dir / "quarantine"
    return {path.name: (folder / (path.name + REASON_SUFFIX)).read_text()
            for path in folder.iterdir() if not path.name.endswith(REASON_SUFFIX)}


def write_queue_file(data_dir: Path, name: str, payload: bytes, order: int) -> None:
    path = data_dir / "incoming" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)
    os.utime(path, ns=(order * 10**9, order * 10**9))  # the queue's order: oldest first


def run_and_measure(config: Path, quiet: bool = True) -> tuple[int, float, float, str]:
    """``datastore writer CONFIG --once`` as a process: (status, CPU s, peak RSS MB, stderr),
    the figures from the kernel's accounting of that one child (wait4)."""
    process = subprocess.Popen([BIN / "datastore", "writer", str(config), "--once",
                                *(["--quiet"] if quiet else [])],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("the writer did not finish within 300 s")
        time.sleep(0.05)
    process.returncode = os.waitstatus_to_exitcode(status)
    stderr = process.stderr.read().decode()
    process.stderr.close()
    return process.returncode, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, stderr


@pytest.mark.parametrize("batch_uploads", [50, 1], ids=["one batch", "prepared ahead"])
def test_the_six_hostile_queue_files_are_quarantined_and_the_queue_goes_on(tmp_path, testdata,
                                                                           batch_uploads):
    # With one upload a batch, all but the first are read by the process preparing ahead.
    data_dir = tmp_path / "data"
    config = tmp_path / "config.ini"
    config.write_text(f"[General]\nstation_list={tmp_path}/stations.csv\ndata_dir={data_dir}\n"
                      f"minimum_year=2016\n[Writer]\nfsync=false\nbatch_uploads={batch_uploads}\n")
    order = 0
    for n, name in enumerate(HOSTILE):
        for station_id in (700 + 2 * n, 701 + 2 * n):  # a good upload before and after each
            order += 1
            write_queue_file(data_dir, f"{order:03d}-good", singles(station_id, DAY).to_queue_bytes(),
                             order)
            if station_id % 2 == 0:
                order += 1
                write_queue_file(data_dir, f"{order:03d}-{name}",
                                 (testdata / "hostile" / f"{name}.queue").read_bytes(), order)
    status, cpu, peak_mb, stderr = run_and_measure(config, quiet=False)
    assert status == 0, stderr
    ahead, here = map(int, re.search(r"(\d+) batches prepared ahead in a second process, (\d+) "
                                     r"of their uploads by the writer", stderr).groups())
    # Each batch after the first went to the child, which prepared it, or the writer took it
    # back rather than wait: the hostile files met both, in whatever share.
    assert ahead + here == (0 if batch_uploads == 50 else order - 1), stderr
    kept = quarantined(data_dir)
    assert sorted(kept) == sorted(f"{2 + 3 * n:03d}-{name}" for n, name in enumerate(HOSTILE))
    for name, reason in kept.items():
        assert name in reason and len(reason) < 2000, reason
    for station_id in range(700, 700 + 2 * len(HOSTILE)):
        assert rows_of(data_dir, DAY.date(), station_id) == 3, station_id
    assert not os.listdir(data_dir / "incoming") and not os.listdir(data_dir / "partial")
    # Generous bounds for the whole process, start-up included: before, one of these files
    # took 128 s of CPU and another stopped the writer at 4 GB.
    assert cpu < 60, cpu
    assert peak_mb < 400, peak_mb


class CountingWriter(Writer):
    """A writer that records the most day files it ever had open at once."""

    most_open = 0

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        files, get = self.files, self.files.get

        def counting_get(path):
            day_file = get(path)
            self.most_open = max(self.most_open, len(files))
            return day_file

        files.get = counting_get


def test_a_batch_across_thirty_days_is_stored_with_few_files_open(tmp_path):
    first = datetime.datetime(2024, 3, 1, 12)
    days = [first + datetime.timedelta(days=d) for d in range(30)]
    # thirty stations catching up, each on another day, and one upload spanning all thirty
    uploads = [singles(600 + d, moment) for d, moment in enumerate(days)]
    uploads.append(Upload(599, "Utrecht", [event("SIN", moment, {"MAS_CH1_LOW": 7}) for moment in days]))
    queue_uploads(tmp_path, uploads)
    writer = CountingWriter(settings_for(tmp_path, batch_uploads=50), load_registry())
    tally = writer.run(once=True)
    assert tally.uploads == 31 and tally.events == 30 * 3 + 30
    for d, moment in enumerate(days):
        assert rows_of(tmp_path, moment.date(), 600 + d) == 3
        assert rows_of(tmp_path, moment.date(), 599) == 1
    assert writer.most_open <= dayfiles.MAX_OPEN_FILES
    assert not quarantined(tmp_path)
    assert not os.listdir(tmp_path / "partial") and not (tmp_path / "writer.journal").exists()


def long_int_event(bits_bytes: int) -> bytes:
    """A queue file whose CIC event has nanoseconds = a ``bits_bytes``-byte int."""
    upload = Upload(501, "Utrecht", [event("CIC", DAY, {"PH1": 5}, nanoseconds=123456789)])
    payload = upload.to_queue_bytes()
    small = pickle.dumps(123456789, protocol=2)[2:-1]  # the BININT opcode of the header value
    huge = pickle.LONG4 + struct.pack("<I", bits_bytes) + b"\x7f" * bits_bytes
    assert payload.count(small) == 1
    # the frame length no longer matches; frames are only hints, and a reader must cope
    return payload.replace(small, huge)


@pytest.mark.parametrize("name, payload, reason", [
    ("nanoseconds 10**5000", lambda: long_int_event(2100), "integer of 2100 bytes"),
    ("data code is a list", lambda: Upload(501, "Utrecht", [{
        "header": {"eventtype_uploadcode": "SIN", "datetime": DAY},
        "datalist": [{"data_uploadcode": ["MAS_CH1_LOW"], "data": 1}]}]).to_queue_bytes(),
     "nest deeper"),
    ("one event 400,000 times", lambda: pickle.dumps(
        {"station_id": 501, "cluster": "Utrecht",
         "event_list": [event("CIC", DAY, {"TR1": "QUJD" * 1000}, nanoseconds=1)] * 10_000}, protocol=4),
     "bound on shared references"),
], ids=lambda value: value if isinstance(value, str) else "")
def test_uploads_that_crashed_the_writer_are_quarantined(tmp_path, name, payload, reason):
    write_queue_file(tmp_path, "1-good", singles(501, DAY).to_queue_bytes(), 1)
    write_queue_file(tmp_path, "2-bad", payload(), 2)
    write_queue_file(tmp_path, "3-good", singles(502, DAY).to_queue_bytes(), 3)
    tally = Writer(settings_for(tmp_path), load_registry()).run(once=True)
    assert tally.uploads == 2 and tally.events == 6
    kept = quarantined(tmp_path)
    assert list(kept) == ["2-bad"] and reason in kept["2-bad"], kept


def test_unknown_data_codes_of_different_types_are_ignored_with_a_warning(tmp_path, caplog):
    odd = Upload(501, "Utrecht", [{
        "header": {"eventtype_uploadcode": "SIN", "datetime": DAY},
        "datalist": [{"data_uploadcode": "NOPE", "data": 1}, {"data_uploadcode": 7, "data": 2},
                     {"data_uploadcode": None, "data": 3}, {"data_uploadcode": "MAS_CH1_LOW", "data": 4}]}])
    queue_uploads(tmp_path, [odd])
    with caplog.at_level(logging.WARNING):
        tally = Writer(settings_for(tmp_path), load_registry()).run(once=True)
    assert tally.events == 1 and rows_of(tmp_path, DAY.date(), 501) == 1
    warned = [r.getMessage() for r in caplog.records if "unknown data code" in r.getMessage()]
    # One line per upload names them all (see test_log_and_metrics_bounds for thousands).
    assert len(warned) == 1 and "ignored 3 unknown data code(s)" in warned[0], warned
    assert all(code in warned[0] for code in ("'NOPE' of SIN", "7 of SIN", "None of SIN")), warned


def test_error_messages_describe_a_value_in_bounded_text(tmp_path):
    huge = "x" * 5_000_000
    odd = Upload(501, "Utrecht", [
        event("SIN", DAY, {"MAS_CH1_LOW": huge}),
        {"header": {"eventtype_uploadcode": "CIC", "datetime": DAY, "nanoseconds": [huge]}, "datalist": []},
        {"header": {"eventtype_uploadcode": huge, "datetime": DAY}, "datalist": []},
        event("SIN", DAY, {"MAS_CH1_LOW": 1})])
    queue_uploads(tmp_path, [odd])
    tally = Writer(settings_for(tmp_path), load_registry()).run(once=True)
    assert tally.events == 1
    (reasons,) = [text for name, text in quarantined(tmp_path).items() if name.endswith(".events")]
    lines = reasons.strip().splitlines()
    assert len(lines) == 3 and all(len(line) < 300 for line in lines), [len(line) for line in lines]
    for expected in ("MAS_CH1_LOW value 'xxx", "nanoseconds is ['xxx", "unknown event type 'xxx"):
        assert sum(expected in line for line in lines) == 1, (expected, lines)


def test_a_reason_file_names_a_thousand_events_and_counts_the_rest(tmp_path):
    odd = Upload(501, "Utrecht", [{} for _ in range(5000)] + [event("SIN", DAY, {"MAS_CH1_LOW": 1})])
    queue_uploads(tmp_path, [odd])
    tally = Writer(settings_for(tmp_path), load_registry()).run(once=True)
    assert tally.events == 1 and sum(tally.quarantined_events.values()) == 5000
    (name, reasons), = quarantined(tmp_path).items()
    lines = reasons.strip().splitlines()
    assert len(lines) == batch.MAX_REASON_LINES + 1
    assert lines[-1] == "... and 4000 more events: 4000 x not_an_event"
    from hisparc_datastore.codec.decoding import parse_queue_file
    assert len(parse_queue_file((tmp_path / "quarantine" / name).read_bytes()).event_list) == 5000


class StopAfter(Writer):
    """A writer asked to stop while it decodes the third upload of a batch."""

    decoded = 0

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        prepare = self.batches.prepare

        def stopping_prepare(name):
            self.decoded += 1
            if self.decoded == 3:
                self.stop()
            return prepare(name)

        self.batches.prepare = stopping_prepare


def test_a_stop_during_decoding_leaves_the_batch_claimed_and_nothing_stored_twice(tmp_path):
    queue_uploads(tmp_path, [singles(500 + n, DAY + datetime.timedelta(minutes=n)) for n in range(10)])
    stopped = StopAfter(settings_for(tmp_path), load_registry())
    tally = stopped.run(once=True)
    assert tally.events == 0 and stopped.decoded == 3
    assert len(os.listdir(tmp_path / "partial")) == 10  # claimed, not stored, not journaled
    assert not (tmp_path / "writer.journal").exists()
    tally = Writer(settings_for(tmp_path), load_registry()).run(once=True)
    assert tally.events == 30
    assert all(rows_of(tmp_path, DAY.date(), 500 + n) == 3 for n in range(10))


def test_sigterm_stops_a_writer_busy_with_a_backlog_within_seconds(tmp_path, testdata):
    from hisparc_datastore.codec.decoding import parse_event_list

    events = parse_event_list((testdata / "uploads/py2_s510_100events").read_bytes())
    data_dir = tmp_path / "data"
    queue_uploads(data_dir, [Upload(510 + n, "Utrecht", events) for n in range(150)])
    config = tmp_path / "config.ini"
    config.write_text(f"[General]\nstation_list={tmp_path}/stations.csv\ndata_dir={data_dir}\n"
                      "minimum_year=2016\n[Writer]\nfsync=false\nbatch_uploads=200\n"
                      "batch_bytes=100000000\n")
    process = subprocess.Popen([BIN / "datastore", "writer", str(config), "--quiet"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    partial = data_dir / "partial"
    while not (partial.is_dir() and os.listdir(partial)) and time.monotonic() < deadline:
        time.sleep(0.01)
    process.terminate()
    try:
        assert process.wait(timeout=30) == 0, process.stderr.read()
    finally:
        process.kill()
        process.stderr.close()
    tally = Writer(settings_for(data_dir, minimum_year=2016), load_registry()).run(once=True)
    stored = tally.events
    with tables.open_file(data_dir / "2017/2/2017_2_26.h5") as h5:
        total = sum(h5.get_node(f"/hisparc/cluster_utrecht/station_{510 + n}/events").nrows
                    + h5.get_node(f"/hisparc/cluster_utrecht/station_{510 + n}/singles").nrows
                    for n in range(150))
    assert total == 150 * 100 >= stored  # every event once, whether before or after the stop


@pytest.mark.parametrize("where", ["building rows", "appending rows"])
def test_a_failure_nothing_foresaw_quarantines_only_the_upload_that_causes_it(tmp_path, monkeypatch,
                                                                              where):
    if where == "building rows":
        build = StationRows.build

        def failing(rows, blob_base):
            arrays, rejected = build(rows, blob_base)
            # station 666's upload is the one whose singles read 666
            if any(event["datalist"][0]["data"] == 666 for items in rows._events.values()
                   for event, _ in items):
                raise RuntimeError("something no check foresaw")
            return arrays, rejected

        monkeypatch.setattr(StationRows, "build", failing)
    else:
        append_rows = DayFile.append_rows

        def failing(day_file, cluster, station_id, event_type, records):
            append_rows(day_file, cluster, station_id, event_type, records)  # half the batch is in
            if station_id == 666:
                raise RuntimeError("something no check foresaw")

        monkeypatch.setattr(DayFile, "append_rows", failing)
    uploads = [singles(n, DAY) for n in (501, 502, 503, 504)]
    uploads.insert(2, Upload(666, "Utrecht", [event("SIN", DAY + datetime.timedelta(seconds=i),
                                                    {"MAS_CH1_LOW": 666}) for i in range(3)]))
    queue_uploads(tmp_path, uploads)
    tally = Writer(settings_for(tmp_path), load_registry()).run(once=True)
    assert tally.events == 12 and tally.quarantined_files == 1
    assert [rows_of(tmp_path, DAY.date(), n) for n in (501, 502, 666, 503, 504)] == [3, 3, 0, 3, 3]
    (name, reason), = quarantined(tmp_path).items()
    assert "-666-" in name and "RuntimeError: something no check foresaw" in reason
    assert not os.listdir(tmp_path / "partial") and not (tmp_path / "writer.journal").exists()
    with tables.open_file(day_file_path(tmp_path, DAY.date())) as h5:
        assert "/hisparc/cluster_utrecht/station_666" not in h5  # the undo removed what it made


# -- property: structurally odd event lists never stop the writer ------------------------------

scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(),
                    st.text(max_size=8), st.binary(max_size=8),
                    st.datetimes(min_value=datetime.datetime(1, 1, 1)))
codes = st.one_of(st.sampled_from(["CIC", "SIN", "WTR", "CFG", "LIT", "XYZ"]), scalars)
data_codes = st.one_of(st.sampled_from(["PH1", "TR1", "MAS_CH1_LOW", "WTR_UV", "CFG_MAS_VERSION"]), scalars)
plain = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                      st.dictionaries(st.text(max_size=4), inner,
                                                                      max_size=3)), max_leaves=6)
headers = st.one_of(
    st.fixed_dictionaries({"eventtype_uploadcode": codes,
                           "datetime": st.one_of(st.datetimes(min_value=datetime.datetime(2000, 1, 1),
                                                              max_value=datetime.datetime(2030, 1, 1)),
                                                 scalars)},
                          optional={"nanoseconds": st.one_of(st.integers(-5, 2 * 10**9), scalars)}),
    plain)
items = st.one_of(st.fixed_dictionaries({"data_uploadcode": data_codes, "data": scalars}), plain)
odd_events = st.one_of(
    st.fixed_dictionaries({"header": headers}, optional={"datalist": st.one_of(st.lists(items, max_size=4),
                                                                                plain)}),
    plain)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(odd=st.lists(st.lists(odd_events, max_size=6), min_size=1, max_size=4))
def test_structurally_odd_event_lists_never_stop_the_writer(tmp_path_factory, odd):
    data_dir = tmp_path_factory.mktemp("odd")
    order = 0
    for n, event_list in enumerate(odd):
        order += 1
        write_queue_file(data_dir, f"{order:03d}-good", singles(400 + n, DAY).to_queue_bytes(), order)
        order += 1
        payload = pickle.dumps({"station_id": 300 + n, "cluster": "Odd", "event_list": event_list},
                               protocol=order % 6)
        write_queue_file(data_dir, f"{order:03d}-odd", payload, order)
    tally = Writer(settings_for(data_dir, batch_uploads=3), load_registry()).run(once=True)
    assert [rows_of(data_dir, DAY.date(), 400 + n) for n in range(len(odd))] == [3] * len(odd)
    assert tally.uploads + tally.quarantined_files == 2 * len(odd)
    assert not os.listdir(data_dir / "incoming") and not os.listdir(data_dir / "partial")
    for name, reason in quarantined(data_dir).items():
        assert "-odd" in name and reason.strip()
