"""The station upload receiver, over real HTTP on a loopback port, posting as the station software does."""

import calendar
import datetime
import errno
import hashlib
import logging
import os
import pickle
import socket
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import tables
from hypothesis import given
from hypothesis import strategies as st

from hisparc_datastore.codec.decoding import Upload, parse_event_list, parse_queue_file
from hisparc_datastore.config import load_settings
from hisparc_datastore.receiver import app as app_module
from hisparc_datastore.receiver import build_app, spool
from hisparc_datastore.receiver.claims import Dedup
from hisparc_datastore.receiver.server import ServerThread
from hisparc_datastore.stations.stationlist import Station, StationList
from hisparc_datastore.testing.helpers import event

STATIONS = "99,amsterdam,fake_station\n510,Utrecht,pw510\n"
MAX_BODY = 300_000  # above the 182 kB the 100-event batch takes urlencoded


@pytest.fixture
def config(tmp_path) -> Path:
    (tmp_path / "stations.csv").write_text(STATIONS)
    path = tmp_path / "config.ini"
    path.write_text(
        f"[General]\nlog={tmp_path}/log/receiver.log\nloglevel=info\n"
        f"station_list={tmp_path}/stations.csv\ndata_dir={tmp_path}/data\nminimum_year=2016\n"
        f"[Receiver]\nmax_body_bytes={MAX_BODY}\n"
    )
    return path


@pytest.fixture
def settings(config):
    return load_settings(config)


@pytest.fixture
def start():
    """Start a receiver for some settings in a server thread; all are stopped at the end."""
    running = []

    def start(settings, **kwargs) -> ServerThread:
        server = ServerThread(build_app(settings, **kwargs)).start()
        running.append(server)
        return server

    yield start
    for server in running:
        server.stop()


@pytest.fixture
def server(settings, start) -> ServerThread:
    return start(settings)


def fields(payload: bytes, station_id=99, password="fake_station", checksum=None) -> dict:
    """The form the station software posts."""
    return {"station_id": station_id, "password": password, "data": payload.decode("latin-1"),
            "checksum": checksum or hashlib.md5(payload).hexdigest()}


def post(url: str, form: dict | bytes) -> str:
    body = form if isinstance(form, bytes) else urllib.parse.urlencode(form).encode("ascii")
    with urllib.request.urlopen(url, body, timeout=10) as response:
        assert response.status == 200
        return response.read().decode()


def queue(data_dir: Path) -> dict[str, list[str]]:
    # The queue files; a suspicious one's NAME.reason beside it is checked where it matters.
    return {name: sorted(n for n in os.listdir(data_dir / name) if not n.endswith(".reason"))
            for name in ("tmp", "incoming", "suspicious")}


def assert_queue_empty(data_dir: Path) -> None:
    assert queue(data_dir) == {"tmp": [], "incoming": [], "suspicious": []}


def read_queued(path: Path) -> Upload:
    return parse_queue_file(path.read_bytes())


def make_upload(nanoseconds: int, year: int = 2017) -> bytes:
    """A distinct one-event upload, pickled as a Python 3 station would (protocol 2)."""
    moment = datetime.datetime(year, 2, 26, 7, 26, 4)
    return pickle.dumps([event("CIC", moment, {"PH1": 625, "PH2": 972}, nanoseconds)], protocol=2)


# -- 100: stored ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["py2event", "py3event", "py2_pysparc_config", "py2_s510_100events"])
def test_an_upload_is_queued_in_incoming_whole(testdata, settings, server, name):
    payload = (testdata / "uploads" / name).read_bytes()
    assert post(server.url, fields(payload)) == "100"
    state = queue(settings.data_dir)
    assert state["tmp"] == [] and state["suspicious"] == [] and len(state["incoming"]) == 1
    queued = read_queued(settings.data_dir / "incoming" / state["incoming"][0])
    assert queued == Upload(99, "amsterdam", parse_event_list(payload))


def test_the_queued_event_carries_the_stations_values(testdata, settings, server):
    payload = (testdata / "uploads/py2event").read_bytes()
    assert post(server.url, fields(payload)) == "100"
    [name] = queue(settings.data_dir)["incoming"]
    queued = read_queued(settings.data_dir / "incoming" / name)
    assert (queued.station_id, queued.cluster) == (99, "amsterdam")
    [cic] = queued.event_list
    assert cic["header"]["eventtype_uploadcode"] == "CIC"
    assert cic["header"]["datetime"] == datetime.datetime(2017, 2, 22, 13, 24, 57, 656000)
    assert cic["header"]["nanoseconds"] == 731509026
    heights = {d["data_uploadcode"]: d["data"] for d in cic["datalist"] if d["data_uploadcode"][:2] == "PH"}
    assert heights == {"PH1": 4, "PH2": 4, "PH3": -1, "PH4": -1}


