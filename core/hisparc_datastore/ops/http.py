"""What the services' small HTTP endpoints share: a ``HOST:PORT`` setting read as an address."""

from __future__ import annotations

from hisparc_datastore.config import ConfigError


def parse_bind(bind: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8080`` for IPv6) as a host and a port number."""
    host, sep, port = bind.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"--bind {bind!r}: expected HOST:PORT, e.g. 127.0.0.1:8080")
    return host, int(port)
