"""One upload never stops the receiver: hostile pickles from a station with a valid password,
clients that trickle, unexpected errors. A real ``datastore serve`` process on a loopback
port, its CPU time and peak memory read from /proc."""

import contextlib
import datetime
import hashlib
import os
import pickle
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from hisparc_datastore.config import load_settings
from hisparc_datastore.receiver import app as app_module
from hisparc_datastore.receiver import build_app
from hisparc_datastore.receiver.server import ServerThread
from hisparc_datastore.testing.helpers import event

BIN = Path(sys.executable).parent
HOSTILE = ["billion-laughs-9", "tuple-hash-key-8", "int-hash-collisions-20k", "int-amplify-100kB-x15k",
           "deep-nesting-100k", "sin-value-billion-laughs-9"]
TICK = os.sysconf("SC_CLK_TCK")


def write_config(tmp_path: Path, **receiver: object) -> Path:
    (tmp_path / "stations.csv").write_text("99,amsterdam,fake_station\n")
    extra = "".join(f"{key}={value}\n" for key, value in receiver.items())
    (tmp_path / "data").mkdir(exist_ok=True)  # no service creates data_dir
    config = tmp_path / "config.ini"
    config.write_text(
        f"[General]\nlog={tmp_path}/log/receiver.log\nloglevel=info\n"
        f"station_list={tmp_path}/stations.csv\ndata_dir={tmp_path}/data\nminimum_year=2016\n"
        f"[Writer]\nfsync=false\n[Receiver]\nmax_body_bytes=3000000\n{extra}")
    return config


def form(payload: bytes, station_id: str = "99") -> bytes:
    fields = {"station_id": station_id, "password": "fake_station", "data": payload.decode("latin-1"),
              "checksum": hashlib.md5(payload).hexdigest()}
    return urllib.parse.urlencode(fields).encode("ascii")


def post(url: str, body: bytes, timeout: float = 60) -> str:
    with urllib.request.urlopen(url, body, timeout=timeout) as reply:
        assert reply.status == 200
        return reply.read().decode()


def normal_upload(n: int) -> bytes:
    moment = datetime.datetime(2024, 5, 6, 7, 0, 0) + datetime.timedelta(seconds=n)
    return pickle.dumps([event("SIN", moment, {"MAS_CH1_LOW": n})], protocol=2)


