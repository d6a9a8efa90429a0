"""A writer killed with SIGKILL at each step of a batch, then restarted, stores every event once."""

import datetime
import os
import signal
import subprocess
import sys

import pytest

from hisparc_datastore.plugin.registry import load_registry
from hisparc_datastore.sim.simulate import CONFIG_TEMPLATE, simulated_uploads, stations, write_queue
from hisparc_datastore.sim.summary import day_files
from hisparc_datastore.storage.contents import read_contents
from hisparc_datastore.testing.helpers import settings_for
from hisparc_datastore.writer.service import Writer

START = datetime.datetime(2025, 6, 30, 23, 56, 0)  # two dates


@pytest.fixture(scope="module")
def uploads():
    return simulated_uploads(stations(2), START, 480, seed=11)


@pytest.fixture(scope="module")
def reference(uploads, tmp_path_factory):
    """What an undisturbed writer stores from the same uploads."""
    data_dir = tmp_path_factory.mktemp("reference")
    write_queue(data_dir, uploads)
    tally = Writer(settings_for(data_dir, batch_uploads=4), load_registry()).run(once=True)
    assert tally.events == sum(len(u.event_list) for u in uploads)
    return everything(data_dir)


def everything(data_dir):
    registry = load_registry()
    return {(path.name, *node): rows for path in day_files(data_dir)
            for node, rows in read_contents(path, registry).items()}


# The writer on a file system that cannot set room aside in a file (fallocate unsupported):
# it copies a day file whole before a batch adds a node to it.
WITHOUT_FALLOCATE = ("import sys; from hisparc_datastore.writer import batch; "
                     "batch.reserve = lambda path, room: False; "
                     "from hisparc_datastore.cli import main; sys.exit(main())")


def run_writer(config, crash_at=None, without_fallocate=False):
    env = dict(os.environ)
    env.pop("DATASTORE_CRASH_AT", None)
    if crash_at:
        env["DATASTORE_CRASH_AT"] = crash_at
    program = ["-c", WITHOUT_FALLOCATE] if without_fallocate else ["-m", "hisparc_datastore.cli"]
    return subprocess.run([sys.executable, *program, "writer", str(config), "--once", "--quiet"],
                          env=env, capture_output=True, text=True, timeout=120)


def queued_data_dir(path, uploads, commit_s=10):
    write_queue(path, uploads)
    config = path / "config.ini"
    config.write_text(CONFIG_TEMPLATE.format(data_dir=path, minimum_year=2020)
                      + f"batch_uploads=4\ncommit_s={commit_s}\n")
    return config


POINTS = [
    "claimed",             # uploads renamed into partial/, nothing stored
    "journaled",           # sizes recorded, nothing appended
    "copied:2",            # journaled, day files copied before nodes are added to them
    "blobs-appended",      # between a station's blobs and its rows
    "table-appended:1",    # after the first table of a batch
    "table-appended:3",    # between two tables' appends
    "table-appended:9",    # a later batch, several stations in
    "flushed",             # rows on disk, journal still says applying
    "flushed:3",           # a later commit (of several batches, unless commit_s is 0)
    "applied",             # journal says applied, claims not yet released
    "applied:3",
    "released:2",          # claims released, journal not yet cleared
]


@pytest.mark.parametrize("commit_s", [0, 600], ids=["each-batch-committed", "batches-committed-together"])
@pytest.mark.parametrize("point", POINTS)
def test_killed_at_a_point_then_restarted_stores_every_event_once(tmp_path, uploads, reference, point,
                                                                  commit_s):
    config = queued_data_dir(tmp_path, uploads, commit_s)
    killed = run_writer(config, crash_at=point)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert (tmp_path / "writer.journal").exists() or point in ("claimed", "released:2")

    finished = run_writer(config)
    assert finished.returncode == 0, finished.stderr
    assert everything(tmp_path) == reference
    assert list((tmp_path / "partial").iterdir()) == []
    assert list((tmp_path / "incoming").iterdir()) == []
    assert list((tmp_path / "quarantine").iterdir()) == []
    assert not (tmp_path / "writer.journal").exists()


