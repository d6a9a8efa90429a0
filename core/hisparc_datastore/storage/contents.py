"""Reads day files back into comparable rows, for checks, rebuilds and the crash harness.

A row becomes a tuple of its values without ``event_id``, with every blob
reference replaced by the blob's bytes, so two files that hold the same
events compare equal however their blobs were numbered. The crash harnesses
read the blobs so that a damaged one is named while the rest still compare
(``each_blob``), and compare the blobs arrays as well.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Mapping

import attrs
import tables

from hisparc_datastore.plugin.registry import Registry
from hisparc_datastore.storage.layout import BLOBS

#: (station group path, table name) -> that table's rows, in order
Contents = dict[tuple[str, str], list[tuple]]


def _blob_columns(registry: Registry) -> dict[str, set[str]]:
    return {
        event_type.table_name: {slot.column for slot in event_type.slots.values() if slot.blob}
        for event_type in registry
    }


@attrs.frozen
class UnreadableBlob:
    """In place of a blob HDF5 could not read: equal to no bytes, so a row that refers to it
    differs from the row that was expected."""

    station: str
    index: int
    error: str = attrs.field(eq=False)


def read_each_blob(node: tables.VLArray, step: int = 1024) -> list[bytes | UnreadableBlob]:
    """Every row of a blobs array, so that a damaged row hides no other: reading the whole
    array fails on the first damaged row. Rows are read ``step`` at a time (one at a time
    took 2.4 times as long for 17,322 blobs), and a range that fails again row by row."""
    blobs: list[bytes | UnreadableBlob] = []
    for first in range(0, node.nrows, step):
        last = min(first + step, node.nrows)
        try:
            blobs += node.read(first, last)
            continue
        except Exception:  # noqa: BLE001 - the range is read again row by row below
            pass
        for index in range(first, last):
            try:
                blobs.append(node[index])
            except Exception as exc:  # noqa: BLE001 - HDF5 raises several kinds for a damaged heap
                blobs.append(UnreadableBlob(node._v_parent._v_pathname, index, _innermost(exc)))
    return blobs


def _innermost(exc: Exception) -> str:
    """The deepest step of an HDF5 error's back trace (``bad global heap collection
    signature``), which says what is damaged; the first line only says there was an error."""
    steps = [line.strip() for line in str(exc).splitlines() if line.startswith("    ")]
    return steps[-1] if steps else f"{type(exc).__name__}: {exc}"


def _resolve(value: int | list, blobs: list[bytes]):
    if isinstance(value, list):
        return tuple(_resolve(i, blobs) for i in value)
    return blobs[value] if 0 <= value < len(blobs) else value


def _plain(value):
    return tuple(value) if isinstance(value, list) else value


def read_contents(path: str | os.PathLike, registry: Registry, *, each_blob: bool = False) -> Contents:
    """Every station table of a day file, read fully (which also proves it readable).

    With ``each_blob`` a damaged blob becomes an :class:`UnreadableBlob` instead of failing
    the file (:func:`read_each_blob`), and each station's blobs array is given too, as a
    table ``blobs`` of one-blob rows."""
    blob_columns = _blob_columns(registry)
    contents: Contents = {}
    with tables.open_file(str(path), "r") as h5:
        for group in h5.walk_groups("/hisparc"):
            blobs = []
            if BLOBS in group:
                node = group._f_get_child(BLOBS)
                blobs = read_each_blob(node) if each_blob else list(node.read())
                if each_blob:
                    contents[(group._v_pathname, BLOBS)] = [(blob,) for blob in blobs]
            for node in h5.list_nodes(group, classname="Table"):
                records = node.read()
                names = [name for name in records.dtype.names if name != "event_id"]
                resolve = blob_columns.get(node.name, set())
                columns = [(name in resolve, records[name].tolist()) for name in names]
                contents[(group._v_pathname, node.name)] = [
                    tuple(_resolve(values[i], blobs) if is_blob else _plain(values[i])
                          for is_blob, values in columns)
                    for i in range(len(records))
                ]
    return contents


@attrs.frozen
class Difference:
    """How one station table differs between an expected and an actual day file."""

    node: tuple[str, str]
    expected_rows: int
    actual_rows: int
    missing: int  # rows expected but absent (or present fewer times)
    extra: int  # rows present but not expected (or more times)
    same_rows_other_order: bool

    def __str__(self) -> str:
        station, table = self.node
        text = f"{station}/{table}: expected {self.expected_rows} rows, found {self.actual_rows}"
        if self.same_rows_other_order:
            return text + " (the same rows in another order)"
        return text + f" ({self.missing} missing, {self.extra} extra)"


def compare(expected: Mapping, actual: Mapping) -> list[Difference]:
    """The station tables whose rows differ, in count, content or order."""
    differences = []
    for node in sorted(set(expected) | set(actual)):
        want, have = expected.get(node, []), actual.get(node, [])
        if want == have:
            continue
        missing, extra = multiset_difference(want, have)
        differences.append(Difference(node, len(want), len(have), missing, extra,
                                      missing == extra == 0))
    return differences


def multiset_difference(expected: Iterable, actual: Iterable) -> tuple[int, int]:
    """(items lost, items duplicated or unexpected) between two collections, counting repeats."""
    want, have = Counter(expected), Counter(actual)
    return sum((want - have).values()), sum((have - want).values())
