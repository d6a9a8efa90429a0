"""For the crash harnesses: does every blob an event refers to hold the bytes its station sent?

Comparing with an undisturbed run proves that two runs agree; this compares
with the uploads themselves. Each sent event that carries blob codes (a
coincidence's four traces, an error message, a configuration's versions) is
found in its station's table by timestamp (and nanoseconds, where the table
has them), and each blob its row refers to is read on its own and compared
with the plugin's decoding of the value the station sent.
"""

from __future__ import annotations

import calendar
import os
from collections.abc import Iterable

import attrs
import tables

from hisparc_datastore.codec.decoding import Upload
from hisparc_datastore.plugin.registry import Registry
from hisparc_datastore.storage.contents import read_each_blob
from hisparc_datastore.storage.layout import BLOBS, day_files


@attrs.frozen
class SentBlobs:
    sent: int  # blobs the stations sent
    differing: int  # of those, the ones whose stored bytes differ, do not read or are not found
    examples: tuple[str, ...]  # the first few, for the operator of the harness

    def __str__(self) -> str:
        return f"blobs sent: {self.sent}, differing: {self.differing}"


def _key(station: int, event_type, header: dict) -> tuple:
    seconds = calendar.timegm(header["datetime"].utctimetuple())
    return (station, event_type.table_name, seconds,
            header["nanoseconds"] if event_type.extended_time else None)


def stored_blobs(data_dir: str | os.PathLike, registry: Registry) -> dict[tuple, list[dict]]:
    """``{(station, table, timestamp, nanoseconds or None): [{code: bytes or UnreadableBlob}]}``
    of every row of a table with blob columns, in every day file under ``data_dir``."""
    with_blobs = {t.table_name: t for t in registry if t.blobs}
    found: dict[tuple, list[dict]] = {}
    for path in day_files(data_dir):
        with tables.open_file(str(path), "r") as h5:
            for group in h5.walk_groups("/hisparc"):
                if BLOBS not in group or not group._v_name.startswith("station_"):
                    continue
                station = int(group._v_name.removeprefix("station_"))
                blobs = read_each_blob(group._f_get_child(BLOBS))
                for table in h5.list_nodes(group, classname="Table"):
                    event_type = with_blobs.get(table.name)
                    if event_type is None:
                        continue
                    for row in table.read():
                        refs = {}
                        for code in event_type.blobs:
                            slot = event_type.slots[code]
                            value = row[slot.column] if slot.index is None else row[slot.column][slot.index]
                            refs[code] = blobs[value] if 0 <= value < len(blobs) else f"no blob {value}"
                        key = (station, table.name, int(row["timestamp"]),
                               int(row["nanoseconds"]) if event_type.extended_time else None)
                        found.setdefault(key, []).append(refs)
    return found


def compare_sent(uploads: Iterable[Upload], data_dir: str | os.PathLike, registry: Registry) -> SentBlobs:
    """Every blob of ``uploads`` against the bytes its event's row refers to under ``data_dir``."""
    stored = stored_blobs(data_dir, registry)
    sent = differing = 0
    examples: list[str] = []
    for upload in uploads:
        for event in upload.event_list:
            event_type = registry.get(event["header"]["eventtype_uploadcode"])
            if event_type is None or not event_type.blobs:
                continue
            values = {item["data_uploadcode"]: item["data"] for item in event["datalist"]
                      if item["data_uploadcode"] in event_type.blobs}
            if not values:
                continue
            key = _key(upload.station_id, event_type, event["header"])
            rows = stored.get(key)
            # two events of one key (a station's duplicate) are matched one row each
            refs = rows.pop() if rows else {}
            for code, value in values.items():
                sent += 1
                want = event_type.blobs[code](value)
                have = refs.get(code, "no row")
                if have != want:
                    differing += 1
                    if len(examples) < 5:
                        shown = have if isinstance(have, str) else repr(have)[:120]
                        examples.append(f"station {key[0]} {key[1]} at {key[2]} {code}: {shown}")
    return SentBlobs(sent, differing, tuple(examples))
