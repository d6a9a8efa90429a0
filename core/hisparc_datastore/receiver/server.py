"""Runs the receiver on waitress: ``datastore serve CONFIG --bind HOST:PORT``.

waitress is a pure-Python, multi-threaded production WSGI server (a Pylons
project), so the receiver needs no C build and no separate application
server. One process with a pool of threads replaces the deployed uWSGI
workers; the station list, duplicate memory and queue are shared through
files anyway, so several such processes may also run side by side.

SIGTERM and SIGINT stop the server cleanly: it stops accepting connections,
lets the requests in progress finish and deliver their replies, then exits 0.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import TcpWSGIServer
from waitress.task import ErrorTask, ThreadedTaskDispatcher
from waitress.utilities import RequestEntityTooLarge

from hisparc_datastore import _hangup
from hisparc_datastore.config import ConfigError, load_settings, require_data_dir, setting_problem
from hisparc_datastore.ops.check import receiver_cannot_write
from hisparc_datastore.ops.http import parse_bind
from hisparc_datastore.ops.logsetup import configure_logging
from hisparc_datastore.ops.logsetup import reopen as reopen_logs
from hisparc_datastore.queue.folders import Queue
from hisparc_datastore.receiver.activity import FLUSH_S
from hisparc_datastore.receiver.app import RC_INVALID_POST, ReceiverApp, build_app

log = logging.getLogger(__name__)

DEFAULT_THREADS = 8
# How long a stopping server waits for requests in progress.
DRAIN_SECONDS = 10.0
# The station software waits 600 s for a reply; an idle keep-alive connection is closed sooner.
CHANNEL_TIMEOUT = 120
_SPARE_FILES = 64  # for the queue, the log, the station list and sqlite beside the sockets
# How often a running receiver settles what other receiver processes that died left behind
# (their claims and tmp/ files); its own start-up does it at once.
RECOVER_EVERY_SECONDS = 300.0
# At the connection limit under a churn, closing connections is summarised this often.
EVICTION_LOG_SECONDS = 10.0


class _ProtocolErrorTask(ErrorTask):
    """Answers an oversized body the protocol's way (HTTP 200, body ``400``) instead of HTTP 413.

    waitress refuses such a request from its Content-Length header alone (or,
    when chunked, as soon as the limit is passed), before the body is read.
    """

    def execute(self) -> None:
        if not isinstance(self.request.error, RequestEntityTooLarge):
            return super().execute()
        # server.application may be waitress's proxy-header wrapper, so not the app itself.
        app = getattr(self.channel.server, "receiver_app", None)
        if isinstance(app, ReceiverApp):
            app.metrics.record(RC_INVALID_POST, 0, 0.0)
        if not isinstance(app, ReceiverApp) or app.refusals.log_in_full(self.channel.addr[0]):
            log.warning("station ? from %s: %s, body refused unread (%s)", self.channel.addr[0],
                        RC_INVALID_POST, self.request.error.body)
        body = RC_INVALID_POST.encode()
        self.status = "200 OK"
        self.response_headers.append(("Content-Type", "text/plain"))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class _ReceiverChannel(HTTPChannel):
    error_task_class = _ProtocolErrorTask
    request_started: float | None = None  # when the first byte of the request being read arrived
    last_received = 0.0  # when the latest bytes arrived (0: none yet)
    bytes_received = 0

    def received(self, data: bytes) -> bool:
        if data:
            now = time.time()
            if self.request is None:
                self.request_started = now
            self.last_received = now
            self.bytes_received += len(data)
        return super().received(data)

    def silent_since(self) -> float | None:
        """Since when this connection has sent nothing, or None while a request of it is being
        served (its worker thread owns it then)."""
        if self.requests:
            return None
        return max(self.last_received, self.creation_time)

    def stalled_since(self) -> float | None:
        """When this connection began to hold a slot without a request to serve, or None
        while a request of it is being served (its worker thread owns it then)."""
        if self.requests:
            return None
        if self.request is not None and self.request_started is not None:
            return self.request_started
        return self.last_activity


class _ReceiverServer(TcpWSGIServer):
    """waitress's server, with two defences against connections that hold a slot without
    sending a request: a deadline for a whole request, and room made at the limit.

    waitress closes a connection only after ``channel_timeout`` seconds without a byte, so
    a client that trickles a header byte a second keeps its slot for ever, and with
    ``connection_limit`` such clients no station is accepted at all. Here a request must be
    complete ``request_timeout`` seconds after its first byte, and when the connections
    reach the limit the one that has sent nothing for longest (of those without a request in
    service; the fewest bytes among equals) is closed to let the new one in. Not the oldest:
    under a churn of new connections that is the station still sending a slow body, while
    the connections that only hold a slot are the ones silent longest.
    """

    channel_class = _ReceiverChannel
    request_timeout = 60.0
    evicted = 0  # connections closed to make room
    _evicted_logged = 0
    _evictions_logged = 0.0

    def maintenance(self, now: float) -> None:
        super().maintenance(now)  # idle keep-alive connections: channel_timeout
        cutoff = now - self.request_timeout
        for channel in list(self.active_channels.values()):
            started = channel.stalled_since()
            if started is not None and channel.request is not None and started < cutoff:
                log.warning("closing the connection from %s: no whole request after %.0f s",
                            channel.addr[0], now - started)
                channel.will_close = True

    def readable(self) -> bool:
        if self.accepting and len(self._map) >= self.adj.connection_limit:
            self._make_room()
        return super().readable()

    def _make_room(self) -> None:
        silent = []
        for channel in list(self.active_channels.values()):
            since = None if channel.will_close else channel.silent_since()
            if since is not None:
                silent.append((since, channel.bytes_received, id(channel), channel))
        if not silent:
            return  # every connection has a request in service: they will finish
        since, received, _, channel = min(silent)
        # One line per closed connection would be a log line per attacker connection.
        self.evicted += 1
        now = time.time()
        if now - self._evictions_logged >= EVICTION_LOG_SECONDS:
            log.warning("connection limit reached: closed %d connection(s) in %.0f s, each the one "
                        "silent longest; the latest from %s, silent %.1f s after %d bytes",
                        self.evicted - self._evicted_logged, now - self._evictions_logged
                        if self._evictions_logged else 0.0, channel.addr[0], now - since, received)
            self._evictions_logged, self._evicted_logged = now, self.evicted
        # waitress closes it in this round of its loop (a closing connection polls writable)
        channel.will_close = True


def make_server(app: ReceiverApp, host: str = "127.0.0.1", port: int = 0,
                threads: int = DEFAULT_THREADS, **adjustments: Any) -> _ReceiverServer:
    """A waitress server for ``app`` (not yet running); ``port=0`` picks a free port."""
    settings = app.settings
    options = {
        "host": host, "port": port, "threads": threads, "ident": "hisparc-datastore",
        # One byte over the limit is refused before the body is read (see _ProtocolErrorTask).
        "max_request_body_size": settings.max_body_bytes + 1,
        "channel_timeout": CHANNEL_TIMEOUT,
        "connection_limit": connection_limit(settings.max_connections),
        "cleanup_interval": 1,  # look for requests past their deadline every second
        # waitress would drop X-Forwarded-For (it trusts one proxy address at most); the app
        # reads it only from the peers in [Receiver] trusted_proxies (app.client_address).
        "clear_untrusted_proxy_headers": not app.trusted_proxies,
        **adjustments,
    }
    adj = Adjustments(**options)
    dispatcher = ThreadedTaskDispatcher()
    dispatcher.set_thread_count(adj.threads)
    # One listening address, as parse_bind gives: waitress's create_server would build the
    # same TcpWSGIServer, only not ours.
    server = _ReceiverServer(app, map={}, dispatcher=dispatcher, adj=adj, sockinfo=adj.listen[0])
    server.request_timeout = settings.request_timeout
    server.receiver_app = app
    return server


def connection_limit(wanted: int) -> int:
    """``wanted``, or fewer when the process may not open that many files (sockets are files)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted + _SPARE_FILES and soft < hard:
        target = hard if hard == resource.RLIM_INFINITY else min(hard, wanted + _SPARE_FILES)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    if soft == resource.RLIM_INFINITY:
        return wanted
    if soft - _SPARE_FILES < wanted:
        log.warning("at most %d open files: accepting %d connections, not max_connections %d",
                    soft, max(soft - _SPARE_FILES, 2), wanted)
    return max(min(wanted, soft - _SPARE_FILES), 2)


