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


class StationListRefused(ValueError):
    """A station list that is not usable as a whole; the message says why."""


def parse_station_list(text: str, source: str = "station list", strict: bool = False) -> dict[int, Station]:
    """The stations of the CSV ``text``; ``source`` names it in messages.

    One rule for every reader of the list: blank lines and lines starting with ``#``
    are not stations; any other line is ``number,cluster,password`` with a number, a
    cluster readers can find in the day files (``cluster_problem``) and a password.
    Lenient (the receiver, which keeps serving the other stations) a line that breaks
    the rule is logged with its number and skipped, and of a station listed twice the
    later line wins. ``strict`` (fetch-stations and
    config-server, which install a list) refuses such a line, a station listed twice
    and a list without stations, raising :class:`StationListRefused`.
    """
    stations: dict[int, Station] = {}
    first_line: dict[int, int] = {}
    for lineno, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row or (len(row) == 1 and not row[0].strip()) or row[0].lstrip().startswith("#"):
            continue
        problem = _line_problem(row)
        number = None if problem else int(row[0].strip())
        if number in first_line and strict:
            problem = f"station {number} is listed twice (also line {first_line[number]})"
        if problem:
            if strict:
                raise StationListRefused(f"{source} line {lineno}: {problem}")
            log.error("%s line %d: %s; line skipped", source, lineno, problem)
            continue
        if number in stations:
            log.warning("%s line %d: station %s listed again; the later line wins", source, lineno, number)
        first_line.setdefault(number, lineno)
        stations[number] = Station(number, row[1].strip(), row[2])
    if strict and not stations:
        raise StationListRefused(f"{source}: no stations")
    return stations


def _line_problem(row: list[str]) -> str | None:
    if len(row) != 3:
        return f"expected number,cluster,password, found {len(row)} field(s)"
    number, cluster, password = row[0].strip(), row[1].strip(), row[2]
    if not (number.isascii() and number.isdigit()):
        return f"station number {number[:40]!r} is not a number"
    if not cluster:
        return f"station {number} has no cluster"
    problem = cluster_problem(cluster)
    if problem is not None:
        # Its uploads would be stored where readers cannot find them, or not at all.
        return f"station {number}: cluster {cluster[:40]!r} is refused, {problem}"
    if not password:
        return f"station {number} has no password"
    return None


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

    def reload(self) -> None:
        """Re-read the file now, changed or not (SIGHUP): an edit within the same second
        and of the same size leaves the signature alone."""
        with self._lock:
            self._signature = None
        self.refresh()

    def get(self, number: int) -> Station | None:
        self.refresh()
        return self._stations.get(number)

    def __len__(self) -> int:
        return len(self._stations)
