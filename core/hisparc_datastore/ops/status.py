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
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hisparc_datastore.config import Settings, load_settings
from hisparc_datastore.ops.check import data_dir_findings, station_list_findings
from hisparc_datastore.ops.disk import disk_report
from hisparc_datastore.ops.health import probe
from hisparc_datastore.queue.folders import DATES_SUFFIX, DB_NAME, FOLDERS, folder_usage
from hisparc_datastore.queue.holding import beyond_the_bound
from hisparc_datastore.receiver.activity import read_activity
from hisparc_datastore.stations.stationlist import parse_station_list
from hisparc_datastore.storage.verify import damaged_files_set_aside
from hisparc_datastore.writer.lock import writer_holding
from hisparc_datastore.writer.state import events_in_window, read_state

DISK_WARN_DAYS = 14  # a disk full sooner than this is a warning (Nagios WARNING)
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


class Report:
    """What ``collect`` gathers: the fields of the JSON document, and the problems (unhealthy:
    exit 1, Nagios CRITICAL) and warnings (Nagios WARNING) found on the way. Each part of the
    status adds to it (:data:`PARTS`): one function per thing looked at."""

    def __init__(self, settings: Settings, now: float) -> None:
        self.settings, self.now = settings, now
        self.fields: dict[str, Any] = {}
        self.problems: list[str] = []
        self.warnings: list[str] = []


def _paths(report: Report) -> None:
    # What keeps the services from starting at all comes first (data_dir, the station list).
    report.problems += [f"{finding.what}: {finding.problem}" for finding in
                        data_dir_findings(report.settings, writable=False)
                        + station_list_findings(report.settings) if not finding.ok]


def _writer(report: Report) -> None:
    data_dir = report.settings.data_dir
    holder = writer_holding(data_dir)
    writer: dict[str, Any] = {"running": holder is not None, "holder": holder}
    match = _HOLDER.match(holder or "")
    if match:
        writer.update(pid=int(match[1]), host=match[2], since=match[3])
    state = read_state(data_dir)
    last_batch = state.get("last_batch")
    report.fields.update(
        writer_running=holder is not None, writer=writer, last_batch_at=last_batch,
        last_batch_age_s=None if last_batch is None else round(report.now - last_batch, 1),
        events_last_hour=events_in_window(state, report.now))
    if holder is None:
        report.problems.append(f"no writer is running on {data_dir}")
    # As the writer last saw them: a reader may have let go since, which the next batch records.
    held_day_files = state.get("held_day_files", []) if holder is not None else []
    for held in held_day_files:
        if held.get("reason"):
            report.problems.append(f"{held['path']} {held['reason']}: {held['uploads']} uploads wait for it")
    no_room = state.get("no_room") if holder is not None else None
    if no_room:
        report.problems.append(
            f"the writer waits for disk space since {_when(no_room['since'], report.now)}: "
            f"{_size(no_room['free'])} free, the next batch needs {_size(no_room['needed'])} "
            f"with [Writer] reserve_mb = {no_room['reserve_mb']}")
    report.fields.update(held_day_files=held_day_files, no_room=no_room)


def _queue(report: Report) -> None:
    settings, data_dir = report.settings, report.settings.data_dir
    usage = {name: folder_usage(data_dir / name) for name in FOLDERS}
    oldest = usage["incoming"].oldest_mtime
    age = None if oldest is None else round(max(0.0, report.now - oldest), 1)
    # Uploads: the dates kept beside each are part of it.
    archive_files, archive_bytes = tree_size(data_dir / "archive", (DATES_SUFFIX,))
    report.fields.update(
        queue={name: u.files for name, u in usage.items()},
        queue_bytes={name: u.bytes for name, u in usage.items()},
        oldest_incoming_age_s=age, max_lag_s=settings.max_lag_s,
        archive_files=archive_files, archive_bytes=archive_bytes)
    if age is not None and age > settings.max_lag_s:
        report.problems.append(f"the oldest upload in incoming/ waits {age:.0f} s, "
                               f"more than [Writer] max_lag_s = {settings.max_lag_s:g}")


