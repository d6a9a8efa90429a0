"""The opt-in pytest plugin of the testing kit: ``pytest_plugins = ["hisparc_datastore.testing"]``
in a suite's top ``conftest.py`` gives its tests the ``datastore`` fixture.

Nothing is registered for a suite that does not ask: installing the core adds no fixtures to
every pytest run.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from hisparc_datastore.testing.kit import Datastore

MARKER = ("datastore(plugins=(), installed=True, processes=False, minimum_year=2000): "
          "how the datastore fixture is made (hisparc_datastore.testing.Datastore's arguments)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER)


@pytest.fixture
def datastore(tmp_path_factory: pytest.TempPathFactory,
              request: pytest.FixtureRequest) -> Iterator[Datastore]:
    """A datastore of its own for one test: a temporary data_dir, config.ini and station list,
    the installed plugins (and any passed with ``@pytest.mark.datastore(plugins=[...])`` or
    registered with ``datastore.register``), a real receiver and a real writer."""
    marker = request.node.get_closest_marker("datastore")
    store = Datastore(tmp_path_factory.mktemp("datastore"), **(marker.kwargs if marker else {}))
    try:
        yield store
    finally:
        store.close()
