"""Password checks, limited per client address and station number, and logged in summary.

Each (address, station) pair may fail ``burst`` times; after that it earns one more try
every ``refill_seconds``. Past its budget a request is not refused at once: it waits its
turn, one check at a time per pair in arrival order, for at most ``max_wait`` seconds; at
most ``queue`` requests of a pair and ``max_waiting`` in all wait (each holds a server
thread), the rest are answered ``205`` without their password being looked at. A password
that matches gives its try back, so an honest station is never slowed by its own uploads.

The pair, not the address alone, is the key because stations share addresses: behind a
school's NAT, or behind a proxy in front of the receiver, every station has the same one.
A guesser there slows only the station numbers it guesses at, and waiting in turn is what
lets the honest station among them in: a guesser that sends one guess after another holds
one place in the queue, so the station's upload is checked at most two tries later (two
minutes at the defaults) instead of being refused while the guesser takes every try back.
The price: a guesser with ``queue`` requests in flight at once still keeps that station
out, and up to ``max_waiting`` server threads may be waiting. The guesser gains nothing
either way: one check per pair and ``refill_seconds``.

Unknown station numbers share one pair per address, so guessing them cannot grow the table,
which is bounded anyway: past ``max_pairs`` the pairs that limit least (tries refilled
first, then the most tries left) are dropped, never the bucket of a guesser still limited.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable

import attrs

log = logging.getLogger(__name__)

BURST = 5  # failures a pair may have at once: a mistyped password, a list that arrives late
REFILL_SECONDS = 60.0  # one more try per this long: the station software retries at most every 60 s
SUMMARY_SECONDS = 60.0  # one summary line per address at most this often
MAX_PAIRS = 100_000
QUEUE = 3  # requests of one pair waiting their turn at once
MAX_WAITING = 4  # requests waiting in all: half the receiver's 8 threads at most
# Long enough for the third in a queue; well inside the station's and the proxy's 600 s.
MAX_WAIT_SECONDS = 200.0


@attrs.define
class Turn:
    """A request's permission to have its password checked: one try, given back when the
    password matches."""

    address: str
    station: int | None


class PasswordGuard:
    """Thread-safe token buckets of password checks, keyed by (address, station)."""

    def __init__(self, burst: int = BURST, refill_seconds: float = REFILL_SECONDS,
                 summary_seconds: float = SUMMARY_SECONDS, max_pairs: int = MAX_PAIRS,
                 clock: Callable[[], float] = time.monotonic, queue: int = QUEUE,
                 max_waiting: int = MAX_WAITING, max_wait: float = MAX_WAIT_SECONDS) -> None:
        self.burst = burst
        self.refill_seconds = refill_seconds
        self.summary_seconds = summary_seconds
        self.max_pairs = max_pairs
        self.queue = queue
        self.max_waiting = max_waiting
        self.max_wait = max_wait
        self._clock = clock
        self._lock = threading.Lock()
        self._turns = threading.Condition(self._lock)
        # (address, station or None) -> (tries left, when counted)
        self._pairs: dict[tuple[str, int | None], tuple[float, float]] = {}
        # (address, station) -> the requests waiting their turn, first first
        self._waiting: dict[tuple[str, int | None], collections.deque] = {}
        self._waiting_total = 0
        self._closed = False
        # address -> (turned away since the last summary, stations, when summarised)
        self._turned_away: dict[str, tuple[int, set, float]] = {}

    def may_try(self, address: str, station: int | None) -> bool:
        """Whether a request of this pair could have its password checked at once."""
        with self._lock:
            return self._tries((address, station), self._clock()) >= 1

    def admit(self, address: str, station: int | None) -> Turn | None:
        """A try for this pair, after waiting its turn if its budget is spent; None when it
        may not wait (queue full, or no turn within ``max_wait``): answer it unchecked."""
        key = (address, station)
        with self._turns:
            now = self._clock()
            waiting = self._waiting.get(key)
            if not waiting and self._tries(key, now) >= 1:
                return self._take(key, now)
            if (waiting and len(waiting) >= self.queue) or self._waiting_total >= self.max_waiting:
                return None
            ticket = object()
            waiting = self._waiting.setdefault(key, collections.deque())
            waiting.append(ticket)
            self._waiting_total += 1
            deadline = now + self.max_wait
            try:
                while True:
                    now = self._clock()
                    tries = self._tries(key, now)
                    if waiting[0] is ticket and tries >= 1:
                        return self._take(key, now)
                    if now >= deadline or self._closed:
                        return None
                    until = (1 - tries) * self.refill_seconds if waiting[0] is ticket else deadline - now
                    self._turns.wait(min(max(until, 0.01), deadline - now))
            finally:
                waiting.remove(ticket)
                self._waiting_total -= 1
                if not waiting:
                    del self._waiting[key]
                self._turns.notify_all()

    def close(self) -> None:
        """Answer the requests waiting their turn now (unchecked): the server is stopping."""
        with self._turns:
            self._closed = True
            self._turns.notify_all()

    def matched(self, turn: Turn) -> None:
        """The password matched: its try is given back."""
        with self._lock:
            key = (turn.address, turn.station)
            now = self._clock()
            tries = self._tries(key, now) + 1
            if tries >= self.burst:
                self._pairs.pop(key, None)  # a full bucket is no entry: honest pairs take no room
            else:
                self._pairs[key] = (tries, now)

    def failed(self, turn: Turn | str, station: int | None = None) -> None:
        """A request of this pair named an unknown station or a wrong password: its try
        stays spent. (Given an address and station: a failure without a turn taken.)"""
        if isinstance(turn, Turn):
            return
        with self._lock:
            self._take((turn, station), self._clock())

    def turned_away(self, address: str, station: int | None) -> None:
        """Count a request answered unchecked; log a summary for its address now and then."""
        now = self._clock()
        with self._lock:
            entry = self._turned_away.get(address)
            if entry is None:
                log.warning("%s: too many password failures for station %s: its requests wait their "
                            "turn, one try every %.0f s, or are answered 205 unchecked; counted in "
                            "summary", address, "unknown" if station is None else station,
                            self.refill_seconds)
                self._turned_away[address] = (0, set(), now)
                if len(self._turned_away) > self.max_pairs:
                    self._turned_away.clear()  # only the log's summaries are lost
                return
            count, stations, since = entry
            count += 1
            if len(stations) < 10:
                stations.add("unknown" if station is None else str(station))
            if now - since >= self.summary_seconds:
                log.warning("%s: %d request(s) answered 205 unchecked in the last %.0f s after too "
                            "many password failures (stations %s)", address, count, now - since,
                            ", ".join(sorted(stations)))
                count, stations, since = 0, set(), now
            self._turned_away[address] = (count, stations, since)

    def _take(self, key: tuple[str, int | None], now: float) -> Turn:
        tries = self._tries(key, now)
        self._pairs[key] = (max(tries - 1, 0.0), now)
        if len(self._pairs) > self.max_pairs:
            self._evict(now)
        return Turn(*key)

    def _evict(self, now: float) -> None:
        """Bring the table to 90% of its bound, dropping the pairs that limit least: a refilled
        bucket limits nobody; then the most tries left, the longest unused first. The bucket
        of a guesser still limited is the last to go (it was the first: least recently
        failed, as a limited guesser's requests are turned away without failing)."""
        keep = int(self.max_pairs * 0.9)
        ranked = sorted(self._pairs, key=lambda key: (-self._tries(key, now), self._pairs[key][1]))
        for key in ranked[: len(self._pairs) - keep]:
            if key not in self._waiting:
                del self._pairs[key]

    def _tries(self, key: tuple[str, int | None], now: float) -> float:
        entry = self._pairs.get(key)
        if entry is None:
            return float(self.burst)
        tries, counted = entry
        return min(float(self.burst), tries + (now - counted) / self.refill_seconds)
