"""Remembers accepted uploads, so a batch the station re-sends is answered ``100`` but queued once.

The station software re-sends a batch whenever the reply is lost. The
memory is a small SQLite database under ``data_dir`` (WAL mode, with a busy
time-out) so that every receiver process, and a restarted one, shares it.
An upload is recorded only after its queue file is durable.

A claim records its owner (host, boot, pid and start time: see ``owner``)
and the name of its queue file, and says ``committing`` from the moment that
file is whole in ``tmp/`` until it is remembered. Renaming ``tmp/NAME`` into
the queue is the single atomic step in between, so for a claim that says
``committing`` the file's place is the answer: still in ``tmp/``, nothing
was queued; gone from ``tmp/``, it was. That is how a claim left by a dead
process is settled at once, without waiting for its time-out, and never
lets a queued upload be queued a second time (docs/exactly-once.md).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from pathlib import Path

import attrs

from hisparc_datastore.queue.folders import DUPLICATE, IN_FLIGHT, NEW
from hisparc_datastore.receiver import owner as owners

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 5000
# Forgetting old uploads is a DELETE; do it now and then rather than on every insert.
PRUNE_EVERY_SECONDS = 600
# A claim older than this whose owner cannot be seen dead (another host, or a live process
# whose request hangs) no longer blocks the upload.
CLAIM_TIMEOUT_SECONDS = 120.0


# Names of this process's claims whose release failed (a full disk refuses the DELETE too):
# their requests are over and nothing was queued, so the station's retry takes them over at
# once instead of hearing 205 until CLAIM_TIMEOUT_SECONDS have passed.
_ABANDONED: set[str] = set()

_SCHEMA = """
CREATE TABLE IF NOT EXISTS accepted (
    station_id INTEGER NOT NULL,
    checksum TEXT NOT NULL,
    accepted_at REAL NOT NULL,
    durable INTEGER NOT NULL DEFAULT 1,  -- 0: being queued by some request right now
    PRIMARY KEY (station_id, checksum)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS accepted_at ON accepted (accepted_at);
"""
# Added after the first release; a database made before gets them with their defaults.
_COLUMNS = {
    "owner": "TEXT NOT NULL DEFAULT ''",  # Owner.token of the claiming process
    "name": "TEXT NOT NULL DEFAULT ''",  # its queue file's name, in tmp/ until renamed
    "committing": "INTEGER NOT NULL DEFAULT 0",  # 1: tmp/NAME is whole, the rename may have happened
}


@attrs.frozen
class Claim:
    """A claim not yet settled, as read from the database."""

    station_id: int
    checksum: str
    accepted_at: float
    owner: str
    name: str
    committing: bool


class Dedup:
    """The uploads accepted within the last ``window_hours``, by station and md5 checksum.

    ``tmp_dir`` is where the receiver writes queue files before renaming them
    (``data_dir/tmp``, beside the database, unless told otherwise); ``owner`` whose
    claims these are (this process unless told otherwise: tests claim as others).
    """

    def __init__(self, path: str | os.PathLike, window_hours: float,
                 tmp_dir: str | os.PathLike | None = None, owner: owners.Owner | None = None) -> None:
        self.path = Path(path)
        self.window = window_hours * 3600.0
        self.tmp_dir = Path(tmp_dir) if tmp_dir is not None else self.path.parent / "tmp"
        self._local = threading.local()  # sqlite3 connections must stay in their thread
        self._last_prune = 0.0
        self._fixed_owner = owner
        self._owner: owners.Owner | None = None
        db = self._connect()
        try:
            db.executescript(_SCHEMA)
            present = {row[1] for row in db.execute("PRAGMA table_info(accepted)")}
            for column, declaration in _COLUMNS.items():
                if column not in present:
                    try:
                        db.execute(f"ALTER TABLE accepted ADD COLUMN {column} {declaration}")
                    except sqlite3.OperationalError as exc:
                        if "duplicate column" not in str(exc):  # another process added it first
                            raise
        finally:
            db.close()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                             check_same_thread=True)
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        db.execute("PRAGMA journal_mode = WAL")
        # FULL: every commit fsyncs the WAL before it returns. The rename into the queue
        # relies on the committing mark being on disk, and removing a tmp file on the claim
        # naming it being gone; under NORMAL a power cut could undo either and double or
        # lose an upload (docs/exactly-once.md, "Power cuts").
        db.execute("PRAGMA synchronous = FULL")
        return db

    @property
    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = self._connect()
        return db

    @property
    def owner(self) -> str:
        """This process's token (a forked child gets its own)."""
        if self._fixed_owner is not None:
            return self._fixed_owner.token
        if self._owner is None or self._owner.pid != os.getpid():
            self._owner = owners.current()
        return self._owner.token

    def seen(self, station_id: int, checksum: str, now: float | None = None) -> bool:
        """True when this station's upload with this checksum was accepted within the window."""
        now = time.time() if now is None else now
        row = self._db.execute(
            "SELECT accepted_at, durable FROM accepted WHERE station_id = ? AND checksum = ?",
            (station_id, checksum),
        ).fetchone()
        return row is not None and bool(row[1]) and row[0] >= now - self.window

    def claim(self, station_id: int, checksum: str, name: str = "", now: float | None = None) -> str:
        """Atomically, across threads and processes: ``NEW`` (the caller queues it as ``name``,
        then calls :meth:`commit`, :meth:`remember` or :meth:`forget`), ``DUPLICATE`` (accepted
        already) or ``IN_FLIGHT`` (another live request is queueing the same bytes right now).

        A claim of a process that is gone is settled first: taken over when its file
        never left ``tmp/``, remembered (so ``DUPLICATE``) when it did.
        """
        now = time.time() if now is None else now
        db = self._db
        abandoned = None
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute(
                "SELECT accepted_at, durable, owner, name, committing FROM accepted "
                "WHERE station_id = ? AND checksum = ?", (station_id, checksum),
            ).fetchone()
            if row is not None and row[1] and row[0] >= now - self.window:
                return DUPLICATE
            if row is not None and not row[1]:
                claim = Claim(station_id, checksum, row[0], row[2], row[3], bool(row[4]))
                verdict = self._judge(claim, now)
                if verdict == DUPLICATE:
                    db.execute("UPDATE accepted SET durable = 1 WHERE station_id = ? AND checksum = ?",
                               (station_id, checksum))
                    log.warning("upload of station %s (md5 %s) was queued as %s by a receiver that "
                                "died before remembering it: not queued again", station_id, checksum,
                                claim.name)
                    return DUPLICATE
                if verdict == IN_FLIGHT:
                    return IN_FLIGHT
                dead = claim if self._is_dead(claim) else None
            else:
                dead = None
            db.execute("INSERT OR REPLACE INTO accepted (station_id, checksum, accepted_at, durable, "
                       "owner, name, committing) VALUES (?, ?, ?, 0, ?, ?, 0)",
                       (station_id, checksum, now, self.owner, name))
            abandoned = dead  # no claim names its file once this is committed
            return NEW
        finally:
            db.execute("COMMIT")
            if abandoned is not None:
                _ABANDONED.discard(abandoned.name)
            # Only once no claim names it: a committing claim whose tmp file is gone
            # would read as queued.
            if abandoned is not None and abandoned.name:
                _unlink(self.tmp_dir / abandoned.name)

    def _judge(self, claim: Claim, now: float) -> str:
        """What an unsettled claim means for a new request with the same bytes."""
        if claim.committing and claim.name and not (self.tmp_dir / claim.name).exists():
            return DUPLICATE  # renamed into the queue: the rename is the commit
        if self._is_dead(claim):
            return NEW  # nothing of it reached the queue, and nobody will finish it
        if claim.committing and self._is_alive(claim):
            return IN_FLIGHT  # renaming right now; it will be answered 100 in a moment
        return IN_FLIGHT if claim.accepted_at >= now - CLAIM_TIMEOUT_SECONDS else NEW

    @staticmethod
    def _is_alive(claim: Claim) -> bool:
        owner = owners.Owner.parse(claim.owner)
        return owner is not None and owners.is_alive(owner) is True

    def _is_dead(self, claim: Claim) -> bool:
        if claim.name in _ABANDONED and claim.owner == self.owner:
            return True  # this process gave it up: as good as dead
        owner = owners.Owner.parse(claim.owner)
        return owner is not None and owners.is_alive(owner) is False

    @staticmethod
    def abandon(name: str) -> None:
        """Say that the claim of ``name``, whose upload was not queued, could not be dropped;
        the next request for the same upload, or the next sweep, settles it."""
        if name:
            _ABANDONED.add(name)

    def commit(self, station_id: int, checksum: str, name: str) -> bool:
        """Say that ``tmp/name`` is whole and about to be renamed into the queue; False when
        the claim is no longer this request's (taken over after its time-out)."""
        return self._db.execute(
            "UPDATE accepted SET committing = 1 WHERE station_id = ? AND checksum = ? "
            "AND name = ? AND owner = ? AND durable = 0",
            (station_id, checksum, name, self.owner)).rowcount == 1

    def forget(self, station_id: int, checksum: str, name: str | None = None) -> bool:
        """Drop a claim whose upload could not be queued, so the station's retry is taken;
        with ``name``, only that request's claim (not one that took it over).

        False when the upload is remembered as queued after all: a retry found the claim
        committing while its file was briefly out of ``tmp/`` (see ``Spool.store``).
        """
        db = self._db
        if name is None:
            db.execute("DELETE FROM accepted WHERE station_id = ? AND checksum = ? AND durable = 0",
                       (station_id, checksum))
        else:
            db.execute("DELETE FROM accepted WHERE station_id = ? AND checksum = ? AND durable = 0 "
                       "AND name = ?", (station_id, checksum, name))
        row = db.execute("SELECT durable FROM accepted WHERE station_id = ? AND checksum = ?",
                         (station_id, checksum)).fetchone()
        return row is None or not row[0]

    def forget_name(self, name: str) -> None:
        """Drop any unsettled claim whose queue file is ``name``: its tmp file is about to be
        removed, and a committing claim without its tmp file would read as queued."""
        self._db.execute("DELETE FROM accepted WHERE name = ? AND durable = 0", (name,))

    def remember(self, station_id: int, checksum: str, now: float | None = None) -> None:
        """Record an upload whose queue file is durable."""
        now = time.time() if now is None else now
        db = self._db
        # Not worth an fsync: lost in a power cut, the claim it replaces still says committing
        # and its tmp file is gone, which reads as queued, the same answer.
        db.execute("PRAGMA synchronous = NORMAL")
        try:
            db.execute(
                "INSERT OR REPLACE INTO accepted (station_id, checksum, accepted_at, durable) "
                "VALUES (?, ?, ?, 1)",
                (station_id, checksum, now),
            )
        finally:
            db.execute("PRAGMA synchronous = FULL")
        if now - self._last_prune > PRUNE_EVERY_SECONDS:
            self._last_prune = now
            self.prune(now)

    def settle_dead(self) -> tuple[int, int]:
        """Settle every claim of a process that is gone (at start-up): remember those whose
        file reached the queue, drop the others. Returns (remembered, dropped)."""
        db = self._db
        remembered = dropped = 0
        abandoned = []
        db.execute("BEGIN IMMEDIATE")
        try:
            rows = db.execute("SELECT station_id, checksum, accepted_at, owner, name, committing "
                              "FROM accepted WHERE durable = 0").fetchall()
            for row in rows:
                claim = Claim(row[0], row[1], row[2], row[3], row[4], bool(row[5]))
                if not self._is_dead(claim):
                    continue
                key = (claim.station_id, claim.checksum)
                if claim.committing and claim.name and not (self.tmp_dir / claim.name).exists():
                    db.execute("UPDATE accepted SET durable = 1 WHERE station_id = ? AND checksum = ?", key)
                    remembered += 1
                else:
                    db.execute("DELETE FROM accepted WHERE station_id = ? AND checksum = ?", key)
                    abandoned.append(claim.name)
                    dropped += 1
        finally:
            db.execute("COMMIT")
        for name in abandoned:
            _ABANDONED.discard(name)
            if name:
                _unlink(self.tmp_dir / name)
        if remembered or dropped:
            log.warning("claims of receivers that died: %d queued and now remembered, %d never queued "
                        "and dropped", remembered, dropped)
        return remembered, dropped

    def prune(self, now: float | None = None) -> int:
        """Forget uploads older than the window."""
        now = time.time() if now is None else now
        return self._db.execute("DELETE FROM accepted WHERE accepted_at < ?", (now - self.window,)).rowcount

    def close(self) -> None:
        """Close this thread's connection (others close when their thread ends)."""
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None


def _unlink(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("cannot remove %s of a receiver that died: %s", path, exc.strerror)