def _stations(report: Report) -> None:
    """Per listed station (and any the writer or the receiver still remembers): what it last
    sent, what was refused, what was stored; the silent ones first, longest silent first."""
    settings, now = report.settings, report.now
    try:
        text = settings.station_list.read_text(encoding="utf-8-sig", errors="replace")
        listed = parse_station_list(text, str(settings.station_list))
    except OSError:
        listed = {}
    activity = read_activity(settings.data_dir)
    accepted = last_received(settings.data_dir)  # from before the receiver kept its records
    stored = {int(k): v for k, v in read_state(settings.data_dir).get("stations", {}).items()}
    names = _event_tables()
    today = time.strftime("%Y-%m-%d", time.gmtime(now))
    stations = []
    for number in set(listed) | set(activity) | set(stored):
        seen, kept = activity.get(number, {}), stored.get(number, {})
        got = seen.get("last_upload") or accepted.get(number)
        put = kept.get("last_stored")
        latest = max((t for t in (got, put) if t is not None), default=None)
        refusal = seen.get("last_refusal")
        aside = max((t for t in (seen.get("last_set_aside"), kept.get("last_set_aside")) if t), default=None)
        counts = kept.get("today", {}).get("counts", {}) if kept.get("today", {}).get("date") == today else {}
        stations.append({
            "number": number,
            "cluster": listed[number].cluster if number in listed else None,
            "listed": number in listed,
            "last_received": got,
            "last_accepted": seen.get("last_accepted") or accepted.get(number),
            "last_refusal": refusal,
            "refusals": seen.get("refusals", {}),
            "refused_since_accepted": seen.get("refused_since_accepted", 0),
            "last_stored": put,
            "stored_today": {names.get(code, code): n for code, n in sorted(counts.items())},
            # what it sent lately went to suspicious/ or quarantine, not into the day files
            "set_aside": aside is not None and (put is None or aside > put),
            "silent_s": None if latest is None else round(now - latest, 1),
            "quiet": latest is None or now - latest > settings.quiet_after_s,
        })
    # silent longest first (never heard of: first of all), then by number
    stations.sort(key=lambda s: (-(s["silent_s"] if s["silent_s"] is not None else float("inf")),
                                 s["number"]))
    quiet = sorted(s["number"] for s in stations if s["quiet"] and s["listed"])
    aside = sorted(s["number"] for s in stations if s["set_aside"] and s["listed"])
    refused = sorted(s["number"] for s in stations if s["listed"] and s["refused_since_accepted"])
    report.fields.update(stations=stations, quiet_stations=quiet, quiet_after_s=settings.quiet_after_s,
                         set_aside_stations=aside, refused_stations=refused)
    if quiet:
        report.warnings.append(f"{len(quiet)} of {len(listed)} listed stations silent for more than "
                               f"[General] quiet_after_s = {settings.quiet_after_s:g}")
    if refused:
        codes = ", ".join(f"{s['number']} ({s['last_refusal']['code']})" for s in stations
                          if s["number"] in refused)
        report.warnings.append(f"stations refused since their last accepted upload: {codes}")
    if aside:
        report.warnings.append(f"stations {', '.join(map(str, aside))}: what they sent lately was set "
                               f"aside, not stored; see `datastore quarantine {settings.source}`")


def _event_tables() -> dict[str, str]:
    """Upload code -> table name of the installed plugins (codes stay codes without them)."""
    try:
        from hisparc_datastore.plugin.registry import load_registry

        return {event_type.upload_code: event_type.table_name for event_type in load_registry()}
    except Exception:  # noqa: BLE001 - a broken plugin must not hide the status
        return {}


def _held(report: Report) -> None:
    """What the receiver and writer hold aside for an operator: uploads beyond the bound of
    quarantine/ and suspicious/ (only counted), and damaged day files set aside."""
    data_dir = report.settings.data_dir
    beyond = held_beyond(data_dir)
    report.problems += beyond_problems(beyond)
    damaged = [str(path) for path in damaged_files_set_aside(data_dir)]
    for path in damaged:
        report.problems.append(f"a damaged day file was set aside as {path} (its reason beside it or in "
                               "quarantine/): read what it holds with `datastore verify`, then remove it")
    report.fields.update(damaged_day_files=damaged, beyond_bound=beyond)


def _services(report: Report) -> None:
    settings = report.settings
    wanted = [("receiver", settings.receiver_bind)]
    if settings.station_list_url:
        wanted.append(("config-server", settings.config_server_bind))
    if settings.metrics_bind:
        wanted.append(("writer", settings.metrics_bind))
    probes = [probe(service, bind) for service, bind in wanted]
    report.fields["services"] = {p.service: p.as_dict() for p in probes}
    report.problems += [f"{p.service} at {p.bind}: {p.problem}" for p in probes if not p.up]


def _disk(report: Report) -> None:
    disk = disk_report(report.settings, report.now)
    report.fields.update(disk=disk, disk_free_bytes=disk["free_bytes"], disk_total_bytes=disk["total_bytes"])
    free, settings = disk["free_bytes"], report.settings
    if free is None:
        return
    if free < disk["writer_reserve_bytes"]:
        report.problems.append(f"{_size(free)} free in {settings.data_dir}, below [Writer] reserve_mb = "
                               f"{settings.reserve_mb}: the writer stores nothing")
    elif free < disk["receiver_reserve_bytes"]:
        report.problems.append(f"{_size(free)} free in {settings.data_dir}, below [Receiver] "
                               f"receiver_reserve_mb = {settings.receiver_reserve_mb}: uploads are "
                               "answered 205")
    elif disk["days_until_full"] is not None and disk["days_until_full"] < DISK_WARN_DAYS:
        report.warnings.append(f"the disk is full in {disk['days_until_full']:g} days at "
                               f"{_size(disk['growth_bytes_per_day'])} a day")


# The parts of the status, in the order their problems are listed.
PARTS: tuple[Callable[[Report], None], ...] = (_paths, _writer, _queue, _held, _services, _disk, _stations)


