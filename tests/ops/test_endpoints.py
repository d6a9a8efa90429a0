"""The services' HTTP endpoints as an operator's proxy and monitoring meet them: metrics only
at exactly ``/metrics``, a writer's metrics server that one idle client cannot block, and the
station's address taken from X-Forwarded-For only when a configured trusted proxy sent it."""

import hashlib
import logging
import pickle
import socket
import urllib.error
import urllib.parse
import urllib.request

import attrs
import pytest

from hisparc_datastore.config import load_settings
from hisparc_datastore.plugin.registry import load_registry
from hisparc_datastore.receiver.app import build_app
from hisparc_datastore.receiver.server import ServerThread
from hisparc_datastore.testing.helpers import event, settings_for
from hisparc_datastore.writer.metrics import MetricsServer
from hisparc_datastore.writer.service import Writer


@pytest.fixture
def config(tmp_path):
    (tmp_path / "stations.csv").write_text("99,amsterdam,pw\n")
    path = tmp_path / "config.ini"
    path.write_text(f"[General]\nloglevel=info\nstation_list={tmp_path}/stations.csv\n"
                    f"data_dir={tmp_path}/data\nminimum_year=2016\n")
    return path


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""


@pytest.mark.parametrize("path", ["foo/metrics", "metrics/", "a/b/metrics", "metricsx"])
def test_the_receiver_serves_metrics_only_at_exactly_slash_metrics(config, path):
    with ServerThread(build_app(load_settings(config))) as server:
        assert "\n# HELP datastore_receiver_uploads_total" in get(server.url + "metrics")[1]
        status, body = get(server.url + path)
        assert (status, body) == (200, "400")  # a GET elsewhere is an invalid upload, no metrics


@pytest.fixture
def writer_metrics(tmp_path):
    writer = Writer(settings_for(tmp_path), load_registry())
    with MetricsServer(writer, "127.0.0.1", 0) as server:
        yield server


@pytest.mark.parametrize("path", ["/foo/metrics", "/metrics/", "/", "/metricsx"])
def test_the_writer_serves_metrics_only_at_exactly_slash_metrics(writer_metrics, path):
    base = writer_metrics.url.removesuffix("/metrics")
    status, body = get(writer_metrics.url)
    assert status == 200 and "datastore_writer_uploads_stored_total 0" in body
    assert get(base + path)[0] == 404


def test_an_idle_connection_does_not_block_the_writers_scrapes(writer_metrics):
    """The single-threaded server waited on the idle client: every scrape timed out and
    monitoring reported the writer down."""
    host, port = urllib.parse.urlsplit(writer_metrics.url).netloc.split(":")
    with socket.create_connection((host, int(port)), timeout=60) as idle, \
            socket.create_connection((host, int(port)), timeout=60) as slow:
        slow.sendall(b"GET /metr")
        for _ in range(3):
            status, body = get(writer_metrics.url)
            assert status == 200 and "datastore_writer_queue_files" in body
        # and the idle one is closed by the server after its time-out, not kept for ever
        assert idle.recv(100) == b""


def upload_form(station: int = 99, password: str = "pw") -> bytes:
    import datetime

    payload = pickle.dumps([event("CIC", datetime.datetime(2017, 2, 26, 7, 26, 4), {"PH1": 1})],
                           protocol=2)
    return urllib.parse.urlencode({"station_id": station, "password": password,
                                   "data": payload.decode("latin-1"),
                                   "checksum": hashlib.md5(payload).hexdigest()}).encode()


def post_via(url: str, forwarded: str | None) -> str:
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    request = urllib.request.Request(url, upload_form(), headers=headers)
    with urllib.request.urlopen(request, timeout=30) as reply:
        return reply.read().decode()


def test_behind_a_trusted_proxy_the_stations_own_address_is_logged(config, caplog):
    settings = attrs.evolve(load_settings(config), trusted_proxies="127.0.0.1, ::1")
    caplog.set_level(logging.INFO, logger="hisparc_datastore")
    with ServerThread(build_app(settings)) as server:
        # nginx's $proxy_add_x_forwarded_for appends the address it saw: the last one counts
        assert post_via(server.url, "203.0.113.9, 192.0.2.7") == "100"
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("station 99 ")]
    assert lines == [lines[0]] and "from 192.0.2.7: 100" in lines[0], lines


def test_x_forwarded_for_from_a_peer_not_configured_as_proxy_is_ignored(config, caplog):
    settings = load_settings(config)  # no trusted_proxies: anyone could write the header
    caplog.set_level(logging.INFO, logger="hisparc_datastore")
    with ServerThread(build_app(settings)) as server:
        assert post_via(server.url, "192.0.2.7") == "100"
    assert any("from 127.0.0.1: 100" in r.getMessage() for r in caplog.records)
    assert not any("192.0.2.7" in r.getMessage() for r in caplog.records)


def test_a_trusted_proxy_without_the_header_is_logged_as_itself(config, caplog):
    settings = attrs.evolve(load_settings(config), trusted_proxies="127.0.0.1")
    caplog.set_level(logging.INFO, logger="hisparc_datastore")
    with ServerThread(build_app(settings)) as server:
        assert post_via(server.url, None) == "100"
    assert any("from 127.0.0.1: 100" in r.getMessage() for r in caplog.records)
