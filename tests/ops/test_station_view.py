"""Per station, bounded by the station list (issue 25, point 1): last upload received, last
refusal with its code and a count, last stored, events stored today per table; in ``datastore
status`` (silent longest first, the threshold a setting) and ``--json``, and on the
receiver's and the writer's /metrics as ``*_timestamp_seconds`` gauges with a ``station``
label. Real uploads to a real receiver, stored by a real writer."""

import hashlib
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

from hisparc_datastore.config import load_settings
from hisparc_datastore.ops.status import collect, render
from hisparc_datastore.receiver.app import build_app
from hisparc_datastore.receiver.server import ServerThread
from hisparc_datastore.testing.serveprocess import free_port
from hisparc_datastore.writer import metrics as writer_metrics
from hisparc_datastore.writer.lock import WriterLock

STATIONS = "501,amsterdam,pw501\n502,amsterdam,pw502\n510,amsterdam,pw510\n511,utrecht,pw511\n"


def write_config(tmp_path: Path, extra: str = "") -> Path:
    (tmp_path / "stations.csv").write_text(STATIONS)
    (tmp_path / "data").mkdir(exist_ok=True)
    config = tmp_path / "config.ini"
    config.write_text(
        f"[General]\nlog=\nstation_list={tmp_path}/stations.csv\ndata_dir={tmp_path}/data\n"
        f"minimum_year=2016\n{extra}[Writer]\nfsync=false\nreserve_mb=0\nprepare_process=false\n"
        f"[Receiver]\nreceiver_bind=127.0.0.1:{free_port()}\nreceiver_reserve_mb=0\n")
    return config


def post(url: str, station: int, password: str, data: bytes, checksum: str | None = None) -> str:
    form = {"station_id": str(station), "password": password, "data": data.decode("latin-1"),
            "checksum": checksum or hashlib.md5(data).hexdigest()}
    with urllib.request.urlopen(url, urllib.parse.urlencode(form).encode(), timeout=60) as reply:
        return reply.read().decode()


def scrape(text: str) -> dict[str, float]:
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line and not line.startswith("#")}


