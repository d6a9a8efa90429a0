"""Remembers accepted uploads, so a batch the station re-sends is answered ``100`` but queued once.

The station software re-sends a batch whenever the reply is lost. The
memory is a small SQLite database under ``data_dir`` (WAL mode, with a busy
time-out) so that every receiver process, and a restarted one, shares it.
An upload is recorded only after its queue file is durable.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

DB_NAME = "receiver.sqlite"
BUSY_TIMEOUT_MS = 5000
# Forgetting old uploads is a DELETE; do it now and then rather than on every insert.
PRUNE_EVERY_SECONDS = 600
# A claim older than this belongs to a request that died; it no longer blocks the upload.
CLAIM_TIMEOUT_SECONDS = 120.0

NEW, DUPLICATE, IN_FLIGHT = "new", "duplicate", "in flight"

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


class Dedup:
    """The uploads accepted within the last ``window_hours``, by station and md5 checksum."""

    def __init__(self, path: str | os.PathLike, window_hours: float) -> None:
        self.path = Path(path)
        self.window = window_hours * 3600.0
        self._local = threading.local()  # sqlite3 connections must stay in their thread
        self._last_prune = 0.0
        db = self._connect()
        try:
            db.executescript(_SCHEMA)
        finally:
            db.close()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                             check_same_thread=True)
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        db.execute("PRAGMA journal_mode = WAL")
        # NORMAL is durable against a process crash; a power cut may lose the latest
        # records, which costs at worst one duplicate queue file, never an upload.
        db.execute("PRAGMA synchronous = NORMAL")
        return db

    @property
    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = self._connect()
        return db

    def seen(self, station_id: int, checksum: str, now: float | None = None) -> bool:
        """True when this station's upload with this checksum was accepted within the window."""
        now = time.time() if now is None else now
        row = self._db.execute(
            "SELECT accepted_at, durable FROM accepted WHERE station_id = ? AND checksum = ?",
            (station_id, checksum),
        ).fetchone()
        return row is not None and bool(row[1]) and row[0] >= now - self.window

    def claim(self, station_id: int, checksum: str, now: float | None = None) -> str:
        """Atomically, across threads and processes: ``NEW`` (the caller queues it, then
        calls :meth:`remember` or :meth:`forget`), ``DUPLICATE`` (accepted already) or
        ``IN_FLIGHT`` (another request is queueing the same bytes right now)."""
        now = time.time() if now is None else now
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute(
                "SELECT accepted_at, durable FROM accepted WHERE station_id = ? AND checksum = ?",
                (station_id, checksum),
            ).fetchone()
            if row is not None and row[1] and row[0] >= now - self.window:
                return DUPLICATE
            if row is not None and not row[1] and row[0] >= now - CLAIM_TIMEOUT_SECONDS:
                return IN_FLIGHT
            db.execute("INSERT OR REPLACE INTO accepted (station_id, checksum, accepted_at, durable) "
                       "VALUES (?, ?, ?, 0)", (station_id, checksum, now))
            return NEW
        finally:
            db.execute("COMMIT")

    def forget(self, station_id: int, checksum: str) -> None:
        """Drop a claim whose upload could not be queued, so the station's retry is taken."""
        self._db.execute("DELETE FROM accepted WHERE station_id = ? AND checksum = ? AND durable = 0",
                         (station_id, checksum))

    def remember(self, station_id: int, checksum: str, now: float | None = None) -> None:
        """Record an upload whose queue file is durable."""
        now = time.time() if now is None else now
        self._db.execute(
            "INSERT OR REPLACE INTO accepted (station_id, checksum, accepted_at, durable) "
            "VALUES (?, ?, ?, 1)",
            (station_id, checksum, now),
        )
        if now - self._last_prune > PRUNE_EVERY_SECONDS:
            self._last_prune = now
            self.prune(now)

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
