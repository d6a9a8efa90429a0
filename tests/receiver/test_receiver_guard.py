"""Password guessing is limited per client address and station, logged in summary, and
never keeps an honest station out for long, whoever shares its address."""

import hashlib
import http.client
import logging
import pickle
import threading
import time
import urllib.parse

import pytest

from hisparc_datastore.config import load_settings
from hisparc_datastore.receiver.app import ReceiverApp, build_app
from hisparc_datastore.receiver.guard import PasswordGuard
from hisparc_datastore.receiver.server import ServerThread
from hisparc_datastore.testing.helpers import wait_for

GUESSER = "127.0.0.2"  # loopback addresses: one per "site"
HONEST = "127.0.0.1"


@pytest.fixture
def config(tmp_path):
    (tmp_path / "stations.csv").write_text("99,amsterdam,pw99\n501,utrecht,pw501\n")
    path = tmp_path / "config.ini"
    path.write_text(f"[General]\nlog=\nloglevel=info\nstation_list={tmp_path / 'stations.csv'}\n"
                    f"data_dir={tmp_path / 'data'}\nminimum_year=2016\n[Writer]\nfsync=no\n")
    return path


def post(port: int, source: str, station: int, password: str, n: int = 0) -> str:
    payload = pickle.dumps([{"n": n}], protocol=2)  # distinct bytes, so never a duplicate
    body = urllib.parse.urlencode({"station_id": station, "password": password,
                                   "data": payload.decode("latin-1"),
                                   "checksum": hashlib.md5(payload).hexdigest()}).encode()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=(source, 0))
    try:
        connection.request("POST", "/", body, {"Content-Type": "application/x-www-form-urlencoded"})
        return connection.getresponse().read().decode()
    finally:
        connection.close()


def serve(config, guard: PasswordGuard) -> ServerThread:
    base = build_app(load_settings(config))
    app = ReceiverApp(base.settings, base.stations, base.spool, base.dedup, guard=guard)
    return ServerThread(app)


def test_an_unknown_station_hears_206_and_a_wrong_password_203_as_the_deployed_receiver_answers(config):
    with serve(config, PasswordGuard()) as server:
        assert post(server.port, HONEST, 99, "wrong") == "203"
        assert post(server.port, HONEST, 12345, "wrong") == "206"
        # and a listed station with its password still gets in
        assert post(server.port, HONEST, 99, "pw99") == "100"


def test_a_guesser_is_limited_and_stations_beside_it_keep_being_answered(config, caplog):
    caplog.set_level(logging.INFO)
    # a long refill: within this test the guesser gets no try back; its requests past the
    # budget wait their turn a moment (max_wait), then are answered unchecked
    with serve(config, PasswordGuard(burst=5, refill_seconds=3600, max_wait=0.05)) as server:
        answers = []
        for n in range(60):
            answers.append(post(server.port, GUESSER, 99, f"guess{n}", n))
            if n % 10 == 0:
                # the station itself elsewhere, and another station behind the guesser's address
                assert post(server.port, HONEST, 99, "pw99", 1000 + n) == "100"
                assert post(server.port, GUESSER, 501, "pw501", 2000 + n) == "100"
        assert answers[:5] == ["203"] * 5
        assert answers[5:] == ["205"] * 55
        # once limited, even the right password is not looked at: guessing tells nothing
        assert post(server.port, GUESSER, 99, "pw99", 3000) == "205"
        # unknown station numbers share one budget per address: each is a failed guess
        assert [post(server.port, GUESSER, 7000 + n, "x", n) for n in range(7)] == ["206"] * 5 + ["205"] * 2
    lines = [r.getMessage() for r in caplog.records if GUESSER in r.getMessage()
             and any(code in r.getMessage() for code in ("203", "205", "206"))]
    # 10 refused guesses logged one by one, the 58 turned away in summary lines
    assert len(lines) <= 14, lines
    assert any("answered 205 unchecked" in line for line in lines)


def test_the_guessed_station_behind_the_guessers_address_gets_in_after_a_bounded_time(config):
    with serve(config, PasswordGuard(burst=3, refill_seconds=1.0)) as server:
        for n in range(10):
            post(server.port, GUESSER, 99, f"guess{n}", n)
        # past the budget the station's upload waits its turn (a refill period), not refused
        assert post(server.port, GUESSER, 99, "pw99", 101) == "100"


def test_a_guesser_sharing_the_stations_address_cannot_keep_it_out(config):
    """A school's NAT: the guesser sends one guess after another for station 99 from the
    station's own address; every upload of the station still gets in, each waiting its
    turn (at most two refill periods), and the guesser's checks stay one per period."""
    refill = 1.0
    stop = threading.Event()
    answers = []

    def guess():
        n = 0
        while not stop.is_set():
            answers.append(post(server.port, GUESSER, 99, f"guess{n}", n))
            n += 1

    with serve(config, PasswordGuard(burst=5, refill_seconds=refill)) as server:
        guesser = threading.Thread(target=guess)
        started = time.monotonic()
        guesser.start()
        try:
            assert wait_for(lambda: answers.count("203") >= 5, 60)
            honest = [post(server.port, GUESSER, 99, "pw99", 1000 + n) for n in range(8)]
        finally:
            stop.set()
            guesser.join(60)
        elapsed = time.monotonic() - started
    assert honest == ["100"] * 8
    # bounded as before: the burst, then one check per refill period (and one in hand)
    assert answers.count("203") <= 5 + elapsed / refill + 1, (answers.count("203"), elapsed)


def test_the_guard_refills_in_bounded_time_and_bounds_its_table():
    now = [0.0]
    guard = PasswordGuard(burst=2, refill_seconds=10.0, max_pairs=100, clock=lambda: now[0])
    for _ in range(3):
        guard.failed("a", 1)
    assert not guard.may_try("a", 1)
    assert guard.may_try("a", 2) and guard.may_try("b", 1)
    now[0] += 10.0
    assert guard.may_try("a", 1)  # one try back per refill period
    for n in range(1000):
        guard.failed(f"addr{n}", 1)
    assert len(guard._pairs) <= 100


def test_filling_the_table_never_forgives_a_guesser_still_limited():
    """102,000 pairs made by one failure each pushed the guesser's own bucket out (the least
    recently failed: its guesses were turned away, not failed); its next 5 guesses were
    checked again."""
    now = [0.0]
    guard = PasswordGuard(burst=5, refill_seconds=60.0, max_pairs=1000, clock=lambda: now[0])
    for _ in range(5):
        guard.failed(guard.admit("10.0.0.1", 99))
    assert not guard.may_try("10.0.0.1", 99)
    for n in range(1020):
        now[0] += 0.01
        turn = guard.admit(f"10.1.{n // 250}.{n % 250}", 99)
        guard.failed(turn)
    assert len(guard._pairs) <= 1000
    assert not guard.may_try("10.0.0.1", 99)
    # an honest station's matching password takes no room in the table
    guard.matched(guard.admit("10.9.9.9", 501))
    assert ("10.9.9.9", 501) not in guard._pairs
