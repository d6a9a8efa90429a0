"""Text a client sent never starts a line of its own: in the log, in a reason file and in a
metric label its line breaks and other control characters are shown, not obeyed. A station
with a valid password names a global with a line break in it (the receiver answers 208 and
keeps the upload with the reason); before, that wrote forged log and reason lines."""

import hashlib
import json
import logging
import urllib.parse
import urllib.request

from hisparc_datastore.config import load_settings
from hisparc_datastore.ops.http import metric
from hisparc_datastore.ops.logsetup import configure_logging
from hisparc_datastore.receiver import build_app
from hisparc_datastore.receiver.server import ServerThread
from hisparc_datastore.util.brief import printable

FORGED = "\n2026-12-06 03:00:00,000 1 hisparc_datastore.receiver.app INFO: station 501 stored\r\x85\u2028"


def short_text(text: str) -> bytes:
    raw = text.encode()
    return b"\x8c" + bytes([len(raw)]) + raw


def global_pickle(module: str, name: str) -> bytes:
    # protocol 4: SHORT_BINUNICODE module, SHORT_BINUNICODE name, STACK_GLOBAL, STOP
    return b"\x80\x04" + short_text(module) + short_text(name) + b"\x93."


def write_config(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "stations.csv").write_text("501,amsterdam,pw\n")
    config = tmp_path / "config.ini"
    config.write_text(f"[General]\nlog={tmp_path}/datastore.log\nstation_list={tmp_path}/stations.csv\n"
                      f"data_dir={tmp_path}/data\nminimum_year=2016\n[Writer]\nfsync=false\n")
    return config


def post(url, payload: bytes, station="501"):
    body = urllib.parse.urlencode({"station_id": station, "password": "pw", "data": payload.decode("latin-1"),
                                   "checksum": hashlib.md5(payload).hexdigest()}).encode()
    with urllib.request.urlopen(url, body, timeout=60) as reply:
        return reply.read().decode()


def test_a_station_text_with_line_breaks_is_one_log_line_and_one_reason_line(tmp_path):
    settings = load_settings(write_config(tmp_path))
    configure_logging(settings, also_stderr=False)
    try:
        with ServerThread(build_app(settings)) as server:
            assert post(server.url, global_pickle("os" + FORGED, "system")) == "208"
            # still accepted: an honest upload is stored and logged as before
            assert post(server.url, b"\x80\x02]q\x00.") == "100"
    finally:
        logging.getLogger().handlers.clear()
    lines = (tmp_path / "datastore.log").read_text().splitlines()
    refused = [line for line in lines if " 208, " in line]
    assert len(refused) == 1, lines
    # the decoder names the first 60 characters of each
    assert "pickle names os\\n2026-12-06 03:00:00,000 1 hisparc_datastore.receiver.app .system" in refused[0]
    assert not [line for line in lines if line.startswith("2026-12-06 03:00")]
    assert any(" 100, " in line and "0 events -> incoming/" in line for line in lines)
    reasons = list((tmp_path / "data" / "quarantine").glob("*.reason"))
    assert len(reasons) == 1
    text = reasons[0].read_text()
    assert text.splitlines()[0] == "station 501 cluster amsterdam"
    assert text.splitlines()[1].startswith("receiver answered 208: cannot unpickle: pickle names os\\n2026")
    assert text.splitlines()[2].startswith("refused 1 time(s), first ")
    assert len(text.splitlines()) == 3


def test_a_traceback_is_indented_under_its_record(tmp_path):
    settings = load_settings(write_config(tmp_path))
    configure_logging(settings, also_stderr=False)
    try:
        try:
            raise ValueError("bad" + FORGED)
        except ValueError:
            logging.getLogger("test").exception("station %s sent %s", 501, "x" + FORGED)
    finally:
        logging.getLogger().handlers.clear()
    lines = (tmp_path / "datastore.log").read_text().splitlines()
    assert lines[0].endswith("ERROR: station 501 sent x\\n2026-12-06 03:00:00,000 1 "
                             "hisparc_datastore.receiver.app INFO: station 501 stored\\r\\x85\\u2028")
    assert lines[1] == "  Traceback (most recent call last):"
    # the exception's own line breaks are kept, but under the record, indented
    assert "  ValueError: bad" in lines
    assert "  2026-12-06 03:00:00,000 1 hisparc_datastore.receiver.app INFO: station 501 stored" in lines
    assert all(line.startswith("  ") for line in lines[1:])


def test_a_metric_label_shows_control_characters():
    lines = metric("m", "counter", "help", by=("type", {"CIC\r\n# TYPE x": 1, "SIN": 2}))
    # the label's value is the printable text (CIC\r\n...), its backslashes escaped as the format asks
    assert lines[2:] == ['m{type="CIC\\\\r\\\\n# TYPE x"} 1', 'm{type="SIN"} 2']


def test_printable_leaves_printable_text_alone():
    assert printable("station 501: 'CIC' é ü 测") == "station 501: 'CIC' é ü 测"
    assert printable("a\tb\x00\x1b[31m") == "a\\tb\\x00\\x1b[31m"


def test_the_json_log_shows_a_client_text_escaped_as_the_text_line_does(tmp_path):
    # ensure_ascii=False keeps U+0085 and U+2028 raw, and a line reader breaks at both: the
    # message is escaped before JSON, so every line is still one whole record.
    config = write_config(tmp_path)
    config.write_text(config.read_text().replace("[Writer]", "log_format=json\n[Writer]"))
    settings = load_settings(config)
    configure_logging(settings, also_stderr=False)
    try:
        logging.getLogger("test").warning("station %s sent %s", 501, "x" + FORGED)
        logging.getLogger("test").info("station %s sent %s", 502, "plain text, ü kept")
    finally:
        logging.getLogger().handlers.clear()
    lines = (tmp_path / "datastore.log").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["message"] for r in records] == [
        "station 501 sent x\\n2026-12-06 03:00:00,000 1 hisparc_datastore.receiver.app INFO: "
        "station 501 stored\\r\\x85\\u2028",
        "station 502 sent plain text, ü kept"]
    assert [r["level"] for r in records] == ["WARNING", "INFO"]
