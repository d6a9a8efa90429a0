"""``GET /health`` of the three services, and the probe that ``status`` and ``check`` send it.

Each service answers ``/health`` with a small JSON document naming itself, so a probe tells
our receiver from another program on the port; a load balancer or Nagios' ``check_http`` can
call it too. The answer says only that the process serves requests: what it is doing is in
``/metrics`` and ``datastore status``.
"""

from __future__ import annotations

import http.client
import json

import attrs

from hisparc_datastore import __version__
from hisparc_datastore.config import split_host_port

HEALTH_PATH = "/health"
CONTENT_TYPE = "application/json"
PROBE_TIMEOUT = 3.0


def health_body(service: str) -> bytes:
    """What ``GET /health`` answers for ``service`` (``receiver``, ``writer``, ``config-server``)."""
    return json.dumps({"service": service, "status": "ok", "version": __version__}).encode() + b"\n"


@attrs.frozen
class Probe:
    """The outcome of one ``/health`` probe: ``problem`` None when ``service`` answered."""

    service: str
    bind: str
    problem: str | None = None

    @property
    def up(self) -> bool:
        return self.problem is None

    def as_dict(self) -> dict:
        return {"service": self.service, "address": self.bind, "up": self.up, "problem": self.problem}


def probe(service: str, bind: str, timeout: float = PROBE_TIMEOUT) -> Probe:
    """Ask ``HOST:PORT`` for ``/health`` and check that ``service`` answers."""
    try:
        host, port = split_host_port(bind)
    except ValueError as exc:
        return Probe(service, bind, str(exc))
    if host in ("0.0.0.0", "::"):  # listening everywhere: loopback reaches it
        host = "127.0.0.1" if host == "0.0.0.0" else "::1"
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", HEALTH_PATH)
        reply = connection.getresponse()
        body = reply.read(65536)
    except OSError as exc:
        return Probe(service, bind, f"does not answer: {exc.strerror or exc}")
    except http.client.HTTPException as exc:
        return Probe(service, bind, f"answers no HTTP: {exc!r}")
    finally:
        connection.close()
    try:
        answered = json.loads(body).get("service") if reply.status == 200 else None
    except (ValueError, AttributeError):
        answered = None
    if answered != service:
        return Probe(service, bind, f"a program that is not our {service} answers (HTTP {reply.status})")
    return Probe(service, bind)
