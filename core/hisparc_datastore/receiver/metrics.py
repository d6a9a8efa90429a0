"""The receiver's ``GET /metrics``, in the Prometheus text exposition format.

Named by Prometheus' guide: every name starts ``datastore_receiver_``, counters end in
``_total``, times are ``_seconds`` and moments ``_timestamp_seconds``; every series with a
fixed set of labels (the return codes) exists from the start at 0. The per-station series
come from :class:`~hisparc_datastore.receiver.activity.StationActivity`, so only listed
stations have them. The counts are kept per process (in memory, behind a lock): ``datastore
serve`` is one multi-threaded process, so its counts are the service's. When several
processes serve behind a proxy, scrape each one.
"""

from __future__ import annotations

import threading
import time

from hisparc_datastore.ops.http import Histogram, build_info, exposition, metric
from hisparc_datastore.receiver.activity import StationActivity

PREFIX = "datastore_receiver"
# Every code the receiver can answer, so the series exist (at 0) from the start.
RETURN_CODES = ("100", "201", "203", "205", "206", "208", "400")
# Seconds from the request's first byte read to the answer: a duplicate takes a millisecond,
# a fsynced upload of 100 events tens, a 2 MB one under load seconds.
UPLOAD_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._codes = dict.fromkeys(RETURN_CODES, 0)
        self._duplicates = 0
        self._not_uploads = 0
        self._bytes = 0
        self._seconds = Histogram(UPLOAD_BUCKETS)
        self._started = time.time()

    def record(self, code: str, size: int, seconds: float, duplicate: bool = False) -> None:
        with self._lock:
            self._codes[code] = self._codes.get(code, 0) + 1
            self._bytes += size
            self._seconds.observe(seconds)
            if duplicate:
                self._duplicates += 1

    def not_an_upload(self) -> None:
        with self._lock:
            self._not_uploads += 1

    def count(self, code: str) -> int:
        with self._lock:
            return self._codes.get(code, 0)

    def render(self, activity: StationActivity | None = None, stations: int | None = None) -> str:
        """The exposition; with ``activity``, the per-station series; ``stations``: how many
        the station list holds."""
        with self._lock:
            codes = dict(self._codes)
            duplicates, size, not_uploads = self._duplicates, self._bytes, self._not_uploads
            seconds = self._seconds.render(f"{PREFIX}_upload_duration_seconds",
                                           "Time spent answering uploads.")
        parts = [
            *build_info(PREFIX, self._started),
            metric(f"{PREFIX}_uploads_total", "counter", "Upload requests answered, by return code.",
                   by=("code", dict(sorted(codes.items())))),
            metric(f"{PREFIX}_duplicate_uploads_total", "counter",
                   "Uploads answered 100 as re-sends of a queued one.", duplicates),
            metric(f"{PREFIX}_not_upload_requests_total", "counter",
                   "Requests other than a POST (probes, browsers): answered 400, not counted as uploads.",
                   not_uploads),
            metric(f"{PREFIX}_upload_bytes_total", "counter", "Request body bytes received with uploads.",
                   size),
            seconds,
        ]
        if stations is not None:
            parts.append(metric(f"{PREFIX}_stations", "gauge", "Stations in the station list.", stations))
        if activity is not None:
            parts += station_series(activity)
        return exposition(*parts)


def station_series(activity: StationActivity) -> list[list[str]]:
    """Per listed station: when it last sent, was accepted and was refused, and its refusals."""
    def moments(key: str) -> list:
        return [({"station": station}, f"{at:.3f}") for station, at in activity.timestamps(key).items()]

    refusals = activity.refusals()
    return [
        metric(f"{PREFIX}_station_last_upload_timestamp_seconds", "gauge",
               "When the station's last upload was answered, whatever the answer.",
               samples=moments("last_upload")),
        metric(f"{PREFIX}_station_last_accepted_timestamp_seconds", "gauge",
               "When the station's last upload was answered 100.", samples=moments("last_accepted")),
        metric(f"{PREFIX}_station_last_refusal_timestamp_seconds", "gauge",
               "When an upload of the station was last refused (any code but 100).",
               samples=moments("last_refusal")),
        metric(f"{PREFIX}_station_refusals_total", "counter",
               "Uploads of the station refused, by return code.",
               samples=[({"station": station, "code": code}, n)
                        for (station, code), n in sorted(refusals.items())]),
    ]
