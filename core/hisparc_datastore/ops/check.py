"""``datastore check CONFIG`` and ``datastore init CONFIG``: is this host ready to run the
services on this configuration, and the one command that creates a new ``data_dir``.

The services never create ``data_dir`` themselves: a mistyped or unmounted one would take the
uploads into a fresh tree nobody looks at. ``init`` creates it and its queue folders on
purpose, then runs the checks that need no running service. ``check`` runs every check as the
user who runs it (run it as the services' user): the paths exist and that user may write
them, the station list parses, the ports are free or held by our own services, and a plugin
is installed. ``datastore status`` reports the same problems of paths and the station list
(though not of permissions, since a monitoring user often may not write ``data_dir``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import pwd
import shutil
import socket
import stat
from pathlib import Path

import attrs

from hisparc_datastore.config import ConfigError, Settings, load_settings, setting_problem, split_host_port
from hisparc_datastore.ops.health import PROBE_TIMEOUT, probe
from hisparc_datastore.util.brief import printable

# Files in data_dir the services rewrite in place, as far as they exist.
_DATA_FILES = ("writer.lock", "writer-state.json", "receiver.sqlite", "receiver.sqlite-wal",
               "receiver.sqlite-shm")
# Folders the receiver writes into; without them it can only answer 205.
RECEIVER_FOLDERS = ("tmp", "incoming", "suspicious", "quarantine")


@attrs.frozen
class Finding:
    """One check's outcome: ``problem`` None when it passed."""

    what: str
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None

    def line(self) -> str:
        return f"ok    {self.what}" if self.ok else f"FAIL  {self.what}: {self.problem}"


def user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"


def _writable(path: Path, what: str) -> Finding:
    """Whether this user may create and rename files in the folder ``path`` (or rewrite the
    file ``path``)."""
    if path.is_dir():
        wanted, kind = os.W_OK | os.X_OK, "create files in"
    else:
        wanted, kind = os.R_OK | os.W_OK, "write"
    if os.access(path, wanted):
        return Finding(what)
    return Finding(what, f"user {user()} may not {kind} {path}")


def data_dir_findings(settings: Settings, writable: bool = True) -> list[Finding]:
    """``data_dir`` is a folder and, with ``writable``, this user may write it, its queue folders
    and the files the services keep in it."""
    data_dir = settings.data_dir
    what = f"[General] data_dir {data_dir}"
    if not data_dir.is_dir():
        state = "is not a folder" if data_dir.exists() else "does not exist"
        return [Finding(what, f"{state}; `datastore init {settings.source}` creates a new one")]
    if not writable:
        return [Finding(what)]
    from hisparc_datastore.queue import QUEUE_DIRS

    findings = [_writable(data_dir, what)]
    devices = queue_device_problem(settings)
    if devices:
        findings.append(Finding("queue folders", devices))
    for name in QUEUE_DIRS:
        if (data_dir / name).exists():
            findings.append(_writable(data_dir / name, f"{name}/"))
    for name in _DATA_FILES:
        if (data_dir / name).exists():
            findings.append(_writable(data_dir / name, name))
    return findings


def queue_device_problem(settings: Settings) -> str | None:
    """Why the services could not move uploads between the queue folders, or None: they
    rename (tmp/ to incoming/, incoming/ to partial/, ...) and link (partial/ to
    archive/uploads/), which work only within one file system. A folder mounted elsewhere
    made every upload a 205, or left the writer retrying a cross-device link for ever."""
    from hisparc_datastore.queue.folders import QUEUE_DIRS, UPLOADS

    data_dir = settings.data_dir
    try:
        home = data_dir.stat().st_dev
    except OSError:
        return None  # data_dir_findings says why
    elsewhere = []
    for folder in [*(data_dir / name for name in QUEUE_DIRS), data_dir / "archive" / UPLOADS]:
        try:
            if folder.stat().st_dev != home:
                elsewhere.append(f"{folder.relative_to(data_dir)}/")
        except OSError:
            continue  # not made yet: it will be made in data_dir
    if not elsewhere:
        return None
    return (f"{', '.join(elsewhere)} on another file system than {data_dir}: uploads are moved "
            "between the queue folders by rename and link, which cannot cross file systems "
            "(mount the disk at data_dir instead)")


