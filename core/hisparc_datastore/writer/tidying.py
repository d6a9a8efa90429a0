"""The writer's idle work on the archive: drop uploads past retention, compress the rest if asked."""

from __future__ import annotations

import logging
import threading
import time

from hisparc_datastore.config import Settings
from hisparc_datastore.queue import holding
from hisparc_datastore.queue.folders import Queue
from hisparc_datastore.storage.errors import describe

log = logging.getLogger(__name__)

PRUNE_EVERY = 3600.0  # seconds between walks of the archive for expired uploads


def prune_held(queue: Queue, keep_days: int) -> int:
    """Remove what quarantine/ and suspicious/ have kept longer than ``keep_days``, saying so."""
    removed = 0
    for folder in (queue.quarantine, queue.suspicious):
        count = holding.prune(folder, keep_days)
        if count:
            log.warning("removed %d file(s) kept longer than hold_days %d from %s", count, keep_days, folder)
        removed += count
    return removed


class ArchiveTidier:
    """Tidies a slice at a time, so that new uploads and a stop are not kept waiting."""

    def __init__(self, settings: Settings, queue: Queue, stop: threading.Event) -> None:
        self.settings = settings
        self.queue = queue
        self.stop = stop
        self._last_prune = -PRUNE_EVERY

    def tidy(self) -> None:
        try:
            # Pruning walks the whole archive: once an hour is plenty for a retention in days.
            if time.monotonic() - self._last_prune > PRUNE_EVERY:
                self.queue.prune_archive(self.settings.archive_days)
                prune_held(self.queue, self.settings.hold_days)
                self._last_prune = time.monotonic()
            # Off by default: compressing writes the archive a second time, about half a byte
            # per byte stored (issue 23's written-per-stored), to save disk.
            while (self.settings.archive_compress and not self.stop.is_set()
                   and not self.queue.has_incoming()):
                if not self.queue.compress_archive(limit=20):
                    break
        except OSError as exc:
            log.error("tidying the archive failed (%s); will retry when idle", describe(exc))
