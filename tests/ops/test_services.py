"""Every service in ``datastore status`` (issue 25, point 2): bind addresses are settings
that the flags override, each service answers ``/health``, a GET is never an upload, status
probes the receiver and the config-server where the configuration says and is unhealthy
when one is down, the disk's days until full, and ``status --nagios``."""

import datetime
import hashlib
import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from hisparc_datastore.config import load_settings
from hisparc_datastore.ops.disk import disk_report
from hisparc_datastore.ops.status import collect
from hisparc_datastore.receiver.app import build_app
from hisparc_datastore.receiver.server import ServerThread
from hisparc_datastore.stations.configserver import make_config_server
from hisparc_datastore.testing.helpers import wait_for
from hisparc_datastore.testing.serveprocess import free_port
from hisparc_datastore.writer.lock import WriterLock

DATASTORE = Path(sys.executable).with_name("datastore")


def write_config(tmp_path: Path, receiver_port: int, config_port: int | None = None,
                 extra: str = "") -> Path:
    (tmp_path / "stations.csv").write_text("99,amsterdam,fake_station\n")
    (tmp_path / "data").mkdir(exist_ok=True)
    url = f"station_list_url=http://127.0.0.1:{free_port()}/config/datastore\n" if config_port else ""
    config = tmp_path / "config.ini"
    config.write_text(
        f"[General]\nlog=\nstation_list={tmp_path}/stations.csv\ndata_dir={tmp_path}/data\n"
        f"minimum_year=2016\n{url}{extra}[Writer]\nfsync=false\nreserve_mb=0\n"
        f"[Receiver]\nreceiver_bind=127.0.0.1:{receiver_port}\nreceiver_reserve_mb=0\n"
        f"[ConfigServer]\nconfig_server_bind=127.0.0.1:{config_port or free_port()}\n")
    return config


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=60) as reply:
            return reply.status, reply.headers["Content-Type"], reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def upload(url: str, testdata: Path) -> str:
    payload = (testdata / "uploads/py3event").read_bytes()
    form = {"station_id": "99", "password": "fake_station", "data": payload.decode("latin-1"),
            "checksum": hashlib.md5(payload).hexdigest()}
    with urllib.request.urlopen(url, urllib.parse.urlencode(form).encode(), timeout=60) as reply:
        return reply.read().decode()


def scrape(url: str) -> dict[str, float]:
    text = get(url)[2]
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line and not line.startswith("#")}


def status(*argv) -> subprocess.CompletedProcess:
    return subprocess.run([DATASTORE, "status", *map(str, argv)], capture_output=True, text=True,
                          timeout=120)


def test_serve_listens_at_the_setting_and_the_flag_overrides_it(tmp_path):
    setting, flag = free_port(), free_port()
    config = write_config(tmp_path, setting)
    for argv, listening, idle in (([], setting, flag), (["--bind", f"127.0.0.1:{flag}"], flag, setting)):
        serve = subprocess.Popen([DATASTORE, "serve", config, *argv], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True)
        try:
            assert wait_for(lambda port=listening: _health(port) == "receiver", 120), serve.poll()
            assert _health(idle) is None
        finally:
            serve.terminate()
            assert serve.wait(60) == 0, serve.stderr.read()


def _health(port: int) -> str | None:
    try:
        status, content_type, body = get(f"http://127.0.0.1:{port}/health")
    except OSError:
        return None
    assert (status, content_type) == (200, "application/json")
    return json.loads(body)["service"]


def test_every_service_answers_health_and_a_get_is_never_an_upload(tmp_path):
    config = write_config(tmp_path, free_port(), config_port=free_port())
    settings = load_settings(config)
    rpc = make_config_server(settings)
    threading.Thread(target=rpc.serve_forever, daemon=True).start()
    try:
        with ServerThread(build_app(settings)) as server:
            status_, content_type, body = get(f"{server.url}health")
            assert (status_, content_type) == (200, "application/json")
            assert json.loads(body)["service"] == "receiver" and json.loads(body)["status"] == "ok"
            assert get(server.url)[2] == "400" and get(f"{server.url}favicon.ico")[2] == "400"
            metrics = scrape(f"{server.url}metrics")
            counted = [name for name, n in metrics.items() if name.startswith("datastore_uploads") and n]
            assert counted == []
            assert metrics["datastore_receiver_not_upload_requests_total"] == 2

        base = f"http://127.0.0.1:{rpc.server_address[1]}"
        status_, content_type, body = get(f"{base}/health")
        assert (status_, json.loads(body)["service"]) == (200, "config-server")
        status_, content_type, body = get(f"{base}/")
        # not http.server's 501 HTML page
        assert (status_, content_type) == (404, "text/plain; charset=utf-8") and "<" not in body
    finally:
        rpc.shutdown()
        rpc.server_close()