def test_killed_twice_in_a_row_during_recovery_still_stores_once(tmp_path, uploads, reference):
    config = queued_data_dir(tmp_path, uploads)
    assert run_writer(config, crash_at="table-appended:3").returncode == -signal.SIGKILL
    # the restarted writer dies again, in its first batch after undoing the last one
    assert run_writer(config, crash_at="blobs-appended:2").returncode == -signal.SIGKILL
    assert run_writer(config).returncode == 0
    assert everything(tmp_path) == reference


def drop_copies(day_file):
    """Remove the copy the crashed batch made of ``day_file``, if it made one: the torn file
    is then one that only a heal can help (as after a batch that only appended to it)."""
    for copy in day_file.parent.glob(f".{day_file.name}.before"):
        copy.unlink()


def test_a_torn_day_file_a_batch_added_nodes_to_is_put_back_from_its_copy(tmp_path, uploads, reference):
    config = queued_data_dir(tmp_path, uploads)
    killed = run_writer(config, crash_at="table-appended:12", without_fallocate=True)
    assert killed.returncode == -signal.SIGKILL
    (first_day, *_) = day_files(tmp_path)
    assert first_day.with_name(f".{first_day.name}.before").exists()  # the batch adds a station
    with open(first_day, "r+b") as fh:  # a torn write: the file ends mid-way
        fh.truncate(os.path.getsize(first_day) // 2)

    finished = run_writer(config)
    assert finished.returncode == 0, finished.stderr
    assert everything(tmp_path) == reference
    assert list((tmp_path / "quarantine").iterdir()) == []  # no heal: the copy was put back
    assert "put back as it was before the batch" in (tmp_path / "datastore.log").read_text()
    assert not list(tmp_path.rglob(".*.before"))


def test_a_day_file_left_unreadable_is_rebuilt_from_the_archive(tmp_path, uploads, reference):
    config = queued_data_dir(tmp_path, uploads)
    assert run_writer(config, crash_at="table-appended:12").returncode == -signal.SIGKILL
    (first_day, *_) = day_files(tmp_path)
    assert not list(tmp_path.rglob(".*.before"))  # room set aside: no copy to put back
    with open(first_day, "r+b") as fh:  # a torn write: the file ends mid-way
        fh.truncate(os.path.getsize(first_day) // 2)

    finished = run_writer(config)
    assert finished.returncode == 0, finished.stderr
    assert everything(tmp_path) == reference
    kept = list((tmp_path / "quarantine").glob(f"{first_day.name}.damaged-*Z"))
    assert len(kept) == 1
    assert "rebuilt from the archive" in (tmp_path / "datastore.log").read_text()
    reason = kept[0].with_name(kept[0].name + ".reason").read_text()
    assert reason.startswith(f"{first_day} was damaged (a crash inside HDF5): rebuilt from the archive")


def test_without_an_archive_a_torn_day_file_is_kept_aside_and_the_writer_goes_on(tmp_path, uploads):
    config = queued_data_dir(tmp_path, uploads)
    config.write_text(config.read_text().replace("[Writer]", "[Writer]\narchive_days=0"))
    assert run_writer(config, crash_at="table-appended:12").returncode == -signal.SIGKILL
    (first_day, *_) = day_files(tmp_path)
    with open(first_day, "r+b") as fh:
        fh.truncate(os.path.getsize(first_day) // 2)
    drop_copies(first_day)

    finished = run_writer(config)
    assert finished.returncode == 0, finished.stderr
    # the new file holds fewer rows than the journal says the old one had: kept beside it
    (kept,) = first_day.parent.glob(f"{first_day.name}.damaged-*Z")
    reason = (tmp_path / "quarantine" / f"{kept.name}.reason").read_text()
    assert "could not be rebuilt" in reason and "rows fewer" in reason
    assert list((tmp_path / "incoming").iterdir()) == list((tmp_path / "partial").iterdir()) == []
    assert read_contents(first_day, load_registry())  # a new, readable day file holds the rest
