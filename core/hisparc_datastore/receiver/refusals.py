"""Requests refused before any station is known (``GET /``, a POST lacking fields, a station
number that is not one), logged in full only the first few times per client address.

Each such request used to be a log line: one client at 190 to 340 requests a second wrote
2.4 to 4.8 GB of log a day. Now an address has ``first`` lines in full per ``interval``;
the rest are counted and said in one summary line once the interval is over. The table is
bounded: past ``max_addresses``, new addresses share one entry, so the lines stay few and
the memory fixed however many addresses a client has.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

FIRST = 5  # lines in full per address and interval: enough to see what a client sends
INTERVAL_SECONDS = 60.0
MAX_ADDRESSES = 10_000
OTHERS = "other addresses"  # the shared entry once the table is full


class RefusalLog:
    """Thread-safe: which refused requests are logged one by one, and summaries of the rest."""

    def __init__(self, first: int = FIRST, interval: float = INTERVAL_SECONDS,
                 max_addresses: int = MAX_ADDRESSES, clock: Callable[[], float] = time.monotonic) -> None:
        self.first = first
        self.interval = interval
        self.max_addresses = max_addresses
        self._clock = clock
        self._lock = threading.Lock()
        # address -> [logged, counted only, since]
        self._entries: dict[str, list] = {}
        self._swept = clock()

    def log_in_full(self, address: str) -> bool:
        """Whether this refused request from ``address`` gets its own log line; if not, it
        is counted into the address's summary."""
        now = self._clock()
        with self._lock:
            self._sweep(now)
            key = address
            if key not in self._entries and len(self._entries) >= self.max_addresses:
                key = OTHERS
            entry = self._entries.setdefault(key, [0, 0, now])
            if entry[0] < self.first:
                entry[0] += 1
                return True
            entry[1] += 1
            return False

    def sweep(self) -> None:
        """Log the summaries whose interval is over (called now and then by the server)."""
        with self._lock:
            self._sweep(self._clock())

    def __len__(self) -> int:
        return len(self._entries)

    def _sweep(self, now: float) -> None:
        if now - self._swept < self.interval / 4:
            return
        self._swept = now
        for address, (logged, counted, since) in list(self._entries.items()):
            if now - since < self.interval:
                continue
            del self._entries[address]
            if counted:
                log.warning("%s: %d more refused request(s) (malformed or naming no station) in the "
                            "last %.0f s after %d logged in full; not logged one by one",
                            address, counted, now - since, logged)
