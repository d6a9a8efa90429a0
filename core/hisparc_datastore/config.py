"""Reads the ``config.ini`` that receiver and writer share.

Every setting is one row of :data:`SETTINGS` (key, section, default, type, help): the
table makes the fields of :class:`Settings` and drives :func:`load_settings`, and a test
checks the settings table of docs/operations.md against it.
"""

from __future__ import annotations

import configparser
import datetime
import difflib
import ipaddress
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

_LOG_LEVELS = {"debug", "info", "warning", "error", "critical"}
REQUIRED = object()  # the default of a setting config.ini must give


class ConfigError(ValueError):
    """A setting that is missing or cannot be used; the message names it."""


def setting_problem(source: str | os.PathLike, section: str, key: str, raw: object,
                    problem: str) -> str:
    """The one line that names a bad setting: ``config.ini [Writer] sleep: 'soon': not a number``."""
    value = "" if raw is None else f" {str(raw)!r}:"
    return f"{source} [{section}] {key}:{value} {problem}"


@attrs.frozen
class Range:
    """The values a number setting may take: ``low`` (excluded when ``open_low``) to ``high``."""

    low: float
    high: float | None = None
    open_low: bool = False

    def problem(self, value: float) -> str | None:
        if not math.isfinite(value):
            return "must be a finite number"
        if value < self.low or (self.open_low and value == self.low) or (
                self.high is not None and value > self.high):
            return f"must be {self}"
        return None

    def __str__(self) -> str:
        low = f"more than {self.low:g}" if self.open_low else f"at least {self.low:g}"
        return low if self.high is None else f"{low} and at most {self.high:g}"


def _this_year() -> int:
    return datetime.datetime.now(datetime.timezone.utc).year


def _loglevel(value: str) -> str | None:
    return None if value.lower() in _LOG_LEVELS else f"use one of {', '.join(sorted(_LOG_LEVELS))}"


def _log_format(value: str) -> str | None:
    return None if value in ("text", "json") else "use text or json"


def _absolute(value: Path) -> str | None:
    # Services run from / under systemd: a relative data_dir would land wherever they start.
    return None if value.is_absolute() else "must be an absolute path (a service's folder is / under systemd)"


def _url(value: str) -> str | None:
    return None if value.startswith(("http://", "https://")) else "expected an http:// or https:// address"


def _host_port(value: str) -> str | None:
    try:
        split_host_port(value)
    except ValueError as exc:
        return str(exc)
    return None


def _addresses(value: str) -> str | None:
    for word in value.replace(",", " ").split():
        try:
            ipaddress.ip_address(word)
        except ValueError:
            return f"{word!r} is not an IP address"
    return None


