"""A receiver killed with SIGKILL at each step of queueing an upload: the station's retry is
answered 100 at once and the upload is queued exactly once; nothing half-written stays in
tmp/. Real ``datastore serve`` processes on loopback ports (DATASTORE_CRASH_AT, faults.py)."""

import datetime
import hashlib
import os
import pickle
import signal
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest

from hisparc_datastore.codec.decoding import Upload, parse_event_list, parse_queue_file
from hisparc_datastore.plugin.registry import load_registry
from hisparc_datastore.queue.folders import QUEUE_DIRS
from hisparc_datastore.sim.stationclient import NO_REPLY, post_once
from hisparc_datastore.sim.summary import day_files
from hisparc_datastore.storage.contents import read_contents
from hisparc_datastore.testing.helpers import event, store
from hisparc_datastore.testing.serveprocess import ServeProcess

# Each step of a request, in order; the kill falls after the step named.
POINTS = [
    "receiver-claimed",      # claim recorded, nothing written
    "receiver-tmp-half",     # half the queue file written into tmp/
    "receiver-tmp-durable",  # whole and fsynced in tmp/, claim not yet committing
    "receiver-committing",   # claim says committing, not yet renamed
    "receiver-renamed",      # in incoming/, directory not yet fsynced
    "receiver-queued",       # durable in incoming/, not yet remembered (the lost-memory bug)
    "receiver-remembered",   # remembered, not yet answered
]
QUEUED = {"receiver-renamed", "receiver-queued", "receiver-remembered"}
LEAVES_TMP = {"receiver-tmp-half", "receiver-tmp-durable", "receiver-committing"}


def write_config(tmp_path: Path, archive_days: int = 14) -> Path:
    (tmp_path / "stations.csv").write_text("99,amsterdam,fake_station\n")
    (tmp_path / "data").mkdir(exist_ok=True)  # no service creates data_dir
    config = tmp_path / "config.ini"
    config.write_text(
        f"[General]\nlog={tmp_path}/log/datastore.log\nloglevel=info\n"
        f"station_list={tmp_path}/stations.csv\ndata_dir={tmp_path}/data\nminimum_year=2016\n"
        f"[Writer]\narchive_days={archive_days}\n")
    return config


def upload_bytes(events: int = 20) -> bytes:
    moment = datetime.datetime(2024, 5, 6, 7, 0, 0)
    return pickle.dumps([event("SIN", moment + datetime.timedelta(seconds=n), {"MAS_CH1_LOW": n})
                         for n in range(events)], protocol=2)


def form(payload: bytes) -> bytes:
    return urllib.parse.urlencode({"station_id": "99", "password": "fake_station",
                                   "data": payload.decode("latin-1"),
                                   "checksum": hashlib.md5(payload).hexdigest()}).encode("ascii")


def queue_files(data_dir: Path) -> dict[str, list[str]]:
    """Every file under each queue directory (archive walked), by directory."""
    return {name: sorted(p.name for p in (data_dir / name).rglob("*") if p.is_file())
            for name in QUEUE_DIRS}


@pytest.fixture
def serve():
    started: list[ServeProcess] = []

    def start(config: Path, crash_at: str | None = None) -> ServeProcess:
        started.append(ServeProcess(config, crash_at=crash_at).wait_ready())
        return started[-1]

    yield start
    for process in started:
        process.stop()


def killed_while_posting(serve, config: Path, point: str, body: bytes) -> ServeProcess:
    doomed = serve(config, crash_at=point)
    assert post_once(doomed.url, body, timeout=120) == NO_REPLY
    assert doomed.wait() == -signal.SIGKILL
    return doomed


@pytest.mark.parametrize("point", POINTS)
def test_killed_at_a_step_then_restarted_the_retry_is_answered_100_and_queued_once(
        tmp_path, serve, point):
    config, data = write_config(tmp_path), tmp_path / "data"
    payload = upload_bytes()
    body = form(payload)
    killed_while_posting(serve, config, point, body)
    left = queue_files(data)
    assert len(left["incoming"]) == (1 if point in QUEUED else 0)
    assert len(left["tmp"]) == (1 if point in LEAVES_TMP else 0)

    server = serve(config)  # its start-up settles the dead claim and removes the tmp file
    assert queue_files(data)["tmp"] == []
    assert post_once(server.url, body, timeout=120) == "100"
    assert post_once(server.url, body, timeout=120) == "100"  # a late retry: still once
    files = queue_files(data)
    assert files["tmp"] == [] and files["quarantine"] == [] and files["suspicious"] == []
    [name] = files["incoming"]
    if point in QUEUED:
        assert name == left["incoming"][0]  # the file the killed receiver queued, not a copy
    assert parse_queue_file((data / "incoming" / name).read_bytes()).event_list == parse_event_list(payload)


@pytest.mark.parametrize("point", ["receiver-tmp-durable", "receiver-committing", "receiver-queued"])
def test_a_claim_of_a_dead_process_is_settled_at_once_by_a_live_receiver(tmp_path, serve, point):
    """Two receivers share the data_dir; one dies mid-request and is not restarted. The
    station's retry to the other is answered 100 at the first try, not 205 for two minutes."""
    config, data = write_config(tmp_path), tmp_path / "data"
    survivor = serve(config)
    body = form(upload_bytes())
    killed_while_posting(serve, config, point, body)
    assert post_once(survivor.url, body, timeout=120) == "100"
    files = queue_files(data)
    assert len(files["incoming"]) == 1
    assert files["tmp"] == []  # the dead request's half is gone with its claim


def test_a_retry_after_the_writer_stored_the_upload_and_the_archive_is_off_is_not_stored_again(
        tmp_path, serve, testdata):
    config, data = write_config(tmp_path, archive_days=0), tmp_path / "data"
    payload = upload_bytes()
    body = form(payload)
    killed_while_posting(serve, config, "receiver-queued", body)
    drain = [sys.executable, "-m", "hisparc_datastore.cli", "writer", str(config), "--once", "--quiet"]
    env = {k: v for k, v in os.environ.items() if k != "DATASTORE_CRASH_AT"}
    assert subprocess.run(drain, env=env, capture_output=True, timeout=300).returncode == 0
    assert all(files == [] for files in queue_files(data).values())  # nothing left to find

    server = serve(config)
    assert post_once(server.url, body, timeout=120) == "100"
    assert queue_files(data)["incoming"] == []
    assert subprocess.run(drain, env=env, capture_output=True, timeout=300).returncode == 0

    registry = load_registry()
    reference_dir = tmp_path / "reference"
    store(reference_dir, [Upload(99, "amsterdam", parse_event_list(payload))], minimum_year=2016)
    [stored], [expected] = day_files(data), day_files(reference_dir)
    assert read_contents(stored, registry) == read_contents(expected, registry)
