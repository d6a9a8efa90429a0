"""What the names of queue files tell: their suffixes, and the station a name is from."""

from __future__ import annotations

REASON_SUFFIX = ".reason"  # beside a kept file, why it was kept
#: Queue files ``requeue`` put back: an operator chose to store them, bounds per upload or not.
REQUEUED_PREFIX = "requeued-"
EVENTS_SUFFIX = ".events"  # events of an upload kept in quarantine
# The raw ``data`` of an upload the receiver refused though the station was
# authenticated (bad checksum, cannot be unpickled), kept for an operator.
REFUSED_SUFFIX = ".refused"


def station_of(name: str) -> str:
    """The station a queue file is from, as far as its name tells: the receiver names them
    ``TIME-PID-COUNTER-STATION-MD5`` (``requeued-TIME-`` before it after a requeue), the test
    helpers ``TIME-STATION-N``; any other name is taken as a station of its own."""
    parts = name.removeprefix(REQUEUED_PREFIX).split("-")
    if parts and parts[0].isdigit() and name.startswith(REQUEUED_PREFIX):
        parts = parts[1:]
    if len(parts) == 5:
        return parts[3]
    if len(parts) == 3:
        return parts[1]
    return name
