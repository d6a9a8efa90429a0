"""A full disk must not leave the receiver's claims hanging: once space returns, the
station's retry is queued at once, not answered 205 until the claim times out (120 s).
A real tmpfs as data_dir, filled to the last byte; needs root to mount it."""

import datetime
import errno
import hashlib
import os
import pickle
import sqlite3
import urllib.parse
import urllib.request

import pytest

from hisparc_datastore.config import load_settings
from hisparc_datastore.queue.folders import DB_NAME
from hisparc_datastore.receiver.app import build_app
from hisparc_datastore.receiver.server import ServerThread
from hisparc_datastore.testing.helpers import event


@pytest.fixture
def small_disk(tmpfs):
    return tmpfs(4)


def fill(disk) -> None:
    """Write a filler file until the file system has no byte left."""
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        for size in (65536, 1):  # then the last partial block too
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)


def upload(n: int) -> dict:
    moment = datetime.datetime(2024, 5, 6, 7, 0, 0)
    payload = pickle.dumps([event("SIN", moment + datetime.timedelta(seconds=i), {"MAS_CH1_LOW": i + n})
                            for i in range(200)], protocol=2)
    return {"station_id": 99, "password": "pw99", "data": payload.decode("latin-1"),
            "checksum": hashlib.md5(payload).hexdigest()}


def post(url: str, form: dict) -> str:
    with urllib.request.urlopen(url, urllib.parse.urlencode(form).encode(), timeout=60) as reply:
        return reply.read().decode()


def test_a_claim_the_full_disk_kept_is_taken_over_by_the_retry_once_space_returns(tmp_path, small_disk):
    (tmp_path / "stations.csv").write_text("99,amsterdam,pw99\n")
    config = tmp_path / "config.ini"
    config.write_text(f"[General]\nlog=\nloglevel=info\nstation_list={tmp_path}/stations.csv\n"
                      f"data_dir={small_disk}/data\nminimum_year=2016\n"
                      # filled to the last byte on purpose: no reserve (test_reserve.py has one)
                      "[Receiver]\nreceiver_reserve_mb=0\n")
    app = build_app(load_settings(config))
    store = app.spool.store

    def store_on_a_full_disk(*args, **kwargs):
        fill(small_disk)  # the disk fills between the claim and the queue file
        return store(*args, **kwargs)

    with ServerThread(app) as server:
        assert post(server.url, upload(0)) == "100"
        app.spool.store = store_on_a_full_disk
        form = upload(1)
        assert post(server.url, form) == "205"
        with sqlite3.connect(small_disk / "data" / DB_NAME) as db:
            unsettled = db.execute("SELECT count(*) FROM accepted WHERE durable = 0").fetchone()[0]
        assert unsettled == 1, "the full disk let the claim be dropped: nothing to take over"

        app.spool.store = store
        (small_disk / "filler").unlink()  # space is back
        assert post(server.url, form) == "100"  # not "205 ... is being queued by another request"
        assert post(server.url, form) == "100"  # and a re-send is a duplicate
    assert len(os.listdir(small_disk / "data" / "incoming")) == 2
    assert os.listdir(small_disk / "data" / "tmp") == []


def test_an_abandoned_claim_is_taken_over_but_one_whose_file_was_queued_stays_a_duplicate(tmp_path):
    """The same rules without a real full disk (no root needed)."""
    from hisparc_datastore.receiver.claims import DUPLICATE, IN_FLIGHT, NEW, Dedup

    (tmp_path / "tmp").mkdir()
    memory = Dedup(tmp_path / DB_NAME, 24, tmp_path / "tmp")
    assert memory.claim(99, "a" * 32, "name-a") == NEW
    assert memory.claim(99, "a" * 32, "name-a2") == IN_FLIGHT  # its request is still running
    (tmp_path / "tmp" / "name-a").write_bytes(b"half")
    memory.abandon("name-a")  # its release failed; nothing was queued
    assert memory.claim(99, "a" * 32, "name-a3") == NEW
    assert not (tmp_path / "tmp" / "name-a").exists()

    assert memory.claim(99, "b" * 32, "name-b") == NEW
    assert memory.commit(99, "b" * 32, "name-b")  # renamed into the queue (no tmp/name-b)
    memory.abandon("name-b")
    assert memory.claim(99, "b" * 32, "name-b2") == DUPLICATE
