"""``datastore status`` and the writer's metrics, against a real writer process."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from hisparc_datastore.codec.decoding import Upload, parse_event_list
from hisparc_datastore.config import load_settings
from hisparc_datastore.receiver.app import build_app
from hisparc_datastore.receiver.server import ServerThread
from hisparc_datastore.testing.helpers import queue_uploads, settings_for, wait_for
from hisparc_datastore.writer.lock import WriterLock
from hisparc_datastore.writer.state import read_state

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_config(tmp_path: Path, extra: str = "", receiver_port: int | None = None) -> Path:
    """A config.ini whose receiver is at ``receiver_port`` (default: a port nobody serves)."""
    (tmp_path / "stations.csv").write_text("510,amsterdam,pw510\n511,amsterdam,pw511\n")
    (tmp_path / "data").mkdir(exist_ok=True)  # no service creates data_dir
    config = tmp_path / "config.ini"
    config.write_text(
        f"[General]\nlog={tmp_path}/log/writer.log\nloglevel=info\nstation_list={tmp_path}/stations.csv\n"
        f"data_dir={tmp_path}/data\nminimum_year=2016\n[Writer]\nsleep=0.2\nfsync=false\n{extra}"
        f"[Receiver]\nreceiver_bind=127.0.0.1:{receiver_port or free_port()}\n")
    return config


@contextlib.contextmanager
def receiver(config: Path):
    """A real receiver at the config's receiver_bind."""
    settings = load_settings(config)
    port = int(settings.receiver_bind.rsplit(":", 1)[1])
    with ServerThread(build_app(settings), port=port) as server:
        yield server


@pytest.fixture
def serve_receiver():
    """``serve_receiver(config)`` runs a receiver for the config until the test ends."""
    with contextlib.ExitStack() as stack:
        yield lambda config: stack.enter_context(receiver(config))


