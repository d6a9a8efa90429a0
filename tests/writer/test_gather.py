"""A running writer lets a trickle of uploads gather (gather_s) and stores a whole batch at once.

Each batch costs a journal write and a look-up of every node it touches, so a writer that
stored each upload as it came would spend more CPU per event (docs/performance.md, "A day of
the network at full size").
"""

import datetime
import threading
import time

import pytest

from hisparc_datastore.codec.decoding import Upload
from hisparc_datastore.plugin.registry import load_registry
from hisparc_datastore.testing.helpers import event, queue_uploads, settings_for, wait_for
from hisparc_datastore.writer.service import Writer

MOMENT = datetime.datetime(2022, 2, 1, 12, 0, 0)


def uploads(count: int, first: int = 0) -> list[Upload]:
    return [Upload(501 + i, "Utrecht", [event("SIN", MOMENT, {"MAS_CH1_LOW": first + i})])
            for i in range(count)]


def running(tmp_path, **overrides) -> tuple[Writer, threading.Thread]:
    writer = Writer(settings_for(tmp_path, sleep=0.05, batch_uploads=3, **overrides), load_registry())
    thread = threading.Thread(target=writer.run)
    thread.start()
    return writer, thread


def stopped(writer: Writer, thread: threading.Thread) -> None:
    writer.stop()
    thread.join(30)
    assert not thread.is_alive()


def test_less_than_a_batch_waits_for_more_until_gather_s(tmp_path):
    writer, thread = running(tmp_path, gather_s=60)
    try:
        queue_uploads(tmp_path, uploads(1))
        time.sleep(1.5)  # many looks at the queue: a writer that did not gather stores it now
        assert writer.tally.events == 0
        assert len(list((tmp_path / "incoming").iterdir())) == 1
    finally:
        stopped(writer, thread)  # a stop ends the gathering at once


@pytest.mark.parametrize("gather_s", [0.5, 0], ids=["gathered-then-stored", "0-stores-at-once"])
def test_a_trickle_is_stored_once_gather_s_has_passed(tmp_path, gather_s):
    writer, thread = running(tmp_path, gather_s=gather_s)
    try:
        queue_uploads(tmp_path, uploads(1))
        assert wait_for(lambda: writer.tally.events == 1, timeout=60)
    finally:
        stopped(writer, thread)


def test_a_whole_batch_is_stored_without_waiting(tmp_path):
    writer, thread = running(tmp_path, gather_s=600)
    try:
        queue_uploads(tmp_path, uploads(1))
        time.sleep(0.5)
        assert writer.tally.events == 0
        queue_uploads(tmp_path, uploads(2, first=1))  # now batch_uploads (3) are waiting
        assert wait_for(lambda: writer.tally.events == 3, timeout=60)  # far less than 600 s
    finally:
        stopped(writer, thread)


def test_once_does_not_gather(tmp_path):
    queue_uploads(tmp_path, uploads(1))
    settings = settings_for(tmp_path, batch_uploads=3, gather_s=600)
    started = time.monotonic()
    assert Writer(settings, load_registry()).run(once=True).events == 1
    assert time.monotonic() - started < 300  # it did not wait out gather_s
