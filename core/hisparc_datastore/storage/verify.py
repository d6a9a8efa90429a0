"""Reads day files back, node by node and blob by blob, and names what cannot be read.

Used three ways: by the writer after it undid a batch (the last stored blobs of
every node the batch touched, and the blobs the retry wrote), by ``datastore
verify`` (every row of every node of the day files an operator names), and by
the tests and crash harnesses.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import attrs
import tables

from hisparc_datastore.storage.layout import BLOBS

STEP = 1024  # rows read at once; a failing range is read again row by row to name the rows
TAIL = 512  # stored blobs read back per node after an undo: those sharing heap collections
#             with the lost attempt's blobs (a collection holds a few to a few hundred)
SHOWN_ROWS = 10


@attrs.frozen
class Damage:
    """Rows of one node (or a whole day file) that cannot be read."""

    path: Path
    node: str  # "/" when the file does not open or cannot be walked
    problem: str  # HDF5's last line
    rows: tuple[int, ...] = ()  # the first SHOWN_ROWS unreadable rows
    count: int = 0  # unreadable rows in all

    def __str__(self) -> str:
        return f"{self.path} {self.describe()}"

    def describe(self) -> str:
        """The node and what is wrong with it, without the file's path."""
        if not self.rows:
            return f"{self.node}: {self.problem}"
        more = f" and {self.count - len(self.rows)} more" if self.count > len(self.rows) else ""
        rows = ", ".join(str(row) for row in self.rows)
        return f"{self.node}: {self.count} rows unreadable (rows {rows}{more}): {self.problem}"


def _last_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[-1] if lines else ''}"


def unreadable_rows(node: tables.Leaf, path: Path, start: int = 0, stop: int | None = None) -> Damage | None:
    """Read rows ``start`` to ``stop`` of ``node``; the damage found, or None."""
    stop = int(node.nrows) if stop is None else min(stop, int(node.nrows))
    rows: list[int] = []
    problem = ""
    for first in range(max(0, start), stop, STEP):
        last = min(first + STEP, stop)
        try:
            node.read(first, last)
            continue
        except Exception as exc:  # noqa: BLE001 - whatever HDF5 raises, the rows are unreadable
            problem = problem or _last_line(exc)
        for row in range(first, last):
            try:
                node.read(row, row + 1)
            except Exception as exc:  # noqa: BLE001
                problem = _last_line(exc)
                rows.append(row)
    if not rows and not problem:
        return None
    return Damage(path, node._v_pathname, problem, tuple(rows[:SHOWN_ROWS]), len(rows))


def verify_day_file(path: str | os.PathLike) -> list[Damage]:
    """Every node of the day file ``path`` read whole: the damage found (none: a sound file)."""
    path = Path(path)
    damages = []
    try:
        with tables.open_file(str(path), "r") as h5:
            for node in h5.walk_nodes("/", "Leaf"):
                damage = unreadable_rows(node, path)
                if damage is not None:
                    damages.append(damage)
    except Exception as exc:  # noqa: BLE001 - a file that does not open or walk is damaged
        damages.append(Damage(path, "/", _last_line(exc)))
    return damages


def blobs_tails(h5: tables.File, path: Path, rows: dict[str, int | None]) -> list[Damage]:
    """The last TAIL stored blobs of every blobs node of ``rows`` (node path -> rows stored)
    read back: after an undo, before anything is appended again."""
    damages = []
    for node_path, stored in rows.items():
        if not stored or not node_path.endswith(f"/{BLOBS}"):
            continue
        try:
            node = h5.get_node(node_path)
        except tables.NoSuchNodeError:
            damages.append(Damage(path, node_path, "a node that held rows is gone"))
            continue
        except Exception as exc:  # noqa: BLE001
            damages.append(Damage(path, node_path, _last_line(exc)))
            continue
        damage = unreadable_rows(node, path, stored - TAIL, stored)
        if damage is not None:
            damages.append(damage)
    return damages


def damaged_files_set_aside(data_dir: str | os.PathLike) -> list[Path]:
    """Day files the writer found damaged and set aside (in quarantine/, or beside the day
    file when the rebuild holds fewer rows): each waits for an operator."""
    data_dir = Path(data_dir)
    found: Iterable[Path] = [*data_dir.glob("quarantine/*.h5.damaged-*"),
                             *data_dir.glob("[0-9]*/[0-9]*/*.h5.damaged-*")]
    return sorted(path for path in found if not path.name.endswith(".reason"))
