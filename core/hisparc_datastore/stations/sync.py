"""Fetches the station list from publicdb, checks it, and puts it in place atomically.

publicdb serves the list at ``/config/datastore`` (one ``number,cluster,password``
line per station) and asks for a reload over XML-RPC (see ``configserver``).
The deployed daemon wrote whatever it fetched, an error page included, and so
locked every station out. Here a list is installed only when every line is a
station: otherwise the current list stays and the refusal says why. The
receiver notices the replaced file by itself (``stations/stationlist.py``).
"""

from __future__ import annotations

import http.client
import logging
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import attrs

from hisparc_datastore.config import ConfigError, Settings
from hisparc_datastore.stations.stationlist import StationListRefused, parse_station_list
from hisparc_datastore.util.durable import write_atomically

log = logging.getLogger(__name__)

FETCH_TIMEOUT = 30.0  # seconds; publicdb waits for our answer meanwhile
MAX_BYTES = 1_000_000  # ~140 stations take ~5 kB; anything this large is not a station list
PREVIOUS_SUFFIX = ".previous"


class StationListUnreachable(StationListRefused):
    """publicdb could not be reached at all (no connection, a time-out): nothing was refused
    on its merits, and the list in place stays."""


@attrs.frozen
class Reloaded:
    """A station list that was checked and installed."""

    path: Path
    stations: int
    changed: bool  # False: the fetched list equals the installed one, which was left alone
    added: tuple[int, ...] = ()
    removed: tuple[int, ...] = ()
    altered: tuple[int, ...] = ()  # cluster or password changed (which one is not told: passwords)

    def differences(self) -> str:
        """``added 512; removed 501; changed 502`` (cluster or password), or empty."""
        parts = [f"{what} {', '.join(map(str, numbers))}" for what, numbers in
                 (("added", self.added), ("removed", self.removed), ("changed", self.altered)) if numbers]
        return "; ".join(parts)


def station_differences(old: dict, new: dict) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """Stations added, removed, and with another cluster or password, from ``old`` to ``new``."""
    added = tuple(sorted(set(new) - set(old)))
    removed = tuple(sorted(set(old) - set(new)))
    altered = tuple(sorted(n for n in set(old) & set(new) if old[n] != new[n]))
    return added, removed, altered


def check_station_list(text: str, source: str) -> int:
    """Refuse an empty text, an HTML page, or a list :func:`parse_station_list` refuses in its
    strict mode; return the number of stations. ``source`` names the list in the message."""
    if not text.strip():
        raise StationListRefused(f"{source}: empty, no stations")
    head = text.lstrip()[:200].lower()
    if head.startswith("<") or "<html" in head or "<!doctype" in head:
        raise StationListRefused(f"{source}: an HTML page, not a station list (an error or login page?)")
    return len(parse_station_list(text, source, strict=True))


