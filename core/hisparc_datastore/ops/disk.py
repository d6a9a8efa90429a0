"""How much room ``data_dir`` has and how long it lasts: free space, the two reserves, and
days until full from the day files' recent growth.

The growth is read from the day files themselves (``YYYY/M/YYYY_M_D.h5``, named by the
events' UTC date), so it needs no history kept anywhere: the bytes of the files dated within
the last ``GROWTH_DAYS`` days, today's growing one included, over the time since the first of
those days began. The archive is left out: it is pruned after ``archive_days``, so once that
old it takes as much each day as it frees. "Full" is the receiver's reserve, where stations
start to hear 205.
"""

from __future__ import annotations

import datetime
import shutil
import time
from typing import Any

from hisparc_datastore.config import Settings
from hisparc_datastore.storage.layout import day_file_path

GROWTH_DAYS = 7  # days of day files the growth is averaged over
MIN_SPAN_S = 3600.0  # less than this of data makes no rate worth telling


def growth_per_day(settings: Settings, now: float) -> float | None:
    """Bytes a day the day files of the last GROWTH_DAYS days grew by; None without enough data."""
    today = datetime.datetime.fromtimestamp(now, datetime.timezone.utc).date()
    total, earliest = 0, None
    for back in range(GROWTH_DAYS - 1, -1, -1):
        date = today - datetime.timedelta(days=back)
        try:
            total += day_file_path(settings.data_dir, date).stat().st_size
        except OSError:
            continue
        earliest = earliest or date
    if earliest is None:
        return None
    start = datetime.datetime.combine(earliest, datetime.time(), datetime.timezone.utc).timestamp()
    span = now - start
    if span < MIN_SPAN_S:
        return None
    return total / (span / 86400)


def disk_report(settings: Settings, now: float | None = None) -> dict[str, Any]:
    """Free and total bytes of data_dir's file system, the reserves in bytes, the growth a
    day and the days until the receiver's reserve is reached (None when unknown)."""
    now = time.time() if now is None else now
    report: dict[str, Any] = {
        "free_bytes": None, "total_bytes": None,
        "writer_reserve_bytes": settings.reserve_mb * 2**20,
        "receiver_reserve_bytes": settings.receiver_reserve_mb * 2**20,
        "growth_bytes_per_day": None, "days_until_full": None,
    }
    try:
        usage = shutil.disk_usage(settings.data_dir)
    except OSError:
        return report
    report.update(free_bytes=usage.free, total_bytes=usage.total)
    growth = growth_per_day(settings, now)
    if growth is not None:
        report["growth_bytes_per_day"] = round(growth)
        room = max(0, usage.free - max(report["receiver_reserve_bytes"], report["writer_reserve_bytes"]))
        report["days_until_full"] = round(room / growth, 1) if growth > 0 else None
    return report
