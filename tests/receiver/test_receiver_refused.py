"""What an authenticated station sent but the receiver refused is kept, with why, and can be replayed."""

import datetime
import hashlib
import pickle
import urllib.parse
import urllib.request

import pytest

from hisparc_datastore import cli
from hisparc_datastore.codec.decoding import DecodeError, parse_queue_file
from hisparc_datastore.config import load_settings
from hisparc_datastore.queue.folders import Queue
from hisparc_datastore.receiver.app import build_app
from hisparc_datastore.receiver.server import ServerThread


@pytest.fixture
def config(tmp_path):
    (tmp_path / "stations.csv").write_text("99,amsterdam,fake_station\n")
    path = tmp_path / "config.ini"
    path.write_text(f"[General]\nlog=\nloglevel=info\nstation_list={tmp_path / 'stations.csv'}\n"
                    f"data_dir={tmp_path / 'data'}\nminimum_year=2016\n[Writer]\nfsync=no\n")
    return path


@pytest.fixture
def url(config):
    thread = ServerThread(build_app(load_settings(config)), "127.0.0.1", 0)
    thread.start()
    yield thread.url
    thread.stop()


def post(url, payload, checksum=None, password="fake_station"):
    form = {"station_id": 99, "password": password, "data": payload.decode("latin-1"),
            "checksum": checksum or hashlib.md5(payload).hexdigest()}
    with urllib.request.urlopen(url, urllib.parse.urlencode(form).encode(), timeout=10) as response:
        return response.read().decode()


def test_a_checksum_mismatch_is_kept_and_can_be_replayed(config, url, testdata):
    payload = (testdata / "uploads" / "py2event").read_bytes()
    assert post(url, payload, checksum="0" * 32) == "201"
    queue = Queue(load_settings(config).data_dir)
    ((name, reason),) = queue.quarantined()
    assert name.endswith(".refused")
    assert reason.startswith("station 99 cluster amsterdam\nreceiver answered 201: checksum")
    assert (queue.quarantine / name).read_bytes() == payload
    assert list(queue.incoming.iterdir()) == []

    assert cli.main(["requeue", str(config), name]) == 0
    (queued,) = queue.incoming.iterdir()
    upload = parse_queue_file(queued.read_bytes())
    assert (upload.station_id, upload.cluster) == (99, "amsterdam")
    assert upload.event_list[0]["header"]["nanoseconds"] == 731509026
    assert queue.quarantined() == []


class _Shell:
    def __reduce__(self):
        import os
        return (os.system, ("true",))


def test_a_forbidden_pickle_is_kept_and_stays_refused_on_replay(config, url, capsys):
    payload = pickle.dumps(_Shell(), protocol=2)
    assert post(url, payload) == "208"
    queue = Queue(load_settings(config).data_dir)
    ((name, reason),) = queue.quarantined()
    assert "receiver answered 208: cannot unpickle" in reason
    assert "system" in reason

    assert cli.main(["requeue", str(config), name]) == 2
    assert "still cannot be decoded" in capsys.readouterr().err
    assert (queue.quarantine / name).exists()
    assert list(queue.incoming.iterdir()) == []


def test_a_resent_unpickleable_upload_is_refused_again_not_taken_for_in_flight(config, url):
    # The duplicate claim is taken before unpickling; a refusal must give it back.
    payload = b"not a pickle"
    assert post(url, payload) == "208"
    assert post(url, payload) == "208"
    ((name, reason),) = Queue(load_settings(config).data_dir).quarantined()
    assert "refused 2 time(s)" in reason


def test_unauthenticated_requests_leave_nothing_behind(config, url, testdata):
    payload = (testdata / "uploads" / "py2event").read_bytes()
    assert post(url, payload, password="guess") == "203"
    assert Queue(load_settings(config).data_dir).quarantined() == []


def test_a_refused_file_without_its_station_line_is_not_guessed_at(config):
    queue = Queue(load_settings(config).data_dir)
    (queue.quarantine / "x.refused").write_bytes(b"whatever")
    (queue.quarantine / "x.refused.reason").write_text("edited by hand\n")
    with pytest.raises(DecodeError, match="x.refused.reason: first line should be"):
        queue.requeue("x.refused")


