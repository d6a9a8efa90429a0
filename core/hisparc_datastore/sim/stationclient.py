"""Posts uploads to a receiver the way the station software does, for the demo and tests.

The protocol (docs/design.md, "Receiving uploads"): a form POST of ``station_id``,
``password``, ``data`` (the pickled event list, its bytes as latin-1 text) and
``checksum`` (md5 hex of those bytes), answered with one return code. Like
the Windows station software, each station sends its batches in order and
retries a batch on any reply other than ``100`` (or none), waiting 1 s and
doubling to 60 s; unlike it, the total is bounded (``give_up_after``), so a
demo against a broken receiver ends.
"""

from __future__ import annotations

import hashlib
import pickle
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

import attrs

from hisparc_datastore.codec.decoding import Upload

FIRST_BACKOFF = 1.0
MAX_BACKOFF = 60.0
REPLY_TIMEOUT = 600.0  # the station software's read time-out
NO_REPLY = "no reply"


@attrs.frozen
class PostResult:
    """What the receiver answered: every reply by code (retries included)."""

    replies: Counter
    delivered: int  # uploads answered 100
    undelivered: int  # uploads given up on

    @property
    def complete(self) -> bool:
        return self.undelivered == 0


def station_form(upload: Upload, password: str) -> bytes:
    """The form body a station sends for ``upload``."""
    data = pickle.dumps(upload.event_list, protocol=2)
    form = {"station_id": str(upload.station_id), "password": password,
            "data": data.decode("latin-1"), "checksum": hashlib.md5(data).hexdigest()}
    return urllib.parse.urlencode(form).encode("ascii")


def post_once(url: str, body: bytes, timeout: float = REPLY_TIMEOUT) -> str:
    """One POST; the reply's return code, or ``NO_REPLY`` when there was none."""
    request = urllib.request.Request(url, body, {"Content-Type": "application/x-www-form-urlencoded"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return reply.read(100).decode("ascii", "replace").strip()
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError):
        return NO_REPLY


class Stations:
    """Simulated stations sending to the receiver at ``url``; ``passwords`` by station number."""

    def __init__(self, url: str, passwords: dict[int, str], concurrency: int = 8,
                 give_up_after: float = 600.0, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.url = url
        self.passwords = passwords
        self.concurrency = concurrency
        self.give_up_after = give_up_after
        self.sleep, self.clock = sleep, clock
        self._lock = threading.Lock()
        self._deadline = 0.0
        self.replies: Counter = Counter()
        self.total = self.delivered = self.undelivered = 0

    def send(self, uploads: Iterable[Upload]) -> PostResult:
        """Send every upload, each station's in order, up to ``concurrency`` stations at once."""
        by_station: dict[int, list[Upload]] = {}
        for upload in uploads:
            by_station.setdefault(upload.station_id, []).append(upload)
        self.total = sum(len(batch) for batch in by_station.values())
        self._deadline = self.clock() + self.give_up_after
        with ThreadPoolExecutor(max(1, min(self.concurrency, len(by_station))), "station") as pool:
            for future in [pool.submit(self._station, batch) for batch in by_station.values()]:
                future.result()
        return PostResult(Counter(self.replies), self.delivered, self.undelivered)

    def describe(self) -> str:
        """One line for a progress display."""
        with self._lock:
            retries = sum(self.replies.values()) - self.delivered
            return f"posted {self.delivered}/{self.total} uploads ({retries} refused or unanswered)"

    def _station(self, uploads: list[Upload]) -> None:
        for i, upload in enumerate(uploads):
            if not self._deliver(upload):
                with self._lock:
                    self.undelivered += len(uploads) - i  # a station sends in order: it is stuck
                return

    def _deliver(self, upload: Upload) -> bool:
        body = station_form(upload, self.passwords.get(upload.station_id, ""))
        delay = FIRST_BACKOFF
        while True:
            code = post_once(self.url, body)
            with self._lock:
                self.replies[code] += 1
                if code == "100":
                    self.delivered += 1
                    return True
            if self.clock() + delay > self._deadline:
                return False
            self.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF)