def collect(settings: Settings, now: float | None = None) -> dict[str, Any]:
    """The status of ``settings.data_dir`` as one JSON-ready dict."""
    report = Report(settings, time.time() if now is None else now)
    for part in PARTS:
        part(report)
    return {"healthy": not report.problems, "problems": report.problems, "warnings": report.warnings,
            "data_dir": str(settings.data_dir), "now": report.now, **report.fields}


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
    lines += [f"  ? {warning}" for warning in status["warnings"]]
    for service in status["services"].values():
        state = "up" if service["up"] else f"DOWN: {service['problem']}"
        lines.append(f"{service['service']:<14} {service['address']}: {state}")
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
    disk = status["disk"]
    lasts = ("unknown (no recent day files)" if disk["growth_bytes_per_day"] is None else
             f"{_size(disk['growth_bytes_per_day'])} a day, full in "
             + ("?" if disk["days_until_full"] is None else f"{disk['days_until_full']:g} days"))
    lines.append(f"disk free  {_size(disk['free_bytes'])} of {_size(disk['total_bytes'])}; reserves "
                 f"{disk['writer_reserve_bytes'] >> 20} MB writer, {disk['receiver_reserve_bytes'] >> 20} MB "
                 f"receiver; growth {lasts}")
    lines.append(f"archive    {status['archive_files']} files, {_size(status['archive_bytes'])}")
    quiet = len(status["quiet_stations"])
    lines.append(f"stations   {len(status['stations'])} known, {quiet} quiet (nothing for "
                 f"{_age(status['quiet_after_s'])}), silent longest first")
    lines.append(f"  {'station':>7}  {'cluster':<12} {'last received':<34} {'last stored':<34} "
                 "stored today; refusals")
    for s in status["stations"]:
        notes = []
        refusal = s["last_refusal"]
        if refusal and s["refused_since_accepted"]:
            notes.append(f"REFUSED {refusal['code']} {s['refused_since_accepted']}x since last accepted, "
                         f"last {_age(now - refusal['at'])} ago: {refusal['detail'][:80]}")
        if s["set_aside"]:
            notes.append("SET ASIDE: see `datastore quarantine`")
        if s["quiet"]:
            notes.append("QUIET")
        if not s["listed"]:
            notes.append("(not in the station list)")
        today = ", ".join(f"{table} {n}" for table, n in s["stored_today"].items()) or "-"
        lines.append(f"  {s['number']:>7}  {s['cluster'] or '-':<12} {_when(s['last_received'], now):<34} "
                     f"{_when(s['last_stored'], now):<34} {today}" + "".join(f"; {n}" for n in notes))
    return "\n".join(lines)


NAGIOS_OK, NAGIOS_WARNING, NAGIOS_CRITICAL, NAGIOS_UNKNOWN = 0, 1, 2, 3


def nagios(status: dict[str, Any]) -> tuple[str, int]:
    """One line for a Nagios check (``SERVICE STATE - text | perfdata``) and its exit code:
    CRITICAL with any problem, WARNING with only warnings, else OK."""
    if status["problems"]:
        state, code = "CRITICAL", NAGIOS_CRITICAL
    elif status["warnings"]:
        state, code = "WARNING", NAGIOS_WARNING
    else:
        state, code = "OK", NAGIOS_OK
    listed = sum(s["listed"] for s in status["stations"])
    text = "; ".join(status["problems"] + status["warnings"]) or (
        f"{listed} stations, {len(status['quiet_stations'])} silent, "
        f"{status['queue']['incoming']} uploads waiting, {_size(status['disk']['free_bytes'])} free")
    disk, age = status["disk"], status["oldest_incoming_age_s"]
    perf = [
        f"stations={listed};;;0", f"silent_stations={len(status['quiet_stations'])};;;0",
        f"incoming={status['queue']['incoming']};;;0", f"quarantine={status['queue']['quarantine']};;;0",
        f"oldest_incoming={age or 0:g}s;;{status['max_lag_s']:g};0",
        f"services_down={sum(not s['up'] for s in status['services'].values())};;1;0",
    ]
    if disk["free_bytes"] is not None:
        perf.append(f"disk_free={disk['free_bytes']}B;;{disk['receiver_reserve_bytes']};0;"
                    f"{disk['total_bytes']}")
    if disk["days_until_full"] is not None:
        perf.append(f"days_until_full={disk['days_until_full']:g};{DISK_WARN_DAYS};;0")
    # '|' starts the perfdata: one in the text would cut it short
    return f"DATASTORE {state} - {text.replace('|', '/')} | {' '.join(perf)}", code


def status_command(config: str | os.PathLike, as_json: bool = False, as_nagios: bool = False) -> int:
    if as_nagios:
        try:
            line, code = nagios(collect(load_settings(config)))
        except Exception as exc:  # noqa: BLE001 - Nagios expects UNKNOWN, not a traceback
            print(f"DATASTORE UNKNOWN - {type(exc).__name__}: {exc}".splitlines()[0])
            return NAGIOS_UNKNOWN
        print(line)
        return code
    status = collect(load_settings(config))
    if as_json:
        json.dump(status, sys.stdout, indent=1, sort_keys=True)
        print()
    else:
        print(render(status))
    return 0 if status["healthy"] else 1
