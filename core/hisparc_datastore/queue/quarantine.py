"""Setting aside and quarantine: uploads the writer cannot store as they are, kept with why.

Part of :class:`~hisparc_datastore.queue.folders.Queue` (mixed in): a claimed upload over a
bound goes to ``suspicious/``; one that cannot be read, the events that cannot be stored and
the raw bytes the receiver refused go to ``quarantine/``, each with ``NAME.reason`` beside it,
within the bound of its station and kind (queue/holding.py).
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import os
import threading
from collections.abc import Iterable
from pathlib import Path

from hisparc_datastore.queue.holding import Holding, HoldLimits
from hisparc_datastore.queue.names import EVENTS_SUFFIX, REASON_SUFFIX, REFUSED_SUFFIX
from hisparc_datastore.util.brief import printable
from hisparc_datastore.util.durable import move, write_atomically

# The Queue's log, whichever part of it speaks: its lines read as they always have.
log = logging.getLogger("hisparc_datastore.queue.folders")

# Refusals of the same bytes from the same station are one entry; its count is rewritten
# in place, one thread at a time (processes may race and lose a count, never the bytes).
_REFUSED_LOCK = threading.Lock()
_COUNT_PREFIX = "refused "


class QuarantineMixin:
    """Queue's methods that hold uploads back: ``set_aside``, ``quarantine_file``,
    ``quarantine_events``, ``keep_refused`` and ``quarantined``. They use the Queue's
    folders, ``fsync``, ``hold_limits`` and ``_holdings``."""

    def holding(self, folder: Path) -> Holding:
        """The bound of ``quarantine/`` or ``suspicious/`` (queue/holding.py)."""
        held = self._holdings.get(folder.name)
        if held is None or held.limits != self.hold_limits:
            held = self._holdings[folder.name] = Holding(folder, self.hold_limits, self.fsync)
        return held

    def _hold(self, folder: Path, name: str, size: int, reason: str, put) -> Path:
        """Keep ``name`` in ``folder`` by ``put(target)``, with its reason (lines already
        printable); beyond the bound of its station and kind, as the first or latest sample,
        counted."""
        held = self.holding(folder)
        if held.admit(name, size):
            target = folder / name
            write_atomically(folder / (name + REASON_SUFFIX), reason.encode() + b"\n",
                             fsync=self.fsync)
            put(target)
            return target
        with held.beyond(name, size, reason) as target:
            put(target)
        log.warning("%s/%s: %s beyond the bound of its station and kind (hold_files, hold_mb): counted "
                    "in %s.reason, kept only as a sample", folder.name, name, _size_text(size), target.name)
        return target

    def quarantine_file(self, name: str, reason: str) -> Path:
        """Move a claimed upload that cannot be read at all into quarantine."""
        target = self._hold(self.quarantine, name, _size_of(self.partial / name), printable(reason),
                            lambda target: move(self.partial / name, target, fsync=self.fsync))
        log.error("quarantined %s: %s", name, reason)
        return target

    def set_aside(self, name: str, reason: str) -> Path:
        """Move a claimed upload over a bound per upload into ``suspicious/``, with why; a
        ``datastore requeue`` stores it anyway."""
        target = self._hold(self.suspicious, name, _size_of(self.partial / name), printable(reason),
                            lambda target: move(self.partial / name, target, fsync=self.fsync))
        log.warning("set aside %s in %s: %s", name, self.suspicious, reason)
        return target

    def quarantine_events(self, name: str, payload: bytes, reasons: Iterable[str]) -> Path:
        """Keep the events of an upload that cannot be stored, as a queue file of their own."""
        return self._hold(self.quarantine, events_name(name), len(payload),
                          "\n".join(map(printable, reasons)),
                          lambda target: write_atomically(target, payload, fsync=self.fsync))

    def keep_refused(self, data: bytes, station_id: int, cluster: str, reason: str) -> tuple[Path, int]:
        """Keep the raw bytes of an authenticated upload the receiver refused, with why; the
        same bytes from the same station again only count once more. Returns the entry and
        how many times it was refused."""
        checksum = hashlib.md5(data).hexdigest()
        target = self.quarantine / f"{station_id}-{checksum}{REFUSED_SUFFIX}"
        reason_file = target.with_name(target.name + REASON_SUFFIX)
        now = _utc_stamp()
        with _REFUSED_LOCK:
            count, first = 0, now
            try:
                for line in reason_file.read_text().splitlines():
                    if line.startswith(_COUNT_PREFIX):
                        words = line.split()
                        count, first = int(words[1]), words[4].rstrip(",")
            except (OSError, ValueError, IndexError):
                count, first = 0, now
            if count and not target.exists():
                count = 0  # requeued meanwhile: a new entry
            count += 1
            if count == 1 and not self.holding(self.quarantine).admit(target.name, len(data)):
                with self.holding(self.quarantine).beyond(target.name, len(data), reason) as sample:
                    write_atomically(sample, data, fsync=self.fsync)
                return sample, 1
            header = f"station {station_id} cluster {printable(cluster)}\n"
            reason = printable(reason)
            tally = f"{_COUNT_PREFIX}{count} time(s), first {first}, last {now}\n"
            # The bytes first: a reason file never names a count of bytes not kept.
            if not target.exists():
                write_atomically(target, data, fsync=self.fsync)
            write_atomically(reason_file, (header + reason + "\n" + tally).encode(), fsync=self.fsync)
        return target, count

    def quarantined(self) -> list[tuple[str, str]]:
        """Every quarantined file with its reason."""
        entries = []
        if not self.quarantine.is_dir():
            return entries
        for name in sorted(os.listdir(self.quarantine)):
            if name.endswith(REASON_SUFFIX) or name.startswith("."):
                continue
            reason_file = self.quarantine / (name + REASON_SUFFIX)
            reason = reason_file.read_text() if reason_file.exists() else "(no reason recorded)"
            entries.append((name, reason.strip()))
        return entries


def _utc_stamp() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def default_hold_limits() -> HoldLimits:
    """The bounds of quarantine/ and suspicious/ at the settings' defaults (a service sets
    its own from its settings: ``hold_limits``)."""
    from hisparc_datastore.config import SETTINGS

    default = {setting.name: setting.default for setting in SETTINGS}
    return HoldLimits(default["hold_files"], default["hold_mb"] * 1_000_000)


def hold_limits(settings) -> HoldLimits:
    return HoldLimits(settings.hold_files, settings.hold_mb * 1_000_000)


def _size_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _size_text(size: int) -> str:
    return f"{size} bytes"


def events_name(name: str) -> str:
    """The quarantine name of the events kept from the upload ``name``: ``NAME.events``, and
    no second suffix when those events come round again."""
    return name if name.endswith(EVENTS_SUFFIX) else name + EVENTS_SUFFIX
