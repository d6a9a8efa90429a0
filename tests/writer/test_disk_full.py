"""Disk full or an I/O error: the writer keeps the upload claimed, leaves nothing
half-written, retries with back-off and stores it once when space returns."""

import datetime
import errno
import logging
import os
import subprocess
import sys
import threading
import time

import pytest
import tables

from hisparc_datastore.codec.decoding import Upload
from hisparc_datastore.plugin.registry import load_registry
from hisparc_datastore.storage.layout import DayFile
from hisparc_datastore.testing.helpers import event, queue_uploads, read_station, settings_for, store
from hisparc_datastore.writer import recovery
from hisparc_datastore.writer import service as writer_module
from hisparc_datastore.writer.journal import Journal

MOMENT = datetime.datetime(2024, 2, 29, 12, 0, 0)


def coincidence(second, ph):
    return event("CIC", MOMENT + datetime.timedelta(seconds=second),
                 {"PH1": ph, "TR1": "eJwzAAAAMgAy"}, nanoseconds=second)


def singles(second, low):
    return event("SIN", MOMENT + datetime.timedelta(seconds=second), {"MAS_CH1_LOW": low})


def run_writer_until(tmp_path, done, timeout=20.0):
    """Run the service writer in a thread until ``done()`` or ``timeout``; return it stopped."""
    writer = writer_module.Writer(settings_for(tmp_path, sleep=0.05), load_registry())
    thread = threading.Thread(target=writer.run)
    thread.start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not done():
        time.sleep(0.02)
    writer.stop()
    thread.join(10)
    return writer


def queue_empty(tmp_path):
    # Files only move forward, incoming/ -> partial/ -> gone, so look at
    # incoming/ first: the other order can miss a file claimed in between.
    return not any((tmp_path / "incoming").iterdir()) and not any((tmp_path / "partial").iterdir())


@pytest.fixture
def fast_backoff(monkeypatch):
    monkeypatch.setattr(writer_module, "FIRST_BACKOFF", 0.05)


@pytest.mark.parametrize("failure", [
    OSError(errno.ENOSPC, "No space left on device"),
    OSError(errno.EIO, "Input/output error"),
    tables.HDF5ExtError("Problems appending the records."),
])
def test_a_failing_append_leaves_nothing_behind_and_is_retried_until_it_works(
        tmp_path, monkeypatch, caplog, fast_backoff, failure):
    store(tmp_path, [Upload(501, "Utrecht", [coincidence(0, 100), singles(0, 1)])])
    before = read_station(tmp_path, MOMENT.date(), "Utrecht", 501)

    failures_left = [3]
    real_append_rows = DayFile.append_rows
    seen_during_failure = []

    def failing_append_rows(self, cluster, station_id, event_type, records):
        real_append_rows(self, cluster, station_id, event_type, records)  # half written...
        if failures_left[0] > 0:
            failures_left[0] -= 1
            seen_during_failure.append(sorted(p.name for p in (tmp_path / "partial").iterdir()))
            raise failure  # ...then the disk gives up

    monkeypatch.setattr(DayFile, "append_rows", failing_append_rows)
    queue_uploads(tmp_path, [Upload(501, "Utrecht", [coincidence(s, 200 + s) for s in range(1, 4)]
                                    + [singles(s, s) for s in range(1, 4)])])
    with caplog.at_level(logging.ERROR):
        writer = run_writer_until(tmp_path, lambda: not failures_left[0] and queue_empty(tmp_path))

    assert failures_left == [0]
    assert all(len(names) == 1 for names in seen_during_failure)  # the upload stayed claimed
    after = read_station(tmp_path, MOMENT.date(), "Utrecht", 501)
    assert list(after["events"]["pulseheights"][:, 0]) == [100, 201, 202, 203]
    assert list(after["events"]["event_id"]) == [1, 2, 3, 4]
    assert list(after["singles"]["mas_ch1_low"]) == [1, 1, 2, 3]
    assert len(after["blobs"]) == len(before["blobs"]) + 3
    assert writer.tally.uploads == 1
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "could not store 1 uploads" in messages
    assert "stay claimed in" in messages
    if failure.args and failure.args[0] == errno.ENOSPC:
        assert "disk full" in messages


