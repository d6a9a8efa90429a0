"""Named crash points, so tests can kill the writer at an exact step.

Set ``DATASTORE_CRASH_AT=name`` (optionally ``name:N`` for the N-th time the
point is reached) and the process kills itself with SIGKILL there. Unset,
each point costs one dictionary look-up.
"""

from __future__ import annotations

import os
import signal

_target = os.environ.get("DATASTORE_CRASH_AT", "")
_name, _, _count = _target.partition(":")
_remaining = int(_count or 1)


def point(name: str) -> None:
    global _remaining
    if name != _name:
        return
    _remaining -= 1
    if _remaining <= 0:
        os.kill(os.getpid(), signal.SIGKILL)
