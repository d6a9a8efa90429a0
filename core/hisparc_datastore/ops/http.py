"""What the services' small HTTP endpoints share: a ``HOST:PORT`` setting read as an address,
and metrics written in the Prometheus text exposition format."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping

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
           parts: Mapping[str, object] | None = None,
           samples: Iterable[tuple[Mapping[str, object], object]] | None = None) -> list[str]:
    """One metric's ``# HELP`` and ``# TYPE`` lines and its samples: a single ``value``, one
    sample per label value (``by=(label, {label_value: value})``, in the mapping's order), one
    per name suffix (``parts={"_sum": s, "_count": n}``), or one per set of labels
    (``samples=[({label: value, ...}, n), ...]``)."""
    lines = [f"# HELP {name} {help}", f"# TYPE {name} {kind}"]
    if by is not None:
        label, values = by
        lines += [f'{name}{{{label}="{escape(str(key))}"}} {n}' for key, n in values.items()]
    elif parts is not None:
        lines += [f"{name}{suffix} {n}" for suffix, n in parts.items()]
    elif samples is not None:
        lines += [f"{name}{_labels(labels)} {n}" for labels, n in samples]
    else:
        lines.append(f"{name} {value}")
    return lines


def _labels(labels: Mapping[str, object]) -> str:
    inner = ",".join(f'{key}="{escape(str(value))}"' for key, value in labels.items())
    return f"{{{inner}}}" if inner else ""


class Histogram:
    """Observations counted into fixed buckets, for a Prometheus histogram (not thread-safe:
    the caller holds its own lock)."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1
                break
        self.sum += value
        self.count += 1

    def render(self, name: str, help: str) -> list[str]:
        lines = [f"# HELP {name} {help}", f"# TYPE {name} histogram"]
        running = 0
        for bound, n in zip(self.buckets, self.counts, strict=True):
            running += n
            lines.append(f'{name}_bucket{{le="{bound:g}"}} {running}')
        lines += [f'{name}_bucket{{le="+Inf"}} {self.count}', f"{name}_sum {self.sum:.6f}",
                  f"{name}_count {self.count}"]
        return lines


def build_info(prefix: str, started: float) -> list[list[str]]:
    """``PREFIX_build_info`` (the version of the core and of Python), ``PREFIX_plugin_info``
    (each installed detector plugin's distribution and version) and
    ``PREFIX_start_time_seconds``: what runs, since when."""
    import platform

    from hisparc_datastore import __version__

    return [
        metric(f"{prefix}_build_info", "gauge", "The running version of hisparc-datastore (always 1).",
               samples=[({"version": __version__, "python": platform.python_version()}, 1)]),
        metric(f"{prefix}_plugin_info", "gauge", "Installed detector plugins and their versions (always 1).",
               samples=[({"plugin": name, "version": version}, 1) for name, version in plugin_versions()]),
        metric(f"{prefix}_start_time_seconds", "gauge", "When this process started (Unix time).",
               f"{started:.3f}"),
    ]


@functools.cache
def plugin_versions() -> tuple[tuple[str, str], ...]:
    """(distribution, version) of every installed detector plugin, sorted; read once, as the
    services load their plugins once (a scrape read every distribution's metadata: 10 ms)."""
    from importlib.metadata import entry_points

    found = set()
    for entry in entry_points(group="hisparc_datastore"):
        dist = entry.dist
        found.add((dist.name, dist.version) if dist is not None else (entry.name, "unknown"))
    return tuple(sorted(found))


def exposition(*metrics: list[str]) -> str:
    """The text a scrape gets: the metrics one after the other, ending with a newline."""
    return "\n".join(line for lines in metrics for line in lines) + "\n"


def escape(value: str) -> str:
    """A label value as the text format quotes it, its control characters shown."""
    return printable(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
