"""Counters for ``GET /metrics``, in the Prometheus text exposition format.

The counts are kept per process (in memory, behind a lock): ``datastore
serve`` is one multi-threaded process, so its counts are the service's.
When several processes serve behind a proxy, scrape each one.
"""

from __future__ import annotations

import threading
import time

from hisparc_datastore.ops.http import exposition, metric

# Every code the receiver can answer, so the series exist (at 0) from the start.
RETURN_CODES = ("100", "201", "203", "205", "206", "208", "400")


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._codes = dict.fromkeys(RETURN_CODES, 0)
        self._duplicates = 0
        self._not_uploads = 0
        self._bytes = 0
        self._seconds = 0.0
        self._started = time.time()

    def record(self, code: str, size: int, seconds: float, duplicate: bool = False) -> None:
        with self._lock:
            self._codes[code] = self._codes.get(code, 0) + 1
            self._bytes += size
            self._seconds += seconds
            if duplicate:
                self._duplicates += 1

    def not_an_upload(self) -> None:
        with self._lock:
            self._not_uploads += 1

    def count(self, code: str) -> int:
        with self._lock:
            return self._codes.get(code, 0)

    def render(self) -> str:
        with self._lock:
            codes = dict(self._codes)
            duplicates, size, seconds = self._duplicates, self._bytes, self._seconds
            not_uploads = self._not_uploads
        return exposition(
            metric("datastore_uploads_total", "counter", "Upload requests answered, by return code.",
                   by=("code", dict(sorted(codes.items())))),
            metric("datastore_not_upload_requests_total", "counter",
                   "Requests other than a POST (probes, browsers): answered 400, not counted as uploads.",
                   not_uploads),
            metric("datastore_duplicate_uploads_total", "counter",
                   "Uploads answered 100 as re-sends of a queued one.", duplicates),
            metric("datastore_upload_bytes_total", "counter",
                   "Request body bytes received with uploads.", size),
            metric("datastore_upload_seconds", "summary", "Time spent answering uploads.",
                   parts={"_sum": f"{seconds:.6f}", "_count": sum(codes.values())}),
            metric("datastore_receiver_start_time_seconds", "gauge", "When this receiver process started.",
                   f"{self._started:.3f}"),
        )
