"""``datastore config-server``: publicdb's station-list push over XML-RPC.

publicdb calls ``xmlrpc.client.ServerProxy(DATASTORE_PROXY).reload_datastore()``
with no arguments after a station or a password changes (its docker-compose
file names port 8002, the deployed daemon served ``/RPC2``). The answer is
``True`` once the new list is in place; a refused list is an XML-RPC fault
whose message says why, which publicdb raises after its own change is saved,
so the operator sees it there and in our log.

One request at a time (the standard library's server is single-threaded):
two pushes never write the list at once.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import xmlrpc.client
from xmlrpc.server import SimpleXMLRPCRequestHandler, SimpleXMLRPCServer

from hisparc_datastore.config import ConfigError, Settings, load_settings
from hisparc_datastore.ops.logsetup import configure_logging
from hisparc_datastore.stations.sync import StationListRefused, reload_from_publicdb

log = logging.getLogger(__name__)

DEFAULT_BIND = "127.0.0.1:8002"
RPC_PATH = "/RPC2"
FAULT_REFUSED = 1  # the fault code publicdb sees when a list is refused


class _Handler(SimpleXMLRPCRequestHandler):
    rpc_paths = (RPC_PATH,)

    def log_message(self, format: str, *args: object) -> None:
        log.info("%s %s", self.address_string(), format % args)


class ConfigService:
    """The functions offered over XML-RPC."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def reload_datastore(self) -> bool:
        try:
            reload_from_publicdb(self.settings)
        except (StationListRefused, ConfigError) as exc:
            raise xmlrpc.client.Fault(FAULT_REFUSED, f"station list not replaced: {exc}") from None
        return True


def make_config_server(settings: Settings, host: str = "127.0.0.1", port: int = 0) -> SimpleXMLRPCServer:
    """An XML-RPC server (not yet serving) offering ``reload_datastore`` at ``/RPC2``."""
    server = SimpleXMLRPCServer((host, port), requestHandler=_Handler, logRequests=True,
                                allow_none=False)
    server.register_function(ConfigService(settings).reload_datastore, "reload_datastore")
    server.register_introspection_functions()
    return server


def config_server_command(config: str | os.PathLike, bind: str = DEFAULT_BIND) -> int:
    """Serve until SIGTERM or SIGINT; returns the exit status (0)."""
    from hisparc_datastore.ops.http import parse_bind

    settings = load_settings(config)
    host, port = parse_bind(bind)
    configure_logging(settings, also_stderr=True)
    if not settings.station_list_url:
        raise ConfigError(f"{settings.source}: [General] station_list_url is not set: "
                          "reload_datastore() would have nothing to fetch")
    try:
        server = make_config_server(settings, host, port)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {bind}: {exc.strerror or exc}") from None

    def on_signal(signum: int, frame: object) -> None:
        # shutdown() waits for serve_forever() to return, which runs in this very thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    host, port = server.server_address[:2]
    log.info("config server on http://%s:%s%s: reload_datastore() fetches %s into %s",
             host, port, RPC_PATH, settings.station_list_url, settings.station_list)
    with server:
        server.serve_forever(poll_interval=0.5)
    log.info("config server stopped")
    return 0
