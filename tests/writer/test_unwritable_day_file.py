"""A day file the writer may not open for append (made immutable, or its folder) holds up
only its own uploads, as a file a reader holds does, is reported in ``datastore status``
with the reason, and its uploads follow once it is writable again (issue 19, item 3).

Root ignores mode bits (a ``chmod 0444`` day file opens for writing as root), so the tests
use the immutable flag (``chattr +i``), which stops root too; they skip where it cannot be
set (not root, or a file system without it)."""

import datetime
import logging
import subprocess
import threading

import pytest
import tables

from hisparc_datastore.codec.decoding import Upload
from hisparc_datastore.ops.status import collect, render
from hisparc_datastore.plugin.registry import load_registry
from hisparc_datastore.storage.layout import day_file_path
from hisparc_datastore.testing.helpers import event, queue_uploads, settings_for, store, wait_for
from hisparc_datastore.writer.service import Writer

DAY = datetime.datetime(2024, 2, 29, 12)
OTHER_DAY = DAY + datetime.timedelta(days=3)


def singles(moment, second, low):
    return event("SIN", moment + datetime.timedelta(seconds=second), {"MAS_CH1_LOW": low})


def immutable(path, on: bool) -> None:
    done = subprocess.run(["chattr", "+i" if on else "-i", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot set the immutable flag on {path}: {done.stderr.strip()} (needs root "
                    "and a file system that has it)")


def low_values(data_dir, moment, station_id):
    """The stored values, read once the writer thread (in this process) has let the file go:
    PyTables refuses a read-only open of a file this process still has open for writing."""
    values = []

    def read() -> bool:
        try:
            with tables.open_file(day_file_path(data_dir, moment.date())) as h5:
                node = h5.get_node(f"/hisparc/cluster_utrecht/station_{station_id}/singles")
                values[:] = node.col("mas_ch1_low")
        except ValueError:  # "already opened, but not in read-only mode": the writer still has it
            return False
        return True

    assert wait_for(read, timeout=60)
    return list(values)


@pytest.fixture
def writer_running(tmp_path):
    """Starts a service writer over ``tmp_path`` in a thread, looking at set-aside files every
    0.1 s; stops it at the end."""
    writers = []

    def start():
        writer = Writer(settings_for(tmp_path, sleep=0.05, archive_days=0), load_registry())
        writer.held.recheck_s = 0.1
        thread = threading.Thread(target=writer.run)
        thread.start()
        writers.append((writer, thread))
        return writer

    yield start
    for writer, thread in writers:
        writer.stop()
        thread.join(timeout=60)


def test_an_immutable_day_file_sets_aside_only_its_uploads(tmp_path, writer_running, caplog):
    store(tmp_path, [Upload(501, "Utrecht", [singles(DAY, 0, 1)])])
    path = day_file_path(tmp_path, DAY.date())
    immutable(path, True)
    try:
        queue_uploads(tmp_path, [Upload(501, "Utrecht", [singles(DAY, s, 10 + s) for s in range(1, 4)])])
        queue_uploads(tmp_path, [Upload(502, "Utrecht", [singles(OTHER_DAY, s, 20 + s) for s in range(3)])
                                 for _ in range(10)])
        with caplog.at_level(logging.WARNING):
            writer = writer_running()
            # main: PermissionError retried for ever, and nothing after it was stored
            assert wait_for(lambda: writer.tally.uploads == 10, timeout=120), writer.tally
        assert low_values(tmp_path, OTHER_DAY, 502) == [20, 21, 22] * 10
        assert len(list((tmp_path / "partial").iterdir())) == 1  # the one upload waits, claimed
        assert "cannot be opened for writing" in caplog.text and str(path) in caplog.text
        assert writer.tally.storage_errors == 0  # set aside, not retried as a failure
        status = collect(settings_for(tmp_path))
        held = status["held_day_files"]
        assert [(entry["path"], entry["uploads"]) for entry in held] == [(str(path), 1)]
        assert "cannot be opened for writing" in held[0]["reason"]
        assert not status["healthy"]
        assert any(str(path) in problem and "1 uploads wait" in problem for problem in status["problems"])
        assert "cannot be opened for writing" in render(status)
    finally:
        immutable(path, False)
    # writable again: its upload follows, once
    assert wait_for(lambda: writer.tally.uploads == 11, timeout=120), writer.tally
    assert low_values(tmp_path, DAY, 501) == [1, 11, 12, 13]
    assert not list((tmp_path / "partial").iterdir())
    assert wait_for(lambda: collect(settings_for(tmp_path))["held_day_files"] == [], timeout=60)


def test_a_new_day_file_in_a_folder_that_cannot_be_written_waits_too(tmp_path, writer_running):
    store(tmp_path, [Upload(501, "Utrecht", [singles(DAY, 0, 1)])])
    folder = day_file_path(tmp_path, DAY.date()).parent  # 2024/2: a new file for 2024-02-28 goes here
    immutable(folder, True)
    try:
        queue_uploads(tmp_path, [Upload(501, "Utrecht", [singles(DAY - datetime.timedelta(days=1), 0, 5)])])
        queue_uploads(tmp_path, [Upload(502, "Utrecht", [singles(OTHER_DAY, 0, 7)])])
        writer = writer_running()
        assert wait_for(lambda: writer.tally.uploads == 1, timeout=120), writer.tally
        held = collect(settings_for(tmp_path))["held_day_files"]
        assert len(held) == 1 and f"its folder {folder} cannot be written" in held[0]["reason"]
    finally:
        immutable(folder, False)
    assert wait_for(lambda: writer.tally.uploads == 2, timeout=120), writer.tally
    assert low_values(tmp_path, DAY - datetime.timedelta(days=1), 501) == [5]