def split_host_port(bind: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8080`` for IPv6) as a host and a port number; ValueError if not."""
    host, sep, port = bind.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isascii() or not port.isdigit():
        raise ValueError("expected HOST:PORT, e.g. 127.0.0.1:8080")
    if int(port) > 65535:
        raise ValueError(f"port {int(port)} is out of range: at most 65535 (0: any free port)")
    return host, int(port)



@attrs.frozen
class Setting:
    """One key of ``config.ini``; ``None`` as default: optional, and an empty value is none too."""

    name: str
    section: str
    default: Any
    type: type
    help: str
    # the values it may take (numbers), or a check that names a value's problem (None: none)
    range: Range | None = attrs.field(default=None, kw_only=True)
    check: Callable[[Any], str | None] | None = attrs.field(default=None, kw_only=True)


SETTINGS: tuple[Setting, ...] = (
    Setting("log", "General", None, Path,
            "log file, shared by the services and rotated by logrotate (docs/operations.md); none: "
            "standard error"),
    Setting("loglevel", "General", "info", str, "`debug`, `info`, `warning`, `error` or `critical`",
            check=_loglevel),
    Setting("log_format", "General", "text", str,
            "`text` (one line: UTC time with offset, pid, logger, level, message) or `json` (one "
            "object a line with the same fields)", check=_log_format),
    Setting("station_list", "General", REQUIRED, Path, "one `number,cluster,password` line per station"),
    Setting("data_dir", "General", REQUIRED, Path, "the queue, the day files and the writer's state",
            check=_absolute),
    Setting("minimum_year", "General", 2020, int,
            "events dated earlier are routed to `suspicious/` by the receiver and quarantined by the writer",
            range=Range(1970, _this_year() + 1)),
    # Bounds per upload (docs/exactly-once.md); real stations send batches of 100 events
    # spanning minutes to days.
    Setting("max_days_per_upload", "General", 31, int,
            "an upload with events on more distinct UTC dates goes to `suspicious/` with the reason "
            "(receiver and writer); `requeue` stores it anyway", range=Range(1, 3660)),
    Setting("max_events_per_upload", "General", 20_000, int,
            "the receiver refuses a larger upload with 208 (kept in quarantine); the writer sets a larger "
            "queue file aside in `suspicious/`; `requeue` stores it anyway", range=Range(1, 10**7)),
    # What quarantine/ and suspicious/ keep of one station (queue/holding.py): past these, a
    # count and the first and latest upload, so one station's password cannot fill the disk.
    Setting("hold_files", "General", 5000, int,
            "files `quarantine/` and `suspicious/` each keep per station and kind; beyond it (or "
            "`hold_mb`) a count and the first and latest upload", range=Range(1, 10**9)),
    Setting("hold_mb", "General", 200, int,
            "MB `quarantine/` and `suspicious/` each keep per station and kind", range=Range(1, 10**7)),
    Setting("station_list_url", "General", None, str,
            "publicdb's `/config/datastore` page, for `config-server` and `fetch-stations`", check=_url),
    Setting("quiet_after_s", "General", 3600.0, float,
            "a listed station with no upload received or stored for this long is silent: listed first "
            "in `datastore status`, a warning for `--nagios`", range=Range(0, open_low=True)),
    Setting("sleep", "Writer", 5.0, float, "seconds between looks at an empty queue",
            range=Range(0, 3600, open_low=True)),
    Setting("batch_uploads", "Writer", 50, int, "most uploads stored per journaled batch",
            range=Range(1, 100_000)),
    Setting("batch_bytes", "Writer", 4_000_000, int,
            "most queue-file bytes per batch (bounds memory: decoded uploads take ~10x their size)",
            range=Range(1, 10**10)),
    Setting("batch_days", "Writer", 100, int,
            "most distinct dates (day files) one batch stores; an upload that would add more goes back to "
            "`incoming/` for a later batch (the first of a batch always goes)", range=Range(1, 10_000)),
    Setting("gather_s", "Writer", 1.0, float,
            "seconds uploads may gather before a batch smaller than `batch_uploads`/`batch_bytes` is "
            "stored: fewer, larger batches, less CPU per event; 0 stores at once",
            range=Range(0, 600)),
    Setting("commit_s", "Writer", 10.0, float,
            "seconds of batches made durable together (one fsync per day file, then released from "
            "`partial/`): the pages HDF5 writes again at each durable point are paid once per this, not "
            "per batch; a crash stores them again from `partial/`; 0 makes each batch durable alone",
            range=Range(0, 600)),
    Setting("archive_days", "Writer", 14, int,
            "days a stored upload is kept in `archive/` for `rebuild`; 0 turns the archive off",
            range=Range(0, 3660)),
    Setting("archive_compress", "Writer", False, bool,
            "gzip archived uploads when the writer is idle: about half the archive's disk, for writing "
            "about half a byte more per byte stored (a link writes nothing)"),
    Setting("hold_days", "Writer", 90, int,
            "days a file is kept in `quarantine/` and `suspicious/` (pruned like the archive, logged); "
            "0 keeps them", range=Range(0, 36600)),
    Setting("fsync", "Writer", True, bool, "fsync day files, journal and queue moves (off only for tests)"),
    # so a full disk is met between batches, not inside HDF5
    Setting("reserve_mb", "Writer", 100, int,
            "MB left free: the writer waits (logged, unhealthy in `datastore status`) rather than start a "
            "batch that would leave less (about twice the batch's queue files, plus the room it sets aside "
            "in each day file it adds a group or table to)", range=Range(0, 10**7)),
    Setting("prepare_process", "Writer", True, bool,
            "read and convert the next batches in a second process while the writer appends "
            "(false on a one-core host)"),
    Setting("max_lag_s", "Writer", 600.0, float,
            "`datastore status` is unhealthy (exit 1) when an upload waits longer in `incoming/`",
            range=Range(0, open_low=True)),
    Setting("metrics_bind", "Writer", None, str,
            "`HOST:PORT` where the writer serves Prometheus metrics (`/metrics`)", check=_host_port),
    Setting("receiver_bind", "Receiver", "127.0.0.1:8080", str,
            "`HOST:PORT` where `datastore serve` listens (its `--bind` overrides it) and where "
            "`status` and `check` look for it", check=_host_port),
    # Above the writer's reserve: the gap is the writer's room for its batches and day-file
    # copies, so uploads accepted on a small disk can still be stored.
    Setting("receiver_reserve_mb", "Receiver", 300, int,
            "MB left free: below it the receiver answers 205 (the station keeps the upload and "
            "retries), so the writer always has room; keep it above `[Writer] reserve_mb` "
            "(`datastore check` fails otherwise)", range=Range(0, 10**7)),
    Setting("max_body_bytes", "Receiver", 2_000_000, int, "larger uploads are refused with 400 unread",
            range=Range(1, 2**31)),
    Setting("duplicate_window_hours", "Receiver", 24.0, float,
            "a re-sent upload (same station and checksum) in this window is answered 100 and queued once",
            range=Range(0, 24 * 366)),
    Setting("request_timeout", "Receiver", 60.0, float,
            "seconds from a request's first byte until it must be whole; a slower one is closed",
            range=Range(0, 3600, open_low=True)),
    Setting("max_connections", "Receiver", 1000, int,
            "open connections; at the limit the one silent longest without a request in service is "
            "closed (capped by the open-file limit)", range=Range(2, 1_000_000)),
    Setting("trusted_proxies", "Receiver", None, str,
            "addresses of reverse proxies (comma-separated): from them the station's address is the last "
            "one in `X-Forwarded-For`, for the log and the password guard; from any other peer the "
            "header is ignored"),
    Setting("publicdb_addresses", "ConfigServer", "127.0.0.1", str,
            "addresses `config-server` always serves, outside its limits of 16 connections and 4 per "
            "address (comma-separated): publicdb's, or the web server's in front of it (deploy/proxy "
            "admits only publicdb)", check=_addresses),
    Setting("config_server_bind", "ConfigServer", "127.0.0.1:8002", str,
            "`HOST:PORT` where `datastore config-server` listens (its `--bind` overrides it) and where "
            "`status` and `check` look for it", check=_host_port),
)


def _field(setting: Setting) -> Any:
    kind = setting.type if setting.default is not None else setting.type | None
    if setting.default is REQUIRED:
        return attrs.field(type=kind)
    return attrs.field(type=kind, default=setting.default)


Settings = attrs.make_class(
    "Settings", {"source": attrs.field(type=Path), **{s.name: _field(s) for s in SETTINGS}},
    frozen=True, kw_only=True)
Settings.__doc__ = "Everything the datastore reads from its configuration file (``source``): see SETTINGS."
Settings.__module__ = __name__


_KINDS = {int: "a whole number", float: "a number", bool: "true or false"}


def _read(parser: configparser.ConfigParser, setting: Setting, source: Path) -> Any:
    section, key, kind = setting.section, setting.name, setting.type
    if not parser.has_option(section, key):
        if setting.default is REQUIRED:
            raise ConfigError(setting_problem(source, section, key, None, "is required"))
        return setting.default
    raw = parser.get(section, key)
    if not raw.strip():
        if setting.default is None:
            return None
        if setting.default is REQUIRED:
            raise ConfigError(setting_problem(source, section, key, None, "is required, and empty"))
    try:
        value = parser.getboolean(section, key) if kind is bool else kind(raw.strip())
    except ValueError:
        raise ConfigError(setting_problem(source, section, key, raw,
                                          f"not {_KINDS.get(kind, kind.__name__)}")) from None
    problem = (setting.range.problem(value) if setting.range is not None else None) or (
        setting.check(value) if setting.check is not None else None)
    if problem:
        raise ConfigError(setting_problem(source, section, key, raw, problem))
    return value


def _unknown(parser: configparser.ConfigParser, source: Path) -> list[str]:
    """A line for every section and key that no setting has, naming the nearest that exists."""
    sections: dict[str, set[str]] = {}
    for setting in SETTINGS:
        sections.setdefault(setting.section, set()).add(setting.name)
    home = {setting.name: setting.section for setting in SETTINGS}
    problems = []
    for section in parser.sections():
        if section not in sections:
            near = difflib.get_close_matches(section.title(), sections, n=1, cutoff=0.5)
            hint = f"; did you mean [{near[0]}]?" if near else f"; known: {_listed(sections)}"
            problems.append(f"{source} [{section}]: unknown section{hint}")
            continue
        for key in parser.options(section):
            if key in sections[section]:
                continue
            if key in home:
                hint = f"; it belongs in [{home[key]}]"
            else:
                near = (difflib.get_close_matches(key, sections[section], n=1, cutoff=0.6)
                        or difflib.get_close_matches(key, home, n=1, cutoff=0.6))
                hint = f"; did you mean [{home[near[0]]}] {near[0]}?" if near else ""
            problems.append(setting_problem(source, section, key, None, f"unknown key{hint}"))
    return problems


def _listed(sections: dict[str, set[str]]) -> str:
    return ", ".join(f"[{name}]" for name in sections)


def load_settings(path: str | os.PathLike) -> Settings:
    """Parse ``path``: every section and key must be one of SETTINGS and every value within its
    bounds; absent optional keys take their defaults. ConfigError names every problem, one per
    line, each with the file, section and key."""
    source = Path(path)
    # No [DEFAULT] magic: its keys would count as given in every section.
    parser = configparser.ConfigParser(interpolation=None, default_section="\x00")
    try:
        with open(source, encoding="utf-8") as fh:
            parser.read_file(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read configuration {source}: {exc.strerror}") from None
    except configparser.Error as exc:
        raise ConfigError(f"{source}: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None

    unknown = _unknown(parser, source)
    problems, values = list(unknown), {}
    for setting in SETTINGS:
        try:
            values[setting.name] = _read(parser, setting, source)
        except ConfigError as exc:
            # A required key is missing because its section is misspelt: that one line says it.
            if not (unknown and not parser.has_option(setting.section, setting.name)):
                problems.append(str(exc))
    if problems:
        raise ConfigError("\n".join(problems))
    values["loglevel"] = values["loglevel"].lower()
    return Settings(source=source, **values)


def require_data_dir(settings: Settings) -> Path:
    """``data_dir``, when it is a folder; ConfigError otherwise. It is never created here: a
    mistyped or unmounted data_dir would take the uploads into a tree nobody looks at."""
    data_dir = settings.data_dir
    if not data_dir.is_dir():
        what = "not a folder" if data_dir.exists() else "does not exist"
        raise ConfigError(setting_problem(
            settings.source, "General", "data_dir", data_dir,
            f"{what} (a mistyped or unmounted data_dir is not created; "
            f"`datastore init {settings.source}` creates a new one)"))
    return data_dir
