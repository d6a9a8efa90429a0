"""Batches stored within ``commit_s`` are one transaction: made durable (flushed, fsynced,
journaled applied) and released from ``partial/`` together, or undone together.

Each durable point makes HDF5 write again the pages every touched node ends on (its last
page, object header, chunk index, heap), so one per ``commit_s`` instead of one per batch
writes fewer bytes per byte stored (docs/performance.md, "A day of the network at full
size"). The other side: until the commit the uploads stay claimed, so a crash or a failing
batch stores each of them again, once.
"""

import datetime
import errno
import os
import threading

import numpy as np

from hisparc_datastore.codec.decoding import Upload
from hisparc_datastore.plugin.registry import load_registry
from hisparc_datastore.storage.layout import DayFile
from hisparc_datastore.testing.helpers import event, queue_uploads, read_station, settings_for, wait_for
from hisparc_datastore.writer.journal import APPLYING
from hisparc_datastore.writer.service import Writer

MOMENT = datetime.datetime(2022, 2, 1, 12, 0, 0)
DAY = MOMENT.date()


def sin_upload(station: int, value: int) -> Upload:
    return Upload(station, "Utrecht", [event("SIN", MOMENT + datetime.timedelta(seconds=value),
                                             {"MAS_CH1_LOW": value})])


def stored_values(data_dir, station: int) -> list[int]:
    """MAS_CH1_LOW of every stored singles row of ``station``, in stored order."""
    return [int(v) for v in read_station(data_dir, DAY, "Utrecht", station)["singles"]["mas_ch1_low"]]


def partial(data_dir) -> list[str]:
    return sorted(os.listdir(data_dir / "partial"))


def writer_for(tmp_path, **overrides) -> Writer:
    return Writer(settings_for(tmp_path, batch_uploads=1, gather_s=0, **overrides), load_registry())


def test_batches_within_commit_s_stay_claimed_and_are_released_together(tmp_path):
    queue_uploads(tmp_path, [sin_upload(501, 1)])
    writer = writer_for(tmp_path, commit_s=600)
    writer.batches.store(writer.queue.claim(1))  # makes the day file: a transaction alone
    assert partial(tmp_path) == [] and writer.journal.read() is None

    queue_uploads(tmp_path, [sin_upload(501, value) for value in (2, 3, 4)])
    names = writer.queue.claim(3)
    for name in names:
        writer.batches.store([name])
    transaction = writer.journal.read()
    assert transaction.state == APPLYING
    assert list(transaction.uploads) == names  # one transaction, in claim order
    (sizes,) = transaction.sizes.values()
    assert sizes["/hisparc/cluster_utrecht/station_501/singles"] == 1  # as the last commit left it
    assert partial(tmp_path) == sorted(names)
    assert writer.tally.events == 1  # counted when durable

    writer.batches.commit()
    assert writer.journal.read() is None
    assert partial(tmp_path) == []
    assert writer.tally.events == 4 and writer.tally.uploads == 4
    writer.files.close_all()
    assert stored_values(tmp_path, 501) == [1, 2, 3, 4]
    assert set(names) <= set(os.listdir(tmp_path / "archive" / "uploads"))  # archived once durable


def test_commit_s_0_makes_every_batch_durable_alone(tmp_path):
    queue_uploads(tmp_path, [sin_upload(501, value) for value in (1, 2, 3)])
    writer = writer_for(tmp_path, commit_s=0)
    for name in writer.queue.claim(3):
        writer.batches.store([name])
        assert name not in partial(tmp_path) and writer.journal.read() is None
    assert writer.tally.events == 3
    writer.files.close_all()
    assert stored_values(tmp_path, 501) == [1, 2, 3]


def test_a_writer_that_dies_before_the_commit_stores_every_batch_of_it_again_once(tmp_path):
    queue_uploads(tmp_path, [sin_upload(501, 1)])
    writer = writer_for(tmp_path, commit_s=600)
    writer.batches.store(writer.queue.claim(1))
    queue_uploads(tmp_path, [sin_upload(501, value) for value in (2, 3, 4)])
    for name in writer.queue.claim(3):
        writer.batches.store([name])
    # Died here: HDF5 had written what it wrote (closing flushes it all), nothing committed.
    writer.files.close_all()
    assert stored_values(tmp_path, 501) == [1, 2, 3, 4]

    tally = writer_for(tmp_path, commit_s=600).run(once=True)
    assert tally.events == 3  # the three uncommitted uploads, stored again
    assert stored_values(tmp_path, 501) == [1, 2, 3, 4]  # once each, in claim order
    assert partial(tmp_path) == [] and not (tmp_path / "writer.journal").exists()


