"""Prepares the writer's next batches in a second process while the writer appends this one.

Decoding queue files and building rows is about half of the writer's time and
touches no day file; appending is the other half. With the two in separate
processes they run on two cores at once; when the writer is ready for a batch
the child has not finished, it prepares the rest itself from the back rather
than wait (:class:`_Child`). The child only reads queue files and
answers with :class:`.prepare.PreparedUpload` objects: it never writes, holds
neither the writer's lock nor a day file, and whatever happens to it the
writer prepares the batch itself instead. It is started with ``spawn``: a forked child would carry
copies of the writer's open HDF5 files.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path

from hisparc_datastore import _hangup
from hisparc_datastore.plugin.registry import Registry, load_registry
from hisparc_datastore.storage.errors import describe
from hisparc_datastore.writer.prepare import Bounds, PreparedUpload, Screen, prepare_file

log = logging.getLogger(__name__)

MAX_FAILURES = 3  # child deaths before the writer stops starting new ones
#: Batches handed to the child before the writer needs them: with two, it always has the next
#: in hand when it finishes one, whatever the size of the batch the writer is storing.
AHEAD = 2
_POLL_S = 0.1  # how often a wait for the child looks at the stop flag
_LOCK_S = 5.0  # the child holds the batch lock for microseconds; longer, it died holding it
#: Seconds the writer waits for the child's answer once it has prepared its own share. By then
#: the child has at most the one upload it took last left to prepare (seconds, for the
#: largest); a child that is alive but stopped (SIGSTOP, a debugger) or hung never answers,
#: so it is killed and replaced and the writer prepares the batch itself.
ANSWER_TIMEOUT_S = 60.0


def _table_map(registry: Registry) -> dict[str, str]:
    return {event_type.upload_code: event_type.table_name for event_type in registry}


def _serve(inbox: Connection, conn: Connection, split, lock, partial: str, bounds: Bounds) -> None:
    """The child: prepare the batches it is sent, from the front, while the writer may take
    uploads from the back (see :class:`_Child`); until it is sent None or the pipe closes."""
    # A Ctrl-C or a SIGTERM to the whole group is for the writer, which finishes its batch
    # and then ends the child.
    # SIGHUP (logrotate's, to the group) is the writer's too. All three stay blocked from the
    # start (_hangup.ignored_in_children) until ignored here.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, (signal.SIGINT, signal.SIGTERM, signal.SIGHUP))
    registry = load_registry()
    screen = Screen(registry, bounds)
    conn.send(_table_map(registry))
    folder = Path(partial)
    while True:
        try:
            message = inbox.recv()
        except EOFError:
            return
        if message is None:
            return
        number, names = message
        with lock:
            if split[0] < number:  # equal: the writer began it first; greater: a stale batch
                split[0], split[1], split[2] = number, 0, len(names)
        done = {}
        while True:
            with lock:
                if split[0] != number or split[1] >= split[2]:
                    break
                index = split[1]
                split[1] += 1
            done[index] = prepare_file(folder / names[index], screen)
        conn.send((number, done))


class _Child:
    """One child process, and a thread that takes in its answers as soon as they come: a
    child blocked on a full pipe could not go on with the batch after.

    The batch the child works on is shared as ``split = [number, next, end]``: the child
    takes uploads from the front (``next``), the writer, rather than wait, from the back
    (``end``), each under ``lock``; the child's answer holds the uploads before ``next``.
    """

    def __init__(self, partial: Path, bounds: Bounds) -> None:
        # The resource tracker (started for the lock) and the child start with these blocked.
        with _hangup.ignored_in_children():
            context = multiprocessing.get_context("spawn")
            # One pipe each way: the writer's end of the one to the child does not block, so a
            # child that stops reading (SIGSTOP) makes a send fail once the pipe is full, rather
            # than hang the writer; the answers are read by a thread that may block.
            inbox, self.outbox = context.Pipe(duplex=False)
            self.conn, theirs = context.Pipe(duplex=False)
            os.set_blocking(self.outbox.fileno(), False)
            self.split = context.RawArray("q", 3)
            self.split[0] = -1
            self.lock = context.Lock()
            self.process = context.Process(
                target=_serve, args=(inbox, theirs, self.split, self.lock, str(partial), bounds),
                name="datastore-preparer", daemon=True)
            self.process.start()
        theirs.close()
        inbox.close()
        self.answers: dict[int, dict] = {}
        self.tables: dict | None = None  # the event types it found, its first answer
        self.ended: str | None = None  # why no more answers will come
        self.changed = threading.Condition()
        self.reader = threading.Thread(target=self._read, name="preparer-answers", daemon=True)
        self.reader.start()

    def take_from_back(self, number: int, size: int) -> int | None:
        """The index of one upload of batch ``number`` (of ``size`` uploads) for the writer to
        prepare itself, or None when the child has taken the rest."""
        with self._locked():
            if self.split[0] > number:
                return None  # the child finished it and went on
            if self.split[0] < number:
                # Not begun: the child joins in from the front when it gets to it.
                self.split[0], self.split[1], self.split[2] = number, 0, size
            if self.split[1] >= self.split[2]:
                return None
            self.split[2] -= 1
            return int(self.split[2])

    def front_taken(self, number: int, size: int) -> int:
        """How many uploads of batch ``number`` the child took: final once the back is empty."""
        with self._locked():
            return size if self.split[0] > number else int(self.split[1])

    def _read(self) -> None:
        try:
            self.tables = self.conn.recv()
            while True:
                number, prepared = self.conn.recv()
                with self.changed:
                    self.answers[number] = prepared
                    self.changed.notify_all()
        except (OSError, EOFError) as exc:
            with self.changed:
                self.ended = f"exit code {self.process.exitcode}" if isinstance(exc, EOFError) else str(exc)
                self.changed.notify_all()

    @contextlib.contextmanager
    def _locked(self):
        if not self.lock.acquire(timeout=_LOCK_S):
            raise EOFError("the child holds the batch lock")  # it died holding it
        try:
            yield
        finally:
            self.lock.release()

    def wait(self, number: int, stop: threading.Event, timeout: float) -> dict | None:
        """The answer for batch ``number``; None when a stop is asked for first. Raises
        EOFError when the child ended without giving it, TimeoutError when it gave none
        within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while number not in self.answers:
                if stop.is_set():
                    return None
                if self.ended is not None:
                    raise EOFError(self.ended)
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"it gave no answer in {timeout:g} s (stopped or hung?)")
                self.changed.wait(_POLL_S)
            for stale in [key for key in self.answers if key < number]:
                del self.answers[stale]  # of batches the writer prepared itself
            return self.answers.pop(number)

    def end(self) -> None:
        with contextlib.suppress(OSError):  # BlockingIOError: it reads nothing; killed below
            self.outbox.send(None)
        # It finishes the batch in hand first; killed, it loses nothing (it only reads).
        self.process.join(timeout=2)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.reader.join()  # it reads the end of the pipe and leaves
        self.conn.close()
        self.outbox.close()


