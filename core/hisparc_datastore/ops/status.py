"""``datastore status CONFIG [--json]``: is ingestion healthy, on one screen.

Everything is read from ``data_dir`` and the station list, so status works
the same whether the writer runs or not, and from another host sharing the
disk: the writer's lock (is it running, since when), the queue folders, the
writer's state file (``writerstate``), and the receiver's memory of accepted
uploads (``receiver.sqlite``, which holds station and time of each upload
within ``duplicate_window_hours``). Exit 0 when healthy, 1 when not, so a
monitoring system can run it as a check.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

from hisparc_datastore.config import Settings, load_settings
from hisparc_datastore.ops.check import data_dir_findings, station_list_findings
from hisparc_datastore.queue.folders import DATES_SUFFIX, DB_NAME, FOLDERS, folder_usage
from hisparc_datastore.queue.holding import beyond_the_bound
from hisparc_datastore.stations.stationlist import parse_station_list
from hisparc_datastore.storage.verify import damaged_files_set_aside
from hisparc_datastore.writer.lock import writer_holding
from hisparc_datastore.writer.state import events_in_window, read_state

QUIET_S = 3600.0  # a station with nothing for this long is marked quiet
_HOLDER = re.compile(r"pid (\d+) on (\S+) since (\S+)")


def tree_size(root: Path, uncounted: tuple[str, ...] = ()) -> tuple[int, int]:
    """Files and bytes under ``root``; files ending in ``uncounted`` add their bytes only."""
    files = size = 0
    for directory, _, names in os.walk(root):
        for name in names:
            try:
                size += os.stat(os.path.join(directory, name)).st_size
                files += not name.endswith(uncounted) if uncounted else 1
            except FileNotFoundError:
                continue
    return files, size


def last_received(data_dir: Path) -> dict[int, float]:
    """Per station, when the receiver last accepted an upload (within its duplicate window)."""
    path = data_dir / DB_NAME
    if not path.exists():
        return {}
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            rows = db.execute("SELECT station_id, MAX(accepted_at) FROM accepted GROUP BY station_id")
            return {int(station): float(at) for station, at in rows}
        finally:
            db.close()
    except sqlite3.Error:
        return {}


def collect(settings: Settings, now: float | None = None) -> dict[str, Any]:
    """The status of ``settings.data_dir`` as one JSON-ready dict."""
    now = time.time() if now is None else now
    data_dir = settings.data_dir
    holder = writer_holding(data_dir)
    writer: dict[str, Any] = {"running": holder is not None, "holder": holder}
    match = _HOLDER.match(holder or "")
    if match:
        writer.update(pid=int(match[1]), host=match[2], since=match[3])

    usage = {name: folder_usage(data_dir / name) for name in FOLDERS}
    oldest = usage["incoming"].oldest_mtime
    oldest_incoming_age_s = None if oldest is None else round(max(0.0, now - oldest), 1)

    state = read_state(data_dir)
    last_batch = state.get("last_batch")

    try:
        text = settings.station_list.read_text(encoding="utf-8-sig", errors="replace")
        listed = parse_station_list(text, str(settings.station_list))
    except OSError:
        listed = {}
    received = last_received(data_dir)
    stored = {int(k): v for k, v in state.get("stations", {}).items()}
    stations = []
    for number in sorted(set(listed) | set(received) | set(stored)):
        got = received.get(number)
        put = stored.get(number, {}).get("last_stored")
        latest = max((t for t in (got, put) if t is not None), default=None)
        stations.append({
            "number": number,
            "cluster": listed[number].cluster if number in listed else None,
            "listed": number in listed,
            "last_received": got,
            "last_stored": put,
            "quiet": latest is None or now - latest > QUIET_S,
        })

    disk = shutil.disk_usage(data_dir) if data_dir.exists() else None
    # Uploads: the dates kept beside each are part of it.
    archive_files, archive_bytes = tree_size(data_dir / "archive", (DATES_SUFFIX,))

    # What keeps the services from starting at all comes first (data_dir, the station list).
    problems = [f"{finding.what}: {finding.problem}" for finding in
                data_dir_findings(settings, writable=False) + station_list_findings(settings)
                if not finding.ok]
    if holder is None:
        problems.append(f"no writer is running on {data_dir}")
    if oldest_incoming_age_s is not None and oldest_incoming_age_s > settings.max_lag_s:
        problems.append(f"the oldest upload in incoming/ waits {oldest_incoming_age_s:.0f} s, "
                        f"more than [Writer] max_lag_s = {settings.max_lag_s:g}")
    held_day_files = state.get("held_day_files", []) if holder is not None else []
    for held in held_day_files:
        if held.get("reason"):
            problems.append(f"{held['path']} {held['reason']}: {held['uploads']} uploads wait for it")
    beyond = held_beyond(data_dir)
    problems += beyond_problems(beyond)
    no_room = state.get("no_room") if holder is not None else None
    if no_room:
        problems.append(f"the writer waits for disk space since {_when(no_room['since'], now)}: "
                        f"{_size(no_room['free'])} free, the next batch needs {_size(no_room['needed'])} "
                        f"with [Writer] reserve_mb = {no_room['reserve_mb']}")
    damaged = [str(path) for path in damaged_files_set_aside(data_dir)]
    for path in damaged:
        problems.append(f"a damaged day file was set aside as {path} (its reason beside it or in "
                        "quarantine/): read what it holds with `datastore verify`, then remove it")
    return {
        "healthy": not problems,
        "problems": problems,
        "data_dir": str(data_dir),
        "now": now,
        "writer_running": holder is not None,
        "writer": writer,
        "queue": {name: u.files for name, u in usage.items()},
        "queue_bytes": {name: u.bytes for name, u in usage.items()},
        "oldest_incoming_age_s": oldest_incoming_age_s,
        "max_lag_s": settings.max_lag_s,
        "last_batch_at": last_batch,
        "last_batch_age_s": None if last_batch is None else round(now - last_batch, 1),
        "events_last_hour": events_in_window(state, now),
        "stations": stations,
        "quiet_stations": [s["number"] for s in stations if s["quiet"] and s["listed"]],
        "disk_free_bytes": disk.free if disk else None,
        "disk_total_bytes": disk.total if disk else None,
        "archive_files": archive_files,
        "archive_bytes": archive_bytes,
        # As the writer last saw them: a reader may have let go since, which the next batch records.
        "held_day_files": held_day_files,
        "no_room": no_room,
        "damaged_day_files": damaged,
        "beyond_bound": beyond,
    }


def held_beyond(data_dir: Path) -> dict[str, dict[str, int]]:
    """Per folder, the uploads quarantine/ and suspicious/ only counted, past the bound of
    their station and kind (queue/holding.py)."""
    return {name: beyond_the_bound(data_dir / name) for name in ("quarantine", "suspicious")}


def beyond_problems(beyond: dict[str, dict[str, int]]) -> list[str]:
    return [f"{name}/: {n['uploads']} upload(s) ({_size(n['bytes'])}) beyond [General] hold_files or "
            f"hold_mb for {n['entries']} station and kind(s), counted in {name}/overflow-*.reason "
            "with only the first and latest kept" for name, n in beyond.items() if n["uploads"]]


def _when(moment: float | None, now: float) -> str:
    if moment is None:
        return "never"
    stamp = datetime.datetime.fromtimestamp(moment, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    return f"{stamp} UTC ({_age(now - moment)} ago)"


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172800:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} d"


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return ""


def render(status: dict[str, Any]) -> str:
    """The operator's screen."""
    now = status["now"]
    lines = [f"data_dir {status['data_dir']}: {'HEALTHY' if status['healthy'] else 'UNHEALTHY'}"]
    lines += [f"  ! {problem}" for problem in status["problems"]]
    writer = status["writer"]
    if writer["running"]:
        lines.append(f"writer     running: {writer['holder']}")
    else:
        lines.append("writer     NOT RUNNING")
    lines.append(f"last batch {_when(status['last_batch_at'], now)}")
    recent = status["events_last_hour"]
    stored = ", ".join(f"{code} {n}" for code, n in recent.items())
    lines.append("last hour  " + (stored or "no events stored"))
    lines.append("queue      files    bytes")
    for name in FOLDERS:
        lines.append(f"  {name:<11}{status['queue'][name]:>6} {_size(status['queue_bytes'][name]):>9}")
    lines += [f"  beyond the bound: {name} {n['uploads']} upload(s), {_size(n['bytes'])}, only counted"
              for name, n in status["beyond_bound"].items() if n["uploads"]]
    age = status["oldest_incoming_age_s"]
    lines.append("oldest waiting upload: " + ("none" if age is None else f"{_age(age)} "
                                              f"(limit {status['max_lag_s']:g} s)"))
    for held in status["held_day_files"]:
        holders = ", ".join(f"pid {pid}" for pid in held["holders"]) or "another process"
        why = held.get("reason") or f"by {holders}"
        lines.append(f"held       {held['path']} {why} for {_age(now - held['since'])}: "
                     f"{held['uploads']} uploads wait in partial/")
    lines.append(f"disk free  {_size(status['disk_free_bytes'])} of {_size(status['disk_total_bytes'])}; "
                 f"archive {status['archive_files']} files, {_size(status['archive_bytes'])}")
    quiet = len(status["quiet_stations"])
    lines.append(f"stations   {len(status['stations'])} known, {quiet} quiet (nothing for an hour)")
    lines.append(f"  {'station':>7}  {'cluster':<12} {'last received':<34} last stored")
    for s in status["stations"]:
        mark = "  QUIET" if s["quiet"] else ""
        unlisted = "" if s["listed"] else "  (not in the station list)"
        lines.append(f"  {s['number']:>7}  {s['cluster'] or '-':<12} {_when(s['last_received'], now):<34} "
                     f"{_when(s['last_stored'], now)}{mark}{unlisted}")
    return "\n".join(lines)


def status_command(config: str | os.PathLike, as_json: bool = False) -> int:
    status = collect(load_settings(config))
    if as_json:
        json.dump(status, sys.stdout, indent=1, sort_keys=True)
        print()
    else:
        print(render(status))
    return 0 if status["healthy"] else 1