def test_nothing_half_written_is_visible_between_attempts(tmp_path, monkeypatch, fast_backoff):
    store(tmp_path, [Upload(501, "Utrecht", [singles(0, 1)])])
    calls = []

    def always_full(self, cluster, station_id, event_type, records):
        calls.append(1)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(DayFile, "append_rows", always_full)
    queue_uploads(tmp_path, [Upload(501, "Utrecht", [coincidence(1, 5), singles(1, 2)])])
    writer = run_writer_until(tmp_path, lambda: len(calls) >= 3)
    nodes = read_station(tmp_path, MOMENT.date(), "Utrecht", 501)
    # blobs appended by a failed attempt were cut back; the new table was removed
    assert set(nodes) == {"singles"}
    assert list(nodes["singles"]["mas_ch1_low"]) == [1]
    assert len(list((tmp_path / "partial").iterdir())) == 1
    assert (tmp_path / "writer.journal").exists() is False or writer.journal.read().state == "applying"


def damage_next_appends(monkeypatch, times: int) -> None:
    """The next ``times`` appends fail as HDF5 does when a kill left a group's metadata torn."""
    failures_left = [times]
    real_append_rows = DayFile.append_rows

    def damaged(self, cluster, station_id, event_type, records):
        if failures_left[0] > 0:
            failures_left[0] -= 1
            raise tables.HDF5ExtError("Problems closing the Group cluster_utrecht")
        real_append_rows(self, cluster, station_id, event_type, records)

    monkeypatch.setattr(DayFile, "append_rows", damaged)


def test_hdf5_errors_on_a_disk_with_room_rebuild_the_day_file_from_the_archive(
        tmp_path, monkeypatch, caplog, fast_backoff):
    store(tmp_path, [Upload(501, "Utrecht", [coincidence(0, 100), singles(0, 1)])])
    damage_next_appends(monkeypatch, 2)
    queue_uploads(tmp_path, [Upload(501, "Utrecht", [coincidence(1, 201), singles(1, 2)])])
    with caplog.at_level(logging.WARNING):
        run_writer_until(tmp_path, lambda: queue_empty(tmp_path))

    nodes = read_station(tmp_path, MOMENT.date(), "Utrecht", 501)
    assert list(nodes["events"]["pulseheights"][:, 0]) == [100, 201]
    assert list(nodes["singles"]["mas_ch1_low"]) == [1, 2]
    assert len(list((tmp_path / "quarantine").glob("2024_2_29.h5.damaged-*Z"))) == 1
    assert any(r.levelname == "CRITICAL" and "rebuilt from the archive" in r.getMessage()
               for r in caplog.records)


def test_hdf5_errors_on_a_full_disk_are_waited_out_not_healed(tmp_path, monkeypatch, fast_backoff):
    store(tmp_path, [Upload(501, "Utrecht", [singles(0, 1)])])
    monkeypatch.setattr(recovery, "disk_full", lambda data_dir: True)
    failures_left = [3]
    real_append_rows = DayFile.append_rows

    def full(self, cluster, station_id, event_type, records):
        if failures_left[0] > 0:
            failures_left[0] -= 1
            raise tables.HDF5ExtError("Problems appending the records.")  # HDF5's word for ENOSPC
        real_append_rows(self, cluster, station_id, event_type, records)

    monkeypatch.setattr(DayFile, "append_rows", full)
    queue_uploads(tmp_path, [Upload(501, "Utrecht", [singles(1, 2)])])
    run_writer_until(tmp_path, lambda: not failures_left[0] and queue_empty(tmp_path))
    assert list(read_station(tmp_path, MOMENT.date(), "Utrecht", 501)["singles"]["mas_ch1_low"]) == [1, 2]
    assert list((tmp_path / "quarantine").iterdir()) == []


