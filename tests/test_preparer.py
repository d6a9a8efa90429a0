"""The second process that prepares the writer's next batch: it gives what the writer would
have prepared itself, and nothing that happens to it loses, doubles or stops anything."""

import base64
import datetime
import logging
import os
import signal
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
import tables

from hisparc_datastore.decoding import Upload, parse_event_list
from hisparc_datastore.plugins import Registry, load_registry
from hisparc_datastore.prepare import Screen, prepare_file
from hisparc_datastore.preparer import Preparer
from hisparc_datastore.storage import day_file_path
from hisparc_datastore.testing import event, queue_uploads, settings_for, wait_for
from hisparc_datastore.writer import Writer

BIN = Path(sys.executable).parent
MIDNIGHT = datetime.datetime(2024, 5, 7)
TRACE = base64.b64encode(zlib.compress(b"hello world")).decode()


@pytest.fixture
def real_events(testdata):
    return parse_event_list((testdata / "uploads" / "py2_s510_100events").read_bytes())


def across_midnight(station_id: int, minutes: int) -> Upload:
    """CIC events with traces and singles, on both sides of midnight, one odd event."""
    events = []
    for n in range(minutes * 6):
        moment = MIDNIGHT + datetime.timedelta(seconds=10 * n - minutes * 30)
        events.append(event("SIN", moment, {"MAS_CH1_LOW": n, "SLV_CH2_HIGH": station_id}))
        events.append(event("CIC", moment, {"TR1": TRACE, "PH1": n},
                            nanoseconds=n))
    events.append(event("SIN", MIDNIGHT, {"MAS_CH1_LOW": "not a number"}))
    return Upload(station_id, "Utrecht", events)


def day_files(data_dir: Path) -> dict:
    """Every node of every day file: table rows and blobs, as readers see them."""
    found = {}
    for path in sorted(data_dir.rglob("*.h5")):
        with tables.open_file(path) as h5:
            for node in h5.walk_nodes("/", "Leaf"):
                rows = node.read()
                # table rows as their bytes on disk, with the dtype that gives them meaning
                found[(path.name, node._v_pathname)] = (
                    (rows.dtype, rows.tobytes()) if isinstance(rows, np.ndarray) else rows)
    return found


def wait_for_batch(preparer: Preparer, names: list[str]) -> list:
    prepared = preparer.take(names, threading.Event())
    assert prepared is not None, "the child did not prepare the batch"
    return prepared


def test_the_child_prepares_what_the_writer_would_prepare_itself(tmp_path, real_events):
    uploads = [Upload(510, "Utrecht", real_events), across_midnight(501, 3)]
    paths = queue_uploads(tmp_path, uploads)
    names = [path.name for path in paths]
    preparer = Preparer(tmp_path / "incoming", load_registry(), 2016)
    try:
        preparer.submit(names)
        ahead = wait_for_batch(preparer, names)
    finally:
        preparer.close()
    here = [prepare_file(path, Screen(load_registry(), 2016)) for path in paths]
    assert preparer.batches_ahead == 1
    for theirs, ours in zip(ahead, here, strict=True):
        assert (theirs.name, theirs.station_id, theirs.cluster, theirs.events, theirs.dates) == \
               (ours.name, ours.station_id, ours.cluster, ours.events, ours.dates)
        assert [reason for _, reason in theirs.rejected] == [reason for _, reason in ours.rejected]
        assert list(theirs.days) == list(ours.days)
        for date in ours.days:
            assert theirs.days[date].blobs == ours.days[date].blobs
            assert theirs.days[date].arrays.keys() == ours.days[date].arrays.keys()
            for code, records in ours.days[date].arrays.items():
                assert theirs.days[date].arrays[code].dtype == records.dtype
                assert theirs.days[date].arrays[code].tobytes() == records.tobytes()
    midnight = ahead[1]
    assert sorted(midnight.days) == [datetime.date(2024, 5, 6), datetime.date(2024, 5, 7)]
    assert len(midnight.rejected) == 1 and "not a number" in midnight.rejected[0][1]
    assert len(ahead[0].days[datetime.date(2017, 2, 26)].arrays["CIC"]) > 0


def test_day_files_are_the_same_with_and_without_the_second_process(tmp_path, real_events):
    uploads = [across_midnight(501 + n % 3, 2 + n % 4) for n in range(12)]
    uploads += [Upload(510, "Utrecht", real_events)] * 2
    results = {}
    for mode in (True, False):
        data_dir = tmp_path / str(mode)
        queue_uploads(data_dir, uploads)
        # one or two uploads a batch: many batches, each but the first prepared ahead
        writer = Writer(settings_for(data_dir, batch_uploads=2, prepare_process=mode), load_registry())
        tally = writer.run(once=True)
        assert tally.uploads == 14 and sum(tally.quarantined_events.values()) == 12
        assert (writer.preparer.batches_ahead > 0) is mode
        results[mode] = day_files(data_dir)
        assert len(os.listdir(data_dir / "quarantine")) == 2 * 12  # events and reasons
    assert results[True] == results[False]
    dtype, events = results[True][("2024_5_7.h5", "/hisparc/cluster_utrecht/station_501/events")]
    events = np.frombuffer(events, dtype=dtype)
    assert events["event_id"].tolist() == list(range(1, len(events) + 1))  # counts on over batches
    traces = events["traces"][:, 0]
    assert traces.tolist() == list(range(len(events)))  # a blob each, indices dense over batches
    blobs = results[True][("2024_5_7.h5", "/hisparc/cluster_utrecht/station_501/blobs")]
    assert set(blobs) == {base64.b64decode(TRACE)}


