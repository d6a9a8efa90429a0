"""SIGHUP taken note of from the ``datastore`` command's first line until a service acts on it.

A SIGHUP ends a process whose handler is not set yet. logrotate's postrotate meeting a
restart sends one within the first half second, while the command is still importing
(about 0.25 s) and reading its settings: it ended the writer, the receiver and the
config-server. The package's first line calls :func:`hold`; each service hands its own
handler to :func:`take_over`, which passes on a SIGHUP that came meanwhile.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable

_noted: list[int] = []


def _note(signum: int, frame: object) -> None:
    _noted.append(signum)


def hold() -> None:
    """In the ``datastore`` command's own process, note SIGHUP instead of ending; elsewhere
    (a program importing the package) leave its SIGHUP alone."""
    command = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if command != "datastore" or threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGHUP) is signal.SIG_DFL:
        signal.signal(signal.SIGHUP, _note)


def take_over(handler: Callable[[int, object], None]) -> object:
    """Set ``handler`` for SIGHUP and hand it a SIGHUP noted before; the previous handler."""
    previous = signal.signal(signal.SIGHUP, handler)
    while _noted:
        handler(_noted.pop(), None)
    return previous


def ignored_in_children() -> contextlib.AbstractContextManager:
    """Block SIGHUP, SIGINT and SIGTERM in this thread while a child process is started: the
    mask is inherited through fork and exec, so the child stays safe until it ignores them."""
    return _Blocked()


class _Blocked:
    _SIGNALS = (signal.SIGHUP, signal.SIGINT, signal.SIGTERM)

    def __enter__(self) -> None:
        self._old = signal.pthread_sigmask(signal.SIG_BLOCK, self._SIGNALS)

    def __exit__(self, *exc: object) -> None:
        # a signal that came meanwhile is delivered to this process now, not lost
        signal.pthread_sigmask(signal.SIG_SETMASK, self._old)
