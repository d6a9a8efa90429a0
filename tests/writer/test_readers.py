"""Readers of day files: one holding a file open never stops the rest of the queue,
and a reader opening a file between batches sees whole batches."""

import datetime
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import tables

from hisparc_datastore.codec.decoding import Upload
from hisparc_datastore.config import load_settings
from hisparc_datastore.ops.status import collect, render
from hisparc_datastore.plugin.registry import load_registry
from hisparc_datastore.storage.heldfiles import HeldFiles, describe_holders, holders
from hisparc_datastore.storage.layout import day_file_path
from hisparc_datastore.testing.helpers import event, queue_uploads, settings_for, store, wait_for
from hisparc_datastore.writer.service import Writer
from hisparc_datastore.writer.state import read_state

BIN = Path(sys.executable).parent
YESTERDAY = datetime.datetime(2026, 11, 30, 23, 0)
TODAY = datetime.datetime(2026, 12, 1, 8, 0)
GROUP = "/hisparc/cluster_utrecht/station_{}"

# A reader as publicdb or a notebook is: PyTables with HDF5's default file locking.
HOLD = """
import sys, tables
h5 = tables.open_file(sys.argv[1], "r")
print("open", flush=True)
sys.stdin.read()
h5.close()
"""


def singles(station_id: int, first: datetime.datetime, count: int = 3) -> Upload:
    return Upload(station_id, "Utrecht", [
        event("SIN", first + datetime.timedelta(seconds=i), {"MAS_CH1_LOW": 100 + i})
        for i in range(count)])


def hold(path: Path) -> subprocess.Popen:
    reader = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert reader.stdout.readline() == "open\n"
    return reader


def singles_rows(path: Path, station_id: int) -> int | None:
    """Rows of a station's singles, or None while the writer has the file open (locked)."""
    try:
        with tables.open_file(path, "r") as h5:
            node = f"{GROUP.format(station_id)}/singles"
            return h5.get_node(node).nrows if node in h5 else 0
    except (tables.HDF5ExtError, FileNotFoundError):
        return None