def run_until(server: Any, stop: threading.Event, drain_seconds: float = DRAIN_SECONDS,
              between: Callable[[], None] | None = None) -> None:
    """Serve until ``stop`` is set, then finish the requests in progress and close everything.

    waitress's own ``run()`` can only be left by an exception in its loop;
    this loop checks an event instead, so a signal handler or a test can stop
    it at a well-defined point.
    """
    try:
        while not stop.is_set():
            server.asyncore.loop(timeout=1.0, map=server._map, use_poll=True, count=1)
            if between is not None:
                between()
    finally:
        _shut_down(server, drain_seconds)


def _shut_down(server: Any, drain_seconds: float) -> None:
    # Stop accepting: close only the listening socket (server.close() would also close the
    # trigger, which the worker threads need to hand their replies to this loop).
    server.asyncore.dispatcher.close(server)
    app = getattr(server, "receiver_app", None)
    if isinstance(app, ReceiverApp):
        app.guard.close()  # requests waiting their turn are answered now, not in minutes
    dispatcher = server.task_dispatcher
    deadline = time.monotonic() + drain_seconds
    while time.monotonic() < deadline:
        busy = dispatcher.active_count or dispatcher.queue or any(
            getattr(channel, "total_outbufs_len", 0) for channel in list(server._map.values()))
        if not busy:
            break
        server.asyncore.loop(timeout=0.05, map=server._map, use_poll=True, count=1)
    else:
        log.warning("stopping with requests still in progress after %.0f s", drain_seconds)
    dispatcher.shutdown(cancel_pending=True, timeout=1)
    server.trigger.close()
    server.asyncore.close_all(server._map)


