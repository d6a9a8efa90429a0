import datetime
import logging

import pytest


@pytest.fixture
def moment() -> datetime.datetime:
    return datetime.datetime(2017, 2, 26, 7, 26, 4)


@pytest.fixture(autouse=True)
def restore_logging():
    """The command line configures the root logger for the process; undo that for the next test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)