def test_a_day_file_held_open_by_a_reader_is_waited_for_not_healed(tmp_path, fast_backoff):
    store(tmp_path, [Upload(501, "Utrecht", [singles(0, 1)])])
    path = tmp_path / "2024/2/2024_2_29.h5"
    # a writer died mid-batch: the restarted one must cut this file back first
    queue_uploads(tmp_path, [Upload(501, "Utrecht", [singles(2, 3)])])
    config = tmp_path / "config.ini"
    config.write_text(f"[General]\nlog=\nloglevel=info\nstation_list=x\ndata_dir={tmp_path}\n"
                      "minimum_year=2000\n[Writer]\nfsync=no\n")
    crashed = subprocess.run([sys.executable, "-m", "hisparc_datastore.cli", "writer", str(config),
                              "--once"], env={**os.environ, "DATASTORE_CRASH_AT": "table-appended"})
    assert crashed.returncode == -9
    assert Journal(tmp_path).read().state == "applying"
    reader = subprocess.Popen([sys.executable, "-c", (
        "import sys, tables, time\n"
        f"f = tables.open_file({str(path)!r}, 'r'); print('reading', flush=True); sys.stdin.readline()")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert reader.stdout.readline().strip() == "reading"
    queue_uploads(tmp_path, [Upload(501, "Utrecht", [singles(1, 2)])])

    released = []

    def release_reader_after_a_while():
        time.sleep(1.0)  # several failed attempts, with a 0.05 s first back-off
        reader.communicate("done\n", timeout=10)
        released.append(True)

    threading.Thread(target=release_reader_after_a_while).start()
    run_writer_until(tmp_path, lambda: released and queue_empty(tmp_path))
    assert list(read_station(tmp_path, MOMENT.date(), "Utrecht", 501)["singles"]["mas_ch1_low"]) == [1, 3, 2]
    assert list((tmp_path / "quarantine").iterdir()) == []  # never taken for damage


def test_a_heal_that_would_hold_fewer_rows_keeps_the_damaged_file_readable_beside_it(
        tmp_path, monkeypatch, caplog, fast_backoff):
    store(tmp_path, [Upload(501, "Utrecht", [coincidence(0, 100), singles(0, 1)])])
    store(tmp_path, [Upload(501, "Utrecht", [singles(s, 10 + s) for s in range(1, 4)])])
    # the archive lost the second upload (pruned, say): a rebuild cannot give its rows back
    uploads = tmp_path / "archive/uploads"
    archived = sorted((p for p in uploads.iterdir() if p.suffix != ".dates"),
                      key=lambda p: p.stat().st_mtime_ns)
    assert len(archived) == 2
    archived[1].unlink()
    archived[1].with_name(archived[1].name + ".dates").unlink()
    damage_next_appends(monkeypatch, 2)
    queue_uploads(tmp_path, [Upload(501, "Utrecht", [singles(5, 2)])])
    with caplog.at_level(logging.WARNING):
        run_writer_until(tmp_path, lambda: queue_empty(tmp_path))

    kept = list((tmp_path / "2024/2").glob("2024_2_29.h5.damaged-*Z"))
    assert len(kept) == 1  # beside the day file, where a reader of that day looks
    with tables.open_file(kept[0]) as h5:  # and readable, every row it held
        singles_kept = h5.get_node("/hisparc/cluster_utrecht/station_501/singles")
        assert list(singles_kept.col("mas_ch1_low")) == [1, 11, 12, 13]
    assert list((tmp_path / "quarantine").glob("*.damaged-*Z")) == []
    assert len(list((tmp_path / "quarantine").glob("*.damaged-*Z.reason"))) == 1
    assert list(read_station(tmp_path, MOMENT.date(), "Utrecht", 501)["singles"]["mas_ch1_low"]) == [1, 2]
    assert any(r.levelname == "CRITICAL" and "3 rows fewer" in r.getMessage() for r in caplog.records)