def test_an_upload_dated_before_the_minimum_year_goes_to_suspicious(testdata, settings, server):
    payload = (testdata / "uploads/suspicious_event").read_bytes()
    assert post(server.url, fields(payload)) == "100"
    state = queue(settings.data_dir)
    assert state["tmp"] == [] and state["incoming"] == [] and len(state["suspicious"]) == 1
    queued = read_queued(settings.data_dir / "suspicious" / state["suspicious"][0])
    assert queued.event_list[0]["header"]["datetime"] == datetime.datetime(2011, 2, 22, 13, 24, 57, 656000)
    assert queued == Upload(99, "amsterdam", parse_event_list(payload))
    reason = (settings.data_dir / "suspicious" / (state["suspicious"][0] + ".reason")).read_text()
    assert reason == ("station 99 cluster amsterdam: an event of 2011-02-22 13:24:57.656000 is before "
                      "minimum_year 2016\n")


def test_one_old_event_makes_the_whole_upload_suspicious(settings, server):
    events = pickle.loads(make_upload(1)) + pickle.loads(make_upload(2, year=2015))
    payload = pickle.dumps(events, protocol=2)
    assert post(server.url, fields(payload)) == "100"
    state = queue(settings.data_dir)
    assert state["incoming"] == [] and len(state["suspicious"]) == 1


def test_data_percent_encoded_as_raw_bytes_is_accepted_too(testdata, settings, server):
    # Python 2's urlencode escapes the pickle's bytes themselves, not their UTF-8 encoding.
    payload = (testdata / "uploads/py3event").read_bytes()
    form = fields(payload)
    form["data"] = payload
    assert post(server.url, form) == "100"
    [name] = queue(settings.data_dir)["incoming"]
    assert read_queued(settings.data_dir / "incoming" / name).event_list == parse_event_list(payload)


def test_concurrent_uploads_are_all_queued(settings, server):
    payloads = [make_upload(n) for n in range(16)]
    replies = [None] * len(payloads)

    def send(i):
        replies[i] = post(server.url, fields(payloads[i]))

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(payloads))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert replies == ["100"] * 16
    incoming = settings.data_dir / "incoming"
    names = queue(settings.data_dir)["incoming"]
    assert len(names) == 16
    stored = sorted(read_queued(incoming / name).event_list[0]["header"]["nanoseconds"] for name in names)
    assert stored == list(range(16))


# -- refusals -------------------------------------------------------------------------------------------


def _without(name):
    return lambda good, payload: {k: v for k, v in good.items() if k != name}


def _with(**changes):
    return lambda good, payload: {**good, **changes}


def _data(data: bytes):
    checksum = hashlib.md5(data).hexdigest()
    return lambda good, payload: {**good, "data": data.decode("latin-1"), "checksum": checksum}


