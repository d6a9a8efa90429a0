"""A one-line progress display for long commands, on a terminal only.

Logs and pipes get nothing from it: it writes only when its stream is a
terminal (``isatty``), redrawing one line in place, and clears it at the end.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import TextIO

INTERVAL_S = 0.5


class Progress:
    """Shows ``describe()`` every ``interval`` seconds while the ``with`` block runs."""

    def __init__(self, describe: Callable[[], str], stream: TextIO | None = None,
                 interval: float = INTERVAL_S) -> None:
        self.describe = describe
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self.active = bool(getattr(self.stream, "isatty", lambda: False)())
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._draw()

    def _draw(self) -> None:
        try:
            text = self.describe()
        except Exception:  # noqa: BLE001 - a progress line must never break the command
            return
        self.stream.write("\r\x1b[K" + text)
        self.stream.flush()

    def __enter__(self) -> Progress:
        if self.active:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.active:
            self._stop.set()
            self._thread.join()
            self.stream.write("\r\x1b[K")
            self.stream.flush()
