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
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from hisparc_datastore.ops.health import CONTENT_TYPE as HEALTH_CONTENT_TYPE
from hisparc_datastore.ops.health import HEALTH_PATH, health_body
from hisparc_datastore.ops.http import CONTENT_TYPE, build_info, exposition, metric
from hisparc_datastore.queue.folders import FOLDERS, folder_usage
from hisparc_datastore.queue.holding import beyond_the_bound
from hisparc_datastore.storage.verify import damaged_files_set_aside
from hisparc_datastore.writer.reasons import KINDS

log = logging.getLogger(__name__)

CLIENT_TIMEOUT = 10.0  # seconds a scrape may stay silent before its connection is closed


PREFIX = "datastore_writer"


def render(writer: Any, now: float | None = None) -> str:
    """The metrics of ``writer`` (a running :class:`~hisparc_datastore.writer.service.Writer`).

    Named by Prometheus' guide (``datastore_writer_`` before every name, ``_total`` counters,
    ``_timestamp_seconds`` moments); the counters with a fixed set of labels (every installed
    event type, every kind of quarantine reason) exist from the start at 0.
    """
    now = time.time() if now is None else now
    tally, state, settings = writer.tally, writer.state, writer.settings
    for _ in range(3):
        try:  # the writer thread may add a code meanwhile
            stored, reasons = dict(tally.stored), dict(tally.quarantined_events)
            stations = {number: dict(entry) for number, entry in state.stations.items()}
            break
        except RuntimeError:
            continue
    types = dict.fromkeys(sorted(event_type.upload_code for event_type in writer.registry), 0)
    usage = {name: folder_usage(settings.data_dir / name) for name in FOLDERS}
    oldest = usage["incoming"].oldest_mtime
    try:
        disk = shutil.disk_usage(settings.data_dir)
    except OSError:
        disk = None
    metrics = [
        *build_info(PREFIX, writer.started),
        metric(f"{PREFIX}_events_stored_total", "counter",
               "Events stored into day files, by upload code.", by=("type", {**types, **stored})),
        metric(f"{PREFIX}_uploads_stored_total", "counter",
               "Uploads stored (their storable events) and released.", tally.uploads),
        metric(f"{PREFIX}_batches_total", "counter", "Batches stored.", state.batches),
        metric(f"{PREFIX}_quarantined_events_total", "counter",
               "Events kept in quarantine, by kind of reason "
               "(a fixed set: the station's own text is only in the reason files).",
               by=("reason", {**dict.fromkeys(KINDS, 0), **reasons})),
        metric(f"{PREFIX}_quarantined_files_total", "counter",
               "Queue files quarantined whole (unreadable).", tally.quarantined_files),
        metric(f"{PREFIX}_suspicious_files_total", "counter",
               "Queue files set aside whole in suspicious/ (over a bound per upload).",
               tally.suspicious_files),
        metric(f"{PREFIX}_storage_errors_total", "counter",
               "Failed attempts to store a batch (each retried).", tally.storage_errors),
        metric(f"{PREFIX}_queue_files", "gauge", "Queue files per folder.",
               by=("folder", {name: u.files for name, u in usage.items()})),
        metric(f"{PREFIX}_queue_bytes", "gauge", "Queue file bytes per folder.",
               by=("folder", {name: u.bytes for name, u in usage.items()})),
        metric(f"{PREFIX}_waiting_for_space", "gauge",
               "1 while the writer waits for disk space ([Writer] reserve_mb), else 0.",
               int(state.no_room is not None)),
        metric(f"{PREFIX}_disk_reserve_bytes", "gauge", "[Writer] reserve_mb in bytes.",
               settings.reserve_mb * 2**20),
        metric(f"{PREFIX}_receiver_disk_reserve_bytes", "gauge",
               "[Receiver] receiver_reserve_mb in bytes: below it uploads are answered 205.",
               settings.receiver_reserve_mb * 2**20),
        metric(f"{PREFIX}_damaged_day_files", "gauge",
               "Day files found damaged and set aside (rebuilt from the archive), waiting for an "
               "operator: see `datastore status`.", len(damaged_files_set_aside(settings.data_dir))),
    ]
    metrics += held_metrics(settings.data_dir)
    if disk is not None:
        metrics += [
            metric(f"{PREFIX}_disk_free_bytes", "gauge", "Free bytes on data_dir's file system.", disk.free),
            metric(f"{PREFIX}_disk_size_bytes", "gauge", "Size of data_dir's file system.", disk.total),
        ]
    if oldest is not None:  # absent when incoming/ is empty: nothing waits
        metrics.append(metric(f"{PREFIX}_oldest_incoming_timestamp_seconds", "gauge",
                              "Modification time of the oldest upload waiting in incoming/.",
                              f"{oldest:.3f}"))
    if state.last_batch is not None:
        metrics.append(metric(f"{PREFIX}_last_batch_timestamp_seconds", "gauge",
                              "When the last batch was stored.", f"{state.last_batch:.3f}"))
    metrics.append(metric(
        f"{PREFIX}_station_last_stored_timestamp_seconds", "gauge",
        "When events of the station were last stored.",
        samples=[({"station": number}, f"{entry['last_stored']:.3f}")
                 for number, entry in sorted(stations.items(), key=lambda item: int(item[0]))
                 if entry.get("last_stored") is not None]))
    return exposition(*metrics)


def held_metrics(data_dir: Path) -> list[list[str]]:
    """What quarantine/ and suspicious/ only counted, past the bound per station and kind."""
    beyond = {name: beyond_the_bound(data_dir / name) for name in ("quarantine", "suspicious")}
    return [metric(f"{PREFIX}_held_beyond_bound_uploads", "gauge",
                   "Uploads counted but not kept whole, past hold_files or hold_mb for their station "
                   "and kind (their first and latest are kept).",
                   by=("folder", {name: n["uploads"] for name, n in beyond.items()})),
            metric(f"{PREFIX}_held_beyond_bound_bytes", "gauge",
                   "Bytes of the uploads counted but not kept whole.",
                   by=("folder", {name: n["bytes"] for name, n in beyond.items()}))]


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
