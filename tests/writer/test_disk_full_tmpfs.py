"""A real full disk (a small tmpfs) at every step of a batch that adds a station group, a
table and a day file, with room set aside in the day file or (a file system without
fallocate) a copy of it: every row stored before it is still there, with no archive to heal
from, and the batch is stored exactly once when space returns (issue 19, item 1)."""

import datetime
import shutil
import threading

import pytest
import tables

from hisparc_datastore.codec.decoding import Upload
from hisparc_datastore.ops.status import collect
from hisparc_datastore.plugin.registry import load_registry
from hisparc_datastore.storage import layout as storage
from hisparc_datastore.storage.layout import DayFile
from hisparc_datastore.testing.helpers import event, queue_uploads, settings_for, store, wait_for
from hisparc_datastore.writer import batch as batch_module
from hisparc_datastore.writer import service as writer_module
from hisparc_datastore.writer.journal import Journal

DAY = datetime.datetime(2024, 2, 29, 12)
NEXT_DAY = DAY + datetime.timedelta(days=1)
TRACE = "eJwzAAAAMgAy"  # base64 of zlib("2"): one blob


def singles(moment, second, low):
    return event("SIN", moment + datetime.timedelta(seconds=second), {"MAS_CH1_LOW": low})


def coincidence(moment, second, ph):
    return event("CIC", moment + datetime.timedelta(seconds=second), {"PH1": ph, "TR1": TRACE},
                 nanoseconds=second)


@pytest.fixture
def small_disk(tmpfs):
    """The data_dir on a 6 MB tmpfs."""
    return tmpfs(6) / "data"


def every_row(data_dir):
    """{(day file, node): [each row's bytes]} for every leaf of every day file."""
    rows = {}
    for path in sorted(data_dir.rglob("*.h5")):
        with tables.open_file(path) as h5:
            for node in h5.walk_nodes("/", "Leaf"):
                values = node.read()
                # each row as its bytes: blobs, or a table row as readers get it
                rows[(path.name, node._v_pathname)] = [
                    value if isinstance(value, bytes) else value.tobytes() for value in values]
    return rows


# Every step of a batch that may write to the disk, in the writer's modules.
STEPS = [
    (batch_module, "reserve"),
    (batch_module, "copy_day_file"),
    (Journal, "write"),
    (storage, "open_day_file"),
    (storage, "get_or_create_cluster_group"),
    (storage, "get_or_create_station_group"),
    (storage, "get_or_create_table"),  # a table through PyTables (the legacy API)
    (DayFile, "_create_table"),  # a table the writer makes: an HDF5 copy of a template
    (storage, "get_or_create_blobs"),
    (DayFile, "append_blobs"),
    (DayFile, "append_rows"),
    (DayFile, "flush"),
]


def fill_at(monkeypatch, data_dir, step: int):
    """Fill the disk just before the ``step``-th call (from 0) of any of STEPS, once;
    return the filler's path and the calls seen."""
    filler = data_dir.parent / "filler"
    seen = []

    def wrap(owner, name):
        real = getattr(owner, name)

        def filling(*args, **kwargs):
            seen.append(name)
            if len(seen) - 1 == step:
                with open(filler, "wb") as fh:
                    try:
                        while True:
                            fh.write(b"\0" * 4096)
                    except OSError:
                        pass
            return real(*args, **kwargs)

        monkeypatch.setattr(owner, name, filling)

    for owner, name in STEPS:
        wrap(owner, name)
    return filler, seen


# The calls of STEPS the batch below makes (printed by the step=1000 case): with room set
# aside in the day file it adds nodes to, or, where the file system cannot set room aside
# (fallocate unsupported), with that file copied whole before.
BATCH_STEPS = {"reserved": 43, "copied": 44}


@pytest.mark.parametrize(("room", "step"), [(room, step) for room, steps in BATCH_STEPS.items()
                                            for step in [*range(steps), 1000]])
