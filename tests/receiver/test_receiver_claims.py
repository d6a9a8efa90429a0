"""Claims of receiver processes that died are settled by where their file is; tmp/ files of
dead processes are removed, those of live ones kept."""

import datetime
import errno
import os
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from hisparc_datastore.codec.decoding import Upload
from hisparc_datastore.receiver import owner as owners
from hisparc_datastore.receiver.claims import DUPLICATE, IN_FLIGHT, NEW, Dedup
from hisparc_datastore.receiver.spool import Spool
from hisparc_datastore.testing.helpers import event


@pytest.fixture(scope="module")
def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def claiming_as_dead_process(path, pid: int) -> Dedup:
    """A duplicate memory whose claims are those of a process that has since exited."""
    return Dedup(path, 24, owner=owners.Owner(owners.current().host, owners.boot_id(), pid, 12345))


def test_this_process_is_alive_and_an_exited_one_or_another_boot_is_not(dead_pid):
    me = owners.current()
    assert owners.is_alive(me) is True
    assert owners.Owner.parse(me.token) == me
    assert owners.is_alive(owners.Owner(me.host, me.boot, dead_pid, me.start)) is False
    assert owners.is_alive(owners.Owner(me.host, "another-boot", me.pid, me.start)) is False
    assert owners.is_alive(owners.Owner(me.host, me.boot, me.pid, me.start + 1)) is False  # pid reused
    assert owners.is_alive(owners.Owner("elsewhere", me.boot, me.pid, me.start)) is None
    assert owners.Owner.parse("") is None


@pytest.mark.parametrize("committing, tmp_left, verdict", [
    (False, True, NEW),         # died writing tmp/: nothing queued, taken over
    (True, True, NEW),          # died before the rename: nothing queued, taken over
    (True, False, DUPLICATE),   # died after the rename: queued, remembered, not queued again
])
def test_a_claim_of_a_dead_process_is_settled_at_once(tmp_path, dead_pid, committing, tmp_left, verdict):
    (tmp_path / "tmp").mkdir()
    dead = claiming_as_dead_process(tmp_path / "r.sqlite", dead_pid)
    assert dead.claim(99, "abc", "n1", now=1000.0) == NEW
    if committing:
        assert dead.commit(99, "abc", "n1")
    if tmp_left:
        (tmp_path / "tmp" / "n1").write_bytes(b"half")

    live = Dedup(tmp_path / "r.sqlite", 24)
    assert live.claim(99, "abc", "n2", now=1001.0) == verdict  # a second later, not 120 s
    assert not (tmp_path / "tmp" / "n1").exists()  # the dead request's file is gone either way
    assert live.seen(99, "abc", now=1002.0) == (verdict == DUPLICATE)


def test_a_live_claim_is_in_flight_until_its_time_out_and_then_cannot_commit(tmp_path):
    first, second = Dedup(tmp_path / "r.sqlite", 24), Dedup(tmp_path / "r.sqlite", 24)
    assert first.claim(99, "abc", "n1", now=1000.0) == NEW
    assert second.claim(99, "abc", "n2", now=1060.0) == IN_FLIGHT
    assert second.claim(99, "abc", "n2", now=1200.0) == NEW  # hung for 200 s: taken over
    assert not first.commit(99, "abc", "n1")  # the slow request must not queue it too
    first.forget(99, "abc", "n1")  # and its clean-up leaves the new claim alone
    assert first.claim(99, "abc", "n3", now=1201.0) == IN_FLIGHT
    assert second.commit(99, "abc", "n2")


def test_a_committing_claim_of_a_live_process_never_times_out_while_its_file_is_in_tmp(tmp_path):
    (tmp_path / "tmp").mkdir()
    memory = Dedup(tmp_path / "r.sqlite", 24)
    assert memory.claim(99, "abc", "n1", now=1000.0) == NEW
    assert memory.commit(99, "abc", "n1")
    (tmp_path / "tmp" / "n1").write_bytes(b"whole")
    assert memory.claim(99, "abc", "n2", now=5000.0) == IN_FLIGHT
    (tmp_path / "tmp" / "n1").unlink()  # renamed into incoming/
    assert memory.claim(99, "abc", "n2", now=5001.0) == DUPLICATE


def test_start_up_settles_every_dead_claim(tmp_path, dead_pid):
    (tmp_path / "tmp").mkdir()
    dead = claiming_as_dead_process(tmp_path / "r.sqlite", dead_pid)
    for checksum in ("queued", "renaming", "writing"):
        assert dead.claim(99, checksum, checksum, now=time.time()) == NEW
    dead.commit(99, "queued", "queued")
    dead.commit(99, "renaming", "renaming")
    (tmp_path / "tmp" / "renaming").write_bytes(b"whole")
    (tmp_path / "tmp" / "writing").write_bytes(b"half")
    live = Dedup(tmp_path / "r.sqlite", 24)
    assert live.claim(99, "mine", "mine") == NEW
    assert live.settle_dead() == (1, 2)
    assert live.seen(99, "queued") and not live.seen(99, "renaming") and not live.seen(99, "writing")
    assert os.listdir(tmp_path / "tmp") == []
    assert live.claim(99, "mine", "again") == IN_FLIGHT  # a live claim is left alone


