"""Reads the ``config.ini`` that receiver and writer share."""

from __future__ import annotations

import configparser
import os
from pathlib import Path

import attrs


class ConfigError(ValueError):
    """A setting that is missing or cannot be used; the message names it."""


_LOG_LEVELS = {"debug", "info", "warning", "error", "critical"}


@attrs.frozen
class Settings:
    """Everything the datastore reads from its configuration file."""

    source: Path
    log: Path | None
    loglevel: str
    station_list: Path
    data_dir: Path
    minimum_year: int = 2020
    # Bounds per upload (see docs/exactly-once.md): more distinct event dates go to suspicious/,
    # more events are refused (208). Real stations send batches of 100 events spanning minutes
    # to days.
    max_days_per_upload: int = 31
    max_events_per_upload: int = 20_000
    # publicdb's /config/datastore page, fetched by config-server and fetch-stations
    station_list_url: str | None = None
    # [Writer]
    sleep: float = 5.0
    batch_uploads: int = 50
    batch_bytes: int = 4_000_000
    # distinct dates one batch stores: a later upload that would add more waits for the next
    batch_days: int = 100
    archive_days: int = 14
    fsync: bool = True
    # MB the writer leaves free: it waits (logged, in status) rather than start a batch that
    # would leave less, so a full disk is met between batches, not inside HDF5
    reserve_mb: int = 100
    # prepare the next batch in a second process while this one is appended
    prepare_process: bool = True
    # ``datastore status`` reports unhealthy when the oldest waiting upload is older
    max_lag_s: float = 600.0
    # HOST:PORT where the writer serves Prometheus metrics; None: no metrics server
    metrics_bind: str | None = None
    # [Receiver]
    max_body_bytes: int = 2_000_000
    duplicate_window_hours: float = 24.0
    request_timeout: float = 60.0
    max_connections: int = 1000


def _get(parser: configparser.ConfigParser, section: str, key: str, kind, default, source):
    if not parser.has_option(section, key):
        if default is _REQUIRED:
            raise ConfigError(f"{source}: [{section}] {key} is required")
        return default
    raw = parser.get(section, key)
    try:
        if kind is bool:
            return parser.getboolean(section, key)
        return kind(raw)
    except ValueError:
        raise ConfigError(
            f"{source}: [{section}] {key} = {raw!r} is not a valid {kind.__name__}"
        ) from None


_REQUIRED = object()


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

    def get(section, key, kind, default=_REQUIRED):
        return _get(parser, section, key, kind, default, source)

    log = get("General", "log", str, "")
    loglevel = get("General", "loglevel", str, "info").lower()
    if loglevel not in _LOG_LEVELS:
        raise ConfigError(
            f"{source}: [General] loglevel = {loglevel!r}; use one of {sorted(_LOG_LEVELS)}"
        )
    settings = Settings(
        source=source,
        log=Path(log) if log else None,
        loglevel=loglevel,
        station_list=Path(get("General", "station_list", str)),
        data_dir=Path(get("General", "data_dir", str)),
        minimum_year=get("General", "minimum_year", int, 2020),
        max_days_per_upload=get("General", "max_days_per_upload", int, 31),
        max_events_per_upload=get("General", "max_events_per_upload", int, 20_000),
        station_list_url=get("General", "station_list_url", str, "") or None,
        sleep=get("Writer", "sleep", float, 5.0),
        batch_uploads=get("Writer", "batch_uploads", int, 50),
        batch_bytes=get("Writer", "batch_bytes", int, 4_000_000),
        batch_days=get("Writer", "batch_days", int, 100),
        archive_days=get("Writer", "archive_days", int, 14),
        fsync=get("Writer", "fsync", bool, True),
        reserve_mb=get("Writer", "reserve_mb", int, 100),
        prepare_process=get("Writer", "prepare_process", bool, True),
        max_lag_s=get("Writer", "max_lag_s", float, 600.0),
        metrics_bind=get("Writer", "metrics_bind", str, "") or None,
        max_body_bytes=get("Receiver", "max_body_bytes", int, 2_000_000),
        duplicate_window_hours=get("Receiver", "duplicate_window_hours", float, 24.0),
        request_timeout=get("Receiver", "request_timeout", float, 60.0),
        max_connections=get("Receiver", "max_connections", int, 1000),
    )
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