class Serve:
    """``datastore serve`` as a process on a free loopback port."""

    def __init__(self, config: Path) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        self.process = subprocess.Popen(
            [BIN / "datastore", "serve", str(config), "--bind", f"127.0.0.1:{self.port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, "datastore serve exited"
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        pytest.fail("datastore serve did not start listening")

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime

    def peak_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmHWM")

    def stop(self) -> None:
        self.process.terminate()
        try:
            assert self.process.wait(timeout=30) == 0
        finally:
            self.process.kill()


@pytest.fixture
def serve():
    started = []

    def start(config: Path) -> Serve:
        started.append(Serve(config))
        return started[-1]

    yield start
    for server in started:
        server.stop()


def test_hostile_uploads_are_refused_cheaply_while_other_stations_are_answered(tmp_path, testdata, serve):
    server = serve(write_config(tmp_path))
    normal_replies, stop = [], threading.Event()

    def station_posting_meanwhile():
        n = 0
        while not stop.is_set():
            started = time.monotonic()
            code = post(server.url, form(normal_upload(n)))
            normal_replies.append((code, time.monotonic() - started))
            n += 1

    poster = threading.Thread(target=station_posting_meanwhile)
    poster.start()
    try:
        costs = {}
        for name in HOSTILE:
            body = form((testdata / "hostile" / f"{name}.upload").read_bytes())
            before = server.cpu_seconds()
            assert post(server.url, body) == "208", name
            costs[name] = server.cpu_seconds() - before
            # refused, not claimed for ever: the same bytes again are refused again
            assert post(server.url, body) == "208", name
    finally:
        stop.set()
        poster.join(timeout=60)
    # "about a second of CPU at most and well under 300 MB"; CPU here includes the form
    # parsing of the 0.5 MB bodies and the station posting meanwhile.
    assert max(costs.values()) < 3.0, costs
    assert server.peak_mb() < 300, server.peak_mb()
    assert normal_replies and {code for code, _ in normal_replies} == {"100"}
    assert max(seconds for _, seconds in normal_replies) < 10, normal_replies
    refused = sorted(p.name for p in (tmp_path / "data/quarantine").iterdir() if p.suffix == ".refused")
    assert len(refused) == len(HOSTILE)  # each sent twice: one entry, counted twice
    reasons = [(tmp_path / "data/quarantine" / (name + ".reason")).read_text() for name in refused]
    assert all("receiver answered 208" in reason and len(reason) < 1000 for reason in reasons)
    assert all("refused 2 time(s)" in reason for reason in reasons)
    queued = len(os.listdir(tmp_path / "data/incoming"))
    assert queued == len(normal_replies)  # every normal upload queued, no hostile one


class Trickler:
    """Connections that send a request header a byte at a time and never finish it."""

    def __init__(self, port: int, count: int) -> None:
        self.sockets = []
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.setblocking(False)
            self.sockets.append(sock)
        self.header = b"POST / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100_000
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            byte = self.header[self.sent:self.sent + 1]
            self.sent += 1
            for sock in self.sockets:
                with contextlib.suppress(OSError):  # closed by the server: counted by closed()
                    sock.send(byte)

    def closed(self) -> int:
        count = 0
        for sock in self.sockets:
            try:
                if sock.recv(1, socket.MSG_PEEK) == b"":
                    count += 1
            except BlockingIOError:
                pass
            except OSError:
                count += 1
        return count

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for sock in self.sockets:
            sock.close()


@pytest.mark.parametrize("limit", [1000, 50], ids=["below the limit", "at the limit"])
def test_a_station_is_answered_within_five_seconds_beside_200_trickling_connections(tmp_path, serve,
                                                                                     limit):
    server = serve(write_config(tmp_path, max_connections=limit))
    trickler = Trickler(server.port, 200)
    try:
        time.sleep(2)  # every trickler has sent some bytes of its header
        assert trickler.sent >= 2
        started = time.monotonic()
        # as the station software does, a connection the server cut is tried again: at the
        # limit, on a loaded machine, the station's connection may be accepted while it has
        # sent nothing yet and be the one closed to let another in
        answers = []
        for _ in range(3):
            try:
                answers.append(post(server.url, form(normal_upload(1)), timeout=30))
            except ConnectionError as exc:
                answers.append(type(exc).__name__)
                continue
            break
        assert answers[-1] == "100", answers
        assert time.monotonic() - started < 5.0
    finally:
        trickler.stop()


def test_a_request_not_whole_after_request_timeout_is_closed(tmp_path, serve):
    server = serve(write_config(tmp_path, request_timeout=2))
    trickler = Trickler(server.port, 20)
    try:
        deadline = time.monotonic() + 30
        while trickler.closed() < 20 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert trickler.closed() == 20
        assert post(server.url, form(normal_upload(2))) == "100"
    finally:
        trickler.stop()


@pytest.mark.parametrize("station_id", ["501\n", " 99", "٩٩", "99.0", "+99"])
def test_a_station_id_is_ascii_digits_only(tmp_path, station_id):
    settings = load_settings(write_config(tmp_path))
    with ServerThread(build_app(settings)) as server:
        assert post(server.url, form(normal_upload(1), station_id=station_id)) == "400"
        assert post(server.url, form(normal_upload(1), station_id="99")) == "100"


def test_a_post_to_metrics_is_not_an_upload(tmp_path):
    settings = load_settings(write_config(tmp_path))
    with ServerThread(build_app(settings)) as server:
        assert post(server.url + "metrics", form(normal_upload(1))) == "400"
        assert not os.listdir(tmp_path / "data/incoming")
        metrics = urllib.request.urlopen(server.url + "metrics", timeout=10).read().decode()
        assert 'datastore_receiver_uploads_total{code="400"} 1' in metrics


def test_an_unexpected_error_answers_a_code_keeps_the_upload_and_releases_its_claim(tmp_path,
                                                                                    monkeypatch):
    settings = load_settings(write_config(tmp_path))
    app = build_app(settings)
    body = form(normal_upload(3))

    def broken_store(*args, **kwargs):
        raise RuntimeError("a fault nobody foresaw")

    with ServerThread(app) as server:
        monkeypatch.setattr(app.spool, "store", broken_store)
        assert post(server.url, body) == "205"  # HTTP 200 with a return code, never HTTP 500
        (refused,) = [p for p in (tmp_path / "data/quarantine").iterdir() if p.suffix == ".refused"]
        reason = (tmp_path / "data/quarantine" / (refused.name + ".reason")).read_text()
        assert "RuntimeError: a fault nobody foresaw" in reason
        monkeypatch.undo()
        assert post(server.url, body) == "100"  # the claim was released: the retry is queued
        assert len(os.listdir(tmp_path / "data/incoming")) == 1


def test_form_parsing_takes_a_small_multiple_of_the_body():
    body = b"station_id=99&password=x&checksum=y&data=" + b"%41%C3%BF" * 230_000  # 2 MB of escapes
    tracemalloc.start()
    try:
        form_fields = app_module.parse_form(body)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert form_fields["data"] == "A\xff" * 230_000
    assert peak < 6 * len(body), peak / len(body)  # parse_qs took about 100 times the body


@pytest.mark.parametrize("cut", range(1, 9))
def test_escapes_cut_by_a_slice_boundary_decode_whole(monkeypatch, cut):
    monkeypatch.setattr(app_module, "_UNQUOTE_SLICE", 10 + cut)
    raw = b"ab+c%25%41%C3%BF%%zz%4" * 7
    assert app_module.unquote_plus(raw) == urllib.parse.unquote_to_bytes(raw.replace(b"+", b" "))
