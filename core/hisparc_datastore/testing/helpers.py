"""Helpers for plugin test suites: run the real writer over a few uploads."""

from __future__ import annotations

import ast
import datetime
import os
import re
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from hisparc_datastore.codec.decoding import Upload
from hisparc_datastore.config import Settings
from hisparc_datastore.plugin.registry import load_registry
from hisparc_datastore.plugin.stationevent import station_event
from hisparc_datastore.util.durable import write_atomically
from hisparc_datastore.writer.service import Tally, Writer


def settings_for(data_dir: str | os.PathLike, minimum_year: int = 2000, **overrides) -> Settings:
    data_dir = Path(data_dir)
    fields = dict(source=data_dir / "config.ini", log=None, loglevel="info",
                  station_list=data_dir / "station_list.csv", data_dir=data_dir,
                  minimum_year=minimum_year, fsync=False)
    return Settings(**{**fields, **overrides})


def queue_uploads(data_dir: str | os.PathLike, uploads: Iterable[Upload]) -> list[Path]:
    """Write uploads into ``data_dir/incoming`` as the receiver would: whole, by rename."""
    incoming = Path(data_dir, "incoming")
    incoming.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, upload in enumerate(uploads):
        path = incoming / f"{time.time_ns()}-{upload.station_id}-{i}"
        write_atomically(path, upload.to_queue_bytes(), fsync=False)
        paths.append(path)
    return paths


def wait_for(predicate: Callable[[], object], timeout: float = 60.0, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` seconds pass (generous by default: a
    loaded machine is slow, and a passing test returns as soon as the condition holds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def store(data_dir: str | os.PathLike, uploads: Iterable[Upload], minimum_year: int = 2000,
          extra_plugins: Iterable[object] = (), **overrides) -> Tally:
    """Queue ``uploads`` and run the writer once over them, with every installed plugin."""
    queue_uploads(data_dir, uploads)
    settings = settings_for(data_dir, minimum_year, **overrides)
    return Writer(settings, load_registry(extra_plugins)).run(once=True)


def store_and_read(data_dir: str | os.PathLike, upload: Upload,
                   date: datetime.date) -> dict[str, object]:
    """Store one upload, check that every event of it was stored, and return its
    station group in the day file of ``date`` as :func:`read_station` does."""
    tally = store(data_dir, [upload])
    if tally.events != len(upload.event_list):
        raise AssertionError(f"stored {tally.events} of {len(upload.event_list)} events: {tally}")
    return read_station(data_dir, date, upload.cluster, upload.station_id)


#: A station event dict, as the station software builds it.
event = station_event


def read_station(data_dir: str | os.PathLike, date: datetime.date, cluster: str,
                 station_id: int) -> dict[str, object]:
    """Every node of one station group in a day file: tables as record arrays, blobs as bytes."""
    import tables

    from hisparc_datastore.storage.layout import day_file_path, station_path

    with tables.open_file(day_file_path(data_dir, date), "r") as h5:
        group = h5.get_node(station_path(cluster, station_id))
        return {node._v_name: node.read() for node in h5.list_nodes(group)}


_SEED_COLUMN = re.compile(r"'(\w+)': (\w+)\(shape=\(([^)]*)\), dflt=([^,]+), pos=(\d+)\)")


def seed_columns(seed_text: str, class_name: str) -> list[tuple]:
    """The columns the seed's writer documentation lists for ``class_name``, as
    ``(pos, name, column class, shape, default)`` sorted by position."""
    match = re.search(rf"class writer\.storage\.{class_name}¶\n(?:.*\n)?- columns = \{{(.*?)\}}¶",
                      seed_text)
    if match is None:
        raise LookupError(f"the seed documents no table description {class_name}")
    columns = []
    for name, kind, shape, default, pos in _SEED_COLUMN.findall(match.group(1)):
        shape = tuple(int(n) for n in shape.split(",") if n.strip())
        columns.append((int(pos), name, kind, shape, ast.literal_eval(default)))
    return sorted(columns)


def description_columns(description: type) -> list[tuple]:
    """The columns of a PyTables description class in the same form as :func:`seed_columns`."""
    columns = []
    for name, col in description.columns.items():
        default = col.dflt.item() if hasattr(col.dflt, "item") else col.dflt
        columns.append((col._v_pos, name, type(col).__name__, tuple(col.shape), default))
    return sorted(columns)


def sample_values(event_type) -> dict[str, object]:
    """A distinct, storable value for every data code of ``event_type``: text for blob
    codes, alternating booleans, floats with a fraction, small integers otherwise.

    Storing them and reading each column back shows every code lands where it should."""
    values: dict[str, object] = {}
    for i, (code, slot) in enumerate(event_type.slots.items(), start=1):
        kind = event_type.dtype[slot.column].base.kind
        if slot.blob is not None:
            values[code] = f"text of {code}"
        elif kind == "b":
            values[code] = i % 2 == 1
        elif kind == "f":
            values[code] = i + 0.25
        else:
            values[code] = i
    return values