def _datetime_pickle(state: bytes) -> bytes:
    good = datetime.datetime(2026, 12, 1, 0, 0, 59)
    payload = pickle.dumps([{"header": {"eventtype_uploadcode": "SIN", "datetime": good}, "datalist": []}],
                           protocol=3)
    assert payload.count(good.__reduce__()[1][0]) == 1
    return payload.replace(good.__reduce__()[1][0], state)


@pytest.mark.parametrize("state, what", [
    (bytes([7, 234, 12, 1, 0, 0, 60, 0, 0, 0]), "second"),  # a leap second, as a GPS clock may say
    (bytes([7, 234, 12, 1, 0, 60, 0, 0, 0, 0]), "minute"),
    (bytes([7, 234, 12, 1, 24, 0, 0, 0, 0, 0]), "hour"),
    (bytes([7, 234, 2, 30, 0, 0, 0, 0, 0, 0]), "day"),
    (bytes([7, 234, 12, 0, 0, 0, 0, 0, 0, 0]), "day"),
    (bytes([0, 0, 12, 1, 0, 0, 0, 0, 0, 0]), "year"),
    (bytes([7, 234, 12, 1, 0, 0, 0, 0x0F, 0x42, 0x40]), "microsecond"),
])
def test_every_impossible_datetime_answers_208_so_the_station_stops_retrying(config, url, state, what):
    assert post(url, _datetime_pickle(state)) == "208"
    ((name, reason),) = Queue(load_settings(config).data_dir).quarantined()
    assert "datetime state is invalid" in reason and what in reason


def test_a_possible_datetime_in_the_same_pickle_is_taken(url):
    assert post(url, _datetime_pickle(bytes([7, 234, 12, 1, 23, 59, 59, 0x0F, 0x42, 0x3F]))) == "100"


def test_a_refusal_retried_20_times_is_one_entry_and_requeued_once(config, url, testdata):
    payload = (testdata / "uploads" / "py2event").read_bytes()
    for _ in range(20):
        assert post(url, payload, checksum="0" * 32) == "201"
    queue = Queue(load_settings(config).data_dir)
    ((name, reason),) = queue.quarantined()
    assert "refused 20 time(s)" in reason
    assert reason.startswith("station 99 cluster amsterdam\nreceiver answered 201")

    assert cli.main(["requeue", str(config), name]) == 0
    assert len(list(queue.incoming.iterdir())) == 1
    # The station's retry, now with the right checksum, is the upload requeue queued: not again.
    assert post(url, payload) == "100"
    assert len(list(queue.incoming.iterdir())) == 1


def test_requeue_skips_a_refusal_whose_bytes_the_station_had_accepted_since(config, url, testdata,
                                                                            capsys):
    payload = (testdata / "uploads" / "py2event").read_bytes()
    assert post(url, payload, checksum="0" * 32) == "201"
    assert post(url, payload) == "100"  # the retry got through
    queue = Queue(load_settings(config).data_dir)
    ((name, _),) = queue.quarantined()
    assert cli.main(["requeue", str(config), name]) == 0
    assert "not requeued" in capsys.readouterr().out
    assert len(list(queue.incoming.iterdir())) == 1
    assert queue.quarantined() == []


def test_requeue_skips_a_refusal_the_archive_holds_without_a_duplicate_memory(tmp_path, testdata):
    from hisparc_datastore.codec.decoding import Upload, parse_event_list
    from hisparc_datastore.queue.folders import AlreadyStored

    payload = (testdata / "uploads" / "py2event").read_bytes()
    queue = Queue(tmp_path)
    events = parse_event_list(payload)
    day = events[0]["header"]["datetime"].date()
    (queue.partial / "stored-upload").write_bytes(Upload(99, "Science Park", events).to_queue_bytes())
    queue.archive_claimed([("stored-upload", [day])])
    path, count = queue.keep_refused(payload, 99, "Science Park", "receiver answered 201: test")
    assert count == 1
    with pytest.raises(AlreadyStored, match="the archive holds the same upload"):
        queue.requeue(path.name)
    assert queue.quarantined() == [] and list(queue.incoming.iterdir()) == []


def test_requeue_takes_a_cluster_with_a_space(tmp_path, testdata):
    payload = (testdata / "uploads" / "py2event").read_bytes()
    queue = Queue(tmp_path)
    path, _ = queue.keep_refused(payload, 99, "Science Park", "receiver answered 201: test")
    queued = queue.requeue(path.name)
    upload = parse_queue_file(queued.read_bytes())
    assert (upload.station_id, upload.cluster) == (99, "Science Park")
