"""Password failures, limited per client address and station number, and logged in summary.

Each (address, station) pair may fail ``burst`` times; after that it earns one
more try every ``refill_seconds``. A request from a pair without a try left is
answered ``205`` without its password being looked at, so a guesser learns
nothing from it, and it is not logged by itself: a summary line per address
says how many were turned away. A password that matches spends nothing, so an
honest station is never slowed by its own uploads.

The pair, not the address alone, is the key because stations share addresses:
behind a school's NAT, or behind a proxy in front of the receiver, every
station has the same one. A guesser there blocks only the station numbers it
guesses at; an honest station among them gets its tries back as the guesser's
are refilled. Unknown station numbers share one pair per address, so guessing
them cannot grow the table, which is bounded anyway (oldest pairs go first).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

BURST = 5  # failures a pair may have at once: a mistyped password, a list that arrives late
REFILL_SECONDS = 60.0  # one more try per this long: the station software retries at most every 60 s
SUMMARY_SECONDS = 60.0  # one summary line per address at most this often
MAX_PAIRS = 100_000


class PasswordGuard:
    """Thread-safe token buckets of password failures, keyed by (address, station)."""

    def __init__(self, burst: int = BURST, refill_seconds: float = REFILL_SECONDS,
                 summary_seconds: float = SUMMARY_SECONDS, max_pairs: int = MAX_PAIRS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.burst = burst
        self.refill_seconds = refill_seconds
        self.summary_seconds = summary_seconds
        self.max_pairs = max_pairs
        self._clock = clock
        self._lock = threading.Lock()
        # (address, station or None) -> (tries left, when counted), least recently failed first
        self._pairs: collections.OrderedDict[tuple[str, int | None], tuple[float, float]] = \
            collections.OrderedDict()
        # address -> (turned away since the last summary, stations, when summarised)
        self._turned_away: dict[str, tuple[int, set, float]] = {}

    def may_try(self, address: str, station: int | None) -> bool:
        """Whether a request of this pair may have its password checked now."""
        with self._lock:
            return self._tries(address, station, self._clock()) >= 1

    def failed(self, address: str, station: int | None) -> None:
        """A request of this pair named an unknown station or a wrong password."""
        now = self._clock()
        with self._lock:
            key = (address, station)
            tries = self._tries(address, station, now)
            self._pairs[key] = (max(tries - 1, 0.0), now)
            self._pairs.move_to_end(key)
            while len(self._pairs) > self.max_pairs:
                self._pairs.popitem(last=False)

    def turned_away(self, address: str, station: int | None) -> None:
        """Count a request answered unchecked; log a summary for its address now and then."""
        now = self._clock()
        with self._lock:
            entry = self._turned_away.get(address)
            if entry is None:
                log.warning("%s: too many password failures for station %s: its requests are "
                            "answered 205 unchecked, one try back every %.0f s; counted in summary",
                            address, "unknown" if station is None else station, self.refill_seconds)
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

    def _tries(self, address: str, station: int | None, now: float) -> float:
        entry = self._pairs.get((address, station))
        if entry is None:
            return float(self.burst)
        tries, counted = entry
        return min(float(self.burst), tries + (now - counted) / self.refill_seconds)
