"""Configuration that refuses mistakes at start and in ``status``, ``datastore init`` and
``datastore check`` (issue 18, item 1)."""

import http.server
import json
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from hisparc_datastore.cli import main
from hisparc_datastore.config import load_settings
from hisparc_datastore.receiver.app import build_app
from hisparc_datastore.receiver.server import ServerThread
from hisparc_datastore.stations.configserver import make_config_server
from hisparc_datastore.testing.helpers import wait_for

STATIONS = "501,amsterdam,pw501\n502,utrecht,pw502\n"


def write_config(tmp_path: Path, extra: str = "", data_dir: Path | None = None,
                 station_list: Path | None = None) -> Path:
    """A config.ini in ``tmp_path``; without ``station_list`` its own list of two stations."""
    data_dir = data_dir or tmp_path / "data"
    if station_list is None:
        station_list = tmp_path / "stations.csv"
        station_list.write_text(STATIONS)
        station_list.chmod(0o640)  # it holds the passwords: check refuses one any user may read
    config = tmp_path / "config.ini"
    config.write_text(f"[General]\nlog=\nloglevel=info\nstation_list={station_list}\ndata_dir={data_dir}\n"
                      f"minimum_year=2016\n[Writer]\nsleep=0.2\nfsync=false\n{extra}")
    return config


def run(*argv: str) -> tuple[int, str, str]:
    done = subprocess.run([sys.executable, "-m", "hisparc_datastore.cli", *map(str, argv)],
                          capture_output=True, text=True, timeout=300)
    return done.returncode, done.stdout, done.stderr


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- data_dir is never created by a service ------------------------------------------------------


@pytest.mark.parametrize("command", [["writer", "--once"], ["serve", "--bind", "127.0.0.1:0"],
                                     ["quarantine"], ["requeue", "x"], ["rebuild", "2024-01-01"]])
def test_a_mistyped_data_dir_is_refused_and_not_created(tmp_path, command):
    config = write_config(tmp_path, data_dir=tmp_path / "dta")
    rc, out, err = run(command[0], config, *command[1:])
    assert rc == 2, err
    assert f"{config} [General] data_dir: '{tmp_path / 'dta'}': does not exist" in err
    assert f"datastore init {config}" in err and "Traceback" not in err
    assert not (tmp_path / "dta").exists()


def test_init_creates_data_dir_and_its_folders_then_the_writer_runs(tmp_path):
    config = write_config(tmp_path, data_dir=tmp_path / "srv" / "data")
    assert main(["init", str(config)]) == 0
    data_dir = tmp_path / "srv" / "data"
    assert sorted(p.name for p in data_dir.iterdir()) == [
        "archive", "incoming", "partial", "quarantine", "suspicious", "tmp"]
    assert main(["writer", str(config), "--once"]) == 0
    # a second init changes nothing and passes
    assert main(["init", str(config)]) == 0


def test_quarantine_reads_only_and_creates_no_folder(tmp_path, capsys):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    assert main(["quarantine", str(write_config(tmp_path))]) == 0
    assert "0 quarantined file(s)" in capsys.readouterr().out
    assert list(data_dir.iterdir()) == []


# -- errors at start: one line, exit 2 -----------------------------------------------------------


@pytest.mark.parametrize("command", [["writer", "--once"], ["serve", "--bind", "127.0.0.1:0"],
                                     ["status"], ["quarantine"], ["check"], ["config-server"]])
def test_minimum_year_out_of_range_is_one_line_in_every_command(tmp_path, command):
    (tmp_path / "data").mkdir()
    config = write_config(tmp_path).read_text().replace("minimum_year=2016", "minimum_year=20201")
    (tmp_path / "config.ini").write_text(config)
    rc, out, err = run(command[0], tmp_path / "config.ini", *command[1:])
    assert rc == 2
    assert err.strip().splitlines() == [
        f"datastore {command[0]}: {tmp_path / 'config.ini'} [General] minimum_year: '20201': "
        f"must be at least 1970 and at most {err.split('at most ')[1][:4]}"]


def test_metrics_bind_without_port_names_the_setting_not_a_flag(tmp_path):
    (tmp_path / "data").mkdir()
    config = write_config(tmp_path, "metrics_bind=127.0.0.1\n")
    rc, out, err = run("writer", config, "--once")
    assert rc == 2
    assert f"{config} [Writer] metrics_bind: '127.0.0.1': expected HOST:PORT" in err
    assert "--bind" not in err


def test_an_unknown_key_stops_the_writer_naming_the_nearest(tmp_path):
    (tmp_path / "data").mkdir()
    config = write_config(tmp_path, "metrics_bnd=127.0.0.1:9102\n")
    rc, out, err = run("writer", config, "--once")
    assert rc == 2
    assert f"{config} [Writer] metrics_bnd: unknown key; did you mean [Writer] metrics_bind?" in err


