"""Prepares the writer's next batch in a second process while the writer appends this one.

Decoding queue files and building rows is about half of the writer's time and
touches no day file; appending is the other half. With the two in separate
processes they run on two cores at once. The child only reads queue files and
answers with :class:`.prepare.PreparedUpload` objects: it never writes, holds
no lock and no day file, and whatever happens to it the writer prepares the
batch itself instead. It is started with ``spawn``: a forked child would carry
copies of the writer's open HDF5 files.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
from multiprocessing.connection import Connection
from pathlib import Path

from .plugins import Registry, load_registry
from .prepare import PreparedUpload, Screen, prepare_file

log = logging.getLogger(__name__)

MAX_FAILURES = 3  # child deaths before the writer stops starting new ones
_POLL_S = 0.1  # how often a wait for the child looks at the stop flag


def _table_map(registry: Registry) -> dict[str, str]:
    return {event_type.upload_code: event_type.table_name for event_type in registry}


def _serve(conn: Connection, partial: str, minimum_year: int) -> None:
    """The child: prepare each list of names it is sent, until the writer closes the pipe."""
    # A Ctrl-C or a SIGTERM to the whole group is for the writer, which finishes its batch
    # and then closes the pipe; the child ends with it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    registry = load_registry()
    screen = Screen(registry, minimum_year)
    conn.send(_table_map(registry))
    folder = Path(partial)
    while True:
        try:
            number, names = conn.recv()
        except EOFError:
            return
        conn.send((number, [prepare_file(folder / name, screen) for name in names]))


class Preparer:
    """The writer's side of the child: hands it the next batch, takes the result."""

    def __init__(self, partial: Path, registry: Registry, minimum_year: int, enabled: bool = True) -> None:
        self.partial = partial
        self.registry = registry
        self.minimum_year = minimum_year
        self.enabled = enabled
        self.failures = 0
        self.batches_ahead = 0  # batches the child prepared that the writer stored
        self._process: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None
        self._greeted = False  # the child's event types were checked
        self._sent = 0  # number of the last batch sent
        self._waiting: dict[int, tuple[str, ...]] = {}  # sent, not yet taken: number -> names

    def submit(self, names: list[str]) -> None:
        """Start preparing ``names`` in the child (started if need be)."""
        if not self.enabled or not names:
            return
        try:
            if self._conn is None:
                self._start()
            self._sent += 1
            self._conn.send((self._sent, list(names)))
            self._waiting[self._sent] = tuple(names)
        except (OSError, EOFError, ValueError) as exc:
            self._failed(f"could not hand it a batch ({exc})")

    def take(self, names: list[str], stop: threading.Event) -> list[PreparedUpload | None] | None:
        """The child's uploads for ``names``, or None: not sent to it, the child failed, or a
        stop was asked for while waiting. The caller then prepares them itself."""
        wanted = tuple(names)
        if self._conn is None or wanted not in self._waiting.values():
            return None
        try:
            while self._waiting:
                while not self._conn.poll(_POLL_S):
                    if stop.is_set():
                        return None
                    if not self._process.is_alive() and not self._conn.poll(0):
                        raise EOFError(f"exit code {self._process.exitcode}")
                message = self._conn.recv()
                if not self._greeted:
                    if not self._same_event_types(message):
                        return None
                    continue
                number, prepared = message
                done = self._waiting.pop(number, None)
                if done == wanted:
                    self.batches_ahead += 1
                    return prepared
                # An answer for a batch the writer then prepared itself: dropped.
        except (OSError, EOFError) as exc:
            self._failed(f"it stopped ({exc})")
        return None

    def _same_event_types(self, tables: dict) -> bool:
        # The child's first answer is the event types it found: another set than ours (a
        # plugin registered by hand, an install changed under us) would store other rows.
        self._greeted = True
        if tables == _table_map(self.registry):
            return True
        self.close()
        self.enabled = False
        log.warning("the preparing process finds other event types than the writer; "
                    "the writer prepares its batches itself")
        return False

    def close(self) -> None:
        """End the child: it leaves when the pipe closes."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._process is not None:
            self._process.join(timeout=5)
            if self._process.is_alive():
                self._process.kill()
                self._process.join()
            self._process = None
        self._waiting.clear()

    def _start(self) -> None:
        context = multiprocessing.get_context("spawn")
        ours, theirs = context.Pipe()
        process = context.Process(target=_serve, args=(theirs, str(self.partial), self.minimum_year),
                                  name="datastore-preparer", daemon=True)
        process.start()
        theirs.close()
        self._process, self._conn, self._greeted = process, ours, False

    def _failed(self, what: str) -> None:
        self.close()
        self.failures += 1
        if self.failures >= MAX_FAILURES:
            self.enabled = False
        log.warning("the process preparing the next batch failed: %s; the writer prepares the "
                    "batch itself%s", what, "" if self.enabled else " from now on")