def test_status_probes_the_services_where_the_configuration_says(tmp_path, testdata):
    receiver_port, config_port = free_port(), free_port()
    config = write_config(tmp_path, receiver_port, config_port)
    settings = load_settings(config)
    rpc = make_config_server(settings, port=config_port)
    threading.Thread(target=rpc.serve_forever, daemon=True).start()
    try:
        with WriterLock(settings.data_dir), ServerThread(build_app(settings), port=receiver_port) as server:
            assert upload(server.url, testdata) == "100"
            report = collect(settings)
            assert report["healthy"], report["problems"]
            assert report["services"] == {
                "receiver": {"service": "receiver", "address": f"127.0.0.1:{receiver_port}", "up": True,
                             "problem": None},
                "config-server": {"service": "config-server", "address": f"127.0.0.1:{config_port}",
                                  "up": True, "problem": None}}
            done = status(config, "--nagios")
            assert done.returncode == 0, done.stdout
            text, perf = done.stdout.strip().split(" | ")
            assert text.startswith("DATASTORE OK - 1 stations, 0 silent, 1 uploads waiting, ")
            assert {"services_down=0;;1;0", "silent_stations=0;;;0", "incoming=1;;;0"} <= set(perf.split())
            # the receiver stops: unhealthy, Nagios CRITICAL
        rpc.shutdown()
        rpc.server_close()
        with WriterLock(settings.data_dir):
            report = collect(settings)
            assert report["problems"] == [
                f"receiver at 127.0.0.1:{receiver_port}: does not answer: Connection refused",
                f"config-server at 127.0.0.1:{config_port}: does not answer: Connection refused"]
            done = status(config, "--nagios")
            assert done.returncode == 2 and done.stdout.startswith(
                f"DATASTORE CRITICAL - receiver at 127.0.0.1:{receiver_port}: does not answer")
            assert "services_down=2;;1;0" in done.stdout and len(done.stdout.splitlines()) == 1
            assert "receiver       127.0.0.1" in status(config).stdout
    finally:
        rpc.server_close()


def test_another_program_on_the_receivers_port_is_not_our_receiver(tmp_path):
    import http.server

    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        config = write_config(tmp_path, other.server_address[1])
        report = collect(load_settings(config))
        assert (f"receiver at 127.0.0.1:{other.server_address[1]}: a program that is not our receiver "
                "answers (HTTP 404)") in report["problems"]
    finally:
        other.shutdown()
        other.server_close()


def test_nagios_warns_of_silent_stations_and_is_unknown_without_a_configuration(tmp_path):
    config = write_config(tmp_path, free_port())
    settings = load_settings(config)
    with WriterLock(settings.data_dir), ServerThread(build_app(settings), port=int(
            settings.receiver_bind.rsplit(":", 1)[1])):
        done = status(config, "--nagios")
    assert done.returncode == 1, done.stdout
    assert done.stdout.startswith("DATASTORE WARNING - 1 of 1 listed stations silent for more than "
                                  "[General] quiet_after_s = 3600 | ")
    done = status(tmp_path / "missing.ini", "--nagios")
    assert done.returncode == 3
    assert done.stdout.startswith("DATASTORE UNKNOWN - ConfigError: cannot read configuration")


def _day_file(data_dir: Path, date: datetime.date, size: int) -> None:
    path = data_dir / f"{date.year}/{date.month}/{date.year}_{date.month}_{date.day}.h5"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.truncate(size)  # sparse: only the size is read


def test_days_until_full_come_from_the_day_files_recent_growth(tmp_path):
    config = write_config(tmp_path, free_port(), extra="")
    settings = load_settings(config)
    now = datetime.datetime(2026, 12, 6, 12, 0, tzinfo=datetime.timezone.utc)
    assert disk_report(settings, now.timestamp())["days_until_full"] is None  # no day files yet
    data_dir, gb = settings.data_dir, 10**9
    _day_file(data_dir, datetime.date(2026, 12, 4), 2 * gb)
    _day_file(data_dir, datetime.date(2026, 12, 5), 2 * gb)
    _day_file(data_dir, datetime.date(2026, 12, 6), 1 * gb)  # half a day in
    _day_file(data_dir, datetime.date(2026, 11, 1), 50 * gb)  # a month ago: not recent growth
    report = disk_report(settings, now.timestamp())
    assert report["growth_bytes_per_day"] == 2 * gb  # 5 GB in 2.5 days
    assert report["days_until_full"] == round(report["free_bytes"] / (2 * gb), 1)
    assert report["writer_reserve_bytes"] == report["receiver_reserve_bytes"] == 0
    from hisparc_datastore.ops.status import render

    assert "growth 2.0 GB a day, full in " in render(collect(settings, now.timestamp()))


@pytest.mark.parametrize("days,warned", [(3.0, True), (30.0, False)])
def test_a_disk_full_within_two_weeks_is_a_warning(tmp_path, days, warned):
    from hisparc_datastore.ops import status as status_module

    config = write_config(tmp_path, free_port())
    settings = load_settings(config)
    free = disk_report(settings)["free_bytes"]
    today = datetime.datetime.now(datetime.timezone.utc).date()
    span_days = (time.time() - datetime.datetime.combine(
        today - datetime.timedelta(days=1), datetime.time(), datetime.timezone.utc).timestamp()) / 86400
    _day_file(settings.data_dir, today - datetime.timedelta(days=1), int(free / days * span_days))
    report = status_module.collect(settings)
    found = [w for w in report["warnings"] if w.startswith("the disk is full in ")]
    assert bool(found) is warned, report["warnings"]


def test_upload_time_is_a_histogram_with_cumulative_buckets(tmp_path, testdata):
    config = write_config(tmp_path, free_port())
    with ServerThread(build_app(load_settings(config))) as server:
        assert upload(server.url, testdata) == "100"
        assert upload(server.url, testdata) == "100"  # a duplicate: answered quickly
        metrics = scrape(f"{server.url}metrics")
    name = "datastore_receiver_upload_duration_seconds"
    buckets = [(k.split('le="')[1].rstrip('"}'), v) for k, v in metrics.items()
               if k.startswith(f"{name}_bucket")]
    assert buckets[-1] == ("+Inf", 2) and metrics[f"{name}_count"] == 2
    counts = [v for _, v in buckets]
    assert counts == sorted(counts)  # cumulative
    assert 0 < metrics[f"{name}_sum"] < 60
    assert [float(le) for le, _ in buckets[:-1]] == sorted(float(le) for le, _ in buckets[:-1])
