"""quarantine/ and suspicious/ keep at most hold_files files and hold_mb MB per station and
kind; beyond that the first and the latest upload are kept, and their reason counts every
one, so nothing a station sent goes without a trace; hold_days prunes them like the archive;
status and /metrics show what was only counted. One station's password filled a disk at
12 MB/s (bad checksums) and 845 files/s (uploads dated before minimum_year)."""

import datetime
import hashlib
import logging
import os
import pickle
import re
import time
import urllib.parse
import urllib.request

from hisparc_datastore.cli import main
from hisparc_datastore.codec.decoding import Upload
from hisparc_datastore.config import load_settings
from hisparc_datastore.ops.status import collect, render
from hisparc_datastore.receiver import build_app
from hisparc_datastore.receiver.server import ServerThread
from hisparc_datastore.testing.helpers import event, queue_uploads, read_station
from hisparc_datastore.writer.metrics import held_metrics
from hisparc_datastore.writer.tidying import prune_held

GOOD = datetime.datetime(2024, 5, 6, 7, 0, 0)


def write_config(tmp_path, extra=""):
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "stations.csv").write_text("501,amsterdam,pw\n502,utrecht,pw2\n")
    config = tmp_path / "config.ini"
    config.write_text(f"[General]\nlog=\nstation_list={tmp_path}/stations.csv\ndata_dir={tmp_path}/data\n"
                      f"minimum_year=2016\nhold_files=5\nhold_mb=1\n{extra}[Writer]\nfsync=false\n"
                      "prepare_process=false\n")
    return config


def post(url, station, password, payload, checksum=None):
    body = urllib.parse.urlencode({"station_id": station, "password": password,
                                   "data": payload.decode("latin-1"),
                                   "checksum": checksum or hashlib.md5(payload).hexdigest()}).encode()
    with urllib.request.urlopen(url, body, timeout=60) as reply:
        return reply.read().decode()


def upload(n, moment=GOOD):
    return pickle.dumps([event("SIN", moment + datetime.timedelta(seconds=n), {"MAS_CH1_LOW": n})],
                        protocol=2)


def tally(path):
    match = re.search(r"beyond the bound: (\d+) upload\(s\), (\d+) bytes", path.read_text())
    return int(match.group(1)), int(match.group(2))


def test_one_station_cannot_fill_quarantine_or_suspicious(tmp_path, caplog):
    settings = load_settings(write_config(tmp_path))
    data = settings.data_dir
    caplog.set_level(logging.INFO)
    with ServerThread(build_app(settings)) as server:
        bad = [post(server.url, 501, "pw", upload(n), checksum="0" * 32) for n in range(30)]
        early = [post(server.url, 501, "pw", upload(n, datetime.datetime(2010, 1, 1))) for n in range(30)]
        # what must still be kept whole: another station's, and every good upload
        assert post(server.url, 502, "pw2", upload(99), checksum="0" * 32) == "201"
        assert [post(server.url, 501, "pw", upload(1000 + n)) for n in range(3)] == ["100"] * 3
    assert bad == ["201"] * 30 and early == ["100"] * 30
    quarantine = sorted(p.name for p in (data / "quarantine").iterdir())
    assert len([n for n in quarantine if n.startswith("501-") and n.endswith(".refused")]) == 5
    assert len([n for n in quarantine if n.startswith("502-") and n.endswith(".refused")]) == 1
    first = data / "quarantine" / "overflow-501-refused.first"
    last = data / "quarantine" / "overflow-501-refused.last"
    assert first.read_bytes() == upload(5) and last.read_bytes() == upload(29)
    count, size = tally(last.with_name(last.name + ".reason"))
    assert count == 25 and size == sum(len(upload(n)) for n in range(5, 30))
    assert "only the first (overflow-501-refused.first) and the latest" in first.with_name(
        first.name + ".reason").read_text()
    suspicious = sorted(p.name for p in (data / "suspicious").iterdir()
                        if not p.name.endswith(".reason") and not p.name.startswith("."))
    assert len([n for n in suspicious if not n.startswith("overflow-")]) == 5
    assert tally(data / "suspicious" / "overflow-501-set-aside.last.reason")[0] == 25
    why = (data / "suspicious" / "overflow-501-set-aside.last.reason").read_text()
    assert "before minimum_year 2016" in why
    assert len(list((data / "incoming").iterdir())) == 3
    # the receiver's line names where the refused bytes went
    assert any("kept as quarantine/overflow-501-refused.last" in r.getMessage() for r in caplog.records)

    status = collect(settings)
    assert status["beyond_bound"]["quarantine"]["uploads"] == 25
    assert status["beyond_bound"]["suspicious"]["uploads"] == 25
    assert not status["healthy"] and any("beyond [General] hold_files" in p for p in status["problems"])
    assert "beyond the bound: quarantine 25 upload(s)" in render(status)
    lines = [line for lines in held_metrics(data) for line in lines]
    assert 'datastore_writer_held_beyond_bound_uploads{folder="quarantine"} 25' in lines
    assert 'datastore_writer_held_beyond_bound_uploads{folder="suspicious"} 25' in lines


def test_the_writer_keeps_events_it_cannot_store_within_the_bound(tmp_path):
    config = write_config(tmp_path)
    data = tmp_path / "data"
    uploads = [Upload(501, "amsterdam", [
        event("XXX", GOOD, {"A": n}), event("SIN", GOOD + datetime.timedelta(seconds=n), {"MAS_CH1_LOW": n})])
        for n in range(12)]
    queue_uploads(data, uploads)
    assert main(["writer", str(config), "--once"]) == 0
    kept = [p for p in (data / "quarantine").iterdir() if p.name.endswith(".events")]
    assert len(kept) == 5
    why = data / "quarantine" / "overflow-501-unstorable.last.reason"
    assert tally(why)[0] == 7 and "unknown event type 'XXX'" in why.read_text()
    # every storable event is stored
    rows = read_station(data, GOOD.date(), "amsterdam", 501)["singles"]
    assert sorted(int(row["mas_ch1_low"]) for row in rows) == list(range(12))


def test_hold_days_prunes_old_files_with_their_reasons(tmp_path, caplog):
    config = write_config(tmp_path, "")
    config.write_text(config.read_text().replace("[Writer]\n", "[Writer]\nhold_days=30\n"))
    data = tmp_path / "data"
    settings = load_settings(config)
    for folder in ("quarantine", "suspicious"):
        (data / folder).mkdir(parents=True, exist_ok=True)
    old = data / "quarantine" / "501-0123456789abcdef0123456789abcdef.refused"
    young = data / "suspicious" / "1796531407815744893-1-3-501-424f84b2"
    for path in (old, young):
        path.write_bytes(b"x")
        path.with_name(path.name + ".reason").write_text("why\n")
    moment = time.time() - 31 * 86400
    os.utime(old, (moment, moment))
    os.utime(old.with_name(old.name + ".reason"), (moment, moment))
    os.utime(young, (moment, moment))  # sent long ago, but set aside just now: kept
    damaged = data / "quarantine" / "2024_5_6.h5.damaged-20260101T000000Z"  # the writer's, not a station's
    damaged.write_bytes(b"day file")
    os.utime(damaged, (moment, moment))
    caplog.set_level(logging.INFO)
    from hisparc_datastore.queue.folders import Queue
    assert prune_held(Queue(data), settings.hold_days) == 1
    assert not old.exists() and not old.with_name(old.name + ".reason").exists()
    assert young.exists() and young.with_name(young.name + ".reason").exists() and damaged.exists()
    assert any("removed 1 file(s) kept longer than hold_days 30" in r.getMessage() for r in caplog.records)