def status(config: Path) -> tuple[int, dict]:
    done = subprocess.run([BIN / "datastore", "status", str(config), "--json"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


def scrape(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=30) as reply:
        assert reply.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = reply.read().decode()
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line and not line.startswith("#")}


def test_a_stopped_writer_is_unhealthy_with_exit_1(tmp_path, testdata):
    config = write_config(tmp_path)
    events = parse_event_list((testdata / "uploads/py2_s510_100events").read_bytes())
    [path] = queue_uploads(tmp_path / "data", [Upload(510, "Amsterdam", events)])
    os.utime(path, (time.time() - 100,) * 2)
    # left behind by a killed writer: the file is there, the lock is not
    (tmp_path / "data/writer.lock").write_text("pid 1 on gone since 2020-01-01T00:00:00+00:00\n")
    code, report = status(config)
    assert code == 1
    assert report["writer_running"] is False and report["healthy"] is False
    assert report["queue"] == {"incoming": 1, "partial": 0, "suspicious": 0, "quarantine": 0}
    assert report["queue_bytes"]["incoming"] == path.stat().st_size
    assert 99 <= report["oldest_incoming_age_s"] < 300
    receiver_at = load_settings(config).receiver_bind
    assert report["problems"] == [f"no writer is running on {tmp_path / 'data'}",
                                  f"receiver at {receiver_at}: does not answer: Connection refused"]
    assert report["services"]["receiver"]["up"] is False
    assert report["last_batch_at"] is None
    assert [s["number"] for s in report["stations"]] == [510, 511]
    assert all(s["quiet"] for s in report["stations"])

    text = subprocess.run([BIN / "datastore", "status", str(config)], capture_output=True, text=True,
                          timeout=120)
    assert text.returncode == 1
    assert "UNHEALTHY" in text.stdout and "writer     NOT RUNNING" in text.stdout


def test_a_running_writer_is_healthy_and_its_metrics_and_state_tell_what_it_stored(
        tmp_path, testdata, serve_receiver):
    port = free_port()
    config = write_config(tmp_path, f"metrics_bind=127.0.0.1:{port}\n")
    serve_receiver(config)
    writer = subprocess.Popen([BIN / "datastore", "writer", str(config), "--quiet"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: (tmp_path / "data/writer.lock").exists()
                        and f"pid {writer.pid}" in (tmp_path / "data/writer.lock").read_text())
        events = parse_event_list((testdata / "uploads/py2_s510_100events").read_bytes())
        queue_uploads(tmp_path / "data", [Upload(510, "Amsterdam", events)])
        assert wait_for(lambda: read_state(tmp_path / "data").get("batches") == 1)

        code, report = status(config)
        assert code == 0, report["problems"]
        assert report["writer_running"] is True and report["writer"]["pid"] == writer.pid
        assert report["queue"] == {"incoming": 0, "partial": 0, "suspicious": 0, "quarantine": 0}
        assert report["oldest_incoming_age_s"] is None
        assert report["events_last_hour"] == {"CIC": 36, "SIN": 64}
        assert report["last_batch_age_s"] < 3600
        by_number = {s["number"]: s for s in report["stations"]}
        assert by_number[510]["last_stored"] is not None and by_number[510]["quiet"] is False
        assert by_number[511]["last_stored"] is None and by_number[511]["quiet"] is True
        assert report["quiet_stations"] == [511]
        assert report["archive_files"] == 1 and report["disk_free_bytes"] > 0

        metrics = scrape(f"http://127.0.0.1:{port}/metrics")
        assert metrics['datastore_writer_events_stored_total{type="CIC"}'] == 36
        assert metrics['datastore_writer_events_stored_total{type="SIN"}'] == 64
        assert metrics["datastore_writer_uploads_stored_total"] == 1
        assert metrics["datastore_writer_batches_total"] == 1
        assert metrics["datastore_writer_storage_errors_total"] == 0
        assert metrics["datastore_writer_quarantined_files_total"] == 0
        assert metrics['datastore_writer_queue_files{folder="incoming"}'] == 0
        assert 0 <= time.time() - metrics["datastore_writer_last_batch_timestamp_seconds"] < 3600

        # an upload that cannot be read is quarantined, and counted
        (tmp_path / "data/incoming/garbage-510").write_bytes(b"not a pickle")
        assert wait_for(lambda: scrape(f"http://127.0.0.1:{port}/metrics")
                        ["datastore_writer_quarantined_files_total"] == 1)
        quarantine = 'datastore_writer_queue_files{folder="quarantine"}'
        assert scrape(f"http://127.0.0.1:{port}/metrics")[quarantine] == 1
    finally:
        writer.send_signal(signal.SIGTERM)
        assert writer.wait(timeout=60) == 0, writer.stderr.read()
    code, report = status(config)
    assert code == 1 and report["writer_running"] is False
    assert report["events_last_hour"] == {"CIC": 36, "SIN": 64}  # the state outlives the writer


def test_an_upload_waiting_longer_than_max_lag_is_unhealthy(tmp_path, testdata, serve_receiver):
    config = write_config(tmp_path, "max_lag_s=60\n")
    serve_receiver(config)
    events = parse_event_list((testdata / "uploads/py3event").read_bytes())
    [path] = queue_uploads(tmp_path / "data", [Upload(510, "Amsterdam", events)])
    with WriterLock(tmp_path / "data"):  # a writer holds the lock (stuck, say) but drains nothing
        os.utime(path, (time.time() - 30,) * 2)
        code, report = status(config)
        assert code == 0 and report["writer_running"] is True
        assert report["writer"]["pid"] == os.getpid()
        os.utime(path, (time.time() - 120,) * 2)
        code, report = status(config)
        assert code == 1
        assert report["problems"] == [report["problems"][0]]
        assert "more than [Writer] max_lag_s = 60" in report["problems"][0]


def test_the_state_carries_stations_over_a_restart_of_the_writer(tmp_path, testdata):
    from hisparc_datastore.plugin.registry import load_registry
    from hisparc_datastore.writer.service import Writer

    events = parse_event_list((testdata / "uploads/py2_s510_100events").read_bytes())
    queue_uploads(tmp_path, [Upload(510, "Amsterdam", events)])
    Writer(settings_for(tmp_path), load_registry()).run(once=True)
    first = read_state(tmp_path)["stations"]["510"]
    assert first["events_stored"] == 100
    queue_uploads(tmp_path, [Upload(511, "Amsterdam", events)])
    Writer(settings_for(tmp_path), load_registry()).run(once=True)
    state = read_state(tmp_path)
    assert state["stations"]["510"] == first
    assert state["stations"]["511"]["events_stored"] == 100
    assert sum(sum(c.values()) for _, c in state["recent"]) == 200


@pytest.mark.parametrize("isatty", [False, True])
def test_progress_is_drawn_on_a_terminal_only(isatty):
    import io

    from hisparc_datastore.ops.progress import Progress

    class Stream(io.StringIO):
        def isatty(self):
            return isatty

    stream = Stream()
    with Progress(lambda: "stored 5 events", stream=stream, interval=0.01):
        # drawn within seconds on a terminal; never anywhere else
        drawn = wait_for(lambda: "stored 5 events" in stream.getvalue(), timeout=10 if isatty else 0.5)
        assert drawn is isatty
    assert stream.getvalue().endswith("\r\x1b[K") if isatty else stream.getvalue() == ""
