"""The station upload receiver: an HTTP endpoint, protocol-compatible with the deployed
station software, that checks each upload and queues it durably for the writer.

``app``       the WSGI application (form parsing, the checks, the return codes)
``claims``    remembers accepted uploads so a re-sent batch is not queued twice
``owner``     names the process that owns a claim or a ``tmp/`` file, and tells if it lives
``spool``     the durable queue write: ``tmp/`` then rename into ``incoming/`` or ``suspicious/``
``guard``     password checks limited per client address and station number, past the
              budget waiting their turn
``refusals``  requests refused before a station is known, logged in full a few times, then
              in summary
``activity``  per listed station its last upload, acceptance and refusal (receiver-stations.json)
``metrics``   counts per return code, the answer time, per station, served at ``GET /metrics``
``server``    runs the application on waitress (``datastore serve``)
"""

from hisparc_datastore.receiver.app import ReceiverApp, build_app

__all__ = [
    "ReceiverApp", "build_app",
]
