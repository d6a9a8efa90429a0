"""publicdb's station-list push: ``config-server`` answers ``reload_datastore()`` over
real XML-RPC, fetches a real HTTP source, refuses a broken list, and a running
receiver uses a new list without a restart."""

import hashlib
import http.server
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import xmlrpc.client
from pathlib import Path

import pytest

from hisparc_datastore.cli import main
from hisparc_datastore.config import ConfigError, load_settings
from hisparc_datastore.receiver.app import build_app
from hisparc_datastore.receiver.server import ServerThread
from hisparc_datastore.stations.configserver import make_config_server
from hisparc_datastore.stations.sync import (
    StationListRefused,
    check_station_list,
    fetch_station_list,
    install_station_list,
)
from hisparc_datastore.testing.helpers import wait_for

DATASTORE = Path(sys.executable).parent / "datastore"
OLD = "99,amsterdam,old_password\n"
NEW = "99,amsterdam,new_password\n501,utrecht,s501\n"


class PublicDB:
    """A stand-in for publicdb's /config/datastore page: a real http.server on loopback."""

    def __init__(self) -> None:
        self.body, self.content_type, self.status = NEW.encode(), "text/plain", 200
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(owner.status)
                self.send_header("Content-Type", owner.content_type)
                self.send_header("Content-Length", str(len(owner.body)))
                self.end_headers()
                self.wfile.write(owner.body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/config/datastore"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()



def write_config(tmp_path: Path, url: str) -> Path:
    (tmp_path / "stations.csv").write_text(OLD)
    config = tmp_path / "config.ini"
    config.write_text(
        f"[General]\nlog={tmp_path}/log/datastore.log\nloglevel=info\nstation_list={tmp_path}/stations.csv\n"
        f"station_list_url={url}\ndata_dir={tmp_path}/data\nminimum_year=2016\n"
        "[Writer]\nfsync=false\n")
    return config


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_config_server(config: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen([DATASTORE, "config-server", str(config), "--bind", f"127.0.0.1:{port}"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"config-server exited with {process.returncode}: {process.stderr.read()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process, f"http://127.0.0.1:{port}/RPC2"
        except OSError:
            time.sleep(0.05)
    process.kill()
    pytest.fail("config-server did not start listening")


def post(url: str, payload: bytes, station: str, password: str) -> str:
    form = {"station_id": station, "password": password, "data": payload.decode("latin-1"),
            "checksum": hashlib.md5(payload).hexdigest()}
    with urllib.request.urlopen(url, urllib.parse.urlencode(form).encode(), timeout=30) as reply:
        return reply.read().decode()


def test_reload_datastore_replaces_the_list_and_the_running_receiver_uses_it(tmp_path, testdata):
    payload = (testdata / "uploads/py3event").read_bytes()
    with PublicDB() as publicdb:
        config = write_config(tmp_path, publicdb.url)
        process, rpc_url = start_config_server(config)
        try:
            with ServerThread(build_app(load_settings(config))) as receiver:
                assert post(receiver.url, payload, "99", "old_password") == "100"
                assert post(receiver.url, payload, "501", "s501") == "206"  # not yet listed

                # exactly publicdb's call
                assert xmlrpc.client.ServerProxy(rpc_url).reload_datastore() is True

                assert (tmp_path / "stations.csv").read_text() == NEW
                assert (tmp_path / "stations.csv.previous").read_text() == OLD
                # the same receiver, not restarted
                assert post(receiver.url, payload, "99", "old_password") == "203"
                assert post(receiver.url, payload, "501", "s501") == "100"
        finally:
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) == 0, process.stderr.read()
    log = (tmp_path / "log/datastore.log").read_text()
    assert f"replaced from {publicdb.url}: 2 station(s)" in log
    assert "config server stopped" in log


@pytest.mark.parametrize("body, content_type, status, why", [
    ("<!DOCTYPE html><html><body>Server Error (500)</body></html>", "text/html", 200, "HTML page"),
    ("<html><body>Log in</body></html>", "text/plain", 200, "HTML page"),
    ("", "text/plain", 200, "empty"),
    ("Not found", "text/plain", 404, "HTTP 404"),
    ("99,amsterdam,new_password\n99,utrecht,other\n", "text/plain", 200,
     "line 2: station 99 is listed twice (also line 1)"),
    ("99,amsterdam,new_password\n501,utrecht\n", "text/plain", 200,
     "line 2: expected number,cluster,password, found 2 field(s)"),
    ("99,amsterdam,new_password\nfive,utrecht,x\n", "text/plain", 200, "line 2: station number 'five'"),
])
def test_a_broken_list_is_refused_with_a_fault_and_the_old_one_keeps_working(
        tmp_path, testdata, body, content_type, status, why):
    payload = (testdata / "uploads/py3event").read_bytes()
    with PublicDB() as publicdb:
        publicdb.body, publicdb.content_type, publicdb.status = body.encode(), content_type, status
        config = write_config(tmp_path, publicdb.url)
        process, rpc_url = start_config_server(config)
        try:
            with ServerThread(build_app(load_settings(config))) as receiver:
                with pytest.raises(xmlrpc.client.Fault) as fault:
                    xmlrpc.client.ServerProxy(rpc_url).reload_datastore()
                assert why in fault.value.faultString
                assert publicdb.url in fault.value.faultString
                assert (tmp_path / "stations.csv").read_text() == OLD
                assert not (tmp_path / "stations.csv.previous").exists()
                assert post(receiver.url, payload, "99", "old_password") == "100"
                # the server is still there for the next push, which succeeds
                publicdb.body, publicdb.content_type, publicdb.status = NEW.encode(), "text/plain", 200
                assert xmlrpc.client.ServerProxy(rpc_url).reload_datastore() is True
                assert post(receiver.url, payload, "501", "s501") == "100"
        finally:
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) == 0, process.stderr.read()
    assert "station list refused" in (tmp_path / "log/datastore.log").read_text()


def test_fetch_stations_installs_once_and_refuses_with_status_1(tmp_path, capsys):
    with PublicDB() as publicdb:
        config = write_config(tmp_path, publicdb.url)
        assert main(["fetch-stations", str(config)]) == 0
        assert "replaced, 2 station(s)" in capsys.readouterr().out
        assert (tmp_path / "stations.csv").read_text() == NEW
        assert main(["fetch-stations", str(config)]) == 0
        assert "unchanged, 2 station(s)" in capsys.readouterr().out
        publicdb.body = b"   \n"
        assert main(["fetch-stations", str(config)]) == 1
        assert "empty" in capsys.readouterr().err
        assert (tmp_path / "stations.csv").read_text() == NEW


def test_fetch_stations_without_a_url_names_the_setting(tmp_path, capsys):
    config = write_config(tmp_path, "http://127.0.0.1:9/x")
    config.write_text(config.read_text().replace("station_list_url=http://127.0.0.1:9/x\n", ""))
    assert main(["fetch-stations", str(config)]) == 2
    assert "[General] station_list_url is not set" in capsys.readouterr().err


def test_an_unreachable_publicdb_is_refused_and_named(tmp_path, capsys):
    port = free_port()  # nothing listens there
    config = write_config(tmp_path, f"http://127.0.0.1:{port}/config/datastore")
    assert main(["fetch-stations", str(config)]) == 1
    assert f"127.0.0.1:{port}/config/datastore: cannot fetch" in capsys.readouterr().err
    assert (tmp_path / "stations.csv").read_text() == OLD


def test_check_accepts_blank_lines_and_counts_stations():
    assert check_station_list("\n501,amsterdam,a\n\n502,utrecht,b\n", "list") == 2
    with pytest.raises(StationListRefused, match="list line 1: station 501 has no password"):
        check_station_list("501,amsterdam,\n", "list")


# -- issue 18: more than one connection, time-outs, bounds, the list's mode ------------------

class _TimeoutTransport(xmlrpc.client.Transport):
    def __init__(self, timeout: float) -> None:
        super().__init__()
        self.timeout = timeout

    def make_connection(self, host):
        connection = super().make_connection(host)
        connection.timeout = self.timeout
        return connection


def test_an_idle_connection_blocks_neither_reload_datastore_nor_sigterm(tmp_path):
    """One idle TCP connection held the single-threaded server: publicdb's call waited for
    it (30 to 120 s) and so did SIGTERM."""
    with PublicDB() as publicdb:
        config = write_config(tmp_path, publicdb.url)
        process, rpc_url = start_config_server(config)
        port = urllib.parse.urlsplit(rpc_url).port
        idle = socket.create_connection(("127.0.0.1", port), timeout=30)
        half = socket.create_connection(("127.0.0.1", port), timeout=30)
        half.sendall(b"POST /RPC2 HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n<?xml")
        try:
            proxy = xmlrpc.client.ServerProxy(rpc_url, transport=_TimeoutTransport(20))
            assert proxy.reload_datastore() is True
            assert (tmp_path / "stations.csv").read_text() == NEW
            process.send_signal(signal.SIGTERM)
            try:
                assert process.wait(timeout=20) == 0
            except subprocess.TimeoutExpired:
                pytest.fail("SIGTERM did not stop the config-server while a connection was idle")
        finally:
            process.kill()
            process.wait()
            idle.close()
            half.close()


def test_idle_and_slow_clients_are_disconnected(tmp_path):
    settings = load_settings(write_config(tmp_path, "http://127.0.0.1:9/none"))
    server = make_config_server(settings, "127.0.0.1", 0, client_timeout=1.0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        with socket.create_connection(("127.0.0.1", port), timeout=60) as idle:
            started = time.monotonic()
            assert idle.recv(100) == b""  # closed by the server, not by our time-out
            assert time.monotonic() - started < 50
        with socket.create_connection(("127.0.0.1", port), timeout=60) as slow:
            slow.sendall(b"POST /RPC2 HTTP/1.1\r\nHost: x\r\nContent-Length: 200\r\n\r\n<?xml")
            answer = b""
            while chunk := slow.recv(4096):  # the server gives up on the body and closes
                answer += chunk
            assert answer == b"" or answer.startswith(b"HTTP/1.0 500"), answer
    finally:
        server.shutdown()
        server.server_close()


def test_a_huge_body_is_refused_from_its_header_before_it_is_read(tmp_path):
    """A 400 MB POST to /RPC2 cost 854 MB: the server read it whole before looking."""
    with PublicDB() as publicdb:
        config = write_config(tmp_path, publicdb.url)
        process, rpc_url = start_config_server(config)
        port = urllib.parse.urlsplit(rpc_url).port
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                sock.sendall(b"POST /RPC2 HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\n"
                             b"Content-Length: 400000000\r\n\r\n" + b"<" * 65536)
                reply = sock.recv(200)
            assert reply.startswith(b"HTTP/1.0 413") or reply.startswith(b"HTTP/1.1 413"), reply
            # and an ordinary call still works
            proxy = xmlrpc.client.ServerProxy(rpc_url, transport=_TimeoutTransport(20))
            assert proxy.reload_datastore() is True
        finally:
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) == 0, process.stderr.read()


def test_the_station_list_keeps_its_mode_and_owner_across_a_push(tmp_path):
    """Every push rewrote the list as 0644: station passwords readable by every user."""
    path = tmp_path / "stations.csv"
    path.write_text(OLD)
    path.chmod(0o600)
    owner = (os.getuid(), os.getgid())
    if os.geteuid() == 0:
        owner = (65534, 65534)
        os.chown(path, *owner)
    install_station_list(path, NEW, "test")
    assert path.read_text() == NEW
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert (path.stat().st_uid, path.stat().st_gid) == owner
    previous = tmp_path / "stations.csv.previous"
    assert previous.read_text() == OLD
    assert stat.S_IMODE(previous.stat().st_mode) == 0o600
    # and the other side: a list set 0640 stays 0640 (group-readable by the receiver)
    path.chmod(0o640)
    install_station_list(path, OLD, "test")
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


class _Trickle(http.server.BaseHTTPRequestHandler):
    """Promises 5,000 bytes and sends one every 0.2 s, for at most 60 s."""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", "5000")
        self.end_headers()
        started = time.monotonic()
        try:
            while time.monotonic() - started < 60:
                self.wfile.write(b"9")
                self.wfile.flush()
                time.sleep(0.2)
        except OSError:
            pass

    def log_message(self, *args):
        pass


def test_a_trickling_station_list_url_is_given_up_at_the_total_time_out():
    """The fetch time-out was per read: a server trickling its body took 290 s against a
    promised 30 s."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Trickle)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/config/datastore"
        started = time.monotonic()
        with pytest.raises(StationListRefused, match=r"not complete after 2 s"):
            fetch_station_list(url, timeout=2.0)
        assert time.monotonic() - started < 30
    finally:
        server.shutdown()
        server.server_close()


# -- a client cannot keep publicdb out (issue 28) ------------------------------------------------

def served(settings, **limits):
    server = make_config_server(settings, "127.0.0.1", 0, **limits)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    return server


def reload_from(port: int, source: str) -> bool:
    class Transport(xmlrpc.client.Transport):
        def make_connection(self, host):
            connection = super().make_connection(host)
            connection.source_address = (source, 0)
            connection.timeout = 60
            return connection
    proxy = xmlrpc.client.ServerProxy(f"http://127.0.0.1:{port}/RPC2", transport=Transport())
    return proxy.reload_datastore()


def test_a_trickling_client_is_cut_off_at_the_whole_request_deadline(tmp_path, capsys):
    """The time-out was per read: a byte every 20 s held a slot for about 15 days."""
    settings = load_settings(write_config(tmp_path, "http://127.0.0.1:9/none"))
    server = served(settings, client_timeout=30.0, request_seconds=2.0)
    try:
        with socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=60) as slow:
            slow.sendall(b"POST /RPC2 HTTP/1.0\r\nContent-Length: 60000\r\n\r\n")
            started = time.monotonic()
            cut = False
            while time.monotonic() - started < 60 and not cut:
                try:
                    slow.sendall(b"<")  # a byte every 0.2 s: each read well within its time-out
                    time.sleep(0.2)
                except OSError:
                    cut = True
            assert cut, "a trickling client kept its connection for 60 s"
    finally:
        server.shutdown()
        server.server_close()
    # the cut is a log line, not socketserver's traceback on standard error
    assert "Traceback" not in capsys.readouterr().err


def test_idle_connections_from_other_addresses_keep_neither_publicdb_nor_others_out(tmp_path):
    """16 idle connections locked reload_datastore() out for 30 s each."""
    with PublicDB() as publicdb:
        config = write_config(tmp_path, publicdb.url)
        config.write_text(config.read_text() + "[ConfigServer]\npublicdb_addresses=127.0.0.3\n")
        settings = load_settings(config)
        server = served(settings, client_timeout=60.0, request_seconds=60.0)
        port = server.server_address[1]
        idle = []
        try:
            # one address holds at most 4 slots: the other 12 are closed at once
            for _ in range(16):
                sock = socket.create_connection(("127.0.0.1", port), timeout=60,
                                                source_address=("127.0.0.2", 0))
                idle.append(sock)
            assert wait_closed(idle[4:]) and not any(closed(sock) for sock in idle[:4])
            assert reload_from(port, "127.0.0.1") is True  # another address is still served
            # 12 more addresses fill every slot: others are turned away, publicdb is served
            for n in range(12):
                sock = socket.create_connection(("127.0.0.1", port), timeout=60,
                                                source_address=(f"127.0.1.{n + 1}", 0))
                idle.append(sock)
            # every slot taken before the next call (a busy machine accepts late)
            assert wait_for(lambda: server._counted >= server.max_clients, timeout=60)
            with pytest.raises((ConnectionError, xmlrpc.client.ProtocolError, OSError)):
                reload_from(port, "127.0.0.1")
            (tmp_path / "stations.csv").write_text(OLD)
            assert reload_from(port, "127.0.0.3") is True
            assert (tmp_path / "stations.csv").read_text() == NEW
            # and a burst of publicdb's calls is answered whole
            results = []
            threads = [threading.Thread(target=lambda: results.append(reload_from(port, "127.0.0.3")))
                       for _ in range(40)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(120)
            assert results == [True] * 40
        finally:
            for sock in idle:
                sock.close()
            server.shutdown()
            server.server_close()


def closed(sock: socket.socket) -> bool:
    sock.settimeout(0.05)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except OSError:
        return True


def wait_closed(socks, timeout=60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(closed(sock) for sock in socks):
            return True
    return False


def test_publicdb_addresses_must_be_addresses(tmp_path):
    config = write_config(tmp_path, "http://127.0.0.1:9/none")
    config.write_text(config.read_text() + "[ConfigServer]\npublicdb_addresses=publicdb.example\n")
    with pytest.raises(ConfigError, match=r"\[ConfigServer\] publicdb_addresses: .*'publicdb.example' is "
                                          "not an IP address"):
        load_settings(config)
