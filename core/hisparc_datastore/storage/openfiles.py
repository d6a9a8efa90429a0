"""The day files the writer has open: at most MAX_OPEN_FILES, the least recently used closed first."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import tables

from hisparc_datastore.storage.errors import describe
from hisparc_datastore.storage.layout import DayFile

log = logging.getLogger(__name__)

MAX_OPEN_FILES = 4


class OpenFiles:
    """Day files kept open across batches, so that a backlog spanning days needs few opens."""

    def __init__(self) -> None:
        self._files: dict[Path, DayFile] = {}  # in least-recent order

    def get(self, path: Path) -> DayFile:
        """The open day file at ``path``, opened (or created) if need be."""
        day_file = self._files.pop(path, None)
        if day_file is None:
            if len(self._files) >= MAX_OPEN_FILES:
                oldest = next(iter(self._files))
                self._files.pop(oldest).close()
            day_file = DayFile(path)
        self._files[path] = day_file  # re-inserting keeps the dict in least-recent order
        return day_file

    def __contains__(self, path: object) -> bool:
        return path in self._files

    def __len__(self) -> int:
        return len(self._files)

    def __iter__(self) -> Iterator[Path]:
        return iter(list(self._files))

    def close_all(self) -> None:
        while self._files:
            _, day_file = self._files.popitem()
            try:
                day_file.close()
            except (OSError, tables.HDF5ExtError) as exc:
                log.error("closing %s failed: %s", day_file.path, describe(exc))
