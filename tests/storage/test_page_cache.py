"""A day file's pages are dropped after each commit's fsync, so that the next appends count
(in /proc/PID/io write_bytes, the day benchmark's figure) the pages they write, not the
large folio they write into."""

import os
from pathlib import Path

import pytest

from hisparc_datastore.util.durable import fsync_appended, fsync_file

PAGE = 4096


def written() -> int:
    io = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    return int(io["write_bytes"])


def counted_for_a_small_write(path: Path, sync) -> int:
    """Bytes counted for 100 bytes written inside 64 kB that were written in one go and
    synced: as HDF5 writes a table's rows again into the span it last wrote whole."""
    path.write_bytes(b"x" * (1 << 16))  # one aligned write: one large folio, if any
    sync(path)
    before = written()
    with open(path, "r+b") as f:
        f.seek(40_000)
        f.write(b"z" * 100)
    counted = written() - before
    fsync_file(path)
    return counted


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="no /proc/PID/io")
def test_a_write_after_a_commit_counts_only_the_page_it_writes(tmp_path):
    path = tmp_path / "day.h5"
    kept = counted_for_a_small_write(path, fsync_file)
    dropped = counted_for_a_small_write(path, fsync_appended)
    if kept == 0:
        pytest.skip(f"{tmp_path} counts no bytes written (tmpfs)")
    assert dropped == PAGE, (kept, dropped)
    # Where the kernel caches this file in pages of 4 kB, both count one page: with large
    # folios, the write after a plain fsync counted the folio.
    assert kept >= dropped
    assert path.read_bytes() == b"x" * 40_000 + b"z" * 100 + b"x" * (65_536 - 40_100)


def test_the_dropped_pages_hold_what_was_written(tmp_path):
    path = tmp_path / "day.h5"
    data = os.urandom(3 * PAGE + 123)
    path.write_bytes(data)
    fsync_appended(path)
    with open(path, "r+b") as f:
        f.seek(len(data) - 10)
        f.write(b"end")
    assert path.read_bytes() == data[:-10] + b"end" + data[-7:]