def test_a_failing_batch_undoes_the_batches_before_it_and_stores_them_all_once(tmp_path, monkeypatch):
    queue_uploads(tmp_path, [sin_upload(501, 1), sin_upload(502, 1)])
    assert writer_for(tmp_path).run(once=True).events == 2  # both stations' nodes exist
    queue_uploads(tmp_path, [sin_upload(501 + i % 2, value) for i, value in enumerate(range(2, 8))])
    appends = []
    real = DayFile.append_rows

    def full_once(self, cluster, station_id, event_type, records):
        appends.append(station_id)
        if len(appends) == 4:  # the fourth batch of the transaction: the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, cluster, station_id, event_type, records)

    monkeypatch.setattr(DayFile, "append_rows", full_once)
    writer = writer_for(tmp_path, commit_s=600)
    monkeypatch.setattr("hisparc_datastore.writer.service.FIRST_BACKOFF", 0.01)
    tally = writer.run(once=True)
    assert tally.storage_errors == 1
    assert tally.events == 6 and tally.uploads == 6
    assert stored_values(tmp_path, 501) == [1, 2, 4, 6]
    assert stored_values(tmp_path, 502) == [1, 3, 5, 7]
    assert len(appends) == 4 + 6  # three batches undone and stored again, with the fourth and the rest
    assert partial(tmp_path) == [] and list((tmp_path / "quarantine").iterdir()) == []


def test_a_running_writer_commits_when_the_queue_is_empty(tmp_path):
    queue_uploads(tmp_path, [sin_upload(501, 1)])
    writer = writer_for(tmp_path, commit_s=600, sleep=0.05)
    thread = threading.Thread(target=writer.run)
    thread.start()
    try:
        assert wait_for(lambda: writer.tally.events == 1, timeout=60)
        queue_uploads(tmp_path, [sin_upload(501, value) for value in (2, 3)])
        assert wait_for(lambda: writer.tally.events == 3, timeout=60)  # not after 600 s
        assert partial(tmp_path) == []
    finally:
        writer.stop()
        thread.join(60)
    assert not thread.is_alive()
    assert stored_values(tmp_path, 501) == [1, 2, 3]


def test_a_stopped_writer_commits_what_it_stored(tmp_path):
    values = list(range(1, 41))
    queue_uploads(tmp_path, [sin_upload(501, value) for value in values])
    writer = writer_for(tmp_path, commit_s=600, sleep=0.05)
    thread = threading.Thread(target=writer.run)
    thread.start()
    try:
        # stopped in the middle of the backlog, whatever batch it is at
        assert wait_for(lambda: len(os.listdir(tmp_path / "incoming")) < 30, timeout=60)
    finally:
        writer.stop()
        thread.join(60)
    assert not thread.is_alive()
    assert not (tmp_path / "writer.journal").exists()  # nothing left to undo
    stored = stored_values(tmp_path, 501)
    assert stored == values[:len(stored)] and writer.tally.events == len(stored)
    # the rest waits, claimed ahead in partial/ or in incoming/, for the next start
    assert len(partial(tmp_path)) + len(os.listdir(tmp_path / "incoming")) == len(values) - len(stored)
    writer_for(tmp_path, commit_s=600).run(once=True)
    assert stored_values(tmp_path, 501) == values


def test_a_batch_that_adds_a_node_is_a_transaction_alone(tmp_path):
    queue_uploads(tmp_path, [sin_upload(501, 1)])
    writer = writer_for(tmp_path, commit_s=600)
    writer.batches.store(writer.queue.claim(1))
    queue_uploads(tmp_path, [sin_upload(501, 2)])
    (appended,) = writer.queue.claim(1)
    writer.batches.store([appended])
    assert partial(tmp_path) == [appended]  # waits for the commit

    queue_uploads(tmp_path, [sin_upload(502, 1)])  # a new station group
    writer.batches.store(writer.queue.claim(1))
    # committed before it (the room set aside describes that batch alone) and after it
    assert partial(tmp_path) == [] and writer.journal.read() is None
    writer.files.close_all()
    assert stored_values(tmp_path, 501) == [1, 2] and stored_values(tmp_path, 502) == [1]
    assert np.all(read_station(tmp_path, DAY, "Utrecht", 502)["singles"]["event_id"] == [1])