def fetch_station_list(url: str, timeout: float = FETCH_TIMEOUT) -> str:
    """The text at ``url``; an HTTP error, an HTML page or undecodable bytes are refused, and
    so is an answer not complete within ``timeout`` seconds in all.

    urllib's time-out bounds each read, so a server sending a byte now and then held the
    fetch (and publicdb's call) for minutes. The fetch runs in a thread of its own and is
    given up at the deadline however the server trickles; the thread stops reading at its
    next byte.
    """
    deadline = time.monotonic() + timeout
    outcome: list = []
    worker = threading.Thread(target=_fetch, args=(url, timeout, deadline, outcome),
                              name="fetch-stations", daemon=True)
    worker.start()
    worker.join(timeout)
    if not outcome:
        raise StationListUnreachable(f"{url}: not complete after {timeout:g} s, given up")
    if isinstance(outcome[0], BaseException):
        exc = outcome[0]
        if isinstance(exc, urllib.error.HTTPError):
            raise StationListRefused(f"{url}: HTTP {exc.code} {exc.reason}") from None
        if isinstance(exc, StationListRefused):
            raise exc
        reason = getattr(exc, "reason", None) or exc
        # no connection, no answer in time, a broken answer: publicdb is not reachable
        raise StationListUnreachable(f"{url}: cannot fetch: {reason}") from None
    content_type, body = outcome[0]
    if len(body) > MAX_BYTES:
        raise StationListRefused(f"{url}: more than {MAX_BYTES} bytes, not a station list")
    if content_type == "text/html":
        raise StationListRefused(f"{url}: an HTML page (Content-Type text/html), not a station list")
    try:
        return body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise StationListRefused(f"{url}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _fetch(url: str, timeout: float, deadline: float, outcome: list) -> None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            content_type = reply.headers.get_content_type()
            parts, size = [], 0
            while size <= MAX_BYTES:
                if time.monotonic() > deadline:
                    raise StationListUnreachable(f"{url}: not complete after {timeout:g} s, given up")
                chunk = reply.read1(65536)  # returns what one read gives: the deadline is seen
                if not chunk:
                    break
                parts.append(chunk)
                size += len(chunk)
        outcome.append((content_type, b"".join(parts)))
    except (OSError, http.client.HTTPException, StationListRefused) as exc:
        outcome.append(exc if not isinstance(exc, http.client.HTTPException)
                       else OSError(f"broken HTTP answer: {exc!r}"))


def install_station_list(path: Path, text: str, source: str) -> Reloaded:
    """Check ``text`` and replace ``path`` with it atomically, keeping the old list as
    ``path.previous``; a refused text leaves both alone."""
    count = check_station_list(text, source)
    data = text.encode("utf-8") if text.endswith("\n") else (text + "\n").encode("utf-8")
    try:
        current, status = path.read_bytes(), path.stat()
    except FileNotFoundError:
        current, status = None, None
    if current == data:
        return Reloaded(path, count, changed=False)  # leave the receiver's copy untouched
    old = {} if current is None else parse_station_list(current.decode("utf-8-sig", "replace"), str(path))
    differences = station_differences(old, parse_station_list(text, source))
    # Both keep the mode and owner the operator gave the list: it holds the passwords.
    if current is not None:
        write_atomically(path.with_name(path.name + PREVIOUS_SUFFIX), current, like=status)
    write_atomically(path, data, like=status)
    return Reloaded(path, count, True, *differences)


def reload_from_publicdb(settings: Settings) -> Reloaded:
    """Fetch ``[General] station_list_url`` and install it as ``[General] station_list``."""
    url = settings.station_list_url
    if not url:
        raise ConfigError(f"{settings.source}: [General] station_list_url is not set: "
                          "nowhere to fetch the station list from")
    try:
        result = install_station_list(settings.station_list, fetch_station_list(url), url)
    except StationListUnreachable as exc:
        log.error("publicdb unreachable, station list %s kept: %s", settings.station_list, exc)
        raise
    except StationListRefused as exc:
        log.error("station list refused, %s kept: %s", settings.station_list, exc)
        raise
    except OSError as exc:
        log.error("cannot write station list %s: %s", settings.station_list, exc)
        raise StationListRefused(f"cannot write {settings.station_list}: {exc.strerror or exc}") from None
    if result.changed:
        log.info("station list %s replaced from %s: %d station(s) (%s); the old one is %s%s",
                 result.path, url, result.stations, result.differences() or "the same stations",
                 result.path.name, PREVIOUS_SUFFIX)
    else:
        log.info("station list %s unchanged (%d station(s) at %s)", result.path, result.stations, url)
    return result


def fetch_stations_command(config: str | os.PathLike) -> int:
    """``datastore fetch-stations CONFIG``: one reload, for cron; 1 when refused."""
    from hisparc_datastore.config import load_settings
    from hisparc_datastore.ops.logsetup import configure_logging

    settings = load_settings(config)
    configure_logging(settings, also_stderr=False)
    try:
        result = reload_from_publicdb(settings)
    except StationListUnreachable as exc:
        print(f"datastore fetch-stations: unreachable, {settings.station_list} kept: {exc}", file=sys.stderr)
        return 1
    except StationListRefused as exc:
        print(f"datastore fetch-stations: refused, {settings.station_list} kept: {exc}", file=sys.stderr)
        return 1
    state = "replaced" if result.changed else "unchanged"
    differences = f" ({result.differences()})" if result.differences() else ""
    print(f"{result.path}: {state}, {result.stations} station(s){differences}")
    return 0