def test_a_database_of_the_first_release_gains_the_claim_columns(tmp_path):
    db = sqlite3.connect(tmp_path / "r.sqlite")
    db.executescript("CREATE TABLE accepted (station_id INTEGER NOT NULL, checksum TEXT NOT NULL, "
                     "accepted_at REAL NOT NULL, durable INTEGER NOT NULL DEFAULT 1, "
                     "PRIMARY KEY (station_id, checksum)) WITHOUT ROWID;"
                     "INSERT INTO accepted VALUES (99, 'old', 1000.0, 1);")
    db.close()
    memory = Dedup(tmp_path / "r.sqlite", 24)
    assert memory.claim(99, "old", "n", now=1001.0) == DUPLICATE
    assert memory.claim(99, "new", "n", now=1001.0) == NEW
    assert memory.commit(99, "new", "n")


def test_tmp_files_of_dead_processes_are_removed_and_those_of_live_ones_kept(tmp_path, dead_pid):
    spool = Spool(tmp_path, fsync=False)
    tmp = spool.queue.tmp
    live = spool.unique_name(99, "0123456789abcdef")  # this process, now: being written
    (tmp / live).write_bytes(b"being written")
    (tmp / f"{time.time_ns()}-{dead_pid}-0-99-01234567").write_bytes(b"half")
    (tmp / f"{10**18}-1-0-99-01234567").write_bytes(b"named in 2001 by a pid now reused")
    (tmp / "not-ours").write_bytes(b"young, writer unknown")
    released = []
    assert spool.remove_dead_tmp(lambda name: released.append(name) or True) == 2
    assert sorted(os.listdir(tmp)) == sorted([live, "not-ours"])
    assert len(released) == 2 and live not in released


def test_a_tmp_file_whose_claim_cannot_be_dropped_is_kept(tmp_path, dead_pid):
    spool = Spool(tmp_path, fsync=False)
    name = f"{time.time_ns()}-{dead_pid}-0-99-01234567"
    (spool.queue.tmp / name).write_bytes(b"whole")
    assert spool.remove_dead_tmp(lambda name: False) == 0
    assert os.listdir(spool.queue.tmp) == [name]



def failing_directory_fsync(monkeypatch, meanwhile=lambda: None):
    """The fsync of the queue directory fails (that of tmp/, made before, succeeds)."""
    from hisparc_datastore.receiver import spool as spool_module

    real = spool_module.fsync_dir

    def fsync_dir(directory):
        if Path(directory).name == "tmp":
            return real(directory)
        meanwhile()
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(spool_module, "fsync_dir", fsync_dir)


def store_claimed(spool: Spool, memory: Dedup, name: str):
    upload = Upload(99, "amsterdam", [event("SIN", datetime.datetime(2024, 5, 6), {})])
    assert memory.claim(99, "abc", name) == NEW
    return spool.store(upload, name, commit=lambda: memory.commit(99, "abc", name),
                       release=lambda: memory.forget(99, "abc", name))


def test_a_failed_directory_fsync_takes_the_file_back_and_the_retry_is_queued(tmp_path, monkeypatch):
    spool = Spool(tmp_path, fsync=True)
    memory = Dedup(tmp_path / "r.sqlite", 24, spool.queue.tmp)
    failing_directory_fsync(monkeypatch)
    with pytest.raises(OSError):
        store_claimed(spool, memory, "n1")
    assert os.listdir(spool.queue.incoming) == [] and os.listdir(spool.queue.tmp) == []
    assert memory.claim(99, "abc", "n2") == NEW  # the station's retry (205 heard) is taken


def test_a_failed_directory_fsync_keeps_the_file_queued_when_a_retry_was_told_it_is(
        tmp_path, monkeypatch):
    spool = Spool(tmp_path, fsync=True)
    memory = Dedup(tmp_path / "r.sqlite", 24, spool.queue.tmp)
    verdicts = []
    # a retry of the same bytes meets the committing claim while the file is out of tmp/
    failing_directory_fsync(monkeypatch, lambda: verdicts.append(memory.claim(99, "abc", "retry")))
    path = store_claimed(spool, memory, "n1")
    assert verdicts == [DUPLICATE]  # that retry heard 100, so the file must stay queued
    assert os.listdir(spool.queue.incoming) == ["n1"] == [path.name]
    assert os.listdir(spool.queue.tmp) == [] and memory.seen(99, "abc")
