"""What the services' small HTTP endpoints share: a ``HOST:PORT`` setting read as an address,
and metrics written in the Prometheus text exposition format."""

from __future__ import annotations

from collections.abc import Mapping

from hisparc_datastore.config import ConfigError, split_host_port
from hisparc_datastore.util.brief import printable

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # the Prometheus text format


def parse_bind(bind: str) -> tuple[str, int]:
    """A ``--bind HOST:PORT`` option (``[::1]:8080`` for IPv6) as a host and a port number."""
    try:
        return split_host_port(bind)
    except ValueError as exc:
        raise ConfigError(f"--bind {bind!r}: {exc}") from None


def metric(name: str, kind: str, help: str, value: object = None, *,
           by: tuple[str, Mapping[str, object]] | None = None,
           parts: Mapping[str, object] | None = None) -> list[str]:
    """One metric's ``# HELP`` and ``# TYPE`` lines and its samples: a single ``value``, one
    sample per label value (``by=(label, {label_value: value})``, in the mapping's order), or
    one per name suffix (``parts={"_sum": s, "_count": n}`` for a summary)."""
    lines = [f"# HELP {name} {help}", f"# TYPE {name} {kind}"]
    if by is not None:
        label, values = by
        lines += [f'{name}{{{label}="{escape(str(key))}"}} {n}' for key, n in values.items()]
    elif parts is not None:
        lines += [f"{name}{suffix} {n}" for suffix, n in parts.items()]
    else:
        lines.append(f"{name} {value}")
    return lines


def exposition(*metrics: list[str]) -> str:
    """The text a scrape gets: the metrics one after the other, ending with a newline."""
    return "\n".join(line for lines in metrics for line in lines) + "\n"


def escape(value: str) -> str:
    """A label value as the text format quotes it, its control characters shown."""
    return printable(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
