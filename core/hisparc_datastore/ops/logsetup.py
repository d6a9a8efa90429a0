"""Logging for the three services: the ``log`` file, rotated by the operator's logrotate.

Receiver, writer and config-server may all name the same ``[General] log``. Each appends to
it (``O_APPEND``: whole lines, in any order) and none rotates it: a rotating handler in each
of three processes deletes what another one just rotated (a forced rollover lost 4 of 6
lines). ``WatchedFileHandler`` notices when logrotate has renamed the file and opens a new
one at the path before the next line; SIGHUP makes every service reopen at once
(:func:`reopen`).
"""

from __future__ import annotations

import datetime
import json
import logging
import logging.handlers
import sys

from hisparc_datastore.config import Settings
from hisparc_datastore.util.brief import printable

FORMAT = "%(asctime)s %(process)d %(name)s %(levelname)s: %(message)s"


def utc_time(record: logging.LogRecord) -> str:
    """``2026-12-06T04:54:47.123+00:00``: ISO 8601 in UTC with its offset, as status prints
    times, whatever the host's time zone."""
    moment = datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
    return moment.isoformat(timespec="milliseconds")


class UtcFormatter(logging.Formatter):
    """The one text line of every service: UTC time, pid, logger, level, message. Every record
    is one line: a client's text in a message (a station field, a form value) cannot start a
    line of its own that reads like the services' own. A traceback still follows on lines of
    its own, each indented, so none of them reads as a record."""

    def __init__(self) -> None:
        super().__init__(FORMAT)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return utc_time(record)

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802
        record.message = printable(record.message)
        return super().formatMessage(record)

    def formatException(self, ei) -> str:  # noqa: N802
        return "\n".join("  " + printable(line) for line in super().formatException(ei).splitlines())

    def formatStack(self, stack_info: str) -> str:  # noqa: N802
        return "\n".join("  " + printable(line) for line in stack_info.splitlines())


class JsonFormatter(logging.Formatter):
    """One JSON object a line (``[General] log_format = json``), for a log shipper: the same
    fields as the text line, and the traceback as one string. The message is escaped as in
    the text line, so a client's text reads the same (and as harmless) in both."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": utc_time(record), "pid": record.process, "logger": record.name,
                 "level": record.levelname, "message": printable(record.getMessage())}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def make_formatter(settings: Settings) -> logging.Formatter:
    return JsonFormatter() if settings.log_format == "json" else UtcFormatter()


def configure_logging(settings: Settings, also_stderr: bool = True) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.setLevel(settings.loglevel.upper())
    formatter = make_formatter(settings)
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
