"""Requests refused before a station is known (GET /, a POST lacking fields, a station that is
not a number) are logged in full the first few times per client address and interval, then
summarised: one client wrote a line per request, 190 to 340 a second. A real receiver on
loopback; the second client address is 127.0.0.2."""

import hashlib
import http.client
import logging
import pickle
import urllib.parse

from hisparc_datastore.receiver import build_app
from hisparc_datastore.receiver.refusals import OTHERS, RefusalLog
from hisparc_datastore.receiver.server import ServerThread
from hisparc_datastore.testing.helpers import settings_for, wait_for

BAD = [("GET", "/", b""), ("POST", "/", b"station_id=501&password=pw"),
       ("POST", "/", b"station_id=abc&password=pw&data=x&checksum=y")]


def request(port, method, body, source="127.0.0.1"):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60, source_address=(source, 0))
    try:
        headers = {"Content-Type": "application/x-www-form-urlencoded"} if method == "POST" else {}
        connection.request(method, "/", body=body if method == "POST" else None, headers=headers)
        return connection.getresponse().read().decode()
    finally:
        connection.close()


def honest_form():
    payload = pickle.dumps([], protocol=2)
    return urllib.parse.urlencode({"station_id": "501", "password": "pw", "data": payload.decode("latin-1"),
                                   "checksum": hashlib.md5(payload).hexdigest()}).encode()


def test_a_flood_of_refused_requests_is_a_few_lines_and_a_summary(tmp_path, caplog):
    (tmp_path / "stations.csv").write_text("501,amsterdam,pw\n")
    settings = settings_for(tmp_path / "data", station_list=tmp_path / "stations.csv")
    app = build_app(settings)
    app.refusals = RefusalLog(interval=3.0)
    caplog.set_level(logging.INFO)
    with ServerThread(app) as server:
        answers = [request(server.port, method, body) for _ in range(70) for method, _, body in BAD]
        assert set(answers) == {"400"}
        # what must still be logged: another address's first refusals, every honest upload
        assert request(server.port, "GET", b"", source="127.0.0.2") == "400"
        assert request(server.port, "POST", honest_form()) == "100"

        def summarised():
            request(server.port, "GET", b"", source="127.0.0.2")  # any request sweeps
            return any("more refused request(s)" in r.getMessage() for r in caplog.records)
        assert wait_for(summarised, 60, interval=0.5)
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("hisparc_datastore.receiver")]
    in_full = [line for line in lines if "from 127.0.0.1: 400" in line]
    assert len(in_full) == 5, lines
    assert "method GET, not POST" in in_full[0] and "missing field(s) data, checksum" in in_full[1]
    assert "station_id 'abc' is not a number" in in_full[2]
    assert any("from 127.0.0.2: 400" in line for line in lines)
    assert any("station 501 from 127.0.0.1: 100" in line for line in lines)
    summary = [line for line in lines if line.startswith("127.0.0.1: ") and "more refused" in line]
    assert len(summary) == 1 and summary[0].startswith("127.0.0.1: 205 more refused request(s)"), summary
    assert app.metrics.render().count("400") >= 1  # still counted on /metrics


def test_the_table_is_bounded_and_the_addresses_beyond_share_one_summary(caplog):
    now = [0.0]
    refusals = RefusalLog(first=2, interval=60.0, max_addresses=100, clock=lambda: now[0])
    caplog.set_level(logging.INFO)
    logged = sum(refusals.log_in_full(f"10.0.{n // 250}.{n % 250}") for n in range(10_000) for _ in range(3))
    assert len(refusals) == 101
    assert logged == 100 * 2 + 2  # the first two of each of 100 addresses, and of the shared entry
    now[0] = 61.0
    refusals.sweep()
    assert len(refusals) == 0
    summaries = [r.getMessage() for r in caplog.records]
    assert len(summaries) == 101
    assert f"{OTHERS}: {9_900 * 3 - 2} more refused request(s)" in "\n".join(summaries)
