"""What each listed station last did at the receiver: its last upload, the last one accepted,
the last refusal (code, reason, when) and how many since, the last one set aside.

Only stations in the station list get a record, so no client can add any (an unknown
number is refused before it is looked up here). The records live in memory for
``/metrics`` and are written to ``data_dir/receiver-stations.json`` now and then
(:data:`FLUSH_S`, and when the receiver stops) for ``datastore status``, which reads files
only; a new receiver carries them over, so a restart makes no station look silent. The
file is one receiver process's: several behind a proxy on one data_dir each write theirs
over the others', which shows the latest writer's view.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from hisparc_datastore.util.durable import write_atomically

log = logging.getLogger(__name__)

ACTIVITY_NAME = "receiver-stations.json"
FLUSH_S = 10.0  # most seconds a record waits in memory before status can see it
OK = "100"


def read_activity(data_dir: str | os.PathLike) -> dict[int, dict[str, Any]]:
    """The records a receiver last wrote under ``data_dir``, by station; empty when none."""
    try:
        stations = json.loads(Path(data_dir, ACTIVITY_NAME).read_text()).get("stations", {})
        return {int(number): record for number, record in stations.items()}
    except (OSError, ValueError, AttributeError):
        return {}


class StationActivity:
    """The per-station records of one receiver, safe to update from every request thread."""

    def __init__(self, data_dir: str | os.PathLike | None, clock=time.time) -> None:
        self.path = None if data_dir is None else Path(data_dir, ACTIVITY_NAME)
        self.clock = clock
        self._lock = threading.Lock()
        self._stations: dict[int, dict[str, Any]] = read_activity(data_dir) if data_dir else {}
        self._dirty = False
        self._flushed = 0.0

    def record(self, station: int, code: str, detail: str = "", set_aside: bool = False) -> None:
        """One answered upload of the listed ``station``; ``set_aside``: kept in suspicious/ or
        quarantine rather than queued for storing."""
        now = self.clock()
        with self._lock:
            entry = self._stations.setdefault(station, {"refusals": {}, "refused_since_accepted": 0})
            entry["last_upload"] = now
            if code == OK:
                entry["last_accepted"] = now
                entry["refused_since_accepted"] = 0
            else:
                entry["last_refusal"] = {"at": now, "code": code, "detail": detail}
                entry["refusals"][code] = entry["refusals"].get(code, 0) + 1
                entry["refused_since_accepted"] = entry.get("refused_since_accepted", 0) + 1
            if set_aside:
                entry["last_set_aside"] = now
            self._dirty = True
            due = now - self._flushed >= FLUSH_S
        if due:
            self.flush()

    def snapshot(self) -> dict[int, dict[str, Any]]:
        with self._lock:
            return json.loads(json.dumps(self._stations))  # a deep copy, keys as text

    def refusals(self) -> Counter:
        """Refusals by (station, code), for the counters on /metrics."""
        with self._lock:
            return Counter({(station, code): n for station, entry in self._stations.items()
                            for code, n in entry.get("refusals", {}).items()})

    def timestamps(self, key: str) -> dict[int, float]:
        """``last_upload``, ``last_accepted`` or ``last_refusal`` per station that has one."""
        with self._lock:
            values = {station: entry.get(key) for station, entry in self._stations.items()}
        return {station: (value["at"] if isinstance(value, dict) else value)
                for station, value in sorted(values.items()) if value is not None}

    def flush(self) -> None:
        """Write the records to the file if any changed since the last write."""
        if self.path is None:
            return
        with self._lock:
            if not self._dirty:
                return
            data = json.dumps({"pid": os.getpid(), "written": self.clock(),
                               "stations": self._stations}, sort_keys=True).encode()
            self._dirty = False
            self._flushed = self.clock()
        try:
            # For people, like the writer's state: no fsync per write; a crash loses seconds.
            write_atomically(self.path, data, fsync=False)
        except OSError as exc:
            log.warning("cannot save the stations' activity %s: %s", self.path, exc.strerror or exc)
