"""One log format for every service (issue 25, point 7): UTC in ISO 8601 with its offset
whatever the host's time zone, the same line from the receiver, the writer and the
config-server (no http.server line of its own), or one JSON object a line with
``[General] log_format = json``."""

import datetime
import hashlib
import http.server
import json
import os
import re
import subprocess
import sys
import threading
import urllib.parse
import urllib.request
import xmlrpc.client
from pathlib import Path

import pytest

from hisparc_datastore.testing.helpers import wait_for

from .test_monitoring import STATIONS, _PublicDB, deployed_config

DATASTORE = Path(sys.executable).with_name("datastore")
LINE = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00) (\d+) ([\w.]+) "
                  r"(DEBUG|INFO|WARNING|ERROR|CRITICAL): (.*)")


def run_services(tmp_path: Path, testdata: Path, log_format: str) -> tuple[str, datetime.datetime]:
    """Start the three services far from UTC, make each log, stop them; the log's text."""
    publicdb = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _PublicDB)
    threading.Thread(target=publicdb.serve_forever, daemon=True).start()
    config, ports = deployed_config(tmp_path, f"http://127.0.0.1:{publicdb.server_address[1]}/config")
    config.write_text(config.read_text().replace("[General]\n", f"[General]\nlog_format = {log_format}\n"))
    environment = {**os.environ, "TZ": "America/Caracas"}  # UTC-4: a local time would show
    started = datetime.datetime.now(datetime.timezone.utc)
    services = [subprocess.Popen([DATASTORE, command, str(config), "--quiet"], env=environment,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                for command in ("writer", "serve", "config-server")]
    log = tmp_path / "log/datastore.log"
    try:
        for ready in ("writer started", "receiving uploads on", "config server on"):
            assert wait_for(lambda ready=ready: log.exists() and ready in log.read_text(), 120)
        payload = (testdata / "uploads/py3event").read_bytes()
        form = {"station_id": "99", "password": "fake_station", "data": payload.decode("latin-1"),
                "checksum": hashlib.md5(payload).hexdigest()}
        receiver = f"http://127.0.0.1:{ports['receiver']}/"
        body = urllib.parse.urlencode(form).encode()
        assert urllib.request.urlopen(receiver, body, timeout=60).read() == b"100"
        assert xmlrpc.client.ServerProxy(f"http://127.0.0.1:{ports['config-server']}/RPC2").reload_datastore()
        assert wait_for(lambda: "batch stored: 1 uploads" in log.read_text(), 120)
    finally:
        for service in services:
            service.terminate()
        for service in services:
            service.wait(120)
        publicdb.shutdown()
        publicdb.server_close()
    assert STATIONS
    return log.read_text(), started


def test_every_service_logs_one_line_format_in_utc_with_its_offset(tmp_path, testdata):
    text, started = run_services(tmp_path, testdata, "text")
    lines = text.splitlines()
    assert lines and [line for line in lines if not LINE.fullmatch(line)] == []
    loggers = {LINE.fullmatch(line)[3] for line in lines}
    assert {"hisparc_datastore.receiver.app", "hisparc_datastore.writer.service",
            "hisparc_datastore.stations.configserver"} <= loggers
    first = datetime.datetime.fromisoformat(LINE.fullmatch(lines[0])[1])
    assert abs((first - started).total_seconds()) < 120  # UTC, not Caracas' time
    # the config-server's request in our format, not http.server's '"POST /RPC2 HTTP/1.1" 200 -'
    assert any(line.endswith("127.0.0.1 POST '/RPC2': HTTP 200") for line in lines)
    assert "HTTP/1.1" not in text


def test_json_log_format_gives_one_object_a_line(tmp_path, testdata):
    text, started = run_services(tmp_path, testdata, "json")
    entries = [json.loads(line) for line in text.splitlines()]
    assert entries and all(set(e) >= {"time", "pid", "logger", "level", "message"} for e in entries)
    assert all(e["time"].endswith("+00:00") for e in entries)
    assert any(e["logger"] == "hisparc_datastore.writer.service" and e["message"].startswith("batch stored")
               for e in entries)
    assert abs((datetime.datetime.fromisoformat(entries[0]["time"]) - started).total_seconds()) < 120


def test_an_unknown_log_format_is_refused_naming_the_setting(tmp_path):
    from hisparc_datastore.config import ConfigError, load_settings

    config = tmp_path / "config.ini"
    config.write_text("[General]\nstation_list=s.csv\ndata_dir=/d\nlog_format=xml\n")
    with pytest.raises(ConfigError, match=r"\[General\] log_format: 'xml': use text or json"):
        load_settings(config)