def risky_permission_findings(settings: Settings) -> list[Finding]:
    """What others than the services could use: a queue folder or ``config.ini`` any user
    may write, a station list any user may read (the passwords; it should be 0640), and a
    queue folder or the log file that is a symbolic link (appended to, its target is)."""
    from hisparc_datastore.queue.folders import QUEUE_DIRS

    findings = []
    folders = [settings.data_dir, *(settings.data_dir / name for name in QUEUE_DIRS)]
    for folder in folders:
        if folder.is_symlink():
            findings.append(Finding(f"{folder}", "a symbolic link: what the services write there lands "
                                                 f"in {os.path.realpath(folder)}; make it a folder"))
        elif _mode(folder) is not None and _mode(folder) & 0o002:
            findings.append(Finding(f"{folder}", f"mode {_mode(folder):04o}: any user may put or remove "
                                                 "uploads; chmod o-w (0775 at most)"))
    if _mode(settings.source) is not None and _mode(settings.source) & 0o002:
        findings.append(Finding(f"configuration {settings.source}",
                                f"mode {_mode(settings.source):04o}: any user may change it; chmod o-w"))
    listed = _mode(settings.station_list)
    if listed is not None and listed & 0o004:
        findings.append(Finding(f"[General] station_list {settings.station_list}",
                                f"mode {listed:04o}: any user may read the passwords; chmod 0640"))
    if settings.log is not None and settings.log.is_symlink():
        findings.append(Finding(f"[General] log {settings.log}",
                                f"a symbolic link: the services would append to "
                                f"{os.path.realpath(settings.log)}; name the file itself"))
    return findings


def _mode(path: Path) -> int | None:
    try:
        return stat.S_IMODE(path.lstat().st_mode)
    except OSError:
        return None


def station_list_findings(settings: Settings) -> list[Finding]:
    """The station list can be read and every line of it is a station."""
    from hisparc_datastore.stations.stationlist import StationListRefused, parse_station_list

    path = settings.station_list
    what = f"[General] station_list {path}"
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        return [Finding(what, exc.strerror or str(exc))]
    except UnicodeDecodeError as exc:
        return [Finding(what, f"not UTF-8 text ({exc.reason} at byte {exc.start})")]
    try:
        stations = parse_station_list(text, str(path), strict=True)
    except StationListRefused as exc:
        return [Finding(what, str(exc).removeprefix(f"{path} "))]
    return [Finding(f"{what}: {len(stations)} stations")]


def disk_findings(settings: Settings) -> list[Finding]:
    """Free space in ``data_dir`` above both reserves, the receiver's above the writer's: below
    the writer's the writer stores nothing, below the receiver's every upload is answered 205,
    and with the receiver's reserve not above the writer's the receiver may fill the disk with
    uploads the writer then has no room to store."""
    if not settings.data_dir.is_dir():
        return []  # data_dir_findings says so
    findings = []
    writer, receiver = settings.reserve_mb, settings.receiver_reserve_mb
    if receiver <= writer and receiver:
        findings.append(Finding(
            f"[Receiver] receiver_reserve_mb = {receiver}",
            f"not above [Writer] reserve_mb = {writer}: the receiver could fill the disk with "
            "uploads the writer has no room to store"))
    try:
        free = shutil.disk_usage(settings.data_dir).free
    except OSError as exc:
        return findings + [Finding(f"free space in {settings.data_dir}", exc.strerror or str(exc))]
    what = f"free space in {settings.data_dir}: {free / 2**20:.0f} MB"
    if free < writer * 2**20:
        findings.append(Finding(what, f"below [Writer] reserve_mb = {writer}: the writer would "
                                      "store nothing"))
    elif free < receiver * 2**20:
        findings.append(Finding(what, f"below [Receiver] receiver_reserve_mb = {receiver}: every "
                                      "upload would be answered 205"))
    else:
        findings.append(Finding(f"{what}, above both reserves ({writer} MB writer, {receiver} MB "
                                "receiver)"))
    return findings


def log_findings(settings: Settings) -> list[Finding]:
    if settings.log is None:
        return [Finding("[General] log: none, standard error")]
    what = f"[General] log {settings.log}"
    if settings.log.exists():
        return [_writable(settings.log, what)]
    if not settings.log.parent.is_dir():
        return [Finding(what, f"its folder {settings.log.parent} does not exist")]
    return [_writable(settings.log.parent, what)]


def port_finding(what: str, bind: str, ours: str) -> Finding:
    """``bind`` is free, or held by our own service ``ours`` (``receiver``, ``writer`` or
    ``config-server``), which answers as only ours would."""
    try:
        host, port = split_host_port(bind)
    except ValueError as exc:
        return Finding(f"{what} {bind}", str(exc))
    try:
        with socket.create_server((host, port), family=_family(host)):
            return Finding(f"{what} {bind}: free")
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            return Finding(f"{what} {bind}", f"cannot listen: {exc.strerror or exc}")
    if _answers_as(ours, host, port):
        return Finding(f"{what} {bind}: held by our {ours}")
    return Finding(f"{what} {bind}", f"in use by a program that is not our {ours}")


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _answers_as(service: str, host: str, port: int) -> bool:
    bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return probe(service, bind, PROBE_TIMEOUT).up


def station_list_url_findings(settings: Settings) -> list[Finding]:
    """``station_list_url`` answers with a list every line of which is a station (nothing is
    installed: that is ``fetch-stations``)."""
    from hisparc_datastore.stations.stationlist import StationListRefused
    from hisparc_datastore.stations.sync import check_station_list, fetch_station_list

    url = settings.station_list_url
    if not url:
        return []
    what = f"[General] station_list_url {url}"
    try:
        count = check_station_list(fetch_station_list(url, PROBE_TIMEOUT * 3), url)
    except StationListRefused as exc:
        return [Finding(what, str(exc).removeprefix(f"{url}: "))]
    return [Finding(f"{what}: {count} stations")]


