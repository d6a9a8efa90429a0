"""``datastore serve`` as a process: it receives uploads and stops cleanly on SIGTERM and SIGINT."""

import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from hisparc_datastore.cli import main
from hisparc_datastore.codec.decoding import Upload, parse_event_list, parse_queue_file

DATASTORE = Path(sys.executable).parent / "datastore"



def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_config(tmp_path: Path) -> Path:
    (tmp_path / "stations.csv").write_text("99,amsterdam,fake_station\n")
    (tmp_path / "data").mkdir(exist_ok=True)  # no service creates data_dir
    config = tmp_path / "config.ini"
    config.write_text(
        f"[General]\nlog={tmp_path}/log/receiver.log\nloglevel=info\n"
        f"station_list={tmp_path}/stations.csv\ndata_dir={tmp_path}/data\nminimum_year=2016\n"
    )
    return config


def wait_until_listening(port: int, process: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"datastore serve exited with {process.returncode}: {process.stderr.read()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    pytest.fail("datastore serve did not start listening")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_datastore_serve_receives_an_upload_and_stops_on_a_signal(tmp_path, testdata, signum):
    config = write_config(tmp_path)
    port = free_port()
    process = subprocess.Popen([DATASTORE, "serve", str(config), "--bind", f"127.0.0.1:{port}"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until_listening(port, process)
        payload = (testdata / "uploads/py3event").read_bytes()
        form = {"station_id": "99", "password": "fake_station", "data": payload.decode("latin-1"),
                "checksum": hashlib.md5(payload).hexdigest()}
        url = f"http://127.0.0.1:{port}/"
        with urllib.request.urlopen(url, urllib.parse.urlencode(form).encode(), timeout=10) as reply:
            assert reply.read() == b"100"
        process.send_signal(signum)
        assert process.wait(timeout=20) == 0, process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    [name] = os.listdir(tmp_path / "data/incoming")
    queued = parse_queue_file((tmp_path / "data/incoming" / name).read_bytes())
    assert queued == Upload(99, "amsterdam", parse_event_list(payload))
    assert os.listdir(tmp_path / "data/tmp") == []
    log = (tmp_path / "log/receiver.log").read_text()
    assert "station 99 from 127.0.0.1: 100" in log
    assert f"receiver stopped ({signum.name})" in log


def test_a_bad_configuration_is_reported_with_status_2(tmp_path, capsys):
    assert main(["serve", str(tmp_path / "missing.ini")]) == 2
    assert "datastore serve: cannot read configuration" in capsys.readouterr().err


def test_a_missing_station_list_is_reported_with_status_2(tmp_path, capsys):
    config = write_config(tmp_path)
    (tmp_path / "stations.csv").unlink()
    assert main(["serve", str(config), "--bind", "127.0.0.1:0"]) == 2
    assert "station_list" in capsys.readouterr().err


@pytest.mark.parametrize("bind", ["8080", "localhost:http", "127.0.0.1:70000"])
def test_a_bad_bind_address_is_reported_with_status_2(tmp_path, capsys, bind):
    assert main(["serve", str(write_config(tmp_path)), "--bind", bind]) == 2
    assert "--bind" in capsys.readouterr().err


def test_a_port_in_use_is_reported_with_status_2(tmp_path, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", str(write_config(tmp_path)), "--bind", f"127.0.0.1:{port}"]) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
