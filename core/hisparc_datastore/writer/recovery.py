"""Finishes or undoes the batch a previous writer (or attempt) left in the journal, and
replaces day files that keep failing with rebuilds from the archive."""

from __future__ import annotations

import datetime
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import tables

from hisparc_datastore.codec.decoding import Upload, parse_queue_file
from hisparc_datastore.config import ConfigError
from hisparc_datastore.queue.folders import REASON_SUFFIX
from hisparc_datastore.storage.errors import StorageError, describe, disk_full, held_by_another
from hisparc_datastore.storage.layout import copy_day_file_tmp, date_of_day_file, drop_copies
from hisparc_datastore.storage.undo import keep_unfinished_space
from hisparc_datastore.storage.verify import blobs_tails
from hisparc_datastore.util.durable import fsync_dir
from hisparc_datastore.writer.context import StoreContext
from hisparc_datastore.writer.journal import APPLIED, APPLYING, NEW
from hisparc_datastore.writer.rebuild import rebuild_day

log = logging.getLogger(__name__)


class Recovery:
    """Puts the day files and the queue back in a state the journal accounts for.

    ``screen`` gives an upload's storable dates (for archiving a stored one);
    without ``resilient`` (a rebuild) nothing is healed and errors propagate.
    """

    def __init__(self, context: StoreContext, screen: Callable[[Upload], tuple[list, set]],
                 resilient: bool = True) -> None:
        self.context = context
        self.settings = context.settings
        self.queue, self.journal, self.files = context.queue, context.journal, context.files
        self.screen = screen
        self.resilient = resilient
        self.suspects: set[Path] = set()  # day files open when a batch failed
        self.damaged: set[Path] = set()  # day files found damaged: healed by the next recovery
        self.undid = False  # the last recover() undid a batch: check what the retry writes

    def recover(self, suspect: bool = False) -> None:
        """Finish or undo the batch a previous writer (or attempt) left in the journal.

        With ``suspect`` (a batch keeps failing with HDF5 errors though the
        disk has room) the day files that were open are taken as damaged.
        """
        transaction = self.journal.read()
        damaged = (set(self.suspects) if self.resilient and suspect
                   and not disk_full(self.settings.data_dir) else set())
        damaged |= self.damaged
        self.undid = False
        if transaction is not None and transaction.state == APPLYING:
            log.warning("undoing an unfinished batch of %d uploads", len(transaction.uploads))
            self.undid = True
            self.files.close_all()  # a handle on a file about to be replaced would write into it
            restored = self._restore(transaction.copies)
            damaged -= restored
            self.suspects -= restored
            for path, sizes in transaction.sizes.items():
                if Path(path) in damaged or Path(path) in restored or not Path(path).exists():
                    continue
                if not self._undo(Path(path), sizes, transaction.reached.get(path, {})):
                    damaged.add(Path(path))
            self.files.close_all()
        for path in sorted(damaged):
            known = transaction.sizes.get(str(path), {}) if transaction is not None else {}
            self._heal(path, {node: size for node, size in known.items() if size})
        self.damaged -= damaged
        if suspect:
            self.suspects.clear()
        if transaction is None:
            return
        if transaction.state == APPLIED:
            log.info("finishing the release of %d stored uploads", len(transaction.uploads))
            drop_copies(transaction.copies, self.settings.fsync)
            for name in transaction.uploads:
                self._archive_claimed(name)
                self.queue.release(name)
            self.queue.sync_partial()
        self.journal.clear()

    def _undo(self, path: Path, sizes: dict[str, int | None], reached: dict[str, int]) -> bool:
        """Cut the day file ``path`` back to the journal's ``sizes``, clearing what the attempt
        wrote up to ``reached`` (see :mod:`hisparc_datastore.storage.undo`), then read back
        the last stored blobs of every node it touched. False: the file is damaged."""
        try:
            keep_unfinished_space(path, self.settings.fsync)
            day_file = self.files.get(path)
            day_file.truncate(sizes, reached)
            day_file.flush(self.settings.fsync)
            damages = blobs_tails(day_file.h5, path, sizes)
        except (OSError, tables.HDF5ExtError, tables.NodeError, ValueError, KeyError) as exc:
            if (not self.resilient or disk_full(self.settings.data_dir)
                    or held_by_another(exc) or isinstance(exc, OSError)):
                raise StorageError(describe(exc)) from exc
            log.error("%s cannot be cut back (%s): taking it as damaged", path, describe(exc))
            return False
        for damage in damages:
            log.critical("stored blobs unreadable after undoing a batch: %s", damage)
        if damages and not self.resilient:
            raise StorageError(f"{path}: stored blobs unreadable after undoing a batch: {damages[0]}")
        return not damages

    def _restore(self, copies: dict[str, str]) -> set[Path]:
        """Put back the day files a batch added nodes to as they were before it: the copy made
        then, or no file for one the batch made. Returns the files put back. A copy already
        put back (a crash after the rename) is gone; its file is then cut back as usual."""
        restored = set()
        for path, copy in copies.items():
            day_file = Path(path)
            if copy == NEW:
                if not day_file.exists():
                    continue  # not made yet: nothing to undo
                # It held nothing but this batch, whose uploads are still claimed.
                day_file.unlink()
            elif Path(copy).exists():
                os.replace(copy, day_file)
            else:
                # not made (or already put back): nothing was appended after it
                copy_day_file_tmp(Path(copy)).unlink(missing_ok=True)  # a copy cut short
                continue
            if self.settings.fsync:
                fsync_dir(day_file.parent)
            log.warning("%s put back as it was before the batch", day_file)
            restored.add(day_file)
        return restored

    def _heal(self, path: Path, known: dict[str, int]) -> None:
        """Replace a damaged day file by one rebuilt from the archive; keep the damaged one.

        ``known``: rows its nodes held before the failed batch (the journal's sizes). When
        the rebuild holds fewer rows in any node than those, or than can still be read from
        the damaged file, the damaged file is kept beside the day file, not in quarantine,
        so that what can be read of it is where a reader looks for that day.
        """
        self.files.close_all()
        date = date_of_day_file(path)
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        if not path.exists():
            return
        before = readable_rows(path)
        for node, size in known.items():
            before[node] = max(before.get(node, 0), size)
        rebuilt = None
        if self.settings.archive_days > 0 and self.queue.archived(date):
            scratch = self.settings.data_dir / f"rebuild-{date:%Y-%m-%d}"
            try:
                rebuilt = rebuild_day(self.settings, date, scratch)
            except ConfigError as exc:  # the archive holds nothing storable for that day
                log.error("cannot rebuild %s: %s", path, exc)
            except BaseException:
                shutil.rmtree(scratch, ignore_errors=True)
                raise  # disk full, say: the batch is retried and healing with it
        after = readable_rows(rebuilt) if rebuilt is not None else {}
        lost = sum(max(0, rows - after.get(node, 0)) for node, rows in before.items())
        aside = (path.with_name(f"{path.name}.damaged-{stamp}") if lost
                 else self.queue.quarantine / f"{path.name}.damaged-{stamp}")
        os.replace(path, aside)
        if rebuilt is not None:
            os.replace(rebuilt, path)
            shutil.rmtree(scratch, ignore_errors=True)
            reason = f"{path} was damaged (a crash inside HDF5): rebuilt from the archive"
        else:
            reason = (f"{path} was damaged and could not be rebuilt from the archive: a new day file "
                      "is started; recover this one's data with HDF5 tools")
        if lost:
            reason += (f"; the new file holds {lost} rows fewer than the damaged one held, which is "
                       f"kept beside it as {aside.name} (its readable rows: "
                       f"{sum(readable_rows(aside).values())})")
        reason_file = self.queue.quarantine / f"{path.name}.damaged-{stamp}{REASON_SUFFIX}"
        reason_file.write_text(reason + "\n")
        log.critical("%s; the damaged file is kept as %s", reason, aside)
        if self.settings.fsync:
            fsync_dir(path.parent)
            fsync_dir(reason_file.parent)

    def _archive_claimed(self, name: str) -> None:
        path = self.queue.partial / name
        if self.settings.archive_days <= 0 or not path.exists():
            return
        _, dates = self.screen(parse_queue_file(path.read_bytes()))
        self.queue.archive_claimed([(name, dates)])


def readable_rows(path: Path) -> dict[str, int]:
    """Rows per node of the day file ``path``, as far as it can be read (a damaged file may
    hide some nodes or refuse to open: those count as none)."""
    rows: dict[str, int] = {}
    try:
        with tables.open_file(str(path), "r") as h5:
            for node in h5.walk_nodes("/", "Leaf"):
                rows[node._v_pathname] = int(node.nrows)
    except Exception:  # noqa: BLE001 - whatever HDF5 says, what was read so far is the answer
        pass
    return rows