def test_each_station_shows_what_it_sent_what_was_refused_and_what_was_stored(tmp_path, testdata):
    config = write_config(tmp_path)
    settings = load_settings(config)
    good = (testdata / "uploads/py2_s510_100events").read_bytes()
    old = (testdata / "uploads/suspicious_event").read_bytes()
    before = time.time()
    with ServerThread(build_app(settings)) as server:
        # 501: refused three ways, each kept or counted
        assert post(server.url, 501, "pw501", good, checksum="0" * 32) == "201"
        assert post(server.url, 501, "wrong", good) == "203"
        assert post(server.url, 501, "pw501", b"not a pickle") == "208"
        # 502: accepted, but everything it sends goes to suspicious/
        assert post(server.url, 502, "pw502", old) == "100"
        # 510: accepted and stored; 511 sends nothing; 999 is not a station of ours
        assert post(server.url, 510, "pw510", good) == "100"
        assert post(server.url, 999, "pw999", good) == "206"  # as the deployed receiver answers
        metrics = scrape(urllib.request.urlopen(f"{server.url}metrics", timeout=60).read().decode())
    done = subprocess.run([sys.executable, "-m", "hisparc_datastore.cli", "writer", str(config), "--once"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr

    # the receiver's series: only listed stations, the refusals by code
    prefix = "datastore_receiver_station_"
    assert set(k for k in metrics if k.startswith(prefix + "last_upload_timestamp")) == {
        f'{prefix}last_upload_timestamp_seconds{{station="{n}"}}' for n in (501, 502, 510)}
    assert before <= metrics[f'{prefix}last_refusal_timestamp_seconds{{station="501"}}'] <= time.time()
    assert f'{prefix}last_accepted_timestamp_seconds{{station="501"}}' not in metrics
    assert {k: v for k, v in metrics.items() if k.startswith(prefix + "refusals_total")} == {
        f'{prefix}refusals_total{{station="501",code="{code}"}}': 1.0 for code in ("201", "203", "208")}
    assert not any('"999"' in k for k in metrics)

    with WriterLock(settings.data_dir):
        report = collect(settings)
    by_number = {s["number"]: s for s in report["stations"]}
    assert set(by_number) == {501, 502, 510, 511}
    refused = by_number[501]
    assert refused["last_refusal"]["code"] == "208" and "cannot unpickle" in refused["last_refusal"]["detail"]
    assert refused["refusals"] == {"201": 1, "203": 1, "208": 1} and refused["refused_since_accepted"] == 3
    assert refused["last_accepted"] is None and refused["last_stored"] is None
    assert refused["quiet"] is False  # it is sending: refused, not silent
    assert by_number[502]["set_aside"] is True and by_number[502]["last_stored"] is None
    assert by_number[510]["stored_today"] == {"events": 36, "singles": 64}
    assert by_number[510]["set_aside"] is False and by_number[510]["last_stored"] >= before
    assert by_number[511]["quiet"] is True and by_number[511]["last_received"] is None
    assert report["quiet_stations"] == [511] and report["refused_stations"] == [501]
    # 501's refused uploads were kept in quarantine too: both are pointed there
    assert report["set_aside_stations"] == [501, 502]
    assert f"stations 501, 502: what they sent lately was set aside, not stored; see `datastore quarantine " \
           f"{config}`" in report["warnings"]
    assert "stations refused since their last accepted upload: 501 (208)" in report["warnings"]
    # silent longest first: 511 never heard of, then by silence
    assert [s["number"] for s in report["stations"]][0] == 511

    screen = render(report)
    line_501 = next(line for line in screen.splitlines() if line.lstrip().startswith("501 "))
    assert "REFUSED 208 3x since last accepted" in line_501
    assert "SET ASIDE: see `datastore quarantine`" in next(
        line for line in screen.splitlines() if line.lstrip().startswith("502 "))
    assert "events 36, singles 64" in next(line for line in screen.splitlines()
                                            if line.lstrip().startswith("510 "))


def test_the_silence_threshold_is_a_setting(tmp_path, testdata):
    config = write_config(tmp_path, "quiet_after_s=120\n")
    settings = load_settings(config)
    with ServerThread(build_app(settings)) as server:
        assert post(server.url, 510, "pw510", (testdata / "uploads/py3event").read_bytes()) == "100"
    now = time.time()
    assert 510 not in collect(settings, now + 60)["quiet_stations"]
    later = collect(settings, now + 600)
    assert 510 in later["quiet_stations"] and later["quiet_after_s"] == 120
    # the order follows the silence: 510, heard 600 s ago, after those never heard
    assert [s["number"] for s in later["stations"]] == [501, 502, 511, 510]


def test_the_records_survive_a_restart_of_the_receiver(tmp_path, testdata):
    config = write_config(tmp_path)
    with ServerThread(build_app(load_settings(config))) as server:
        assert post(server.url, 501, "wrong", b"x") == "203"
    with ServerThread(build_app(load_settings(config))) as server:
        text = urllib.request.urlopen(f"{server.url}metrics", timeout=60).read().decode()
    assert 'datastore_receiver_station_refusals_total{station="501",code="203"} 1' in text


def test_the_writer_exposes_each_stations_last_stored(tmp_path, testdata):
    from hisparc_datastore.codec.decoding import Upload, parse_event_list
    from hisparc_datastore.plugin.registry import load_registry
    from hisparc_datastore.testing.helpers import queue_uploads, settings_for
    from hisparc_datastore.writer.service import Writer

    events = parse_event_list((testdata / "uploads/py2_s510_100events").read_bytes())
    queue_uploads(tmp_path, [Upload(510, "Amsterdam", events)])
    writer = Writer(settings_for(tmp_path, minimum_year=2016, prepare_process=False), load_registry())
    fresh = scrape(writer_metrics.render(writer))
    # every counter from the start, at 0, for every installed type
    assert fresh['datastore_writer_events_stored_total{type="CIC"}'] == 0
    assert fresh['datastore_writer_events_stored_total{type="WTR"}'] == 0
    assert fresh["datastore_writer_uploads_stored_total"] == 0
    writer.run(once=True)
    metrics = scrape(writer_metrics.render(writer))
    stored_at = metrics['datastore_writer_station_last_stored_timestamp_seconds{station="510"}']
    assert abs(stored_at - writer.state.stations["510"]["last_stored"]) < 0.01
    assert metrics['datastore_writer_events_stored_total{type="CIC"}'] == 36
