"""``datastore rebuild``: regenerate a day file from the archive, compare, replace on request.

The rebuild runs the writer's own batch store over the archived uploads of
that date, in the order they were received, in a scratch directory beside the
day files; so the rebuilt file holds exactly what the writer would have stored. It is
then compared with the current file per station and table (row counts and
content, blobs included) and moved into place only with ``--replace``,
while holding the writer lock, keeping the old file beside it.
"""

from __future__ import annotations

import datetime
import os
import shutil
import sys
import threading
import time
from pathlib import Path

import attrs

from hisparc_datastore.config import ConfigError, Settings, load_settings, require_data_dir
from hisparc_datastore.plugin.registry import load_registry
from hisparc_datastore.queue.folders import Queue, read_archived
from hisparc_datastore.storage.contents import compare, read_contents
from hisparc_datastore.storage.layout import day_file_path
from hisparc_datastore.util.durable import fsync_dir, fsync_file
from hisparc_datastore.writer.batch import BatchStore, Tally, claimed_batches
from hisparc_datastore.writer.context import StoreContext
from hisparc_datastore.writer.lock import WriterLock
from hisparc_datastore.writer.state import WriterState

PROGRESS_EVERY = 2.0  # seconds


def rebuild_day(settings: Settings, date: datetime.date, scratch: Path, progress=None) -> Path:
    """Store the archived uploads of ``date`` into ``scratch``; return the rebuilt day file."""
    archived = Queue(settings.data_dir, fsync=False).archived(date)
    if not archived:
        raise ConfigError(f"no archived uploads for {date} in {Queue(settings.data_dir).archive}"
                          f" (kept {settings.archive_days} days)")
    shutil.rmtree(scratch, ignore_errors=True)
    incoming = scratch / "incoming"
    incoming.mkdir(parents=True)
    for path in archived:
        stat = path.stat()
        target = incoming / path.name.removesuffix(".gz")
        target.write_bytes(read_archived(path))
        # the receipt time orders the writer's claims, as it did the first time
        os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    scratch_settings = attrs.evolve(settings, data_dir=scratch, log=None, archive_days=0, fsync=False)
    tally = Tally()
    done = threading.Event()
    if progress is not None:
        def report() -> None:
            while not done.wait(PROGRESS_EVERY):
                progress(tally.uploads, len(archived), tally.events)
        threading.Thread(target=report, daemon=True).start()
    try:
        _store_all(scratch_settings, tally)
    finally:
        done.set()
    if progress is not None:
        progress(tally.uploads, len(archived), tally.events)
    rebuilt = day_file_path(scratch, date)
    if not rebuilt.exists():
        raise ConfigError(f"the archived uploads of {date} hold no storable events for that day")
    return rebuilt


def _store_all(settings: Settings, tally: Tally) -> None:
    """Store every upload queued in ``settings.data_dir`` once, as the writer's batches do;
    any error propagates (a rebuild that heals itself would hide what went wrong)."""
    context = StoreContext.open(settings)
    queue, files = context.queue, context.files
    store = BatchStore(context, load_registry(), tally, WriterState(settings.data_dir), threading.Event(),
                       undo_copies=False)
    with WriterLock(settings.data_dir):
        try:
            while names := queue.claim(settings.batch_uploads):
                for batch in claimed_batches(queue, names, settings):
                    store.store(batch)
        finally:
            files.close_all()


def replace_day_file(settings: Settings, rebuilt: Path, current: Path) -> Path | None:
    """Move ``rebuilt`` onto ``current`` under the writer lock; return where the old file went."""
    with WriterLock(settings.data_dir):
        kept = None
        current.parent.mkdir(parents=True, exist_ok=True)
        fsync_file(rebuilt)
        if current.exists():
            stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
            kept = current.with_name(f"{current.name}.before-rebuild-{stamp}")
            os.replace(current, kept)
        os.replace(rebuilt, current)
        fsync_dir(current.parent)
        return kept


def rebuild_command(config_path: str, date: str, replace: bool = False) -> int:
    settings = load_settings(config_path)
    require_data_dir(settings)
    try:
        day = datetime.date.fromisoformat(date)
    except ValueError:
        raise ConfigError(f"date {date!r} is not YYYY-MM-DD") from None
    current = day_file_path(settings.data_dir, day)
    scratch = settings.data_dir / f"rebuild-{day:%Y-%m-%d}"
    started = time.monotonic()

    def progress(uploads: int, total: int, events: int) -> None:
        # progress on a terminal; in logs and pipes only the final count
        if uploads < total and not sys.stderr.isatty():
            return
        print(f"rebuild {day}: {uploads}/{total} uploads, {events} events stored "
              f"({time.monotonic() - started:.0f} s)", file=sys.stderr, flush=True)

    try:
        rebuilt = rebuild_day(settings, day, scratch, progress)
        registry = load_registry()
        new = read_contents(rebuilt, registry)
        print(f"rebuilt {current.name}: {len(new)} station tables, "
              f"{sum(len(rows) for rows in new.values())} rows")
        if current.exists():
            try:
                differences = compare(new, read_contents(current, registry))
            except Exception as exc:  # noqa: BLE001 - a damaged file is what rebuilds are for
                print(f"{current} cannot be read ({type(exc).__name__}: {exc}); it differs")
                differences = ["unreadable"]
        else:
            print(f"{current} does not exist")
            differences = ["missing"]
        for difference in differences:  # expected: the rebuild; found: the current file
            if not isinstance(difference, str):
                print(f"  differs: {difference}")
        if not differences:
            print(f"{current} is equal to the rebuild: nothing to do")
            shutil.rmtree(scratch, ignore_errors=True)
            return 0
        if not replace:
            kept = settings.data_dir / f"{current.name}.rebuilt"
            os.replace(rebuilt, kept)
            shutil.rmtree(scratch, ignore_errors=True)
            print(f"not replaced; the rebuilt file is {kept} (run with --replace to use it)")
            return 1
        kept = replace_day_file(settings, rebuilt, current)
        shutil.rmtree(scratch, ignore_errors=True)
        print(f"replaced {current}" + (f"; the old file is {kept}" if kept else ""))
        return 0
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