REFUSALS = {
    "no-station_id": (_without("station_id"), "400"),
    "no-password": (_without("password"), "400"),
    "no-data": (_without("data"), "400"),
    "no-checksum": (_without("checksum"), "400"),
    "station-id-not-a-number": (_with(station_id="ninety-nine"), "400"),
    "station-id-float": (_with(station_id="99.0"), "400"),
    "empty-body": (lambda good, payload: b"", "400"),
    # as the deployed receiver: the station's operator is sent to the station list
    "unknown-station": (_with(station_id=98), "206"),
    "wrong-password": (_with(password="fake_statio"), "203"),
    "empty-password": (_with(password=""), "203"),
    "non-ascii-password": (_with(password="fake_stati\u00f6n"), "203"),
    "wrong-checksum": (_with(checksum=hashlib.md5(b"other").hexdigest()), "201"),
    "truncated-data": (lambda good, payload: {**good, "data": good["data"][:-1]}, "201"),
    "not-a-pickle": (_data(b"not a pickle"), "208"),
    "truncated-pickle": (lambda good, payload: _data(payload[:-40])(good, payload), "208"),
    # The checks run in the protocol's order: station, password, checksum.
    "order-station": (_with(station_id=98, password="x", checksum="0"), "206"),
    "order-password": (_with(password="x", checksum="0"), "203"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_a_refused_upload_gets_its_code_and_queues_nothing(testdata, settings, server, case):
    payload = (testdata / "uploads/py2event").read_bytes()
    make_form, code = REFUSALS[case]
    assert post(server.url, make_form(fields(payload), payload)) == code
    assert_queue_empty(settings.data_dir)


def test_a_get_is_an_invalid_post(settings, server):
    with urllib.request.urlopen(server.url + "?station_id=99", timeout=10) as response:
        assert response.read() == b"400"
    assert_queue_empty(settings.data_dir)


def test_a_pickle_that_is_not_an_event_list_cannot_be_unpickled(settings, server):
    payload = pickle.dumps({"not": "a list"}, protocol=2)
    assert post(server.url, fields(payload)) == "208"
    assert_queue_empty(settings.data_dir)


# -- hostile pickles ------------------------------------------------------------------------------------


class _Reduce:
    """Pickles as a call of ``func(*args)``, as an attacker's pickle would."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def hostile_pickles(marker: Path) -> dict[str, bytes]:
    import builtins
    import subprocess

    command = f"touch {marker}"
    return {
        "os.system protocol 0": f"cos\nsystem\n(S'{command}'\ntR.".encode(),
        "posix.system protocol 0": f"cposix\nsystem\n(S'{command}'\ntR.".encode(),
        "os.system in a list": f"(lp0\ncos\nsystem\n(S'{command}'\ntRa.".encode(),
        "builtins.eval": pickle.dumps([_Reduce(builtins.eval, f"open({str(marker)!r}, 'w')")], protocol=2),
        "builtins.exec": pickle.dumps(_Reduce(builtins.exec, f"open({str(marker)!r}, 'w')"), protocol=4),
        "subprocess.call": pickle.dumps([_Reduce(subprocess.call, ["touch", str(marker)])], protocol=3),
        "os.system as a datalist value": pickle.dumps(
            [{"header": {}, "datalist": [{"data_uploadcode": "PH1", "data": _Reduce(os.system, command)}]}],
            protocol=2),
    }


@pytest.mark.parametrize("kind", sorted(hostile_pickles(Path("/x"))))
def test_a_pickle_that_calls_a_function_is_refused_without_calling_it(tmp_path, settings, server, kind):
    marker = tmp_path / "pwned"
    payload = hostile_pickles(marker)[kind]
    assert post(server.url, fields(payload)) == "208"
    assert not marker.exists()
    assert_queue_empty(settings.data_dir)


def test_nothing_from_an_unauthenticated_request_is_unpickled(tmp_path, settings, server, monkeypatch):
    calls = []
    monkeypatch.setattr(app_module, "parse_event_list", lambda payload: calls.append(payload) or [])
    marker = tmp_path / "pwned"
    payload = hostile_pickles(marker)["os.system protocol 0"]
    assert post(server.url, fields(payload, password="wrong")) == "203"
    assert post(server.url, fields(payload, station_id=12345)) == "206"
    assert post(server.url, fields(payload, checksum="0" * 32)) == "201"
    assert calls == [] and not marker.exists()


# -- duplicates -----------------------------------------------------------------------------------------


def test_a_resent_upload_is_answered_100_and_queued_once_even_after_a_restart(testdata, settings, start):
    payload = (testdata / "uploads/py2_s510_100events").read_bytes()
    form = fields(payload, station_id=510, password="pw510")
    first = start(settings)
    assert post(first.url, form) == "100"
    assert post(first.url, form) == "100"
    assert len(queue(settings.data_dir)["incoming"]) == 1
    first.stop()

    second = start(settings)
    assert post(second.url, form) == "100"
    assert len(queue(settings.data_dir)["incoming"]) == 1
    metrics = urllib.request.urlopen(second.url + "metrics", timeout=10).read().decode()
    assert "datastore_receiver_duplicate_uploads_total 1\n" in metrics

    # The same bytes from another station are another upload.
    (settings.station_list).write_text(STATIONS + "511,Utrecht,pw511\n")
    assert post(second.url, fields(payload, station_id=511, password="pw511")) == "100"
    names = queue(settings.data_dir)["incoming"]
    assert sorted(read_queued(settings.data_dir / "incoming" / n).station_id for n in names) == [510, 511]


def test_an_upload_is_remembered_only_within_the_window(tmp_path):
    dedup = Dedup(tmp_path / "r.sqlite", window_hours=24)
    now = 1_700_000_000.0
    dedup.remember(510, "abc", now=now - 25 * 3600)
    dedup.remember(510, "def", now=now - 23 * 3600)
    assert not dedup.seen(510, "abc", now=now)
    assert dedup.seen(510, "def", now=now)
    assert not dedup.seen(511, "def", now=now)
    assert dedup.prune(now=now) == 1
    # Another process (another connection to the same file) sees the same memory.
    other = Dedup(tmp_path / "r.sqlite", window_hours=24)
    assert other.seen(510, "def", now=now)
    other.remember(99, "xyz", now=now)
    assert dedup.seen(99, "xyz", now=now)


def test_with_a_window_of_zero_every_upload_is_queued(config, testdata, start):
    config.write_text(config.read_text() + "duplicate_window_hours=0\n")
    settings = load_settings(config)
    server = start(settings)
    payload = (testdata / "uploads/py2event").read_bytes()
    assert post(server.url, fields(payload)) == "100"
    assert post(server.url, fields(payload)) == "100"
    assert len(queue(settings.data_dir)["incoming"]) == 2
    assert not (settings.data_dir / "receiver.sqlite").exists()


# -- 205: the queue write fails -------------------------------------------------------------------------


def test_a_full_disk_is_answered_205_and_leaves_no_partial_file(testdata, settings, server, monkeypatch):
    payload = (testdata / "uploads/py2_s510_100events").read_bytes()
    form = fields(payload, station_id=510, password="pw510")
    real_write = os.write
    attempts = []

    def write_until_full(fd, data):
        attempts.append(fd)
        real_write(fd, bytes(data[:4096]))  # part of the file reaches the disk
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(spool.os, "write", write_until_full)
    assert post(server.url, form) == "205"
    assert attempts
    assert_queue_empty(settings.data_dir)

    # Not remembered as accepted: the station's retry is stored once there is room again.
    monkeypatch.setattr(spool.os, "write", real_write)
    assert post(server.url, form) == "100"
    [name] = queue(settings.data_dir)["incoming"]
    assert read_queued(settings.data_dir / "incoming" / name).event_list == parse_event_list(payload)


def test_a_failed_fsync_is_answered_205(testdata, settings, server, monkeypatch):
    def failing_fsync(fd):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(spool.os, "fsync", failing_fsync)
    assert post(server.url, fields((testdata / "uploads/py2event").read_bytes())) == "205"
    assert_queue_empty(settings.data_dir)


def test_a_failed_directory_fsync_takes_the_renamed_file_back(testdata, settings, server, monkeypatch):
    def failing_fsync_dir(directory):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(spool, "fsync_dir", failing_fsync_dir)
    assert post(server.url, fields((testdata / "uploads/py2event").read_bytes())) == "205"
    assert_queue_empty(settings.data_dir)


def test_a_rename_refused_is_answered_205(testdata, settings, server, monkeypatch):
    def refused(source, target):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(target))

    monkeypatch.setattr(spool.os, "rename", refused)
    assert post(server.url, fields((testdata / "uploads/py2event").read_bytes())) == "205"
    assert_queue_empty(settings.data_dir)


def permissions_enforced(tmp_path: Path) -> bool:
    probe = tmp_path / "probe"
    probe.mkdir(mode=0o555)
    try:
        (probe / "file").touch()
    except PermissionError:
        return True
    finally:
        probe.chmod(0o755)
    return False


def test_a_read_only_incoming_directory_is_answered_205(tmp_path, testdata, settings, server):
    if not permissions_enforced(tmp_path):
        pytest.skip("file permissions are not enforced here (running as root)")
    incoming = settings.data_dir / "incoming"
    incoming.chmod(0o555)
    try:
        assert post(server.url, fields((testdata / "uploads/py2event").read_bytes())) == "205"
    finally:
        incoming.chmod(0o755)
    assert_queue_empty(settings.data_dir)


# -- 400: oversized bodies ------------------------------------------------------------------------------


def raw_post(port: int, length: int, body: bytes = b"") -> bytes:
    """Send a POST announcing ``length`` body bytes but sending only ``body``; return the reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: {length}\r\n"
                     f"Content-Type: application/x-www-form-urlencoded\r\nConnection: close\r\n\r\n"
                     .encode() + body)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    return reply


def test_an_oversized_body_is_refused_with_400_before_it_is_read(settings, server):
    # None of the 50 MB announced is sent: the reply comes without the server waiting for it.
    # (A client that pushes the body anyway may see the connection reset instead: refused all the same.)
    reply = raw_post(server.port, 50_000_000)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and body == b"400"
    assert_queue_empty(settings.data_dir)
    metrics = urllib.request.urlopen(server.url + "metrics", timeout=10).read().decode()
    assert 'datastore_receiver_uploads_total{code="400"} 1\n' in metrics


def test_a_body_one_byte_over_the_limit_is_refused_and_one_at_the_limit_is_read(testdata, settings, server):
    assert raw_post(server.port, MAX_BODY + 1).endswith(b"\r\n\r\n400")
    # A real upload padded to exactly the limit with an extra field is read and stored.
    form = urllib.parse.urlencode(fields((testdata / "uploads/py2event").read_bytes())).encode()
    form += b"&pad=" + b"x" * (MAX_BODY - len(form) - 5)
    assert len(form) == MAX_BODY
    assert raw_post(server.port, MAX_BODY, form).endswith(b"\r\n\r\n100")
    assert len(queue(settings.data_dir)["incoming"]) == 1


def test_the_app_refuses_an_oversized_body_without_reading_it(settings):
    # Under a server that streams the body (not waitress, which the test above covers).
    app = build_app(settings)

    class Unreadable:
        def read(self, *args):
            raise AssertionError("the body was read")

    replies = []
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/", "CONTENT_LENGTH": str(MAX_BODY + 1),
               "CONTENT_TYPE": "application/x-www-form-urlencoded", "wsgi.input": Unreadable()}
    body = app(environ, lambda status, headers: replies.append(status))
    assert replies == ["200 OK"] and body == [b"400"]


