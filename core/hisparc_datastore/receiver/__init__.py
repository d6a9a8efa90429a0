"""The station upload receiver: an HTTP endpoint, protocol-compatible with the deployed
station software, that checks each upload and queues it durably for the writer.

``app``       the WSGI application (form parsing, the checks, the return codes)
``stations``  the station list CSV, reloaded when it changes
``spool``     the durable queue write: ``tmp/`` then rename into ``incoming/`` or ``suspicious/``
``dedup``     remembers accepted uploads so a re-sent batch is not queued twice
``owner``     names the process that owns a claim or a ``tmp/`` file, and tells if it lives
``metrics``   counts per return code, served at ``GET /metrics``
``server``    runs the application on waitress (``datastore serve``)
"""

from .app import ReceiverApp, build_app

__all__ = ["ReceiverApp", "build_app"]
