"""Every stored upload is kept under archive/Y/M/D for rebuilding day files."""

import datetime
import os
import threading
import time

from hisparc_datastore.codec.decoding import Upload
from hisparc_datastore.plugin.registry import load_registry
from hisparc_datastore.queue.folders import Queue, read_archived
from hisparc_datastore.testing.helpers import event, queue_uploads, settings_for, store, wait_for
from hisparc_datastore.writer.service import Writer

LATE = datetime.datetime(2022, 1, 31, 23, 59, 59)
EARLY = datetime.datetime(2022, 2, 1, 0, 0, 1)


def singles(moment, low):
    return event("SIN", moment, {"MAS_CH1_LOW": low})


def test_uploads_are_archived_under_every_date_they_have_events_for(tmp_path):
    spanning = Upload(501, "Utrecht", [singles(LATE, 1), singles(EARLY, 2)])
    later = Upload(502, "Utrecht", [singles(EARLY, 3)])
    paths = queue_uploads(tmp_path, [spanning, later])
    payloads = {p.name: p.read_bytes() for p in paths}
    Writer(settings_for(tmp_path), load_registry()).run(once=True)

    queue = Queue(tmp_path)
    jan, feb = queue.archived(LATE.date()), queue.archived(EARLY.date())
    assert [p.name for p in jan] == [paths[0].name]
    assert [p.name for p in feb] == [paths[0].name, paths[1].name]  # in queue order
    for path in jan + feb:
        assert read_archived(path) == payloads[path.name]
    assert not list(queue.partial.iterdir())


def test_idle_compression_keeps_content_and_order(tmp_path):
    uploads = [Upload(501 + i, "Utrecht", [singles(EARLY, i)]) for i in range(5)]
    paths = queue_uploads(tmp_path, uploads)
    received = time.time_ns() - 100 * 10**9
    for i, path in enumerate(paths):  # received one second apart, in this order
        os.utime(path, ns=(received + i * 10**9,) * 2)
    payloads = [p.read_bytes() for p in paths]
    Writer(settings_for(tmp_path), load_registry()).run(once=True)

    queue = Queue(tmp_path)
    assert queue.compress_archive(limit=3) == 3
    assert queue.compress_archive(limit=10) == 2
    archived = queue.archived(EARLY.date())
    assert [p.suffix for p in archived] == [".gz"] * 5
    assert [read_archived(p) for p in archived] == payloads
    assert [p.name for p in archived] == [p.name + ".gz" for p in paths]
    assert queue.compress_archive() == 0


def test_the_running_writer_compresses_the_archive_when_idle_if_asked(tmp_path):
    queue_uploads(tmp_path, [Upload(501, "Utrecht", [singles(EARLY, 1)])])
    writer = Writer(settings_for(tmp_path, sleep=0.05, archive_compress=True), load_registry())
    thread = threading.Thread(target=writer.run)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            archived = Queue(tmp_path).archived(EARLY.date())
            if archived and archived[0].suffix == ".gz":
                break
            time.sleep(0.05)
    finally:
        writer.stop()
        thread.join(10)
    assert [p.suffix for p in Queue(tmp_path).archived(EARLY.date())] == [".gz"]
    assert writer.tally.events == 1


def test_archive_off_keeps_nothing(tmp_path):
    store(tmp_path, [Upload(501, "Utrecht", [singles(EARLY, 1)])], archive_days=0)
    assert Queue(tmp_path).archived(EARLY.date()) == []
    assert not any((tmp_path / "archive").rglob("*"))


def test_retention_prunes_old_archive_entries(tmp_path):
    store(tmp_path, [Upload(501, "Utrecht", [singles(EARLY, 1)])])
    queue = Queue(tmp_path)
    (entry,) = queue.archived(EARLY.date())
    old = time.time() - 15 * 86400
    os.utime(entry, (old, old))
    assert queue.prune_archive(keep_days=14) == 1
    assert queue.archived(EARLY.date()) == []


def test_by_default_the_archive_stays_a_link_to_the_received_file(tmp_path):
    # Compressing writes every stored upload a second time: off unless an operator asks.
    paths = queue_uploads(tmp_path, [Upload(501, "Utrecht", [singles(EARLY, 1)])])
    payload = paths[0].read_bytes()
    inode = paths[0].stat().st_ino
    writer = Writer(settings_for(tmp_path, sleep=0.05), load_registry())
    thread = threading.Thread(target=writer.run)
    thread.start()
    try:
        assert wait_for(lambda: writer.tally.events == 1)
        time.sleep(0.5)  # idle passes, in which a compressing writer would have compressed it
    finally:
        writer.stop()
        thread.join(10)
    archived = Queue(tmp_path).archived(EARLY.date())
    assert [p.name for p in archived] == [paths[0].name]
    assert archived[0].stat().st_ino == inode  # the receiver's file, not a copy
    assert read_archived(archived[0]) == payload