def test_a_second_writer_with_metrics_names_the_writer_holding_the_lock(tmp_path):
    (tmp_path / "data").mkdir()
    port = free_port()
    config = write_config(tmp_path, f"metrics_bind=127.0.0.1:{port}\n")
    first = subprocess.Popen([sys.executable, "-m", "hisparc_datastore.cli", "writer", str(config),
                              "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: (tmp_path / "data" / "writer.lock").exists()
                        and main(["status", str(config), "--json"]) in (0, 1)
                        and _holder(config) is not None, timeout=120)
        rc, out, err = run("writer", config, "--once")
        assert rc == 2
        assert f"another writer is running on {tmp_path / 'data'} (pid {first.pid} on " in err
        assert "Address already in use" not in err
        # the port the running writer holds is its own, not a conflict
        rc, out, err = run("check", config, "--serve-bind", "", "--config-server-bind", "")
        assert f"ok    [Writer] metrics_bind 127.0.0.1:{port}: held by our writer" in out, out
    finally:
        first.terminate()
        first.wait(60)


def _holder(config):
    from hisparc_datastore.writer.lock import writer_holding

    return writer_holding(load_settings(config).data_dir)


def test_version():
    from importlib.metadata import version

    rc, out, err = run("--version")
    # the plugins follow, one a line (tests/ops/test_command_line.py)
    assert rc == 0 and out.splitlines()[0] == f"datastore {version('hisparc-datastore')}"


# -- status says what is wrong ------------------------------------------------------------------


def test_status_on_a_brand_new_config_says_data_dir_does_not_exist(tmp_path):
    config = write_config(tmp_path)
    rc, out, err = run("status", config, "--json")
    assert rc == 1
    problems = json.loads(out)["problems"]
    assert any(f"[General] data_dir {tmp_path / 'data'}: does not exist" in p for p in problems), problems
    assert not (tmp_path / "data").exists()


def test_status_with_a_mistyped_station_list_is_unhealthy(tmp_path):
    (tmp_path / "data").mkdir()
    config = write_config(tmp_path, station_list=tmp_path / "stations.cvs")
    rc, out, err = run("status", config)
    assert rc == 1
    assert f"[General] station_list {tmp_path / 'stations.cvs'}: No such file or directory" in out


# -- datastore check ----------------------------------------------------------------------------


def test_check_passes_on_a_ready_host_and_fails_naming_each_problem(tmp_path, capsys):
    config = write_config(tmp_path)
    assert main(["init", str(config)]) == 0
    capsys.readouterr()
    serve, rpc = free_port(), free_port()
    argv = ["check", str(config), "--serve-bind", f"127.0.0.1:{serve}",
            "--config-server-bind", f"127.0.0.1:{rpc}"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"ok    serve --bind 127.0.0.1:{serve}: free" in out and "checks passed" in out

    (tmp_path / "stations.csv").write_text("501,amsterdam,pw501\nnot a station\n")
    with socket.create_server(("127.0.0.1", rpc)):  # a program that is not ours holds the port
        assert main(argv) == 1
    out = capsys.readouterr().out
    assert f"FAIL  [General] station_list {tmp_path / 'stations.csv'}: line 2:" in out
    assert (f"FAIL  config-server --bind 127.0.0.1:{rpc}: in use by a program that is not our "
            "config-server") in out
    assert "2 problem(s)" in out


class _Publicdb(http.server.BaseHTTPRequestHandler):
    """publicdb's /config/datastore page: the station list."""

    def do_GET(self):
        body = STATIONS.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_check_accepts_ports_held_by_our_own_receiver_and_config_server(tmp_path, capsys):
    publicdb = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Publicdb)
    threading.Thread(target=publicdb.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{publicdb.server_address[1]}/config/datastore"
    config = write_config(tmp_path, data_dir=None).read_text()
    (tmp_path / "config.ini").write_text(config.replace("minimum_year=2016\n",
                                                        f"minimum_year=2016\nstation_list_url={url}\n"))
    config = tmp_path / "config.ini"
    assert main(["init", str(config)]) == 0
    settings = load_settings(config)
    rpc = make_config_server(settings)
    threading.Thread(target=rpc.serve_forever, daemon=True).start()
    try:
        with ServerThread(build_app(settings)) as server:
            assert main(["check", str(config), "--serve-bind", f"127.0.0.1:{server.port}",
                         "--config-server-bind", f"127.0.0.1:{rpc.server_address[1]}"]) == 0
        out = capsys.readouterr().out
        # publicdb refusing or gone: named with the URL
        publicdb.shutdown()
        publicdb.server_close()
        assert main(["check", str(config), "--serve-bind", "", "--config-server-bind", ""]) == 1
        assert (f"FAIL  [General] station_list_url {url}: cannot fetch: [Errno 111] Connection refused"
                in capsys.readouterr().out)
    finally:
        rpc.shutdown()
        rpc.server_close()
    assert f"ok    [General] station_list_url {url}: 2 stations" in out
    assert f"serve --bind 127.0.0.1:{server.port}: held by our receiver" in out
    assert f"config-server --bind 127.0.0.1:{rpc.server_address[1]}: held by our config-server" in out


def test_serve_with_a_mistyped_station_list_names_the_setting(tmp_path):
    (tmp_path / "data").mkdir()
    config = write_config(tmp_path, station_list=tmp_path / "stations.cvs")
    rc, out, err = run("serve", config, "--bind", "127.0.0.1:0")
    assert rc == 2
    # the log line before it says why (no such file); this one which setting
    assert err.strip().splitlines()[-1] == (f"datastore serve: {config} [General] station_list: "
                                            f"'{tmp_path / 'stations.cvs'}': cannot be read")
    assert "Traceback" not in err
