"""The WSGI application: checks a station's upload and queues it, answering one return code.

The protocol is fixed by the deployed station software (docs/design.md, "Receiving uploads"):
a form-encoded POST with ``station_id``, ``password``, ``data`` (the pickled
event list, its bytes sent as latin-1 text) and ``checksum`` (md5 hex digest
of those bytes), answered with HTTP 200 and a body holding one return code.
The checks run in the protocol's order: fields, station, password, checksum,
unpickling; nothing from an unauthenticated request is unpickled.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import re
import shutil
import sqlite3
import time
import urllib.parse
from collections.abc import Callable, Iterable
from typing import Any

import attrs

from hisparc_datastore.codec.decoding import DecodeError, Upload, parse_event_list
from hisparc_datastore.config import ConfigError, Settings
from hisparc_datastore.ops.health import CONTENT_TYPE as HEALTH_CONTENT_TYPE
from hisparc_datastore.ops.health import HEALTH_PATH, health_body
from hisparc_datastore.ops.http import CONTENT_TYPE as METRICS_CONTENT_TYPE
from hisparc_datastore.queue.folders import DB_NAME, hold_limits
from hisparc_datastore.receiver.activity import StationActivity
from hisparc_datastore.receiver.claims import DUPLICATE, IN_FLIGHT, NEW, Dedup
from hisparc_datastore.receiver.guard import PasswordGuard
from hisparc_datastore.receiver.metrics import Metrics
from hisparc_datastore.receiver.refusals import RefusalLog
from hisparc_datastore.receiver.spool import ClaimLost, Spool, suspicious_reason
from hisparc_datastore.stations.stationlist import Station, StationList
from hisparc_datastore.util import faults
from hisparc_datastore.util.brief import clip

log = logging.getLogger(__name__)

RC_OK = "100"
RC_CHECKSUM = "201"
RC_PASSWORD = "203"
RC_TRANSACTION_FAILED = "205"
# As the deployed receiver answers: the station software logs the code, and a new station's
# operator must be sent to the station list, not to the password. Station numbers are
# public (publicdb lists them all), so 203 would hide nothing; the guard still counts it.
RC_UNKNOWN_STATION = "206"
RC_UNPICKLE = "208"
RC_INVALID_POST = "400"

FIELDS = ("station_id", "password", "data", "checksum")
# A well-formed upload has four fields; refuse to parse thousands.
MAX_FIELDS = 16
# ASCII digits only: int() would also take '501\n' and Arabic-Indic digits.
_STATION_ID = re.compile(r"[0-9]{1,9}")
_READ_CHUNK = 1 << 16
_UNQUOTE_SLICE = 1 << 16


class InvalidPost(ValueError):
    """The request is not a well-formed upload (return code 400)."""


@attrs.frozen
class Outcome:
    """What became of one request: the return code and, for the log, why."""

    code: str
    station_id: int | None = None
    detail: str = ""
    duplicate: bool = False
    quiet: bool = False  # logged in summary elsewhere (PasswordGuard), not line by line
    set_aside: bool = False  # kept in suspicious/ or quarantine, not queued for storing


def read_body(stream: Any, length: int) -> bytes:
    """Read at most ``length`` bytes, however the server chunks them."""
    parts, remaining = [], length
    while remaining > 0:
        chunk = stream.read(min(remaining, _READ_CHUNK))
        if not chunk:
            break
        parts.append(chunk)
        remaining -= len(chunk)
    return b"".join(parts)


def parse_form(body: bytes) -> dict[str, str]:
    """Decode an ``application/x-www-form-urlencoded`` body into its first value per field.

    The station software (Python 3) percent-encodes the latin-1 text of the
    pickle as UTF-8, which is what the deployed receiver decoded. A sender
    that percent-encodes the raw bytes instead (Python 2's urlencode) yields
    invalid UTF-8; those escapes are then read as latin-1, i.e. as the bytes.
    """
    if body.count(b"&") >= MAX_FIELDS:
        raise InvalidPost(f"more than {MAX_FIELDS} fields")
    raw: dict[bytes, bytes] = {}
    for part in body.split(b"&"):
        if part:
            name, _, value = part.partition(b"=")
            raw.setdefault(unquote_plus(name), value)
    values = {name: unquote_plus(value) for name, value in raw.items()}
    try:
        return {name.decode("utf-8"): value.decode("utf-8") for name, value in values.items()}
    except UnicodeDecodeError:
        return {name.decode("latin-1"): value.decode("latin-1") for name, value in values.items()}


def unquote_plus(text: bytes) -> bytes:
    """Percent-decode form text a slice at a time.

    ``urllib.parse`` splits the whole text at every ``%`` first: a 2 MB body
    of escapes becomes 700,000 objects (200 MB) before anyone has checked a
    password. A slice at a time, the cost stays near the size of the text.
    """
    text = text.replace(b"+", b" ")
    if b"%" not in text:
        return text
    out = bytearray()
    start = 0
    while start < len(text):
        end = min(start + _UNQUOTE_SLICE, len(text))
        if end < len(text):
            # an escape cut by the slice's end moves whole into the next slice
            cut = text.rfind(b"%", end - 2, end)
            if cut > start:
                end = cut
        out += urllib.parse.unquote_to_bytes(text[start:end])
        start = end
    return bytes(out)


def parse_trusted_proxies(settings: Settings) -> frozenset[str]:
    """``[Receiver] trusted_proxies`` as normalised addresses; a bad one is a ConfigError."""
    addresses = set()
    for word in (settings.trusted_proxies or "").replace(",", " ").split():
        try:
            addresses.add(str(ipaddress.ip_address(word)))
        except ValueError:
            raise ConfigError(f"{settings.source}: [Receiver] trusted_proxies: {word!r} is not an "
                              "IP address") from None
    return frozenset(addresses)


def client_address(environ: dict, trusted: frozenset[str]) -> str:
    """The peer's address or, when the peer is a trusted proxy, the last address in
    ``X-Forwarded-For`` that is not one of the trusted proxies: the one the proxy saw.
    Addresses further left were written by the client and could be anything."""
    peer = environ.get("REMOTE_ADDR", "?")
    if not trusted or _normal(peer) not in trusted:
        return peer
    address = peer
    for hop in reversed(environ.get("HTTP_X_FORWARDED_FOR", "").split(",")):
        hop = _normal(hop.strip())
        if not hop:
            break
        address = hop
        if hop not in trusted:
            break
    return address


def _normal(address: str) -> str:
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return ""


class ReceiverApp:
    """The receiver as a WSGI callable; one instance serves all threads."""

    def __init__(self, settings: Settings, stations: StationList, spool: Spool,
                 dedup: Dedup | None, metrics: Metrics | None = None,
                 guard: PasswordGuard | None = None, activity: StationActivity | None = None) -> None:
        self.settings = settings
        self.stations = stations
        self.spool = spool
        self.dedup = dedup
        self.metrics = metrics or Metrics()
        self.guard = guard or PasswordGuard()
        self.refusals = RefusalLog()
        self.activity = activity or StationActivity(None)
        self.trusted_proxies = parse_trusted_proxies(settings)

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        # Everything below (the log, the password guard) sees the station's own address.
        environ["REMOTE_ADDR"] = client_address(environ, self.trusted_proxies)
        # Exactly /metrics, as the proxy's `location = /metrics` admits it (/foo/metrics got past).
        path, method = environ.get("PATH_INFO", ""), environ.get("REQUEST_METHOD")
        if method in ("GET", "HEAD") and path in _PAGES:
            body, content_type = _PAGES[path](self)
            return self._respond(start_response, body, content_type)
        started = time.perf_counter()
        size = _content_length(environ)
        if method != "POST":
            # A probe or a browser, not a station: answered as the protocol would, never
            # counted as an upload (a health check used to count as a refused one).
            # Logged like the other refusals before a station is known: a flood of GETs is a
            # few lines and a summary, not a line each.
            self.metrics.not_an_upload()
            address = environ.get("REMOTE_ADDR", "?")
            if self.refusals.log_in_full(address):
                log.warning("not an upload from %s: %s, %s bytes "
                            "(invalid POST: method %s, not POST; path %s)", address, RC_INVALID_POST,
                            size if size is not None else "?",
                            clip(str(method)), clip(repr(path)))
            return self._respond(start_response, RC_INVALID_POST)
        try:
            if path in _PAGES:
                raise InvalidPost(f"{path} takes no uploads")
            outcome = self.handle(environ, size)
        except InvalidPost as exc:
            outcome = Outcome(RC_INVALID_POST, detail=f"invalid POST: {exc}")
        except Exception as exc:  # a station hears a return code, never HTTP 500
            log.exception("unexpected error in a request from %s", environ.get("REMOTE_ADDR", "?"))
            outcome = Outcome(RC_TRANSACTION_FAILED, detail=f"unexpected error: {_describe(exc)}")
        elapsed = time.perf_counter() - started
        self.metrics.record(outcome.code, max(size or 0, 0), elapsed, outcome.duplicate)
        # Per station only for listed ones: a client cannot add records by inventing numbers.
        if outcome.station_id is not None and self.stations.get(outcome.station_id) is not None:
            self.activity.record(outcome.station_id, outcome.code, outcome.detail, outcome.set_aside)
        if outcome.quiet or (outcome.code == RC_INVALID_POST
                             and not self.refusals.log_in_full(environ.get("REMOTE_ADDR", "?"))):
            return self._respond(start_response, outcome.code)
        level = (logging.INFO if outcome.code == RC_OK
                 else logging.ERROR if outcome.code == RC_TRANSACTION_FAILED else logging.WARNING)
        log.log(level, "station %s from %s: %s, %s bytes, %.1f ms%s",
                outcome.station_id if outcome.station_id is not None else "?",
                environ.get("REMOTE_ADDR", "?"), outcome.code,
                size if size is not None else "?", elapsed * 1000,
                f" ({outcome.detail})" if outcome.detail else "")
        return self._respond(start_response, outcome.code)

    @staticmethod
    def _respond(start_response: Callable, text: str, content_type: str = "text/plain") -> list[bytes]:
        body = text.encode("utf-8")
        start_response("200 OK", [("Content-Type", content_type), ("Content-Length", str(len(body)))])
        return [body]

    def handle(self, environ: dict, size: int | None) -> Outcome:
        """Run the checks in the protocol's order and queue an upload that passes them."""
        if environ.get("REQUEST_METHOD") != "POST":
            raise InvalidPost(f"method {environ.get('REQUEST_METHOD')}, not POST")
        if size is None:
            raise InvalidPost("no valid Content-Length")
        if size > self.settings.max_body_bytes:
            # Refused before reading: the body is never buffered.
            raise InvalidPost(f"body of {size} bytes exceeds max_body_bytes {self.settings.max_body_bytes}")
        content_type = environ.get("CONTENT_TYPE", "").split(";")[0].strip().lower()
        if content_type == "multipart/form-data":
            raise InvalidPost("multipart/form-data; the station software sends a urlencoded form")
        form = parse_form(read_body(environ["wsgi.input"], size))

        missing = [name for name in FIELDS if name not in form]
        if missing:
            raise InvalidPost(f"missing field(s) {', '.join(missing)}")
        if _STATION_ID.fullmatch(form["station_id"]) is None:
            raise InvalidPost(f"station_id {form['station_id'][:20]!r} is not a number")
        station_id = int(form["station_id"])

        station = self.stations.get(station_id)
        address = environ.get("REMOTE_ADDR", "?")
        pair = station_id if station is not None else None
        # Past the pair's budget this waits its turn (see guard): a guesser sharing the
        # station's address cannot keep the station out by taking every try.
        turn = self.guard.admit(address, pair)
        if turn is None:
            self.guard.turned_away(address, pair)
            return Outcome(RC_TRANSACTION_FAILED, station_id, "too many password failures", quiet=True)
        if station is None:
            self.guard.failed(turn)
            return Outcome(RC_UNKNOWN_STATION, station_id, "unknown station")
        if not station.password_matches(form["password"]):
            self.guard.failed(turn)
            return Outcome(RC_PASSWORD, station_id, "wrong password")
        self.guard.matched(turn)
        try:
            payload = form["data"].encode("latin-1")
        except UnicodeEncodeError:
            # Not latin-1 text, so not the bytes the checksum was made of.
            return Outcome(RC_CHECKSUM, station_id, "data is not latin-1 text")
        checksum = hashlib.md5(payload).hexdigest()
        if checksum != form["checksum"].strip().lower():
            return self._refuse(Outcome(RC_CHECKSUM, station_id,
                                        f"checksum {form['checksum'][:40]!r}, data has {checksum}"),
                                station, payload, checksum)

        # Same station and md5: the same bytes, a batch re-sent after a lost reply. Claimed
        # before unpickling, so a duplicate costs no decoding and a new upload one query.
        name = self.spool.unique_name(station_id, checksum)
        claim = self._claim(station_id, checksum, name)
        if claim == DUPLICATE:
            return Outcome(RC_OK, station_id, f"duplicate of an upload with md5 {checksum}", duplicate=True)
        if claim == IN_FLIGHT:
            # The same bytes are being queued by another request this very moment; that one
            # may yet fail, so this one may not say 100. The station retries.
            return Outcome(RC_TRANSACTION_FAILED, station_id, f"the same upload (md5 {checksum}) "
                           "is being queued by another request")
        short = self._short_of_room(len(payload))
        if short:
            # Not kept in quarantine: that would spend the room the writer needs. The station
            # keeps the upload and retries.
            self._release(station_id, checksum, name)
            return Outcome(RC_TRANSACTION_FAILED, station_id, short)
        faults.point("receiver-claimed")
        try:
            return self._queue(station, payload, checksum, name)
        except Exception as exc:  # whatever happens, the claim is released
            log.exception("unexpected error queueing an upload of station %s", station_id)
            self._release(station_id, checksum, name)
            return self._refuse(Outcome(RC_TRANSACTION_FAILED, station_id,
                                        f"unexpected error: {_describe(exc)}"), station, payload, checksum)

    def _queue(self, station: Station, payload: bytes, checksum: str, name: str) -> Outcome:
        """Decode a claimed upload and queue it durably; settle its claim either way."""
        station_id = station.number
        try:
            event_list = parse_event_list(payload)
        except DecodeError as exc:
            self._release(station_id, checksum, name)
            return self._refuse(Outcome(RC_UNPICKLE, station_id, f"cannot unpickle: {exc}"),
                                station, payload, checksum)
        if len(event_list) > self.settings.max_events_per_upload:
            # Refused, kept with the reason: every event costs the writer memory and time.
            self._release(station_id, checksum, name)
            return self._refuse(Outcome(RC_UNPICKLE, station_id,
                                        f"{len(event_list)} events, more than max_events_per_upload "
                                        f"{self.settings.max_events_per_upload}"),
                                station, payload, checksum)
        suspicious = suspicious_reason(event_list, self.settings.minimum_year,
                                       self.settings.max_days_per_upload)
        commit = release = None
        if self.dedup is not None:
            def commit() -> bool:
                return self._commit(station_id, checksum, name)

            def release() -> bool:
                return self._release(station_id, checksum, name)
        try:
            path = self.spool.store(Upload(station_id, station.cluster, event_list), name, suspicious,
                                    commit=commit, release=release)
        except ClaimLost:
            return Outcome(RC_TRANSACTION_FAILED, station_id, f"the same upload (md5 {checksum}) "
                           "was taken over by another request after this one took too long")
        except OSError as exc:
            return Outcome(RC_TRANSACTION_FAILED, station_id, f"queue write failed: {exc}")
        self._settle(self.dedup.remember if self.dedup else None, station_id, checksum, name)
        faults.point("receiver-remembered")
        return Outcome(RC_OK, station_id,
                       f"{len(event_list)} events -> {path.parent.name}/{path.name}",
                       set_aside=suspicious is not None)

    def _short_of_room(self, size: int) -> str | None:
        """Why queueing ``size`` more bytes would eat into ``[Receiver] receiver_reserve_mb``,
        or None. The writer needs room to store what was accepted: a receiver filling the disk
        to the last byte would leave it waiting with every upload queued and none stored."""
        reserve = self.settings.receiver_reserve_mb * 2**20
        if not reserve:
            return None
        try:
            free = shutil.disk_usage(self.settings.data_dir).free
        except OSError:
            return None  # writing the queue file meets whatever is wrong, and says so
        if free - size >= reserve:
            return None
        return (f"disk nearly full: {free / 2**20:.1f} MB free in {self.settings.data_dir}, "
                f"below [Receiver] receiver_reserve_mb = {self.settings.receiver_reserve_mb}")

    def _claim(self, station_id: int, checksum: str, name: str) -> str:
        if self.dedup is None:
            return NEW
        try:
            return self.dedup.claim(station_id, checksum, name)
        except sqlite3.Error as exc:
            # Better a rare duplicate for the writer than refusing the station's data.
            log.warning("duplicate detection unavailable: %s", exc)
            return NEW

    def _commit(self, station_id: int, checksum: str, name: str) -> bool:
        try:
            return self.dedup.commit(station_id, checksum, name)
        except sqlite3.Error as exc:
            # As at the claim: queue it; only a crash before it is remembered could double it.
            log.warning("cannot mark upload %s as being queued: %s", name, exc)
            return True

    def _release(self, station_id: int, checksum: str, name: str) -> bool:
        """Drop this request's claim of an upload not queued; False when that failed or the
        upload is remembered as queued after all."""
        if self.dedup is None:
            return True
        try:
            return self.dedup.forget(station_id, checksum, name)
        except sqlite3.Error as exc:
            log.warning("cannot drop the claim of upload %s: %s; the station's retry takes it over",
                        name, exc)
            self.dedup.abandon(name)
            return False

    def recover(self) -> int:
        """Settle what receiver processes that died left behind: their claims (remembered
        when their file was queued, dropped otherwise) and their files in ``tmp/``.
        Returns how many tmp files were removed; run at start-up and now and then."""
        if self.dedup is None:
            return self.spool.remove_stale_tmp()
        try:
            self.dedup.settle_dead()
        except sqlite3.Error as exc:
            log.warning("cannot settle the claims of receivers that died: %s", exc)
            return 0  # their tmp files are what tells a committing claim's fate: keep them

        def release(name: str) -> bool:
            try:
                self.dedup.forget_name(name)
            except sqlite3.Error:
                return False
            return True

        return self.spool.remove_dead_tmp(release)

    @staticmethod
    def _settle(record: Callable | None, station_id: int, checksum: str, name: str) -> None:
        if record is None:
            return
        try:
            record(station_id, checksum)
        except sqlite3.Error as exc:
            log.warning("cannot record upload %s for duplicate detection: %s", name, exc)

    def _refuse(self, outcome: Outcome, station, payload: bytes, checksum: str) -> Outcome:
        """Keep what an authenticated station sent but we refused, so nothing is lost silently.

        The station is told the code and may retry; the copy lets an operator
        see the reason and, once the cause is fixed, ``datastore requeue`` it.
        """
        reason = f"receiver answered {outcome.code}: {outcome.detail}"
        try:
            path, count = self.spool.queue.keep_refused(payload, outcome.station_id, station.cluster,
                                                        reason)
        except Exception as exc:  # noqa: BLE001 - the station still hears its code
            log.error("cannot keep refused upload of station %s: %s", outcome.station_id, _describe(exc))
            return outcome
        kept = f"kept as quarantine/{path.name}" + (f", refused {count} times" if count > 1 else "")
        return attrs.evolve(outcome, detail=f"{outcome.detail}; {kept}", set_aside=True)


# What a GET may ask for; every other GET is answered as an invalid upload.
_PAGES: dict[str, Callable[[ReceiverApp], tuple[str, str]]] = {
    "/metrics": lambda app: (app.metrics.render(app.activity, len(app.stations)), METRICS_CONTENT_TYPE),
    HEALTH_PATH: lambda app: (health_body("receiver").decode(), HEALTH_CONTENT_TYPE),
}


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {clip(str(exc))}"


def _content_length(environ: dict) -> int | None:
    raw = environ.get("CONTENT_LENGTH") or "0"
    try:
        value = int(raw)
    except ValueError:
        return None
    return value if value >= 0 else None


def build_app(settings: Settings, *, spool: Spool | None = None, dedup: bool = True,
              metrics: Metrics | None = None) -> ReceiverApp:
    """The receiver for ``settings``: its station list, queue, duplicate memory and counters."""
    spool = spool or Spool(settings.data_dir, fsync=settings.fsync)
    spool.queue.hold_limits = hold_limits(settings)
    # A window of 0 (or less) turns duplicate detection off.
    remember = dedup and settings.duplicate_window_hours > 0
    memory = (Dedup(settings.data_dir / DB_NAME, settings.duplicate_window_hours, spool.queue.tmp)
              if remember else None)
    return ReceiverApp(settings, StationList(settings.station_list), spool, memory, metrics,
                       activity=StationActivity(settings.data_dir))
