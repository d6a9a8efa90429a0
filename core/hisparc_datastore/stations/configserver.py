"""``datastore config-server``: publicdb's station-list push over XML-RPC.

publicdb calls ``xmlrpc.client.ServerProxy(DATASTORE_PROXY).reload_datastore()``
with no arguments after a station or a password changes (its docker-compose
file names port 8002, the deployed daemon served ``/RPC2``). The answer is
``True`` once the new list is in place; a refused list is an XML-RPC fault
whose message says why, which publicdb raises after its own change is saved,
so the operator sees it there and in our log.

A thread per connection, so one idle client blocks nobody; a request must be whole
``REQUEST_SECONDS`` after the connection opened (a client trickling a byte a second held a
slot for days under a time-out per read), an address holds at most ``PER_ADDRESS`` slots of
``MAX_CLIENTS``, and ``[ConfigServer] publicdb_addresses`` are served outside those limits,
so no other client can keep publicdb's call out. A lock keeps two pushes from writing the
list at once.
"""

from __future__ import annotations

import collections
import contextlib
import ipaddress
import logging
import os
import signal
import socket
import socketserver
import sys
import threading
import time
import xmlrpc.client
from typing import Any
from xmlrpc.server import SimpleXMLRPCRequestHandler, SimpleXMLRPCServer

from hisparc_datastore import _hangup
from hisparc_datastore.config import ConfigError, Settings, load_settings
from hisparc_datastore.ops.health import CONTENT_TYPE as HEALTH_CONTENT_TYPE
from hisparc_datastore.ops.health import HEALTH_PATH, health_body
from hisparc_datastore.ops.http import CONTENT_TYPE as METRICS_CONTENT_TYPE
from hisparc_datastore.ops.http import build_info, exposition, metric
from hisparc_datastore.ops.logsetup import configure_logging
from hisparc_datastore.ops.logsetup import reopen as reopen_logs
from hisparc_datastore.stations.stationlist import parse_station_list
from hisparc_datastore.stations.sync import StationListRefused, StationListUnreachable, reload_from_publicdb
from hisparc_datastore.util.brief import clip

log = logging.getLogger(__name__)

RPC_PATH = "/RPC2"
FAULT_REFUSED = 1  # the fault code publicdb sees when a list is refused


# A call of reload_datastore() takes ~200 bytes; anything much larger is not publicdb's.
MAX_REQUEST_BYTES = 64 * 1024
# Seconds a client may stay silent (idle, or sending slowly) before its connection is closed.
CLIENT_TIMEOUT = 30.0
# Seconds from a connection's opening until its request must be whole, however it trickles.
REQUEST_SECONDS = 30.0
# Connections served at once, and from one address; more are closed at once.
MAX_CLIENTS = 16
PER_ADDRESS = 4
# Connections waiting to be accepted: a burst of publicdb's calls queues here.
BACKLOG = 128


class _Handler(SimpleXMLRPCRequestHandler):
    rpc_paths = (RPC_PATH,)
    timeout = CLIENT_TIMEOUT  # StreamRequestHandler applies it to every read of the socket

    def do_POST(self) -> None:
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_REQUEST_BYTES:
            # Refused from the header, before the body is read (a 400 MB POST cost 854 MB).
            self.send_error(413 if length > 0 else 411,
                            f"a request body of at most {MAX_REQUEST_BYTES} bytes with Content-Length")
            self.close_connection = True
            return
        super().do_POST()

    def do_GET(self) -> None:
        """``/health`` for probes; anything else 404 in plain text (http.server's default was
        501 with an HTML page)."""
        path = self.path.split("?", 1)[0]
        if path == HEALTH_PATH:
            self._answer(200, health_body("config-server"), HEALTH_CONTENT_TYPE)
        elif path == "/metrics":
            self._answer(200, self.server.service.render_metrics().encode(), METRICS_CONTENT_TYPE)
        else:
            self._answer(404, f"not found: the config server answers POST {RPC_PATH}, GET "
                              f"{HEALTH_PATH} and GET /metrics\n".encode(), "text/plain; charset=utf-8")

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_request(self, code: object = "-", size: object = "-") -> None:
        # One line in the services' format, not http.server's own (a second time stamp, the
        # raw request line): who, what, the answer.
        log.info("%s %s %s: HTTP %s", self.client_address[0], getattr(self, "command", None) or "-",
                 clip(repr(getattr(self, "path", ""))), getattr(code, "value", code))

    def log_message(self, format: str, *args: object) -> None:
        # http.server's errors (a bad request line, a time-out) come here
        log.warning("%s %s", self.client_address[0], clip(format % args))


