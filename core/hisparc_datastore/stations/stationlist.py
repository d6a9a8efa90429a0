"""The station list: ``number,cluster,password`` per line, reloaded whenever the file changes.

The public database pushes a new list by rewriting the file; the receiver
notices the change (modification time, size or inode) on the next request, so
no restart is needed and every receiver process sees the same list.
"""

from __future__ import annotations

import csv
import hmac
import io
import logging
import os
import threading
from pathlib import Path

import attrs

from hisparc_datastore.storage.clusters import cluster_problem

log = logging.getLogger(__name__)


@attrs.frozen
class Station:
    """One line of the station list."""

    number: int
    cluster: str
    password: str = attrs.field(repr=False)

    def password_matches(self, password: str) -> bool:
        # Constant-time compare; bytes because compare_digest refuses non-ASCII str.
        return hmac.compare_digest(
            self.password.encode("utf-8", "surrogateescape"), password.encode("utf-8", "surrogateescape")
        )


def parse_station_list(text: str, source: str = "station list") -> dict[int, Station]:
    """Parse the CSV text; a malformed line is logged with its number and skipped."""
    stations: dict[int, Station] = {}
    for lineno, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row or (len(row) == 1 and not row[0].strip()) or row[0].lstrip().startswith("#"):
            continue
        if len(row) != 3:
            log.error("%s line %d: expected number,cluster,password, found %d field(s); line skipped",
                      source, lineno, len(row))
            continue
        number, cluster, password = row[0].strip(), row[1].strip(), row[2]
        if not number.isdigit() or not number.isascii():
            log.error("%s line %d: station number %r is not a whole number; line skipped",
                      source, lineno, number)
            continue
        if not cluster:
            log.error("%s line %d: station %s has no cluster; line skipped", source, lineno, number)
            continue
        problem = cluster_problem(cluster)
        if problem is not None:
            # Its uploads would be stored where readers cannot find them, or not at all.
            log.error("%s line %d: station %s: cluster %r is refused, %s; line skipped",
                      source, lineno, number, cluster[:40], problem)
            continue
        if int(number) in stations:
            log.warning("%s line %d: station %s listed again; the later line wins", source, lineno, number)
        stations[int(number)] = Station(int(number), cluster, password)
    return stations


class StationList:
    """The stations allowed to upload, read from ``path`` and re-read when it changes."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._signature: tuple[int, int, int] | None = None
        self._stations: dict[int, Station] = {}
        self._missing_reported = False
        self.refresh()
        if self._signature is None:
            raise FileNotFoundError(f"station list {self.path} cannot be read")

    def refresh(self) -> None:
        """Re-read the file if its modification time, size or inode changed."""
        try:
            stat = os.stat(self.path)
        except OSError as exc:
            # Keep serving the last list read: a file being replaced is briefly absent.
            if not self._missing_reported:
                log.error("cannot read station list %s: %s; keeping the last list read",
                          self.path, exc.strerror)
                self._missing_reported = True
            return
        signature = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        if signature == self._signature:
            return
        with self._lock:
            if signature == self._signature:
                return  # another thread reloaded it meanwhile
            try:
                # utf-8-sig: a byte-order mark (from an editor on Windows) is not part of station 1.
                text = self.path.read_text(encoding="utf-8-sig", errors="replace")
            except OSError as exc:
                log.error("cannot read station list %s: %s", self.path, exc.strerror)
                return
            stations = parse_station_list(text, str(self.path))
            self._stations = stations
            self._signature = signature
            self._missing_reported = False
            log.info("station list %s: %d station(s)", self.path, len(stations))

    def get(self, number: int) -> Station | None:
        self.refresh()
        return self._stations.get(number)

    def __len__(self) -> int:
        return len(self._stations)
