"""The writer's Prometheus metrics, served at ``[Writer] metrics_bind`` (``HOST:PORT``).

Served over HTTP by the writer process rather than written to a node_exporter
text file, because the values that matter most in trouble are computed at
scrape time: queue depth and seconds since the last stored batch keep moving
while the writer is stuck retrying a batch on a full disk, when a file written
after each batch would stand still. A writer that is not running fails the
scrape (Prometheus's ``up`` is 0), which is the alert one wants; a text file
would keep its last values. The receiver's ``GET /metrics`` works the same way.

The server is a daemon thread that only reads: the writer's Tally (counters
updated between batches) and the queue folders.
"""

from __future__ import annotations

import http.server
import logging
import threading
import time
from typing import Any

from hisparc_datastore.ops.health import CONTENT_TYPE as HEALTH_CONTENT_TYPE
from hisparc_datastore.ops.health import HEALTH_PATH, health_body
from hisparc_datastore.ops.http import CONTENT_TYPE, exposition, metric
from hisparc_datastore.queue.folders import FOLDERS, folder_usage

log = logging.getLogger(__name__)

CLIENT_TIMEOUT = 10.0  # seconds a scrape may stay silent before its connection is closed


def render(writer: Any, now: float | None = None) -> str:
    """The metrics of ``writer`` (a running :class:`~hisparc_datastore.writer.service.Writer`)."""
    now = time.time() if now is None else now
    tally, state = writer.tally, writer.state
    for _ in range(3):
        try:  # the writer thread may add a code meanwhile
            stored, reasons = dict(tally.stored), dict(tally.quarantined_events)
            break
        except RuntimeError:
            continue
    usage = {name: folder_usage(writer.settings.data_dir / name) for name in FOLDERS}
    oldest = usage["incoming"].oldest_mtime
    age = 0.0 if oldest is None else max(0.0, now - oldest)
    metrics = [
        metric("datastore_writer_events_stored_total", "counter",
               "Events stored into day files, by upload code.", by=("type", dict(sorted(stored.items())))),
        metric("datastore_writer_uploads_total", "counter",
               "Uploads stored (their storable events) and released.", tally.uploads),
        metric("datastore_writer_batches_total", "counter", "Batches stored.", state.batches),
        metric("datastore_writer_quarantined_events_total", "counter",
               "Events kept in quarantine, by kind of reason "
               "(a fixed set: the station's own text is only in the reason files).",
               by=("reason", dict(sorted(reasons.items())))),
        metric("datastore_writer_quarantined_files_total", "counter",
               "Queue files quarantined whole (unreadable).", tally.quarantined_files),
        metric("datastore_writer_suspicious_files_total", "counter",
               "Queue files set aside whole in suspicious/ (over a bound per upload).",
               tally.suspicious_files),
        metric("datastore_writer_storage_errors_total", "counter",
               "Failed attempts to store a batch (each retried).", tally.storage_errors),
        metric("datastore_queue_files", "gauge", "Queue files per folder.",
               by=("folder", {name: u.files for name, u in usage.items()})),
        metric("datastore_queue_bytes", "gauge", "Queue file bytes per folder.",
               by=("folder", {name: u.bytes for name, u in usage.items()})),
        metric("datastore_oldest_incoming_age_seconds", "gauge",
               "Age of the oldest upload waiting in incoming/ (0 when none).", f"{age:.1f}"),
    ]
    if state.last_batch is not None:
        metrics.append(metric("datastore_writer_last_batch_age_seconds", "gauge",
                              "Seconds since the last batch was stored.", f"{now - state.last_batch:.1f}"))
    return exposition(*metrics)


class MetricsServer:
    """``GET /metrics`` for one writer, from a daemon thread."""

    def __init__(self, writer: Any, host: str, port: int) -> None:
        owner = writer

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                # Exactly /metrics: a proxy's `location = /metrics` then admits nothing else.
                path = self.path.split("?", 1)[0]
                if path == HEALTH_PATH:
                    body, content_type = health_body("writer"), HEALTH_CONTENT_TYPE
                elif path == "/metrics":
                    body, content_type = render(owner).encode(), CONTENT_TYPE
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # one line per scrape would drown the writer's log

        # A thread per connection, each with a time-out: one idle or slow client must not
        # hold up the scrapes (monitoring would report the writer down).
        Handler.timeout = CLIENT_TIMEOUT
        self.server = http.server.ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.5},
                                        name="writer-metrics", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/metrics"

    def __enter__(self) -> MetricsServer:
        self._thread.start()
        log.info("writer metrics on %s", self.url)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
