"""What the writer's batch store and its recovery work on together: one ``data_dir``'s
settings, queue, journal and open day files, made once and handed to both."""

from __future__ import annotations

import attrs

from hisparc_datastore.config import Settings
from hisparc_datastore.queue.folders import Queue, hold_limits
from hisparc_datastore.storage.openfiles import OpenFiles
from hisparc_datastore.writer.journal import Journal


@attrs.frozen
class StoreContext:
    settings: Settings
    queue: Queue
    journal: Journal
    files: OpenFiles

    @classmethod
    def open(cls, settings: Settings) -> StoreContext:
        """The queue and journal under ``settings.data_dir``, and no day file open yet."""
        queue = Queue(settings.data_dir, fsync=settings.fsync)
        queue.hold_limits = hold_limits(settings)
        return cls(settings, queue, Journal(settings.data_dir, fsync=settings.fsync), OpenFiles())