def run_checks(settings: Settings, serve_bind: str | None = None,
               config_server_bind: str | None = None) -> list[Finding]:
    """Every check; a bind None is the one the configuration names, empty skips that port."""
    from hisparc_datastore.plugin.registry import load_registry

    findings = [Finding(f"configuration {settings.source}")]
    findings += data_dir_findings(settings)
    findings += station_list_findings(settings)
    findings += disk_findings(settings)
    findings += risky_permission_findings(settings)
    if settings.station_list_url:
        folder = settings.station_list.parent
        findings.append(_writable(folder, f"config-server may replace the station list in {folder}"))
        findings += station_list_url_findings(settings)
    findings += log_findings(settings)
    registry = load_registry()
    findings.append(Finding(f"plugins: {len(registry)} event types") if len(registry)
                    else Finding("plugins", "none installed: the writer could store nothing"))
    serve_bind = settings.receiver_bind if serve_bind is None else serve_bind
    if config_server_bind is None and settings.station_list_url:
        config_server_bind = settings.config_server_bind
    if serve_bind:
        findings.append(port_finding("serve --bind", serve_bind, "receiver"))
    if settings.metrics_bind:
        findings.append(port_finding("[Writer] metrics_bind", settings.metrics_bind, "writer"))
    if config_server_bind:
        findings.append(port_finding("config-server --bind", config_server_bind, "config-server"))
    return findings


def check_command(config: str | os.PathLike, serve_bind: str | None, config_server_bind: str | None) -> int:
    """Print one line per check; 0 when all pass, 1 when any fails (2: the file itself is bad)."""
    settings = load_settings(config)
    findings = run_checks(settings, serve_bind, config_server_bind)
    for finding in findings:
        print(finding.line())
    failed = sum(not finding.ok for finding in findings)
    print(f"{failed} problem(s)" if failed else f"all {len(findings)} checks passed (as {user()})")
    return 1 if failed else 0


def init_command(config: str | os.PathLike) -> int:
    """Create ``data_dir`` and its queue folders, then check what the services will write."""
    from hisparc_datastore.queue import Queue

    settings = load_settings(config)
    data_dir = settings.data_dir
    if data_dir.exists() and not data_dir.is_dir():
        raise ConfigError(f"{settings.source} [General] data_dir: '{data_dir}': not a folder")
    problem = not_a_data_dir(data_dir)
    if problem:
        raise ConfigError(setting_problem(settings.source, "General", "data_dir", data_dir, problem))
    if not data_dir.exists():
        data_dir.mkdir(parents=True)
        print(f"created {data_dir}")
    with contextlib.suppress(PermissionError):  # reported below, one line per folder
        Queue(data_dir)
    if settings.log is not None and not settings.log.parent.exists():
        with contextlib.suppress(OSError):  # log_findings names the folder and the user
            settings.log.parent.mkdir(parents=True)
            print(f"created {settings.log.parent}")
    findings = data_dir_findings(settings) + station_list_findings(settings) + log_findings(settings)
    for finding in findings:
        print(finding.line())
    failed = sum(not finding.ok for finding in findings)
    return 1 if failed else 0


def not_a_data_dir(folder: Path) -> str | None:
    """Why ``folder`` may not become a data_dir, or None: it holds other things and no queue.

    The services make folders in a data_dir and the receiver clears its ``tmp/``: an existing
    folder such as ``/var`` would get queue folders among its own and share ``/var/tmp``.
    An empty folder (a fresh file system's ``lost+found`` aside) or one with ``incoming/`` (a
    data_dir, this datastore's or the deployed one's) is fine."""
    try:
        entries = sorted(name for name in os.listdir(folder) if name != "lost+found")
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"cannot list it: {exc.strerror}"
    if not entries or "incoming" in entries:
        return None
    shown = ", ".join(printable(name) for name in entries[:5]) + (", ..." if len(entries) > 5 else "")
    return (f"holds {len(entries)} entr(ies) ({shown}) but no incoming/: not a data_dir; name a "
            "new or empty folder of its own")


def receiver_cannot_write(settings: Settings) -> str | None:
    """Why the receiver could not queue an upload in ``data_dir``, or None."""
    folders = [settings.data_dir] + [settings.data_dir / name for name in RECEIVER_FOLDERS]
    denied = [str(folder) for folder in folders if not os.access(folder, os.W_OK | os.X_OK)]
    if denied:
        return (f"user {user()} may not create files in {', '.join(denied)}: every upload would be "
                "answered 205")
    devices = queue_device_problem(settings)
    return f"{devices}: every upload would be answered 205" if devices else None
