"""Helpers for test suites, the core's and each plugin's.

``helpers``        runs the real writer over a few uploads and reads the rows back
``pytest_plugin``  the ``testdata`` and ``seed_text`` fixtures (``pytest11`` entry point)
``serveprocess``   ``datastore serve`` as a child process, for crash tests and chaos
``crashstates``    the states a power cut can leave on disk, from strace records (``bench/powercut.py``)
"""

from hisparc_datastore.testing.helpers import (
    description_columns,
    event,
    queue_uploads,
    read_station,
    sample_values,
    seed_columns,
    settings_for,
    store,
    store_and_read,
    wait_for,
)

__all__ = [
    "description_columns", "event", "queue_uploads", "read_station", "sample_values",
    "seed_columns", "settings_for", "store", "store_and_read", "wait_for",
]
