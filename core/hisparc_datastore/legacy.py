"""The API of the original writer, kept with its signatures for existing callers.

New code uses :class:`hisparc_datastore.writer.service.Writer`; these functions wrap
the same machinery (see docs/api.md).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterable
from pathlib import Path

import tables

from hisparc_datastore.codec.decoding import DecodeError, event_datetime, parse_queue_file
from hisparc_datastore.config import load_settings
from hisparc_datastore.ops.logsetup import configure_logging
from hisparc_datastore.plugin.registry import Registry, load_registry
from hisparc_datastore.storage.layout import (
    BLOBS,
    DayFile,
    day_file_path,
    get_or_create_blobs,
    get_or_create_cluster_group,
    get_or_create_station_group,
    get_or_create_table,
    open_day_file,
    station_path,
)
from hisparc_datastore.util.brief import brief
from hisparc_datastore.writer.rows import Rejected, StationRows, log_unknown_codes
from hisparc_datastore.writer.service import Writer

__all__ = [
    "data_is_blob",
    "get_or_create_cluster_group",
    "get_or_create_node",
    "get_or_create_station_group",
    "open_or_create_file",
    "process_data",
    "store_event",
    "writer",
]


def writer(configfile: str | os.PathLike) -> None:
    """Run the writer on ``configfile`` until SIGTERM or SIGINT."""
    settings = load_settings(configfile)
    configure_logging(settings)
    Writer(settings, load_registry()).run()


def open_or_create_file(data_dir: str | os.PathLike, date: datetime.date) -> tables.File:
    """Open the day file of ``date`` for appending, creating it (and its folders) if needed."""
    return open_day_file(day_file_path(data_dir, date))


def get_or_create_node(file: tables.File, cluster: tables.Group, node: str) -> tables.Leaf:
    """Get or create ``node`` (``blobs`` or an event table) in the station group ``cluster``.

    The seed named the parent group ``cluster``; it is the station group.
    """
    if node == BLOBS:
        return get_or_create_blobs(file, cluster)
    for event_type in _registry():
        if event_type.table_name == node:
            return get_or_create_table(file, cluster, event_type)
    raise ValueError(f"no installed plugin declares a table named {node!r}")


def data_is_blob(uploadcode: str, blob_types: Iterable[str]) -> bool:
    """True when ``uploadcode`` (``TR1``) or its stem (``TR``) is among ``blob_types``."""
    blob_types = set(blob_types)
    return uploadcode in blob_types or uploadcode.rstrip("0123456789") in blob_types


def store_event(datafile: tables.File, cluster: str, station_id: int, event: dict) -> None:
    """Store one event in the open day file ``datafile``; raise ValueError if it cannot be."""
    # Tables through PyTables: the caller's file object must see them, and close them.
    day_file = DayFile(Path(datafile.filename), datafile, below_pytables=False)
    rejected = _store(day_file, cluster, station_id, [event], _registry())
    if rejected:
        raise ValueError(rejected[0].reason)


def process_data(file: str | os.PathLike, data_dir: str | os.PathLike,
                 minimum_year: int = 2020) -> list[Rejected]:
    """Store the queue file ``file`` into ``data_dir``; return the events it could not store.

    Unlike the writer this neither journals nor moves the file: it is the
    one-shot entry point of the original API.
    """
    upload = parse_queue_file(Path(file).read_bytes())
    registry = _registry()
    earliest = datetime.datetime(minimum_year, 1, 1)
    by_date: dict[datetime.date, list] = {}
    rejected = []
    for event in upload.event_list:
        moment = event_datetime(event)
        if moment is None or moment < earliest:
            rejected.append(Rejected(event, f"no datetime, or before minimum_year {minimum_year}"))
        else:
            by_date.setdefault(moment.date(), []).append(event)
    for date, events in sorted(by_date.items()):
        day_file = DayFile(day_file_path(data_dir, date))
        try:
            rejected += _store(day_file, upload.cluster, upload.station_id, events, registry)
        finally:
            day_file.close()
    return rejected


def _store(day_file: DayFile, cluster: str, station_id: int, events: list,
           registry: Registry) -> list[Rejected]:
    rows = StationRows()
    rejected = []
    for event in events:
        try:
            code = event["header"]["eventtype_uploadcode"]
        except (TypeError, KeyError):
            raise DecodeError(f"event without a header: {brief(event)}") from None
        event_type = registry.get(code)
        moment = event_datetime(event)
        if event_type is None or moment is None:
            rejected.append(Rejected(event, f"unknown event type {brief(code)} or no datetime"))
            continue
        reason = rows.add(event_type, event, moment)
        if reason:
            rejected.append(Rejected(event, reason))
    blob_base = day_file.node_size(f"{station_path(cluster, station_id)}/{BLOBS}") or 0
    arrays, misfits = rows.build(blob_base)
    log_unknown_codes(rows.unknown_codes, f"station {station_id}")
    day_file.append_blobs(cluster, station_id, rows.blobs)
    for event_type, records in arrays.items():
        day_file.append_rows(cluster, station_id, event_type, records)
    day_file.h5.flush()
    return rejected + misfits


_cached_registry: Registry | None = None


def _registry() -> Registry:
    global _cached_registry
    if _cached_registry is None:
        _cached_registry = load_registry()
    return _cached_registry
