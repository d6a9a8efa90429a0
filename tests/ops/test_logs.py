"""Logs an operator can keep: one file shared by the services survives an external rotation,
SIGHUP reopens it (and the receiver re-reads its station list), the writer says that it
started and what each batch did, and the receiver, writer and config-server all survive a
SIGHUP."""

import datetime
import logging
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from hisparc_datastore.cli import main
from hisparc_datastore.codec.decoding import Upload
from hisparc_datastore.config import load_settings
from hisparc_datastore.ops.logsetup import configure_logging
from hisparc_datastore.testing.helpers import event, queue_uploads, wait_for
from hisparc_datastore.testing.serveprocess import ServeProcess

DATASTORE = Path(sys.executable).with_name("datastore")


def write_config(tmp_path, loglevel="info", extra=""):
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "station_list.csv").write_text("501,amsterdam,pw\n")
    config = tmp_path / "config.ini"
    config.write_text(
        f"[General]\nlog={tmp_path}/log/datastore.log\nloglevel={loglevel}\n"
        f"station_list={tmp_path}/station_list.csv\ndata_dir={tmp_path}/data\nminimum_year=2000\n"
        f"[Writer]\nfsync=false\nprepare_process=false\n{extra}")
    return config


def test_lines_after_an_external_rotation_go_to_the_new_file_not_the_renamed_one(tmp_path):
    """logrotate renames the file; the next line must land in a new file at the path (the
    daily rotating handler kept writing into the renamed one, and three processes each
    rotating one shared file lost 4 of 6 lines)."""
    configure_logging(load_settings(write_config(tmp_path)), also_stderr=False)
    path = tmp_path / "log" / "datastore.log"
    logging.getLogger("test").info("before rotation")
    os.rename(path, path.with_name("datastore.log.1"))
    logging.getLogger("test").info("after rotation")
    assert "before rotation" in path.with_name("datastore.log.1").read_text()
    assert "after rotation" in path.read_text()
    assert "after rotation" not in path.with_name("datastore.log.1").read_text()


def test_sighup_reopens_the_log_and_rereads_the_station_list_and_serve_goes_on(tmp_path):
    config = write_config(tmp_path)
    path = tmp_path / "log" / "datastore.log"
    server = ServeProcess(config, log=tmp_path / "serve.stderr").wait_ready()
    try:
        assert wait_for(lambda: path.exists() and "1 station(s)" in path.read_text())
        os.rename(path, path.with_name("datastore.log.1"))
        (tmp_path / "station_list.csv").write_text("501,amsterdam,pw\n502,utrecht,pw2\n")
        os.kill(server.pid, signal.SIGHUP)
        assert wait_for(lambda: path.exists() and "2 station(s)" in path.read_text()), \
            (tmp_path / "serve.stderr").read_text()
        assert server.process.poll() is None  # not killed (it was: rc 129)
        with urllib.request.urlopen(server.url + "metrics", timeout=30) as reply:
            assert reply.status == 200
    finally:
        assert server.stop() == 0
    text = path.read_text()
    assert "SIGHUP: log reopened" in text
    assert "receiver stopped" in text
    assert "receiver stopped" not in path.with_name("datastore.log.1").read_text()


def test_the_writer_logs_its_start_and_one_line_per_batch(tmp_path):
    """At loglevel=debug the writer logged nothing per batch, not even that it started."""
    config = write_config(tmp_path, loglevel="debug", extra="batch_uploads=2\n")
    moment = datetime.datetime(2017, 2, 26, 7, 26, 4)
    queue_uploads(tmp_path / "data", [
        Upload(501, "amsterdam", [event("CIC", moment, {"PH1": 1}, nanoseconds=n)]) for n in range(3)])
    assert main(["writer", str(config), "--once", "--quiet"]) == 0
    text = (tmp_path / "log" / "datastore.log").read_text()
    started = [line for line in text.splitlines() if "writer started:" in line]
    assert len(started) == 1, text
    assert "hisparc-datastore 0.1.0" in started[0]
    assert "hisparc-datastore-hisparc" in started[0] and "hisparc-datastore-weather" in started[0]
    assert f"data_dir {tmp_path}/data; 3 waiting in incoming/" in started[0]
    batches = [line.split("batch stored: ", 1)[1] for line in text.splitlines() if "batch stored:" in line]
    assert [b.split(" in ")[0] for b in batches] == ["2 uploads, 2 events", "1 uploads, 1 events"], text
    assert all(b.endswith("left in incoming/") for b in batches)
    assert batches[-1].endswith("; 0 left in incoming/")
    committed = [line.split("committed: ", 1)[1] for line in text.splitlines() if "committed:" in line]
    assert committed == ["2 uploads of 1 batches, 2 events", "1 uploads of 1 batches, 1 events"], text


@pytest.mark.parametrize("command", ["writer", "config-server"])
def test_sighup_reopens_the_writers_and_config_servers_log(tmp_path, command):
    config = write_config(tmp_path, extra="sleep=0.2\n")
    text = config.read_text().replace("[Writer]", "station_list_url=http://127.0.0.1:9/none\n[Writer]")
    config.write_text(text)
    path = tmp_path / "log" / "datastore.log"
    args = [str(DATASTORE), command, str(config), "--quiet"]
    if command == "config-server":
        args += ["--bind", "127.0.0.1:0"]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        ready = "writer started" if command == "writer" else "config server on"
        assert wait_for(lambda: path.exists() and ready in path.read_text()), process.stderr
        os.rename(path, path.with_name("datastore.log.1"))
        process.send_signal(signal.SIGHUP)
        assert wait_for(lambda: path.exists() and "SIGHUP: log reopened" in path.read_text())
        assert process.poll() is None
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, process.stderr.read()
