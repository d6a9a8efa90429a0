"""The hooks a detector plugin implements.

A plugin is a module or object registered under the ``hisparc_datastore``
entry-point group. It implements any of these functions, decorated with
:data:`hookimpl`.
"""

from __future__ import annotations

import datetime
import random

import attrs
import pluggy

from hisparc_datastore.plugin.eventtype import EventType

hookspec = pluggy.HookspecMarker("hisparc_datastore")
hookimpl = pluggy.HookimplMarker("hisparc_datastore")


@attrs.frozen
class SimulatedStation:
    """A station of the built-in simulator, and which detectors it has."""

    number: int
    cluster: str
    has_weather: bool = False
    has_lightning: bool = False


@hookspec
def datastore_event_types() -> list[EventType]:
    """Return the event types this plugin stores, one per upload code."""


@hookspec
def datastore_simulate_events(
    station: SimulatedStation, start: datetime.datetime, seconds: int, rng: random.Random
) -> list[dict]:
    """Return the events this plugin's detector would send from ``station``
    during ``seconds`` seconds from ``start``, as station event dicts
    (``{'header': ..., 'datalist': ...}``). Used by the demo and benchmarks."""
