"""The day-file layout: paths, groups, tables and blobs, and bulk appends into them."""

from __future__ import annotations

import atexit
import datetime
import fcntl
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import tables

from hisparc_datastore.plugin.eventtype import EventType
from hisparc_datastore.storage import hdf5calls, undo, vlblobs
from hisparc_datastore.util.durable import fsync_appended, fsync_dir, fsync_file

BLOBS = "blobs"
#: The nodes the core keeps in every station group: no plugin may name its table so, or its
#: events would be created where the core appends, or appended to as the core's own.
CORE_NODES = frozenset({BLOBS})
BLOBS_TITLE = "HiSPARC binary data"
BLOB_CHUNK = 4096
# PyTables nodes (the blobs VLArrays) kept open per day file. An open one costs ~100 kB
# (its PyTables objects, attributes, HDF5 state) and reopening one ~5 ms: every station's
# blobs of a network of 500 stations.
MAX_NODES = 512
# Tables kept open per day file below PyTables: an open HDF5 dataset costs ~25 kB
# (measured), so the tables of 200 stations stay open (~1,400, 35 MB a file); reopening
# one costs ~0.1 ms.
MAX_TABLES = 2048
# Tables below PyTables (see DayFile); False: the code path before, kept as the reference
# the tests compare day files with.
BELOW_PYTABLES = True
# Per dataset. The default (16 MB) kept a chunk of every table written cached: a
# batch appends each table once, so the cache saved no write, and cost ~70 kB a table.
CHUNK_CACHE_SIZE = 0


def day_file_path(data_dir: str | os.PathLike, date: datetime.date) -> Path:
    """``data_dir/2017/2/2017_2_26.h5``: numbers not zero-padded, as readers expect."""
    return Path(data_dir, str(date.year), str(date.month), f"{date.year}_{date.month}_{date.day}.h5")


def day_files(data_dir: str | os.PathLike) -> list[Path]:
    """The day files under ``data_dir``, in date order."""
    def date_key(path: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in path.stem.split("_"))

    return sorted(Path(data_dir).glob("[0-9]*/[0-9]*/[0-9]*_[0-9]*_[0-9]*.h5"), key=date_key)


def date_of_day_file(path: str | os.PathLike) -> datetime.date:
    year, month, day = Path(path).stem.split("_")
    return datetime.date(int(year), int(month), int(day))


def snapshot_path(path: Path) -> Path:
    """Where the copy of a day file made before a batch adds nodes to it is kept: beside it
    (so restoring it is one rename), hidden from readers that list ``*.h5``."""
    return path.with_name(f".{path.name}.before")


def copy_day_file_tmp(target: Path) -> Path:
    """The name :func:`copy_day_file` writes ``target`` under until it is whole."""
    return target.with_name(target.name + ".tmp")


_FICLONE = 0x40049409  # Linux ioctl: share the extents (btrfs, XFS); copy nothing


