"""The receiver half of the crash harness: stations post over HTTP while ``datastore serve``
is SIGKILLed at random instants and restarted; nothing may be lost, doubled or left in tmp/.

Simulated stations post the harness's uploads to a real ``datastore serve``
on a loopback port, each station in order and retrying every answer other
than ``100`` (or none), as the station software does; only the back-off is
shortened (50 ms doubling to 1 s instead of 1 s to 60 s) so the run takes
minutes, not hours. Meanwhile the receiver is killed with SIGKILL and
started again on the same port: at a random instant, or (every other
start) at a named step of a request (``DATASTORE_CRASH_AT``, each step in
turn), so the narrow windows between writing, renaming and remembering are
hit too. A
writer drains the queue meanwhile and at the end; the day files are then
compared row by row with the undisturbed writer's reference.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import attrs

from hisparc_datastore.codec.decoding import Upload
from hisparc_datastore.sim.stationclient import post_once, station_form
from hisparc_datastore.testing.serveprocess import ServeFailed, ServeProcess, free_port

POINTS = ["receiver-claimed", "receiver-tmp-half", "receiver-tmp-durable", "receiver-committing",
          "receiver-renamed", "receiver-queued", "receiver-remembered"]
FIRST_BACKOFF, MAX_BACKOFF = 0.05, 1.0
REPLY_TIMEOUT = 120.0  # a busy machine may be slow; a killed receiver answers nothing at once
GIVE_UP_AFTER = 1800.0  # an upload still not answered 100 by then counts as lost


@attrs.define
class Posting:
    """What the stations heard, shared by their threads."""

    replies: Counter = attrs.field(factory=Counter)
    delivered: int = 0
    undelivered: int = 0
    lock: threading.Lock = attrs.field(factory=threading.Lock)


def write_station_list(path: Path, uploads: list[Upload]) -> dict[int, str]:
    passwords = {upload.station_id: f"pw{upload.station_id}" for upload in uploads}
    clusters = {upload.station_id: upload.cluster for upload in uploads}
    path.write_text("".join(f"{number},{clusters[number]},{password}\n"
                            for number, password in sorted(passwords.items())))
    return passwords


def post_paced(url: str, uploads: list[Upload], passwords: dict[int, str], span: float,
               posting: Posting) -> None:
    """One station: its uploads in order, spread over ``span`` seconds, each until ``100``."""
    began = time.monotonic()
    for i, upload in enumerate(uploads):
        time.sleep(max(0.0, began + span * i / len(uploads) - time.monotonic()))
        body = station_form(upload, passwords[upload.station_id])
        delay, deadline = FIRST_BACKOFF, time.monotonic() + GIVE_UP_AFTER
        while True:
            code = post_once(url, body, timeout=REPLY_TIMEOUT)
            with posting.lock:
                posting.replies[code] += 1
                if code == "100":
                    posting.delivered += 1
                    break
            if time.monotonic() > deadline:
                with posting.lock:
                    posting.undelivered += len(uploads) - i  # a station sends in order
                return
            time.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF)


def startup_seconds(config: Path) -> float:
    """How long a receiver takes from exec to listening here (for spreading the kills)."""
    began = time.monotonic()
    server = ServeProcess(config).wait_ready()
    ready = time.monotonic() - began
    server.stop()
    return ready


@attrs.frozen
class ReceiverChaos:
    kills: int
    at_steps: int  # of the kills, those at a named step of a request
    posting: Posting
    tmp_leftovers: int


def run(config: Path, uploads: list[Upload], kills: int, rng: random.Random,
        writer: Callable[[], object], log: Path) -> ReceiverChaos:
    """Post ``uploads`` to receivers killed ``kills`` times; return once all are answered 100
    (or given up) and the last receiver has stopped cleanly. ``writer()`` starts a writer
    process (stopped with SIGTERM at the end)."""
    data_dir = config.parent
    passwords = write_station_list(data_dir / "station_list.csv", uploads)
    startup = startup_seconds(config)
    gap = 0.3  # mean seconds a receiver runs before it is killed
    span = kills * (startup + gap) * 1.1
    port = free_port()
    url = f"http://127.0.0.1:{port}/"

    by_station: dict[int, list[Upload]] = {}
    for upload in uploads:
        by_station.setdefault(upload.station_id, []).append(upload)
    posting = Posting()
    stations = [threading.Thread(target=post_paced, args=(url, batch, passwords, span, posting),
                                 name=f"station-{number}", daemon=True)
                for number, batch in by_station.items()]
    drainer = writer()
    for station in stations:
        station.start()

    # every step in turn, in an order of the seed's choosing: 14 kills already reach each once
    steps = rng.sample(POINTS, len(POINTS))
    done = at_steps = 0
    while done < kills:
        crash_at = None
        if done % 2:
            # at the Nth request to reach that step, so not always the first request's
            crash_at = f"{steps[done // 2 % len(steps)]}:{rng.randint(1, 4)}"
        server = ServeProcess(config, port=port, crash_at=crash_at, log=log)
        try:
            server.wait_ready()
        except ServeFailed:
            # A station's request can reach the step between the listen and the readiness
            # probe's next look (seen under make test's load): a kill at that step all the same.
            if not crash_at or server.process.returncode != -signal.SIGKILL:
                raise
        deadline = time.monotonic() + rng.uniform(0.0, 2 * gap) * (4 if crash_at else 1)
        while time.monotonic() < deadline and server.process.poll() is None:
            time.sleep(0.01)
        at_steps += server.process.poll() is not None  # it killed itself at the step
        server.kill()
        done += 1

    server = ServeProcess(config, port=port, log=log).wait_ready()  # until the stations are done
    for station in stations:
        station.join(GIVE_UP_AFTER * 2)
    if server.stop() != 0:
        raise RuntimeError("the last receiver did not stop cleanly")
    drainer.terminate()
    drainer.wait(120)
    tmp_leftovers = sum(1 for _ in (data_dir / "tmp").iterdir())
    return ReceiverChaos(done, at_steps, posting, tmp_leftovers)