# -- the station list -----------------------------------------------------------------------------------


def test_a_station_added_to_the_list_is_accepted_without_a_restart(testdata, settings, server):
    payload = (testdata / "uploads/py2event").read_bytes()
    form = fields(payload, station_id=777, password="pw777")
    assert post(server.url, form) == "206"
    settings.station_list.write_text(STATIONS + "777,Groningen,pw777\n")
    assert post(server.url, form) == "100"
    [name] = queue(settings.data_dir)["incoming"]
    assert read_queued(settings.data_dir / "incoming" / name).cluster == "Groningen"


def test_a_changed_password_applies_at_once(testdata, settings, server):
    payload = (testdata / "uploads/py2event").read_bytes()
    settings.station_list.write_text("99,amsterdam,new_password\n")
    assert post(server.url, fields(payload)) == "203"
    assert post(server.url, fields(payload, password="new_password")) == "100"


def test_a_malformed_line_is_reported_and_the_other_stations_keep_working(testdata, settings, start, caplog):
    caplog.set_level(logging.INFO)
    settings.station_list.write_text(
        "99,amsterdam,fake_station\nfive-oh-one,utrecht,pw501\n510,Utrecht\n\n502,utrecht,pw502\n"
    )
    server = start(settings)
    payload = (testdata / "uploads/py2event").read_bytes()
    assert post(server.url, fields(payload)) == "100"
    assert post(server.url, fields(payload, station_id=502, password="pw502")) == "100"
    assert post(server.url, fields(payload, station_id=510, password="pw510")) == "206"
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(f"{settings.station_list} line 2:" in m and "five-oh-one" in m for m in errors), errors
    assert any(f"{settings.station_list} line 3:" in m for m in errors), errors
    assert len(errors) == 2


