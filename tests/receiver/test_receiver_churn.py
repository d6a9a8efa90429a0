"""A station still sending a slow body is not the connection closed at the limit: under a
churn of 1,000 new connections a second, an upload taking 10 s to send gets through.
A real ``datastore serve`` process on a loopback port, at its default limits."""

import collections
import datetime
import hashlib
import pickle
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

import pytest

from hisparc_datastore.testing.helpers import event, wait_for

BIN = Path(sys.executable).parent
RATE = 1000  # new connections a second
SEND_SECONDS = 10.0


def upload_body() -> bytes:
    moment = datetime.datetime(2024, 5, 6, 7, 0, 0)
    payload = pickle.dumps([event("SIN", moment + datetime.timedelta(seconds=n), {"MAS_CH1_LOW": n})
                            for n in range(400)], protocol=2)
    return urllib.parse.urlencode({"station_id": 99, "password": "pw99", "data": payload.decode("latin-1"),
                                   "checksum": hashlib.md5(payload).hexdigest()}).encode("ascii")


class Churn:
    """Opens ``RATE`` connections a second that send nothing, each held ``hold`` seconds, for at
    most ``seconds`` seconds: a bounded count in a bounded time."""

    def __init__(self, port: int, seconds: float, hold: float = 8.0) -> None:
        self.port, self.seconds, self.hold = port, seconds, hold
        self.opened = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        held: collections.deque = collections.deque()
        started = time.monotonic()
        try:
            while not self._stop.is_set() and self.opened < RATE * self.seconds:
                now = time.monotonic()
                due = started + self.opened / RATE
                if now < due:
                    time.sleep(due - now)
                sock = socket.socket()
                sock.setblocking(False)
                sock.connect_ex(("127.0.0.1", self.port))
                held.append((now, sock))
                self.opened += 1
                while held and held[0][0] < now - self.hold:
                    held.popleft()[1].close()
        finally:
            for _, sock in held:
                sock.close()

    def __enter__(self) -> "Churn":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


@pytest.fixture
def receiver(tmp_path):
    (tmp_path / "stations.csv").write_text("99,amsterdam,pw99\n")
    (tmp_path / "data").mkdir(exist_ok=True)  # no service creates data_dir
    config = tmp_path / "config.ini"
    config.write_text(f"[General]\nlog={tmp_path}/receiver.log\nloglevel=info\n"
                      f"station_list={tmp_path}/stations.csv\ndata_dir={tmp_path}/data\n"
                      "minimum_year=2016\n[Writer]\nfsync=false\n")  # [Receiver] at its defaults
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen([BIN / "datastore", "serve", str(config), "--bind", f"127.0.0.1:{port}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def listening() -> bool:
        assert process.poll() is None, "datastore serve exited"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            return False
        return True

    try:
        assert wait_for(listening, timeout=30)
        yield port, tmp_path
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_an_upload_taking_10_s_to_send_gets_through_1000_new_connections_a_second(receiver):
    port, tmp_path = receiver
    body = upload_body()
    header = (f"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
              f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    slices = 100
    step = -(-len(body) // slices)
    station = socket.create_connection(("127.0.0.1", port), timeout=120)
    with Churn(port, seconds=SEND_SECONDS + 5) as churn:
        try:
            station.sendall(header)
            started = time.monotonic()
            for n in range(slices):
                # paced against the clock, so a slow machine makes it no faster
                time.sleep(max(0.0, started + n * SEND_SECONDS / slices - time.monotonic()))
                station.sendall(body[n * step:(n + 1) * step])
            reply = b""
            while chunk := station.recv(4096):
                reply += chunk
        except OSError as exc:
            pytest.fail(f"the station's connection was cut after {time.monotonic() - started:.1f} s "
                        f"({churn.opened} connections opened meanwhile): {exc}")
        finally:
            station.close()
    assert reply.endswith(b"\r\n\r\n100"), reply[-200:]
    assert time.monotonic() - started >= SEND_SECONDS * 0.95
    # the limit was reached, so connections were closed to make room: not the station's
    assert "connection limit reached" in (tmp_path / "receiver.log").read_text()
    assert churn.opened >= RATE * SEND_SECONDS * 0.9
