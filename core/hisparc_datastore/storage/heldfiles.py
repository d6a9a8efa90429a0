"""Day files that another process (a reader) holds open, and the uploads waiting for them.

HDF5 locks a file while it is open: a reader's shared lock refuses the writer's
exclusive one. Rather than retry a whole batch until the reader lets go (which
would stop every station's data behind one notebook left open), the writer sets
aside the uploads that touch a held day file, stores the rest, and looks again
every few seconds. See docs/exactly-once.md, "Readers".
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import attrs

log = logging.getLogger(__name__)

RECHECK_S = 5.0  # seconds between looks at a held day file
HELD = "held open by another process"  # the usual reason; any other: the file cannot be written


def holders(path: Path, locks: Path = Path("/proc/locks")) -> list[int]:
    """Pids of the processes holding a lock on ``path``, where the system can tell (Linux)."""
    try:
        st = os.stat(path)
        lines = locks.read_text().splitlines()
    except OSError:
        return []
    wanted = (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
    pids = []
    for line in lines:
        fields = line.split()
        # "1: FLOCK  ADVISORY  READ 4016 fe:00:2147891 0 EOF"; a waiter's line has "->" second.
        if len(fields) < 6 or fields[1] == "->":
            continue
        try:
            major, minor, inode = fields[5].split(":")
            where = (int(major, 16), int(minor, 16), int(inode))
            pid = int(fields[4])
        except ValueError:
            continue
        if where == wanted and pid > 0 and pid != os.getpid():
            pids.append(pid)
    return sorted(set(pids))


def describe_holders(pids: Iterable[int]) -> str:
    """``pid 4016 (ptdump)`` for each holder, or a plain phrase when none can be told."""
    named = []
    for pid in pids:
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            name = "?"
        named.append(f"pid {pid} ({name})")
    return ", ".join(named) if named else "another process"


@attrs.define
class HeldFiles:
    """The held day files the writer knows of and the claimed uploads set aside for them."""

    recheck_s: float = RECHECK_S
    clock: Callable[[], float] = time.monotonic
    since: dict[Path, float] = attrs.field(factory=dict)  # held day file -> when first found held
    waiting: dict[str, frozenset[Path]] = attrs.field(factory=dict)  # upload name -> its held files
    reasons: dict[Path, str] = attrs.field(factory=dict)  # held day file -> why, when not HELD
    _last_look: float = 0.0

    def set_aside(self, name: str, paths: Iterable[Path], reasons: Mapping[Path, str] | None = None) -> None:
        """Keep the claimed upload ``name`` until every one of ``paths`` is released;
        ``reasons``: why a path cannot be written, when not HELD (a reader)."""
        paths = frozenset(paths)
        now = self.clock()
        for path in paths:
            if path not in self.since:
                self.since[path] = now
                reason = (reasons or {}).get(path, HELD)
                # One line per held file, not one per retry: a reader may keep it all night.
                if reason == HELD:
                    log.warning("%s is held open by %s; uploads for it wait (in partial/) until it "
                                "is released, the rest of the queue goes on", path,
                                describe_holders(holders(path)))
                else:
                    self.reasons[path] = reason
                    log.error("%s %s; uploads for it wait (in partial/) until it can be written, "
                              "the rest of the queue goes on", path, reason)
        self.waiting[name] = paths
        self._last_look = now

    def due(self) -> bool:
        """Time to look again whether a held file was released."""
        return bool(self.waiting) and self.clock() - self._last_look >= self.recheck_s

    def released(self, is_held: Callable[[Path], bool]) -> list[str]:
        """Look at each held file with ``is_held``; return the waiting uploads now free to store."""
        self._last_look = self.clock()
        for path in sorted(self.since):
            if is_held(path):
                continue
            log.info("%s was %s after %.0f s: storing the %d uploads that waited for it",
                     path, "released" if self.reasons.pop(path, None) is None else "writable again",
                     self.clock() - self.since.pop(path),
                     sum(path in paths for paths in self.waiting.values()))
        free = sorted(name for name, paths in self.waiting.items() if not paths & self.since.keys())
        for name in free:
            del self.waiting[name]
        return free

    def describe(self) -> list[dict]:
        """The held files for ``datastore status``: path, since when (Unix time), holders,
        uploads, and the reason (None: held open by another process)."""
        ago = self.clock()
        return [{"path": str(path), "since": time.time() - (ago - since), "holders": holders(path),
                 "uploads": sum(path in paths for paths in self.waiting.values()),
                 "reason": self.reasons.get(path)}
                for path, since in sorted(self.since.items())]

    def forget(self) -> list[str]:
        """Drop every waiting upload (they stay claimed for the next writer); return their names."""
        names = sorted(self.waiting)
        self.waiting.clear()
        self.since.clear()
        self.reasons.clear()
        return names
