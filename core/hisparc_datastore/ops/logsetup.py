"""Logging as the deployed datastore configures it: the ``log`` file, rotated daily."""

from __future__ import annotations

import logging
import logging.handlers
import sys

from hisparc_datastore.config import Settings

FORMAT = "%(asctime)s %(process)d %(name)s %(levelname)s: %(message)s"


def configure_logging(settings: Settings, also_stderr: bool = True) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.setLevel(settings.loglevel.upper())
    formatter = logging.Formatter(FORMAT)
    if settings.log is not None:
        settings.log.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.TimedRotatingFileHandler(
            settings.log, when="midnight", utc=True, backupCount=30
        )
        handler.setFormatter(formatter)
        root.addHandler(handler)
    if also_stderr or settings.log is None:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(formatter)
        root.addHandler(stream)