def test_a_child_killed_mid_run_leaves_the_writer_to_prepare_the_batch_itself(tmp_path, caplog):
    paths = queue_uploads(tmp_path, [across_midnight(501, 1), across_midnight(502, 1)])
    names = [path.name for path in paths]
    preparer = Preparer(tmp_path / "incoming", load_registry(), 2016)
    try:
        preparer.submit(names[:1])
        os.kill(preparer._process.pid, signal.SIGKILL)
        with caplog.at_level(logging.WARNING):
            assert preparer.take(names[:1], threading.Event()) is None
        assert "the writer prepares the batch itself" in caplog.text
        assert preparer.failures == 1 and preparer.enabled
        preparer.submit(names[1:])  # a new child
        assert wait_for_batch(preparer, names[1:])[0].station_id == 502
    finally:
        preparer.close()


def test_after_three_deaths_no_child_is_started_again(tmp_path):
    paths = queue_uploads(tmp_path, [across_midnight(501, 1)])
    preparer = Preparer(tmp_path / "incoming", load_registry(), 2016)
    for _ in range(3):
        preparer.submit([paths[0].name])
        os.kill(preparer._process.pid, signal.SIGKILL)
        assert preparer.take([paths[0].name], threading.Event()) is None
    assert not preparer.enabled and preparer._process is None
    preparer.submit([paths[0].name])
    assert preparer._process is None


def test_a_stop_while_waiting_for_the_child_returns_at_once(tmp_path):
    paths = queue_uploads(tmp_path, [across_midnight(501, 1)])
    preparer = Preparer(tmp_path / "incoming", load_registry(), 2016)
    stop = threading.Event()
    stop.set()
    try:
        preparer.submit([paths[0].name])
        os.kill(preparer._process.pid, signal.SIGSTOP)  # it cannot answer
        assert preparer.take([paths[0].name], stop) is None
        assert preparer.failures == 0
    finally:
        os.kill(preparer._process.pid, signal.SIGCONT)
        preparer.close()


def test_a_child_that_finds_other_event_types_is_not_used(tmp_path, caplog):
    registry = load_registry()
    fewer = Registry({code: t for code, t in registry.by_code.items() if code != "WTR"},
                     {code: owner for code, owner in registry.owners.items() if code != "WTR"})
    paths = queue_uploads(tmp_path, [across_midnight(501, 1)])
    preparer = Preparer(tmp_path / "incoming", fewer, 2016)
    with caplog.at_level(logging.WARNING):
        preparer.submit([paths[0].name])
        assert preparer.take([paths[0].name], threading.Event()) is None
    assert not preparer.enabled and "other event types" in caplog.text


def test_a_batch_the_writer_prepared_itself_is_not_taken_for_the_next(tmp_path):
    paths = queue_uploads(tmp_path, [across_midnight(501, 1), across_midnight(502, 1)])
    first, second = [paths[0].name], [paths[1].name]
    preparer = Preparer(tmp_path / "incoming", load_registry(), 2016)
    try:
        preparer.submit(first)
        assert preparer.take(second, threading.Event()) is None  # never sent
        preparer.submit(second)
        # the answer for the first arrives first and is dropped
        assert wait_for_batch(preparer, second)[0].station_id == 502
    finally:
        preparer.close()


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except FileNotFoundError:
        return []
    return [int(child) for child in text.split()]


def preparing(pid: int) -> bool:
    try:
        return alive(pid) and b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def test_a_killed_writer_leaves_no_child_and_the_next_writer_stores_everything_once(tmp_path):
    data_dir = tmp_path / "data"
    queue_uploads(data_dir, [across_midnight(501 + n % 5, 2) for n in range(60)])
    config = tmp_path / "config.ini"
    config.write_text(f"[General]\nstation_list={tmp_path}/stations.csv\ndata_dir={data_dir}\n"
                      "minimum_year=2016\n[Writer]\nfsync=false\nbatch_uploads=1\n")
    writer = subprocess.Popen([BIN / "datastore", "writer", str(config), "--quiet"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: any(map(preparing, children(writer.pid))), timeout=120)
        kids = children(writer.pid)
    finally:
        writer.kill()
        writer.wait()
    # The children see their pipe close and leave by themselves.
    assert wait_for(lambda: not any(alive(kid) for kid in kids), timeout=60), kids
    tally = Writer(settings_for(data_dir, minimum_year=2016), load_registry()).run(once=True)
    with tables.open_file(day_file_path(data_dir, MIDNIGHT.date())) as h5:
        for station_id in range(501, 506):
            singles = h5.get_node(f"/hisparc/cluster_utrecht/station_{station_id}/singles")
            assert singles.nrows == 12 * 6  # 12 uploads, each 6 singles after midnight
    assert tally.uploads <= 60