def test_a_vanished_station_list_keeps_the_last_one_read(testdata, settings, server):
    settings.station_list.unlink()
    assert post(server.url, fields((testdata / "uploads/py2event").read_bytes())) == "100"


# -- metrics --------------------------------------------------------------------------------------------


def test_metrics_count_every_return_code(testdata, server):
    payload = (testdata / "uploads/py2event").read_bytes()
    sent = [fields(payload), fields(payload), fields(payload, station_id=1), fields(payload, password="x"),
            fields(payload, checksum="0" * 32), {"station_id": 99}]
    assert [post(server.url, form) for form in sent] == ["100", "100", "206", "203", "201", "400"]
    with urllib.request.urlopen(server.url + "metrics", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = response.read().decode()
    counts = {code: n for code, n in [("100", 2), ("201", 1), ("203", 1), ("205", 0), ("206", 1),
                                      ("208", 0), ("400", 1)]}
    for code, n in counts.items():
        assert f'datastore_receiver_uploads_total{{code="{code}"}} {n}\n' in text
    assert "datastore_receiver_duplicate_uploads_total 1\n" in text
    assert "datastore_receiver_upload_duration_seconds_count 6\n" in text


# -- end to end -----------------------------------------------------------------------------------------


def test_an_uploaded_batch_ends_up_in_the_day_file(testdata, settings, server):
    from hisparc_datastore.plugin.registry import load_registry
    from hisparc_datastore.testing.helpers import settings_for
    from hisparc_datastore.writer.service import Writer

    payload = (testdata / "uploads/py2_s510_100events").read_bytes()
    assert post(server.url, fields(payload, station_id=510, password="pw510")) == "100"
    tally = Writer(settings_for(settings.data_dir, minimum_year=2016), load_registry()).run(once=True)
    assert (tally.uploads, tally.events) == (1, 100)
    assert queue(settings.data_dir)["incoming"] == []

    with tables.open_file(settings.data_dir / "2017/2/2017_2_26.h5") as h5:
        station = h5.get_node("/hisparc/cluster_utrecht/station_510")
        events, singles = station.events.read(), station.singles.read()
    assert (len(events), len(singles)) == (36, 64)
    assert events[0]["timestamp"] == calendar.timegm((2017, 2, 26, 7, 26, 4)) == 1488093964
    assert events[0]["nanoseconds"] == 130245552
    assert events[0]["ext_timestamp"] == 1488093964 * 1_000_000_000 + 130245552
    assert list(events[0]["pulseheights"]) == [625, 972, 923, 724]
    assert list(events["event_id"]) == list(range(1, 37))
    assert singles[0]["timestamp"] == calendar.timegm((2017, 2, 26, 7, 26, 19))
    assert (singles[0]["mas_ch1_low"], singles[0]["mas_ch1_high"]) == (319, 88)
    assert (singles[0]["slv_ch2_low"], singles[0]["slv_ch2_high"]) == (374, 106)


# -- pieces ---------------------------------------------------------------------------------------------


@given(st.binary(max_size=2000))
def test_the_form_gives_back_the_exact_bytes_the_station_pickled(payload):
    body = urllib.parse.urlencode(fields(payload)).encode("ascii")
    form = app_module.parse_form(body)
    assert form["data"].encode("latin-1") == payload
    assert form["checksum"] == hashlib.md5(payload).hexdigest()


def test_a_station_list_with_a_byte_order_mark_keeps_its_first_station(tmp_path):
    path = tmp_path / "stations.csv"
    path.write_text("99,amsterdam,fake_station\r\n510,Utrecht,pw510\r\n", encoding="utf-8-sig")
    stations = StationList(path)
    assert stations.get(99) == Station(99, "amsterdam", "fake_station")
    assert stations.get(510).password_matches("pw510") and not stations.get(510).password_matches("pw51")
    assert "pw510" not in repr(stations.get(510))


def test_stale_files_in_tmp_are_removed_at_start_up_and_fresh_ones_kept(tmp_path):
    queue_spool = spool.Spool(tmp_path, fsync=False)
    # temporary files as write_atomically names them (a requeue's); names not the datastore's
    # are never removed (test_receiver_foreign_tmp)
    old, fresh = queue_spool.queue.tmp / ".old.events.12.tmp", queue_spool.queue.tmp / ".fresh.events.34.tmp"
    old.write_bytes(b"half")
    fresh.write_bytes(b"being written by another receiver")
    os.utime(old, (time.time() - 2 * 3600,) * 2)
    assert queue_spool.remove_stale_tmp() == 1
    assert sorted(os.listdir(queue_spool.queue.tmp)) == [".fresh.events.34.tmp"]


def test_unique_names_differ_within_one_nanosecond_and_carry_pid_and_station(tmp_path):
    queue_spool = spool.Spool(tmp_path, fsync=False)
    names = {queue_spool.unique_name(510, "0123456789abcdef") for _ in range(1000)}
    assert len(names) == 1000
    assert all(f"-{os.getpid()}-" in n and n.endswith("-510-01234567") for n in names)
