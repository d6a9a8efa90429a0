"""The same batch sent twice at once is queued once, and never answered 100 unqueued."""

import hashlib
import threading
import urllib.parse
import urllib.request

import pytest

from hisparc_datastore.config import load_settings
from hisparc_datastore.receiver.app import build_app
from hisparc_datastore.receiver.claims import DUPLICATE, IN_FLIGHT, NEW, Dedup
from hisparc_datastore.receiver.server import ServerThread


def test_a_claim_is_new_once_in_flight_while_open_and_a_duplicate_when_kept(tmp_path):
    memory = Dedup(tmp_path / "r.sqlite", window_hours=24)
    assert memory.claim(99, "abc", now=1000.0) == NEW
    assert memory.claim(99, "abc", now=1001.0) == IN_FLIGHT
    assert not memory.seen(99, "abc", now=1001.0)
    memory.remember(99, "abc", now=1002.0)
    assert memory.claim(99, "abc", now=1003.0) == DUPLICATE
    assert memory.seen(99, "abc", now=1003.0)
    assert memory.claim(98, "abc", now=1003.0) == NEW  # another station's identical bytes


def test_a_forgotten_claim_lets_the_retry_through(tmp_path):
    memory = Dedup(tmp_path / "r.sqlite", window_hours=24)
    assert memory.claim(99, "abc", now=1000.0) == NEW
    memory.forget(99, "abc")  # the queue write failed: 205
    assert memory.claim(99, "abc", now=1010.0) == NEW


def test_a_claim_left_by_a_dead_request_expires(tmp_path):
    memory = Dedup(tmp_path / "r.sqlite", window_hours=24)
    assert memory.claim(99, "abc", now=1000.0) == NEW
    assert memory.claim(99, "abc", now=1000.0 + 60) == IN_FLIGHT
    assert memory.claim(99, "abc", now=1000.0 + 600) == NEW


def test_claims_are_shared_between_processes_through_the_database(tmp_path):
    first, second = Dedup(tmp_path / "r.sqlite", 24), Dedup(tmp_path / "r.sqlite", 24)
    assert first.claim(99, "abc", now=1000.0) == NEW
    assert second.claim(99, "abc", now=1000.5) == IN_FLIGHT
    first.remember(99, "abc", now=1001.0)
    assert second.claim(99, "abc", now=1002.0) == DUPLICATE


@pytest.fixture
def config(tmp_path):
    (tmp_path / "stations.csv").write_text("99,amsterdam,fake_station\n")
    path = tmp_path / "config.ini"
    path.write_text(f"[General]\nlog=\nloglevel=info\nstation_list={tmp_path / 'stations.csv'}\n"
                    f"data_dir={tmp_path / 'data'}\nminimum_year=2016\n")
    return path


def test_identical_concurrent_posts_queue_one_file(config, testdata):
    payload = (testdata / "uploads" / "py2_s510_100events").read_bytes()
    form = urllib.parse.urlencode({"station_id": 99, "password": "fake_station",
                                   "data": payload.decode("latin-1"),
                                   "checksum": hashlib.md5(payload).hexdigest()}).encode()
    settings = load_settings(config)
    with ServerThread(build_app(settings), threads=8) as server:
        answers = []
        barrier = threading.Barrier(8)

        def post():
            barrier.wait()
            with urllib.request.urlopen(server.url, form, timeout=30) as response:
                answers.append(response.read().decode())

        threads = [threading.Thread(target=post) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        queued = list((settings.data_dir / "incoming").iterdir())
        assert len(queued) == 1
        assert "100" in answers and set(answers) <= {"100", "205"}
        # every station that heard 205 retries, and hears 100 without a second file
        with urllib.request.urlopen(server.url, form, timeout=30) as response:
            assert response.read().decode() == "100"
        assert len(list((settings.data_dir / "incoming").iterdir())) == 1
