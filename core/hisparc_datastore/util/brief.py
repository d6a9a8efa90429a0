"""Describes any value a station sent in a few dozen characters, for log lines and reasons,
and shows a text's control characters rather than obey them.

An error message about an upload must never cost more than the message:
``f"{value!r:.40}"`` builds the whole repr before cutting it, which for a
decoded upload can be megabytes, and ``str()`` of a huge int raises.
"""

from __future__ import annotations

import reprlib
from typing import Any

_REPR = reprlib.Repr()
_REPR.maxlevel = 2
_REPR.maxstring = 40
_REPR.maxother = 40
_REPR.maxlong = 40
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 4


def brief(value: Any, limit: int = 60) -> str:
    """A repr of ``value`` of at most ``limit`` characters, whatever its size or nesting."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"<int of {value.bit_length()} bits>"
    if isinstance(value, (str, bytes)):
        # reprlib would repr the whole text before cutting it
        return clip(repr(value[:limit]), limit)
    try:
        text = _REPR.repr(value)
    except Exception:  # noqa: BLE001 - a description must never fail
        return f"<{type(value).__name__}>"
    return clip(text, limit)


def printable(text: str) -> str:
    """``text`` with every character that is not printable (line breaks, other control
    characters, direction overrides) shown as its escape, as ``repr`` shows it: text a
    client sent is shown in a log line, a reason file or a metric label, never obeyed."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def clip(text: str, limit: int = 200) -> str:
    """``text`` (an exception's message, say) cut to at most ``limit`` characters."""
    return text if len(text) <= limit else text[: limit - 3] + "..."
