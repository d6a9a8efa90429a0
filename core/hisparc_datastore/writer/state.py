"""What the writer did lately, in ``data_dir/writer-state.json``, for ``datastore status``.

The writer updates it once per stored batch (one call site, after the batch
is released): when the last batch was stored, events stored per upload code
per minute over the last hour, and per station when its last events were
stored. It is written to a temporary file, fsynced, renamed over the old one
and the directory fsynced, so after a power cut it is the old version or the
new one, never empty or torn (a rename that reaches the disk before the data
would leave an empty file: ext4 without ``auto_da_alloc``, XFS, btrfs). The
two fsyncs cost a few milliseconds per batch, not per upload. A new writer carries the stations and the last
hour over from the file, so a restart does not make every station look quiet.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from hisparc_datastore.util.durable import write_atomically

log = logging.getLogger(__name__)

STATE_NAME = "writer-state.json"
WINDOW_S = 3600  # "events stored in the last hour"
BUCKET_S = 60


def state_path(data_dir: str | os.PathLike) -> Path:
    return Path(data_dir) / STATE_NAME


def read_state(data_dir: str | os.PathLike) -> dict[str, Any]:
    """The last state a writer saved under ``data_dir``; empty when there is none (yet)."""
    try:
        state = json.loads(state_path(data_dir).read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def events_in_window(state: dict[str, Any], now: float, window: float = WINDOW_S) -> dict[str, int]:
    """Events stored per upload code in the ``window`` seconds before ``now``."""
    total: Counter = Counter()
    for minute, counts in state.get("recent", []):
        if minute > now - window:
            total.update(counts)
    return dict(sorted(total.items()))


class WriterState:
    """The writer's record of recent batches, saved after each one."""

    def __init__(self, data_dir: str | os.PathLike, clock: Callable[[], float] = time.time,
                 fsync: bool = True) -> None:
        self.path = state_path(data_dir)
        self.clock = clock
        self.fsync = fsync
        previous = read_state(data_dir)
        self.batches = 0
        self.last_batch: float | None = previous.get("last_batch")
        self.stations: dict[str, dict[str, float | int]] = previous.get("stations", {})
        self.recent: dict[int, Counter] = {int(m): Counter(c) for m, c in previous.get("recent", [])}
        self._seen: Counter = Counter()  # the Tally's per-code counts at the last batch
        self.held: list[dict] = []  # day files a reader holds open (HeldFiles.describe)
        self.no_room: dict | None = None  # since, free, needed, reserve_mb: waiting for disk space

    def batch_stored(self, decoded: Iterable[Any], tally: Any, batches: int = 1) -> None:
        """Record stored uploads: ``decoded`` are the writer's StoredUpload records (station,
        events, the rejected ones, rows per upload code), ``tally`` its running totals;
        ``batches``: how many batches they were stored in (made durable together)."""
        now = self.clock()
        self.batches += batches
        self.last_batch = now
        today = time.strftime("%Y-%m-%d", time.gmtime(now))
        for item in decoded:
            stored = item.events - item.rejected_events
            if item.rejected_events:
                # so that status can point to `datastore quarantine` for this station
                self.stations.setdefault(str(item.station_id), {"events_stored": 0})["last_set_aside"] = now
            if stored <= 0:
                continue
            entry = self.stations.setdefault(str(item.station_id), {"events_stored": 0})
            entry["last_stored"] = now
            entry["events_stored"] = int(entry.get("events_stored", 0)) + stored
            # events stored today (UTC, the day they were stored) per upload code
            if entry.get("today", {}).get("date") != today:
                entry["today"] = {"date": today, "counts": {}}
            counts = entry["today"]["counts"]
            for code, rows in item.counts.items():
                counts[code] = counts.get(code, 0) + rows
        stored_now = Counter(tally.stored)
        added = stored_now - self._seen
        self._seen = stored_now
        minute = int(now // BUCKET_S * BUCKET_S)
        self.recent.setdefault(minute, Counter()).update(added)
        for old in [m for m in self.recent if m <= now - WINDOW_S]:
            del self.recent[old]
        self.save(tally)

    def save(self, tally: Any) -> None:
        state = {
            "pid": os.getpid(),
            "updated": self.clock(),
            "last_batch": self.last_batch,
            "batches": self.batches,
            "uploads": tally.uploads,
            "stored": dict(tally.stored),
            "quarantined_files": tally.quarantined_files,
            "quarantined_events": sum(tally.quarantined_events.values()),
            "recent": [[m, dict(c)] for m, c in sorted(self.recent.items())],
            "stations": self.stations,
            "held_day_files": self.held,
            "no_room": self.no_room,
        }
        try:
            write_atomically(self.path, json.dumps(state, sort_keys=True).encode(),
                             fsync=self.fsync)
        except OSError as exc:
            # Status is for people; a disk too full for this file must not stop storing.
            log.warning("cannot save the writer state %s: %s", self.path, exc.strerror or exc)