def copy_day_file(source: Path, target: Path, fsync: bool = True) -> None:
    """Copy a (flushed) day file whole to ``target``: a reflink where the file system can,
    else the bytes. Raises OSError (ENOSPC included) before the day file is touched."""
    tmp = copy_day_file_tmp(target)
    try:
        with open(source, "rb") as src, open(tmp, "wb") as dst:
            try:
                fcntl.ioctl(dst.fileno(), _FICLONE, src.fileno())
                cloned = True
            except OSError:
                cloned = False
        if not cloned:
            shutil.copyfile(source, tmp)  # sendfile(2) on Linux
        if fsync:
            fsync_file(tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if fsync:
        fsync_dir(target.parent)


def drop_copies(copies: Mapping[str, str], fsync: bool = True) -> None:
    """Remove the copies a batch made before it added nodes (the journal's ``copies``)."""
    for copy in copies.values():
        if copy:
            Path(copy).unlink(missing_ok=True)
            if fsync:
                fsync_dir(Path(copy).parent)


def station_path(cluster: str, station_id: int) -> str:
    return f"/hisparc/cluster_{cluster.lower()}/station_{station_id}"


def get_or_create_cluster_group(file: tables.File, cluster: str) -> tables.Group:
    """Get an existing cluster group or create a new one."""
    try:
        hisparc = file.get_node("/", "hisparc")
    except tables.NoSuchNodeError:
        hisparc = file.create_group("/", "hisparc", "HiSPARC data")
    name = f"cluster_{cluster.lower()}"
    try:
        return file.get_node(hisparc, name)
    except tables.NoSuchNodeError:
        return file.create_group(hisparc, name, f"HiSPARC cluster {cluster} data")


def get_or_create_station_group(file: tables.File, cluster: str, station_id: int) -> tables.Group:
    """Get an existing station group or create a new one."""
    cluster_group = get_or_create_cluster_group(file, cluster)
    name = f"station_{station_id}"
    try:
        return file.get_node(cluster_group, name)
    except tables.NoSuchNodeError:
        return file.create_group(cluster_group, name, f"HiSPARC station {station_id} data")


def get_or_create_table(file: tables.File, group: tables.Group, event_type: EventType) -> tables.Table:
    try:
        return file.get_node(group, event_type.table_name)
    except tables.NoSuchNodeError:
        return file.create_table(
            group, event_type.table_name, event_type.description, event_type.table_title
        )


def get_or_create_blobs(file: tables.File, group: tables.Group) -> tables.VLArray:
    try:
        return file.get_node(group, BLOBS)
    except tables.NoSuchNodeError:
        return file.create_vlarray(group, BLOBS, tables.VLStringAtom(), BLOBS_TITLE, chunkshape=(BLOB_CHUNK,))


def open_day_file(path: Path, fsync: bool = True) -> tables.File:
    """Open a day file for appending; a new one is created whole or not at all.

    A writer killed while HDF5 writes a new file's superblock would leave a
    file no one can open, so a new file is made under a temporary name and
    renamed into place once it is complete.
    """
    if not path.exists():
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.new")
        tables.open_file(str(tmp), "w").close()
        if fsync:
            fsync_file(tmp)
        os.replace(tmp, path)
        if fsync:
            fsync_dir(path.parent)
    return tables.open_file(str(path), "a", chunk_cache_size=CHUNK_CACHE_SIZE)


class _Templates:
    """An empty table of each event type, made by PyTables once per process in a file held in
    memory; :meth:`DayFile.append_rows` has HDF5 copy it (``H5Ocopy``) for each new table, with
    every attribute, the dtype, chunk shape and filters as ``create_table`` makes them."""

    def __init__(self) -> None:
        self._h5: tables.File | None = None
        self._made: dict[EventType, str] = {}

    def path(self, event_type: EventType) -> tuple[tables.File, str]:
        """The template file and the path in it of ``event_type``'s empty table."""
        if self._h5 is None or not self._h5.isopen:
            name = f"table-templates-{os.getpid()}-{id(self)}.h5"
            self._h5 = tables.open_file(name, "w", driver="H5FD_CORE", driver_core_backing_store=0)
            self._made.clear()
        path = self._made.get(event_type)
        if path is None:
            path = f"/t{len(self._made)}"
            # The very call get_or_create_table makes, so the copies are that table.
            self._h5.create_table("/", path[1:], event_type.description, event_type.table_title)
            self._made[event_type] = path
        return self._h5, path


    def close(self) -> None:
        if self._h5 is not None:
            self._h5.close()


_templates = _Templates()
atexit.register(_templates.close)


def below_pytables(event_type: EventType) -> bool:
    """Whether ``event_type``'s rows can go to HDF5 as they are: PyTables converts time64
    columns before it writes, and a nested column has no flat memory layout to check."""
    return all(isinstance(col, tables.Col) and col.type != "time64"
               for col in event_type.description.columns.values())


class DayFile:
    """One open day file, with the tables and blobs the writer touched last kept open.

    Tables are created, opened and appended to with HDF5 calls below PyTables (see
    :mod:`.hdf5calls`), at most MAX_TABLES open; the ``blobs`` VLArrays through PyTables
    (at most MAX_NODES open). ``below_pytables=False``: tables through PyTables too
    (for a file someone else opened, and as the reference the tests compare with).
    """

    def __init__(self, path: Path, h5: tables.File | None = None,
                 below_pytables: bool | None = None) -> None:
        self.path = path
        self.h5 = h5 if h5 is not None else open_day_file(path)
        self.below_pytables = BELOW_PYTABLES if below_pytables is None else below_pytables
        self._nodes: dict[str, tables.Leaf] = {}
        self._tables: dict[str, hdf5calls.Dataset] = {}  # in least-recent order

    def _group(self, cluster: str, station_id: int) -> tables.Group:
        return get_or_create_station_group(self.h5, cluster, station_id)

    def table(self, cluster: str, station_id: int, event_type: EventType) -> tables.Table:
        return self._leaf(cluster, station_id, event_type.table_name,
                          lambda h5, group: get_or_create_table(h5, group, event_type))

    def _leaf(self, cluster: str, station_id: int, name: str,
              get_or_create: Callable[[tables.File, tables.Group], tables.Leaf]) -> tables.Leaf:
        key = f"{station_path(cluster, station_id)}/{name}"
        node = self._nodes.pop(key, None)
        if node is None or not node._v_isopen:  # closed: an append through it failed
            node = get_or_create(self.h5, self._group(cluster, station_id))
        self._remember(key, node)
        return node

    def _remember(self, key: str, node: tables.Leaf) -> None:
        # Re-inserting keeps the dict in least-recent order. Keeping every station's tables
        # open made memory grow with the number of stations (409 MB with 200 across midnight);
        # a node let go goes to PyTables' own small node cache, which closes it in turn.
        self._nodes[key] = node
        if len(self._nodes) > MAX_NODES:
            del self._nodes[next(iter(self._nodes))]

    def _dataset(self, key: str) -> hdf5calls.Dataset | None:
        """The open table at ``key``; None when it does not exist."""
        dataset = self._tables.pop(key, None)
        if dataset is None:
            if not hdf5calls.exists(self.h5, key):
                return None
            dataset = hdf5calls.Dataset(self.h5, key)
        self._tables[key] = dataset
        if len(self._tables) > MAX_TABLES:
            self._tables.pop(next(iter(self._tables))).close()
        return dataset

    def _create_table(self, cluster: str, station_id: int, event_type: EventType) -> None:
        source, template = _templates.path(event_type)
        hdf5calls.copy_object(source, template, self._group(cluster, station_id), event_type.table_name)

    def node_size(self, node_path: str) -> int | None:
        """Rows in a node, or None when it does not exist (yet)."""
        if self.below_pytables and not node_path.endswith(f"/{BLOBS}"):
            dataset = self._dataset(node_path)  # kept open: rows are about to be appended
            return None if dataset is None else dataset.nrows
        node = self._nodes.pop(node_path, None)
        if node is None or not node._v_isopen:
            try:
                node = self.h5.get_node(node_path)
            except tables.NoSuchNodeError:
                return None
        # Kept open: it is asked for because rows are about to be appended to it.
        self._remember(node_path, node)
        return int(node.nrows)  # PyTables gives numpy.int64, which JSON cannot store

    def append_blobs(self, cluster: str, station_id: int, blobs: list[bytes]) -> None:
        """Append ``blobs`` without PyTables' per-blob conversions (see :mod:`.vlblobs`)."""
        if not blobs:
            return
        # Kept open like the tables: fetching it again for every batch, with the groups
        # above it that PyTables' node cache had let go, was a tenth of the writer's time.
        vlblobs.append_blobs(self._leaf(cluster, station_id, BLOBS, get_or_create_blobs), blobs)

    def append_rows(
        self, cluster: str, station_id: int, event_type: EventType, records: np.ndarray
    ) -> None:
        if not (self.below_pytables and below_pytables(event_type)):
            table = self.table(cluster, station_id, event_type)
            records["event_id"] = np.arange(table.nrows + 1, table.nrows + 1 + len(records))
            table.append(records)
            return
        key = f"{station_path(cluster, station_id)}/{event_type.table_name}"
        dataset = self._dataset(key)
        if dataset is None:
            self._create_table(cluster, station_id, event_type)
            dataset = self._dataset(key)
        records["event_id"] = np.arange(dataset.nrows + 1, dataset.nrows + 1 + len(records))
        try:
            dataset.append(records.astype(event_type.dtype, copy=False))
        except BaseException:
            # Its row count may now disagree with the file: opened afresh when used again.
            self._tables.pop(key, None)
            dataset.close()
            raise

    def truncate(self, sizes: Mapping[str, int | None], reached: Mapping[str, int] | None = None) -> None:
        """Cut nodes back to recorded sizes, clearing the slots up to ``reached`` (the rows the
        batch was to reach: see :mod:`.undo`); remove those that did not exist."""
        self._close_tables()  # PyTables cuts them back: their row counts would be stale
        for node_path in undo.scrub_nodes(self.h5, sizes, reached or {}):
            try:
                node = self.h5.get_node(node_path)
            except tables.NoSuchNodeError:
                continue
            parent = node._v_parent
            node._f_remove()
            # Groups made for the removed node go too, so the file is as it was.
            while parent is not self.h5.root and not parent._v_children:
                grandparent = parent._v_parent
                parent._f_remove()
                parent = grandparent
        self._nodes.clear()

    def flush(self, fsync: bool) -> None:
        # One H5Fflush: PyTables' File.flush() made one for every open leaf (a fifth of the
        # writer's time at 140 stations), each flushing the whole file.
        if self.below_pytables:
            hdf5calls.flush(self.h5)
        else:
            self.h5.flush()
        if fsync:
            fsync_appended(self.path)

    def _close_tables(self) -> None:
        while self._tables:
            self._tables.popitem()[1].close()

    def close(self) -> None:
        # Before the file: HDF5 keeps a file open while any object in it is.
        self._close_tables()
        if self.h5.isopen:
            self.h5.close()
        self._nodes.clear()

