"""Logging for the three services: the ``log`` file, rotated by the operator's logrotate.

Receiver, writer and config-server may all name the same ``[General] log``. Each appends to
it (``O_APPEND``: whole lines, in any order) and none rotates it: a rotating handler in each
of three processes deletes what another one just rotated (a forced rollover lost 4 of 6
lines). ``WatchedFileHandler`` notices when logrotate has renamed the file and opens a new
one at the path before the next line; SIGHUP makes every service reopen at once
(:func:`reopen`).
"""

from __future__ import annotations

import logging
import logging.handlers
import sys

from hisparc_datastore.config import Settings
from hisparc_datastore.util.brief import printable

FORMAT = "%(asctime)s %(process)d %(name)s %(levelname)s: %(message)s"


class OneLineFormatter(logging.Formatter):
    """Every record is one line: a client's text in a message (a station field, a form
    value) cannot start a line of its own that reads like the services' own. A traceback
    still follows on lines of its own, each indented, so none of them reads as a record."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = printable(record.message)
        return super().formatMessage(record)

    def formatException(self, ei) -> str:
        return "\n".join("  " + printable(line) for line in super().formatException(ei).splitlines())

    def formatStack(self, stack_info: str) -> str:
        return "\n".join("  " + printable(line) for line in stack_info.splitlines())


def configure_logging(settings: Settings, also_stderr: bool = True) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.setLevel(settings.loglevel.upper())
    formatter = OneLineFormatter(FORMAT)
    if settings.log is not None:
        settings.log.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.WatchedFileHandler(settings.log, encoding="utf-8")
        handler.setFormatter(formatter)
        root.addHandler(handler)
    if also_stderr or settings.log is None:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(formatter)
        root.addHandler(stream)


def reopen() -> int:
    """Close and reopen every log file now (after SIGHUP); the number reopened."""
    reopened = 0
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.acquire()
            try:
                if handler.stream is not None:
                    handler.stream.close()
                handler.stream = handler._open()
                if isinstance(handler, logging.handlers.WatchedFileHandler):
                    handler._statstream()
            finally:
                handler.release()
            reopened += 1
    return reopened