class _Server(socketserver.ThreadingMixIn, SimpleXMLRPCServer):
    """A thread per connection, at most ``max_clients`` at once and ``per_address`` from one
    address, except publicdb's (``trusted``): one idle or slow client holds only its own
    thread (it held publicdb's call and SIGTERM for as long as it stayed), and a request not
    whole ``request_seconds`` after its connection opened is cut off."""

    daemon_threads = True
    block_on_close = False  # stopping does not wait for a silent client
    request_queue_size = BACKLOG

    def __init__(self, *args: Any, max_clients: int = MAX_CLIENTS, per_address: int = PER_ADDRESS,
                 request_seconds: float = REQUEST_SECONDS, trusted: frozenset[str] = frozenset(),
                 **kwargs: Any) -> None:
        self.max_clients = max_clients
        self.per_address = per_address
        self.request_seconds = request_seconds
        self.trusted = trusted
        self._lock = threading.Lock()
        self._by_address: collections.Counter[str] = collections.Counter()
        self._counted = 0
        # connections still reading their request: socket -> (deadline, address)
        self._reading: dict[Any, tuple[float, str]] = {}
        self._reader = threading.local()
        self.hangups: list[int] = []
        self.refused = 0
        super().__init__(*args, **kwargs)

    def service_actions(self) -> None:
        # serve_forever's loop, between two polls: a SIGHUP's work is done here, not in the handler
        if self.hangups:
            self.hangups.clear()
            reopen_logs()
            log.info("SIGHUP: log reopened")
        now = time.monotonic()
        with self._lock:
            late = [(sock, address) for sock, (deadline, address) in self._reading.items() if deadline < now]
            for sock, _ in late:
                del self._reading[sock]
        for sock, address in late:
            log.warning("%s: no whole request %.0f s after connecting; connection closed",
                        address, self.request_seconds)
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # the thread's blocked read returns at once

    def process_request(self, request: Any, client_address: Any) -> None:
        address = _normal(client_address[0])
        counted = address not in self.trusted
        with self._lock:
            if counted and (self._counted >= self.max_clients
                            or self._by_address[address] >= self.per_address):
                self.refused += 1
                full = True
            else:
                full = False
                if counted:
                    self._counted += 1
                    self._by_address[address] += 1
                self._reading[request] = (time.monotonic() + self.request_seconds, address)
        if full:  # never block the accepting loop
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._release(request, address, counted)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        self._reader.request = request
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release(request, _normal(client_address[0]), _normal(client_address[0]) not in self.trusted)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A connection cut at its deadline (or dropped by its client) fails the handler's
        # last write: one line, not socketserver's traceback on standard error.
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):
            log.info("%s: connection ended: %s", client_address[0], exc.strerror or exc)
            return
        log.error("%s: unexpected error", client_address[0], exc_info=True)

    def _marshaled_dispatch(self, *args: Any, **kwargs: Any) -> bytes:
        # The request is whole: the deadline no longer applies (a reload takes its own time).
        with self._lock:
            self._reading.pop(getattr(self._reader, "request", None), None)
        return super()._marshaled_dispatch(*args, **kwargs)

    def _release(self, request: Any, address: str, counted: bool) -> None:
        with self._lock:
            self._reading.pop(request, None)
            if counted:
                self._counted -= 1
                self._by_address[address] -= 1
                if self._by_address[address] <= 0:
                    del self._by_address[address]


def _normal(address: str) -> str:
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return address


# What a reload came to: the station list replaced, fetched but the same, refused on its
# merits (an error page, a broken line), or publicdb not reached at all.
RESULTS = ("replaced", "unchanged", "refused", "unreachable")
PREFIX = "datastore_config_server"


