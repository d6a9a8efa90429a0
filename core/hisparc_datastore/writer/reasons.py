"""The fixed kinds of reasons an event is quarantined for, for metrics and summaries.

A reason names what the station sent (an upload code, a value); as a metric label
that would make one series per distinct text a station can invent. Metrics and
summaries carry the kind only; the full reason goes into the quarantine's reason file.
"""

from __future__ import annotations

import re

#: (kind, pattern of the reasons of that kind), tried in order; the reasons are made in
#: :mod:`.prepare` (the screen) and :mod:`.rows` (building a row).
_PATTERNS = (
    ("not_an_event", r"event is not a dict with a header: "),
    ("unknown_event_type", r"unknown event type .*: no installed plugin declares it"),
    ("no_datetime", r".* event has no datetime in its header"),
    ("before_minimum_year", r".* event of .* is before minimum_year \d+"),
    ("bad_nanoseconds", r"header nanoseconds "),
    ("bad_datalist", r"datalist is \w+, not a list"),
    ("bad_data_item", r"data item .* lacks data_uploadcode or data"),
    ("failed_check", r"value check of "),
    ("bad_blob", r"blob .* cannot be decoded: "),
    ("not_a_number", r".* value .* is a \w+, not a number"),
    ("value_does_not_fit", r".* value does not fit its column: "),
    ("cannot_be_stored", r".* event cannot be stored: "),
)
_COMPILED = tuple((kind, re.compile(pattern, re.DOTALL)) for kind, pattern in _PATTERNS)
OTHER = "other"
#: Every kind a reason can have.
KINDS = (*(kind for kind, _ in _PATTERNS), OTHER)
_KIND_SET = frozenset(KINDS)


def kind_of(reason: str) -> str:
    """The kind of ``reason`` (or ``reason`` itself when it is a kind already): one of
    :data:`KINDS`, whatever text it holds."""
    if reason in _KIND_SET:
        return reason
    for kind, pattern in _COMPILED:
        if pattern.match(reason):
            return kind
    return OTHER
