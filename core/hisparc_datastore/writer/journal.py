"""The writer's transaction record: which uploads are being applied, and to what.

Before the writer appends anything it records, per day file, the size of
every node it is about to grow (None: the node does not exist yet). After
the day files are flushed it marks the record ``applied``. A writer that
starts and finds an ``applying`` record cuts those nodes back to the
recorded sizes (clearing every slot up to the rows the batch was to reach)
and applies the uploads again; one that finds ``applied``
only has to finish releasing them. See docs/exactly-once.md.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import attrs

from hisparc_datastore.util.durable import fsync_dir, write_atomically

APPLYING = "applying"
APPLIED = "applied"
NEW = ""  # in Transaction.copies: the day file did not exist before the batch


@attrs.frozen
class Transaction:
    """One batch of uploads on its way into the day files."""

    uploads: tuple[str, ...] = attrs.field(converter=tuple)
    sizes: dict[str, dict[str, int | None]]  # day file -> node path -> rows before
    state: str = attrs.field(default=APPLYING, validator=attrs.validators.in_({APPLYING, APPLIED}))
    # Day files the batch adds nodes to: -> the copy made before it (see storage.snapshot_path),
    # or NEW when the batch makes the file. Undone by restoring the copy or removing the file:
    # HDF5 cannot be trusted to cut back a group or table it was creating when the disk filled.
    copies: dict[str, str] = attrs.field(factory=dict)
    # day file -> node path -> rows after the batch: how far an attempt may have written,
    # so that undoing clears every slot it wrote (see storage.undo)
    reached: dict[str, dict[str, int]] = attrs.field(factory=dict)


class Journal:
    """The single transaction record of the one writer of a ``data_dir``."""

    def __init__(self, data_dir: Path, fsync: bool = True) -> None:
        self.path = Path(data_dir) / "writer.journal"
        self.fsync = fsync

    def read(self) -> Transaction | None:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        data = json.loads(raw)
        return Transaction(tuple(data["uploads"]), data["sizes"], data["state"], data.get("copies", {}),
                           data.get("reached", {}))

    def write(self, transaction: Transaction) -> None:
        data = json.dumps(attrs.asdict(transaction)).encode()
        write_atomically(self.path, data, fsync=self.fsync)

    def clear(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            return
        if self.fsync:
            fsync_dir(self.path.parent)
