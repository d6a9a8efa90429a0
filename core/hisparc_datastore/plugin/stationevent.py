"""Builds station event dicts the way the station software does (simulators, tests)."""

from __future__ import annotations

import datetime


def station_event(code: str, moment: datetime.datetime, data: dict, nanoseconds: int = 0) -> dict:
    """One event of an ``event_list``: a header and a datalist of ``data``'s items."""
    return {
        "header": {"eventtype_uploadcode": code, "datetime": moment, "nanoseconds": nanoseconds,
                   "date": moment.strftime("%Y-%m-%d"), "time": moment.strftime("%H:%M:%S")},
        "datalist": [{"data_uploadcode": key, "data": value} for key, value in data.items()],
    }