class Preparer:
    """The writer's side of the child: hands it the next batches, takes their results."""

    def __init__(self, partial: Path, registry: Registry, bounds: Bounds | int,
                 enabled: bool = True) -> None:
        self.partial = partial
        self.bounds = Bounds.given(bounds)
        self.enabled = enabled
        self.failures = 0
        self.batches_ahead = 0  # batches the child prepared (in part) for the writer
        self.uploads_here = 0  # uploads of those the writer prepared itself rather than wait
        self.screen = Screen(registry, self.bounds)
        self._tables = _table_map(registry)  # what the child must find too
        self._child: _Child | None = None
        self._sent = 0  # number of the last batch sent
        self._waiting: dict[tuple[str, ...], int] = {}  # names -> number, sent and not yet taken

    @property
    def _process(self) -> multiprocessing.process.BaseProcess | None:
        return self._child.process if self._child is not None else None

    def submit(self, names: list[str]) -> None:
        """Start preparing ``names`` in the child (started if need be)."""
        if not self.enabled or not names:
            return
        if self._child is not None and self._child.ended is not None:
            # It died while idle: without this, the writer would go on preparing every
            # batch itself, taking the child's untouched batches from the back.
            self._failed(f"it stopped ({self._child.ended})")
            if not self.enabled:
                return
        try:
            if self._child is None:
                self._child = _Child(self.partial, self.bounds)
            self._sent += 1
            # BlockingIOError when the child has not read what it was sent (stopped, hung)
            self._child.outbox.send((self._sent, list(names)))
            self._waiting[tuple(names)] = self._sent
        except Exception as exc:  # noqa: BLE001 - the writer goes on without it
            self._failed(f"could not hand it a batch ({describe(exc)})")

    def take(self, names: list[str], stop: threading.Event) -> list[PreparedUpload | None] | None:
        """The uploads ``names``, prepared by the child and, rather than wait for it, by the
        writer from the back of the batch; None when they were not sent to the child, the
        child failed, or a stop was asked for. The caller then prepares them itself."""
        number = self._waiting.pop(tuple(names), None)
        child = self._child
        if number is None or child is None:
            return None
        mine = {}
        try:
            while (index := child.take_from_back(number, len(names))) is not None:
                if stop.is_set():
                    return None
                mine[index] = prepare_file(self.partial / names[index], self.screen)
            # The child may have finished the batch, with nothing left for it, and gone on: it
            # took what the writer did not.
            theirs = min(child.front_taken(number, len(names)), len(names) - len(mine))
            answer = child.wait(number, stop, ANSWER_TIMEOUT_S) if theirs else {}
        except EOFError as exc:
            self._failed(f"it stopped ({exc})")
            return None
        except TimeoutError as exc:
            # Killed (SIGKILL ends a stopped process too) and replaced at the next batch.
            self._failed(str(exc))
            return None
        except Exception as exc:  # noqa: BLE001 - the writer goes on without it
            self._failed(f"taking its answer failed ({describe(exc)})")
            return None
        if answer is None or (theirs and not self._same_event_types(child.tables)):
            return None
        prepared = {**answer, **mine}
        if sorted(prepared) != list(range(len(names))):
            self._failed(f"its answer for {len(names)} uploads held {len(answer)}, the writer "
                         f"prepared {len(mine)}")
            return None
        self.batches_ahead += theirs > 0
        self.uploads_here += len(mine)
        return [prepared[index] for index in range(len(names))]

    def answered(self, names: list[str]) -> bool:
        """Whether the child has given its answer for the batch ``names``."""
        number = self._waiting.get(tuple(names))
        child = self._child
        if number is None or child is None:
            return False
        with child.changed:
            return number in child.answers

    def close(self) -> None:
        """End the child."""
        if self._child is not None:
            self._child.end()
            self._child = None
        self._waiting.clear()

    def _same_event_types(self, tables: dict | None) -> bool:
        # The child's first answer is the event types it found: another set than ours (a
        # plugin registered by hand, an install changed under us) would store other rows.
        if tables == self._tables:
            return True
        self.close()
        self.enabled = False
        log.warning("the preparing process finds other event types than the writer; "
                    "the writer prepares its batches itself")
        return False

    def _failed(self, what: str) -> None:
        self.close()
        self.failures += 1
        if self.failures >= MAX_FAILURES:
            self.enabled = False
        log.warning("the process preparing the next batch failed: %s; the writer prepares the "
                    "batch itself%s", what, "" if self.enabled else " from now on")
