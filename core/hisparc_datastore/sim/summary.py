"""Prints what the day files under a data directory hold, per station and table."""

from __future__ import annotations

import os

import tables

from hisparc_datastore.storage.contents import read_contents
from hisparc_datastore.storage.layout import day_files


def read_all(data_dir: str | os.PathLike, registry) -> tuple[dict, list[str]]:
    """Every day file's rows, keyed by (file name, station, table); and the files that could
    not be read, each with why (the crash harnesses count them)."""
    rows, unreadable = {}, []
    for path in day_files(data_dir):
        try:
            for (station, table), content in read_contents(path, registry).items():
                rows[(path.name, station, table)] = content
        except Exception as exc:  # noqa: BLE001 - any failure to read is what is counted
            unreadable.append(f"{path}: {type(exc).__name__}: {exc}")
    return rows, unreadable


def station_contents(h5: tables.File) -> dict[str, dict[str, int]]:
    """``{station group path: {node name: rows}}`` for every station group of a day file."""
    contents: dict[str, dict[str, int]] = {}
    if "/hisparc" not in h5:
        return contents
    for cluster in h5.list_nodes("/hisparc", classname="Group"):
        for station in h5.list_nodes(cluster, classname="Group"):
            contents[station._v_pathname] = {
                node._v_name: int(node.nrows) for node in h5.list_nodes(station)}
    return contents


def summary_command(data_dir: str) -> int:
    files = day_files(data_dir)
    if not files:
        print(f"no day files under {data_dir}")
        return 1
    for path in files:
        with tables.open_file(path, "r") as h5:
            contents = station_contents(h5)
        print(f"{path}  ({path.stat().st_size / 1e6:.1f} MB)")
        for station, nodes in contents.items():
            listing = ", ".join(f"{name} {rows}" for name, rows in sorted(nodes.items()))
            print(f"  {station}: {listing}")
    return 0
