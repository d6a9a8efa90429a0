"""What an operator sees and the services share: status, logging, progress, HTTP helpers.

``status``    ``datastore status``: is ingestion healthy, on one screen
``verify``    ``datastore verify``: every node and blob of day files read back
``check``     ``datastore check`` and ``datastore init``: is this host ready for the services
``logsetup``  logging as the deployed datastore configures it
``progress``  a one-line progress display, on a terminal only
``http``      ``HOST:PORT`` settings as addresses, Prometheus text (``metric``, ``exposition``)
``health``    ``GET /health`` of the services, and the probe status and check send it
``disk``      free space in data_dir, both reserves, and the days until it is full
"""

from hisparc_datastore.ops.logsetup import configure_logging
from hisparc_datastore.ops.progress import Progress

__all__ = [
    "Progress", "configure_logging",
]
