"""Reads the ``config.ini`` that receiver and writer share.

Every setting is one row of :data:`SETTINGS` (key, section, default, type, help): the
table makes the fields of :class:`Settings` and drives :func:`load_settings`, and a test
checks the README's settings table against it.
"""

from __future__ import annotations

import configparser
import os
from pathlib import Path
from typing import Any

import attrs


class ConfigError(ValueError):
    """A setting that is missing or cannot be used; the message names it."""


_LOG_LEVELS = {"debug", "info", "warning", "error", "critical"}
REQUIRED = object()  # the default of a setting config.ini must give


@attrs.frozen
class Setting:
    """One key of ``config.ini``; ``None`` as default: optional, and an empty value is none too."""

    name: str
    section: str
    default: Any
    type: type
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting("log", "General", None, Path,
            "log file, shared by the services and rotated by logrotate (docs/operations.md); none: "
            "standard error"),
    Setting("loglevel", "General", "info", str, "`debug`, `info`, `warning`, `error` or `critical`"),
    Setting("station_list", "General", REQUIRED, Path, "one `number,cluster,password` line per station"),
    Setting("data_dir", "General", REQUIRED, Path, "the queue, the day files and the writer's state"),
    Setting("minimum_year", "General", 2020, int,
            "events dated earlier are routed to `suspicious/` by the receiver and quarantined by the writer"),
    # Bounds per upload (docs/exactly-once.md); real stations send batches of 100 events
    # spanning minutes to days.
    Setting("max_days_per_upload", "General", 31, int,
            "an upload with events on more distinct UTC dates goes to `suspicious/` with the reason "
            "(receiver and writer); `requeue` stores it anyway"),
    Setting("max_events_per_upload", "General", 20_000, int,
            "the receiver refuses a larger upload with 208 (kept in quarantine); the writer sets a larger "
            "queue file aside in `suspicious/`; `requeue` stores it anyway"),
    Setting("station_list_url", "General", None, str,
            "publicdb's `/config/datastore` page, for `config-server` and `fetch-stations`"),
    Setting("sleep", "Writer", 5.0, float, "seconds between looks at an empty queue"),
    Setting("batch_uploads", "Writer", 50, int, "most uploads stored per journaled batch"),
    Setting("batch_bytes", "Writer", 4_000_000, int,
            "most queue-file bytes per batch (bounds memory: decoded uploads take ~10x their size)"),
    Setting("batch_days", "Writer", 100, int,
            "most distinct dates (day files) one batch stores; an upload that would add more goes back to "
            "`incoming/` for a later batch (the first of a batch always goes)"),
    Setting("archive_days", "Writer", 14, int,
            "days a stored upload is kept in `archive/` for `rebuild`; 0 turns the archive off"),
    Setting("fsync", "Writer", True, bool, "fsync day files, journal and queue moves (off only for tests)"),
    # so a full disk is met between batches, not inside HDF5
    Setting("reserve_mb", "Writer", 100, int,
            "MB left free: the writer waits (logged, unhealthy in `datastore status`) rather than start a "
            "batch that would leave less (about twice the batch's queue files, plus a copy of each day "
            "file it adds a group or table to)"),
    Setting("prepare_process", "Writer", True, bool,
            "read and convert the next batches in a second process while the writer appends "
            "(false on a one-core host)"),
    Setting("max_lag_s", "Writer", 600.0, float,
            "`datastore status` is unhealthy (exit 1) when an upload waits longer in `incoming/`"),
    Setting("metrics_bind", "Writer", None, str,
            "`HOST:PORT` where the writer serves Prometheus metrics (`/metrics`)"),
    Setting("max_body_bytes", "Receiver", 2_000_000, int, "larger uploads are refused with 400 unread"),
    Setting("duplicate_window_hours", "Receiver", 24.0, float,
            "a re-sent upload (same station and checksum) in this window is answered 100 and queued once"),
    Setting("request_timeout", "Receiver", 60.0, float,
            "seconds from a request's first byte until it must be whole; a slower one is closed"),
    Setting("max_connections", "Receiver", 1000, int,
            "open connections; at the limit the one silent longest without a request in service is "
            "closed (capped by the open-file limit)"),
    Setting("trusted_proxies", "Receiver", None, str,
            "addresses of reverse proxies (comma-separated): from them the station's address is the last "
            "one in `X-Forwarded-For`, for the log and the password guard; from any other peer the "
            "header is ignored"),
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


def _read(parser: configparser.ConfigParser, setting: Setting, source: Path) -> Any:
    section, key, kind = setting.section, setting.name, setting.type
    if not parser.has_option(section, key):
        if setting.default is REQUIRED:
            raise ConfigError(f"{source}: [{section}] {key} is required")
        return setting.default
    raw = parser.get(section, key)
    if setting.default is None and not raw:
        return None
    try:
        if kind is bool:
            return parser.getboolean(section, key)
        return kind(raw)
    except ValueError:
        raise ConfigError(
            f"{source}: [{section}] {key} = {raw!r} is not a valid {kind.__name__}"
        ) from None


def load_settings(path: str | os.PathLike) -> Settings:
    """Parse ``path``; unknown keys are ignored, new keys are optional."""
    source = Path(path)
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(source, encoding="utf-8") as fh:
            parser.read_file(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read configuration {source}: {exc.strerror}") from None
    except configparser.Error as exc:
        raise ConfigError(f"{source}: {exc}") from None

    values = {setting.name: _read(parser, setting, source) for setting in SETTINGS}
    values["loglevel"] = values["loglevel"].lower()
    if values["loglevel"] not in _LOG_LEVELS:
        raise ConfigError(
            f"{source}: [General] loglevel = {values['loglevel']!r}; use one of {sorted(_LOG_LEVELS)}"
        )
    settings = Settings(source=source, **values)
    for name in ("batch_uploads", "batch_bytes", "batch_days"):
        if getattr(settings, name) < 1:
            raise ConfigError(f"{source}: [Writer] {name} must be at least 1")
    for name in ("max_days_per_upload", "max_events_per_upload"):
        if getattr(settings, name) < 1:
            raise ConfigError(f"{source}: [General] {name} must be at least 1")
    if settings.sleep <= 0:
        raise ConfigError(f"{source}: [Writer] sleep must be positive")
    if settings.request_timeout <= 0:
        raise ConfigError(f"{source}: [Receiver] request_timeout must be positive")
    if settings.max_connections < 2:
        raise ConfigError(f"{source}: [Receiver] max_connections must be at least 2")
    if settings.max_lag_s <= 0:
        raise ConfigError(f"{source}: [Writer] max_lag_s must be positive")
    if settings.station_list_url and not settings.station_list_url.startswith(("http://", "https://")):
        raise ConfigError(f"{source}: [General] station_list_url = {settings.station_list_url!r}: "
                          "expected an http:// or https:// address")
    if settings.reserve_mb < 0:
        raise ConfigError(f"{source}: [Writer] reserve_mb must be 0 (none) or more")
    if settings.archive_days < 0:
        raise ConfigError(f"{source}: [Writer] archive_days must be 0 (off) or more")
    return settings