class ConfigService:
    """The functions offered over XML-RPC, and what they did for ``/metrics``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._one_at_a_time = threading.Lock()  # two pushes never write the list at once
        self.results = dict.fromkeys(RESULTS, 0)
        self.last_result: str | None = None
        self.last_reload: float | None = None
        self.started = time.time()

    def reload_datastore(self) -> bool:
        with self._one_at_a_time:
            try:
                result = "replaced" if reload_from_publicdb(self.settings).changed else "unchanged"
            except StationListUnreachable as exc:
                self._count("unreachable")
                raise xmlrpc.client.Fault(FAULT_REFUSED, f"station list not replaced: {exc}") from None
            except (StationListRefused, ConfigError) as exc:
                self._count("refused")
                raise xmlrpc.client.Fault(FAULT_REFUSED, f"station list not replaced: {exc}") from None
            self._count(result)
        return True

    def _count(self, result: str) -> None:
        self.results[result] += 1
        self.last_result, self.last_reload = result, time.time()

    def render_metrics(self) -> str:
        """The config-server's metrics: its reloads and the station list in place."""
        path = self.settings.station_list
        parts = [
            *build_info(PREFIX, self.started),
            metric(f"{PREFIX}_reloads_total", "counter",
                   "reload_datastore() calls by result: replaced, unchanged, refused (a list not "
                   "installed on its merits), unreachable (publicdb not reached).",
                   by=("result", dict(self.results))),
            metric(f"{PREFIX}_last_reload_result", "gauge",
                   "1 for the result of the last reload_datastore(), 0 for the others (all 0 before one).",
                   by=("result", {result: int(result == self.last_result) for result in RESULTS})),
        ]
        if self.last_reload is not None:
            parts.append(metric(f"{PREFIX}_last_reload_timestamp_seconds", "gauge",
                                "When reload_datastore() was last called.", f"{self.last_reload:.3f}"))
        try:
            modified = path.stat().st_mtime
            stations = len(parse_station_list(path.read_text(encoding="utf-8-sig", errors="replace"),
                                              str(path)))
        except OSError:
            pass  # absent: the station list cannot be read, which status names
        else:
            parts += [
                metric(f"{PREFIX}_station_list_modified_timestamp_seconds", "gauge",
                       "When the station list in place was last written (its age: time() minus this).",
                       f"{modified:.3f}"),
                metric(f"{PREFIX}_station_list_stations", "gauge", "Stations in the station list in place.",
                       stations),
            ]
        return exposition(*parts)


def make_config_server(settings: Settings, host: str = "127.0.0.1", port: int = 0, *,
                       client_timeout: float = CLIENT_TIMEOUT, request_seconds: float = REQUEST_SECONDS,
                       max_clients: int = MAX_CLIENTS, per_address: int = PER_ADDRESS) -> SimpleXMLRPCServer:
    """An XML-RPC server (not yet serving) offering ``reload_datastore`` at ``/RPC2``."""
    handler = type("Handler", (_Handler,), {"timeout": client_timeout})
    server = _Server((host, port), requestHandler=handler, logRequests=True, allow_none=False,
                     max_clients=max_clients, per_address=per_address, request_seconds=request_seconds,
                     trusted=publicdb_addresses(settings))
    server.service = ConfigService(settings)
    server.register_function(server.service.reload_datastore, "reload_datastore")
    server.register_introspection_functions()
    return server


def publicdb_addresses(settings: Settings) -> frozenset[str]:
    """``[ConfigServer] publicdb_addresses`` as normalised addresses (load_settings checked them)."""
    return frozenset(_normal(word) for word in (settings.publicdb_addresses or "").replace(",", " ").split())


def config_server_command(config: str | os.PathLike, bind: str | None = None,
                          also_stderr: bool = True) -> int:
    """Serve until SIGTERM or SIGINT; returns the exit status (0). SIGHUP reopens the log."""
    from hisparc_datastore.ops.http import parse_bind

    settings = load_settings(config)
    bind = bind or settings.config_server_bind
    host, port = parse_bind(bind)
    configure_logging(settings, also_stderr=also_stderr)
    if not settings.station_list_url:
        raise ConfigError(f"{settings.source}: [General] station_list_url is not set: "
                          "reload_datastore() would have nothing to fetch")
    try:
        server = make_config_server(settings, host, port)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {bind}: {exc.strerror or exc}") from None

    def on_signal(signum: int, frame: object) -> None:
        # shutdown() waits for serve_forever() to return, which runs in this very thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    _hangup.take_over(lambda signum, frame: server.hangups.append(signum))
    host, port = server.server_address[:2]
    log.info("config server on http://%s:%s%s: reload_datastore() fetches %s into %s",
             host, port, RPC_PATH, settings.station_list_url, settings.station_list)
    with server:
        server.serve_forever(poll_interval=0.5)
    log.info("config server stopped")
    return 0
