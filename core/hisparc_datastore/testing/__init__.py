"""The testing kit: the one import a plugin's test suite needs, the core's suite's helpers too.

``pytest_plugins = ["hisparc_datastore.testing"]`` in a suite's top ``conftest.py`` enables the
``datastore`` fixture (nothing is registered for a suite that does not ask).

``kit``           ``Datastore``: a data_dir, config and station list with the plugins under test,
                  a real receiver and a real writer, and the rows read back and checked
``fixture``       the ``datastore`` fixture and its ``datastore`` marker
``helpers``       runs the real writer over a few uploads and reads the rows back
``serveprocess``  ``datastore serve`` as a child process, for crash tests and chaos
"""

from hisparc_datastore.testing.fixture import datastore, pytest_configure
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
from hisparc_datastore.testing.kit import (
    Datastore,
    ProcessesSeeInstalledPluginsOnly,
    Quarantined,
    queue_file_events,
    unix_seconds,
    upload_events,
)

__all__ = [
    "Datastore", "ProcessesSeeInstalledPluginsOnly", "Quarantined", "datastore", "description_columns",
    "event", "pytest_configure", "queue_file_events", "queue_uploads", "read_station", "sample_values",
    "seed_columns", "settings_for", "store", "store_and_read", "unix_seconds", "upload_events", "wait_for",
]