def test_a_disk_filling_at_any_step_of_a_batch_costs_no_stored_row(small_disk, monkeypatch, room, step):
    data_dir = small_disk
    if room == "copied":
        monkeypatch.setattr(batch_module, "reserve", lambda path, room: False)
    monkeypatch.setattr(writer_module, "FIRST_BACKOFF", 0.05)
    monkeypatch.setattr(writer_module, "MAX_BACKOFF", 0.2)
    # Before: station 501 with singles, events and blobs in the day file; no archive.
    store(data_dir, [Upload(501, "Utrecht", [singles(DAY, s, s) for s in range(2000)]),
                     Upload(504, "Utrecht", [coincidence(DAY, s, s) for s in range(300)])],
          archive_days=0, reserve_mb=0)
    before = every_row(data_dir)
    # The batch: a new station group (502), new tables and blobs in an existing group (501),
    # appends to existing nodes (501, 504), and a new day file (after midnight).
    queue_uploads(data_dir, [
        Upload(502, "Utrecht", [singles(DAY, 5000 + s, 7) for s in range(300)]
               + [coincidence(DAY, 5000 + s, 9) for s in range(100)]),
        Upload(501, "Utrecht", [singles(DAY, 3000 + s, 3) for s in range(100)]
               + [coincidence(DAY, 3000 + s, 8) for s in range(50)]
               + [singles(NEXT_DAY, s, 4) for s in range(100)]),
        Upload(504, "Utrecht", [coincidence(DAY, 4000 + s, 6) for s in range(30)]),
        Upload(503, "Enschede", [coincidence(NEXT_DAY, s, 5) for s in range(50)]),
    ])
    filler, seen = fill_at(monkeypatch, data_dir, step)
    # No room check: the disk fills under the writer (the receiver, another program) mid-batch.
    monkeypatch.setattr(batch_module.BatchStore, "_check_room", lambda self, uploads, sizes: None)
    writer = writer_module.Writer(settings_for(data_dir, archive_days=0, reserve_mb=0, sleep=0.05),
                                  load_registry())
    service = threading.Thread(target=writer.run)
    service.start()
    try:
        assert wait_for(lambda: filler.exists() or writer.tally.uploads == 4, timeout=120)
        if filler.exists():
            assert wait_for(lambda: writer.tally.storage_errors >= 1 or writer.tally.uploads == 4,
                            timeout=120)
            filler.unlink()
        assert wait_for(lambda: writer.tally.uploads == 4, timeout=120), writer.tally
    finally:
        writer.stop()
        service.join(timeout=60)
    assert not service.is_alive()
    assert ("copy_day_file" in seen) == (room == "copied")
    if step >= BATCH_STEPS[room]:
        print("steps of a batch that meets no full disk:", len(seen))
        return
    assert seen[step:], f"the batch took {len(seen)} steps: the disk was never filled"
    after = every_row(data_dir)
    for key, rows in before.items():
        assert after[key][:len(rows)] == rows, key  # every row stored before: still there
    day, next_day = "2024_2_29.h5", "2024_3_1.h5"
    station = "/hisparc/cluster_utrecht/station_{}/{}".format
    # the batch exactly once
    assert len(after[(day, station(501, "singles"))]) == 2100
    assert len(after[(day, station(501, "events"))]) == 50
    assert len(after[(day, station(501, "blobs"))]) == 50
    assert len(after[(day, station(504, "events"))]) == 330
    assert len(after[(day, station(502, "singles"))]) == 300
    assert len(after[(day, station(502, "events"))]) == 100
    assert len(after[(day, station(502, "blobs"))]) == 100
    assert len(after[(next_day, station(501, "singles"))]) == 100
    assert len(after[(next_day, "/hisparc/cluster_enschede/station_503/events")]) == 50
    assert list(data_dir.joinpath("quarantine").iterdir()) == []  # nothing taken as damaged
    assert not list(data_dir.rglob(".*.before"))  # no copy left behind
    for path in data_dir.rglob("*.h5"):  # no room left set aside past a day file's end
        assert path.stat().st_blocks * 512 <= -(-path.stat().st_size // 4096) * 4096, path


def test_the_writer_waits_for_room_and_says_so_in_status(small_disk, monkeypatch):
    data_dir = small_disk
    monkeypatch.setattr(writer_module, "FIRST_BACKOFF", 0.05)
    monkeypatch.setattr(writer_module, "MAX_BACKOFF", 0.2)
    store(data_dir, [Upload(501, "Utrecht", [singles(DAY, s, s) for s in range(100)])],
          archive_days=0, reserve_mb=0)
    before = every_row(data_dir)
    queue_uploads(data_dir, [Upload(502, "Utrecht", [singles(DAY, s, 2) for s in range(100)])])
    free = shutil.disk_usage(data_dir).free
    filler = data_dir.parent / "filler"
    filler.write_bytes(b"\0" * (free - 1024 * 1024))  # 1 MB left, under a 2 MB reserve
    settings = settings_for(data_dir, archive_days=0, reserve_mb=2, sleep=0.05)
    writer = writer_module.Writer(settings, load_registry())
    service = threading.Thread(target=writer.run)
    service.start()
    try:
        assert wait_for(lambda: writer.tally.storage_errors >= 2, timeout=120)
        status = collect(settings)
        assert not status["healthy"]
        assert any("waits for disk space" in problem and "reserve_mb = 2" in problem
                   for problem in status["problems"]), status["problems"]
        assert every_row(data_dir) == before  # nothing tried: no half batch to undo
        filler.unlink()
        assert wait_for(lambda: writer.tally.uploads == 1, timeout=120)
        # the tally counts the upload a moment before writer-state.json is written
        assert wait_for(lambda: collect(settings)["no_room"] is None, timeout=60)
    finally:
        writer.stop()
        service.join(timeout=60)
    assert len(every_row(data_dir)[("2024_2_29.h5", "/hisparc/cluster_utrecht/station_502/singles")]) == 100