def _wake(server: Any) -> None:
    # Wake the loop now rather than at its next time-out; once it has shut down there is
    # nothing to wake (and the trigger is closed).
    with contextlib.suppress(OSError):
        server.pull_trigger()


def _recover_now_and_then(app: ReceiverApp, stop: threading.Event,
                          interval: float = RECOVER_EVERY_SECONDS) -> None:
    # Another receiver process on the same data_dir may die while this one runs on.
    while not stop.wait(interval):
        try:
            app.recover()
        except Exception:  # a failed sweep is retried; serving goes on
            log.exception("cannot settle what receivers that died left behind")


def _save_activity_now_and_then(app: ReceiverApp, stop: threading.Event) -> None:
    # A station's last upload reaches the file for `datastore status` within FLUSH_S.
    while not stop.wait(FLUSH_S):
        app.activity.flush()


class ServerThread:
    """A receiver served from a background thread: for tests and benchmarks."""

    def __init__(self, app: ReceiverApp, host: str = "127.0.0.1", port: int = 0,
                 threads: int = 4, **adjustments: Any) -> None:
        self.app = app
        self.server = make_server(app, host, port, threads, **adjustments)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=run_until, args=(self.server, self._stop),
                                        name="receiver", daemon=True)

    @property
    def port(self) -> int:
        return self.server.effective_port

    @property
    def url(self) -> str:
        return f"http://{self.server.effective_host}:{self.server.effective_port}/"

    def start(self) -> ServerThread:
        self._thread.start()
        return self

    def stop(self) -> None:
        if not self._stop.is_set():
            self._stop.set()
            _wake(self.server)
        self._thread.join(DRAIN_SECONDS + 5)
        self.app.activity.flush()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(config_path: str | os.PathLike, bind: str | None = None,
          threads: int = DEFAULT_THREADS, also_stderr: bool = True) -> int:
    """Receive uploads until SIGTERM or SIGINT; returns the exit status (0). SIGHUP reopens
    the log (after logrotate) and re-reads the station list."""
    settings = load_settings(config_path)
    bind = bind or settings.receiver_bind  # the flag overrides the setting
    host, port = parse_bind(bind)
    require_data_dir(settings)
    configure_logging(settings, also_stderr=also_stderr)
    # A receiver that cannot queue would answer every upload 205 for ever: refuse to start.
    Queue(settings.data_dir, fsync=False)  # the folders a new data_dir lacks
    problem = receiver_cannot_write(settings)
    if problem:
        raise ConfigError(setting_problem(settings.source, "General", "data_dir", settings.data_dir, problem))
    try:
        app = build_app(settings)
    except FileNotFoundError as exc:
        raise ConfigError(setting_problem(settings.source, "General", "station_list", settings.station_list,
                                          exc.strerror or "cannot be read")) from None
    except OSError as exc:
        raise ConfigError(setting_problem(settings.source, "General", "data_dir", settings.data_dir,
                                          f"cannot use it: {exc}")) from None
    # Before listening: a station's retry then finds its upload settled, not in flight.
    app.recover()
    try:
        server = make_server(app, host, port, threads)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {bind}: {exc.strerror or exc}") from None

    stop = threading.Event()
    received: list[int] = []

    def on_signal(signum: int, frame: object) -> None:
        # Only set flags here: logging from a signal handler can interleave with the loop's.
        received.append(signum)
        if not stop.is_set():
            stop.set()
            _wake(server)

    hangups: list[int] = []

    def on_hangup(signum: int, frame: object) -> None:
        hangups.append(signum)  # acted on in the serving loop, between two of its turns
        _wake(server)

    def between() -> None:
        app.refusals.sweep()
        if hangups:
            hangups.clear()
            reopen_logs()
            log.info("SIGHUP: log reopened, station list re-read")
            app.stations.reload()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    previous[signal.SIGHUP] = _hangup.take_over(on_hangup)
    log.info("receiving uploads on http://%s:%s/ with %d threads; %d station(s); queue in %s",
             server.effective_host, server.effective_port, threads, len(app.stations), settings.data_dir)
    sweeper = threading.Thread(target=_recover_now_and_then, args=(app, stop), name="recover",
                               daemon=True)
    sweeper.start()
    threading.Thread(target=_save_activity_now_and_then, args=(app, stop), name="activity",
                     daemon=True).start()
    try:
        run_until(server, stop, between=between)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    app.activity.flush()
    log.info("receiver stopped (%s)", ", ".join(signal.Signals(n).name for n in received) or "no signal")
    return 0