def start_writer(tmp_path: Path, batch_uploads: int = 50) -> subprocess.Popen:
    config = tmp_path / "config.ini"
    config.write_text(
        f"[General]\nlog={tmp_path}/writer.log\nloglevel=info\nstation_list={tmp_path}/stations.csv\n"
        f"data_dir={tmp_path}/data\nminimum_year=2016\n"
        f"[Writer]\nsleep=0.2\nbatch_uploads={batch_uploads}\n")
    return subprocess.Popen([BIN / "datastore", "writer", str(config), "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_a_reader_holding_yesterdays_file_does_not_hold_up_today(tmp_path):
    data = tmp_path / "data"
    store(data, [singles(501, YESTERDAY)])
    yesterday, today = day_file_path(data, YESTERDAY.date()), day_file_path(data, TODAY.date())
    reader = hold(yesterday)
    writer = start_writer(tmp_path)
    try:
        # a late upload for yesterday first, then today's: both in one batch
        queue_uploads(data, [singles(501, YESTERDAY + datetime.timedelta(minutes=5), 4),
                             singles(502, TODAY, 5)])
        # Today's upload is stored while the reader keeps yesterday's file; generous
        # for a loaded machine, where the old writer waited for as long as the reader held on.
        assert wait_for(lambda: singles_rows(today, 502) == 5, timeout=60), \
            (tmp_path / "writer.log").read_text()
        assert len(os.listdir(data / "partial")) == 1  # yesterday's upload waits, claimed
        log = (tmp_path / "writer.log").read_text()
        # one line naming the file and the holder, not a retry per second
        held_lines = [line for line in log.splitlines() if "is held open by" in line]
        assert len(held_lines) == 1, log
        assert str(yesterday) in held_lines[0] and f"pid {reader.pid} (python" in held_lines[0]
        assert "could not store" not in log
        # the operator's screen names the held file, its holder and what waits for it
        status = collect(load_settings(tmp_path / "config.ini"))
        assert [(h["path"], h["holders"], h["uploads"]) for h in status["held_day_files"]] == [
            (str(yesterday), [reader.pid], 1)]
        assert f"held       {yesterday} by pid {reader.pid} for " in render(status)
    finally:
        reader.stdin.close()
        assert reader.wait(timeout=30) == 0
    try:
        # released: yesterday's upload follows, stored once
        assert wait_for(lambda: singles_rows(yesterday, 501) == 3 + 4, timeout=60)
        assert wait_for(lambda: not os.listdir(data / "partial"), timeout=30)
    finally:
        writer.send_signal(signal.SIGTERM)
        assert writer.wait(timeout=60) == 0, writer.stderr.read()
    assert singles_rows(yesterday, 501) == 7 and singles_rows(today, 502) == 5
    assert "was released after" in (tmp_path / "writer.log").read_text()
    assert read_state(data)["held_day_files"] == []


def test_writer_once_leaves_uploads_for_a_held_file_claimed_for_the_next_run(tmp_path, caplog):
    store(tmp_path, [singles(501, YESTERDAY)])
    yesterday = day_file_path(tmp_path, YESTERDAY.date())
    queue_uploads(tmp_path, [singles(501, YESTERDAY + datetime.timedelta(minutes=5), 4),
                             singles(502, TODAY, 5)])
    reader = hold(yesterday)
    try:
        with caplog.at_level(logging.INFO):
            tally = Writer(settings_for(tmp_path), load_registry()).run(once=True)
    finally:
        reader.stdin.close()
        reader.wait(timeout=30)
    assert tally.uploads == 1 and tally.events == 5
    assert len(os.listdir(tmp_path / "partial")) == 1
    assert "1 uploads wait for day files held by another process" in caplog.text
    tally = Writer(settings_for(tmp_path), load_registry()).run(once=True)
    assert tally.uploads == 1 and tally.events == 4
    assert singles_rows(yesterday, 501) == 7
    assert singles_rows(day_file_path(tmp_path, TODAY.date()), 502) == 5


# A reader that opens the day file again and again while uploads arrive one batch at a time,
# and records what it saw each time it got in.
WATCH = """
import json, sys, time, tables
path, group, want = sys.argv[1], sys.argv[2], int(sys.argv[3])
seen, deadline = [], time.monotonic() + 120
while time.monotonic() < deadline:
    try:
        h5 = tables.open_file(path, "r")
    except Exception:
        time.sleep(0.01)
        continue
    try:
        if group + "/events" in h5:
            events = h5.get_node(group + "/events")
            traces = events.col("traces")
            seen.append([int(events.nrows), int(h5.get_node(group + "/singles").nrows),
                         int(h5.get_node(group + "/blobs").nrows), int(traces.max()) if len(traces) else -1])
    finally:
        h5.close()
    if seen and seen[-1][0] >= want:
        break
    time.sleep(0.05)
print(json.dumps(seen))
"""


def cic_upload(moment: datetime.datetime) -> Upload:
    """Five CIC events with two traces each and three singles: one batch of the writer."""
    events = [event("CIC", moment + datetime.timedelta(seconds=i),
                    {"TR1": "eJzLSM3JyVcozy/KSQEAGgQEXQ==", "TR2": "eJwrySxOBQAEwgHr", "PH1": i},
                    nanoseconds=i)
              for i in range(5)]
    events += [event("SIN", moment + datetime.timedelta(seconds=i), {"MAS_CH1_LOW": i}) for i in range(3)]
    return Upload(501, "Utrecht", events)


def test_a_reader_opening_the_file_between_batches_sees_whole_batches(tmp_path):
    data = tmp_path / "data"
    uploads = 8
    path = day_file_path(data, TODAY.date())
    writer = start_writer(tmp_path, batch_uploads=1)
    queue_uploads(data, [cic_upload(TODAY)])  # the day file exists before the reader starts
    assert wait_for(lambda: path.exists(), timeout=60)
    watcher = subprocess.Popen([sys.executable, "-c", WATCH, str(path), GROUP.format(501),
                                str(5 * uploads)], stdout=subprocess.PIPE, text=True)
    try:
        for i in range(1, uploads):
            queue_uploads(data, [cic_upload(TODAY + datetime.timedelta(minutes=i))])
            time.sleep(0.3)
        seen = json.loads(watcher.communicate(timeout=180)[0])
    finally:
        writer.send_signal(signal.SIGTERM)
        assert writer.wait(timeout=60) == 0, writer.stderr.read()
    assert seen and seen[-1][:3] == [5 * uploads, 3 * uploads, 2 * 5 * uploads]
    for events, singles_seen, blobs, last_trace in seen:
        batches = events // 5
        # whole uploads only: every table and the blobs of the same number of batches
        assert [events, singles_seen, blobs] == [5 * batches, 3 * batches, 10 * batches], seen
        assert last_trace == blobs - 1, seen  # no row points past the blobs a reader can see


def test_holders_reads_the_lock_table(tmp_path):
    path = tmp_path / "day.h5"
    path.write_bytes(b"")
    st = os.stat(path)
    where = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    locks = tmp_path / "locks"
    locks.write_text(f"1: FLOCK  ADVISORY  READ 4016 {where} 0 EOF\n"
                     f"1: -> FLOCK  ADVISORY  WRITE 77 {where} 0 EOF\n"
                     f"2: POSIX  ADVISORY  WRITE 4020 {where}9 0 EOF\n"
                     f"3: OFDLCK ADVISORY  READ -1 {where} 0 EOF\n"
                     "garbage\n")
    assert holders(path, locks) == [4016]
    assert holders(tmp_path / "missing.h5", locks) == []
    assert describe_holders([]) == "another process"
    comm = Path("/proc/self/comm").read_text().strip()
    assert describe_holders([os.getpid(), 4016]) == f"pid {os.getpid()} ({comm}), pid 4016 (?)" \
        or Path("/proc/4016").exists()


def test_a_real_readers_pid_is_found(tmp_path):
    store(tmp_path, [singles(501, YESTERDAY)])
    path = day_file_path(tmp_path, YESTERDAY.date())
    reader = hold(path)
    try:
        assert holders(path) == [reader.pid]
    finally:
        reader.stdin.close()
        reader.wait(timeout=30)
    assert holders(path) == []


def test_held_files_free_an_upload_only_when_all_its_files_are_released():
    now = [0.0]
    held = HeldFiles(recheck_s=5.0, clock=lambda: now[0])
    a, b = Path("/data/a.h5"), Path("/data/b.h5")
    held.set_aside("one", [a])
    held.set_aside("two", [a, b])
    assert not held.due()
    now[0] = 5.0
    assert held.due()
    assert held.released(lambda path: path == b) == ["one"]
    assert not held.due() and held.waiting == {"two": frozenset({a, b})}
    now[0] = 10.0
    assert held.released(lambda path: False) == ["two"]
    assert not held.due() and not held.since
