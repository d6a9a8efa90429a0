"""Which receiver process owns a claim or a ``tmp/`` file, and whether it still lives.

A pid alone is not enough: after a crash the kernel may give the same pid to
another process, and after a reboot every pid is new. A process is named by
its host, the kernel's boot id, its pid and its start time in clock ticks
since boot (field 22 of ``/proc/PID/stat``); the same four values can only
belong to the same process. Where ``/proc`` is missing, liveness falls back
to ``kill(pid, 0)``.
"""

from __future__ import annotations

import functools
import os
import socket
import time
from pathlib import Path

import attrs

_PROC = Path("/proc")
# /proc/stat's btime has whole seconds, so a start time in wall-clock seconds is
# known to about a second; a process that started later than this after a file
# was named cannot have named it.
START_SLACK_SECONDS = 2.0


@attrs.frozen
class Owner:
    """One process on one host during one boot."""

    host: str
    boot: str
    pid: int
    start: int  # clock ticks since boot; 0 when unknown

    @property
    def token(self) -> str:
        return f"{self.host}/{self.boot}/{self.pid}/{self.start}"

    @classmethod
    def parse(cls, token: str) -> Owner | None:
        """The owner a :attr:`token` names, or None for an empty or foreign token."""
        parts = token.split("/")
        if len(parts) != 4 or not parts[2].isdigit() or not parts[3].isdigit():
            return None
        return cls(parts[0], parts[1], int(parts[2]), int(parts[3]))


def current() -> Owner:
    """This process (computed each call: a forked child is another owner)."""
    pid = os.getpid()
    return Owner(_host(), boot_id(), pid, start_ticks(pid) or 0)


def is_alive(owner: Owner) -> bool | None:
    """True or False when it can be told; None for a process on another host."""
    if owner.host != _host():
        return None
    if owner.boot != boot_id():
        return False  # the machine rebooted since: every process of then is gone
    start = start_ticks(owner.pid)
    if start is not None:
        return start == owner.start
    return False if _has_proc() else _kill_zero(owner.pid)


def pid_may_have_named(pid: int, named_at: float) -> bool:
    """Whether process ``pid`` is alive and was already running at ``named_at`` (Unix time):
    a file named then by ``pid`` may still be being written."""
    start = start_ticks(pid)
    if start is None:
        return False if _has_proc() else _kill_zero(pid)
    started = _boot_time() + start / os.sysconf("SC_CLK_TCK")
    return started <= named_at + START_SLACK_SECONDS


def start_ticks(pid: int) -> int | None:
    """The start time of process ``pid`` in clock ticks since boot; None if it does not exist
    (or there is no ``/proc``)."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # the command name in parentheses may hold spaces and parentheses: split after the last ')'
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[19])  # field 22 of the whole line


@functools.cache
def boot_id() -> str:
    try:
        return (_PROC / "sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


@functools.cache
def _boot_time() -> float:
    try:
        for line in (_PROC / "stat").read_text().splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    except OSError:
        pass
    return time.time() - time.monotonic()


@functools.cache
def _host() -> str:
    return socket.gethostname().replace("/", "_")


@functools.cache
def _has_proc() -> bool:
    # with /proc, a pid without /proc/PID is gone; without it, only kill(pid, 0) can tell
    return (_PROC / "self" / "stat").exists()


def _kill_zero(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, another user's
    return True
