"""`datastore rebuild`: a day file regenerated from the archive equals the original."""

import datetime
import os
import subprocess
import sys

import pytest
import tables

from hisparc_datastore import cli
from hisparc_datastore.plugin.registry import load_registry
from hisparc_datastore.sim.simulate import simulated_uploads, stations
from hisparc_datastore.storage.contents import read_contents
from hisparc_datastore.storage.layout import day_file_path
from hisparc_datastore.testing.helpers import queue_uploads, settings_for
from hisparc_datastore.writer.lock import WriterLock
from hisparc_datastore.writer.service import Writer

START = datetime.datetime(2025, 3, 9, 23, 55, 0)  # five minutes each side of midnight
DAY1, DAY2 = START.date(), (START + datetime.timedelta(days=1)).date()


@pytest.fixture
def stored(tmp_path):
    """A data dir written by the writer in several runs, with its config."""
    uploads = simulated_uploads(stations(3), START, 600, seed=3)
    for part in (uploads[: len(uploads) // 2], uploads[len(uploads) // 2:]):
        queue_uploads(tmp_path, part)
        Writer(settings_for(tmp_path), load_registry()).run(once=True)
    config = tmp_path / "config.ini"
    config.write_text(f"[General]\nlog=\nloglevel=info\nstation_list={tmp_path / 'stations.csv'}\n"
                      f"data_dir={tmp_path}\nminimum_year=2020\n[Writer]\nfsync=no\n")
    return tmp_path, config


def test_a_deleted_day_file_is_rebuilt_equal_to_the_original(stored, capsys):
    data_dir, config = stored
    registry = load_registry()
    original = read_contents(day_file_path(data_dir, DAY1), registry)
    assert sum(len(rows) for rows in original.values()) > 1000
    assert any(table == "blobs" or "events" in table for _, table in original)
    os.unlink(day_file_path(data_dir, DAY1))

    assert cli.main(["rebuild", str(config), DAY1.isoformat(), "--replace"]) == 0
    assert read_contents(day_file_path(data_dir, DAY1), registry) == original
    out = capsys.readouterr()
    assert f"replaced {day_file_path(data_dir, DAY1)}" in out.out
    assert "uploads" in out.err  # progress
    assert not (data_dir / f"rebuild-{DAY1}").exists()


def test_an_intact_day_file_compares_equal_and_is_left_alone(stored, capsys):
    data_dir, config = stored
    before = day_file_path(data_dir, DAY2).stat().st_mtime_ns
    assert cli.main(["rebuild", str(config), DAY2.isoformat()]) == 0
    assert "is equal to the rebuild" in capsys.readouterr().out
    assert day_file_path(data_dir, DAY2).stat().st_mtime_ns == before


def test_a_damaged_day_file_is_reported_and_replaced_only_when_asked(stored, capsys):
    data_dir, config = stored
    registry = load_registry()
    path = day_file_path(data_dir, DAY1)
    original = read_contents(path, registry)
    with tables.open_file(str(path), "a") as h5:  # lose the last 5 singles of one station
        station = h5.root.hisparc.cluster_amsterdam.station_501
        station.singles.truncate(station.singles.nrows - 5)

    assert cli.main(["rebuild", str(config), DAY1.isoformat()]) == 1
    out = capsys.readouterr().out
    assert "station_501/singles: expected 300 rows, found 295 (5 missing, 0 extra)" in out
    assert (data_dir / f"{path.name}.rebuilt").exists()
    assert read_contents(path, registry) != original  # not replaced

    assert cli.main(["rebuild", str(config), DAY1.isoformat(), "--replace"]) == 0
    assert read_contents(path, registry) == original
    assert list(path.parent.glob(f"{path.name}.before-rebuild-*"))


def test_a_date_without_archive_is_an_error_naming_the_directory(stored, capsys):
    _, config = stored
    assert cli.main(["rebuild", str(config), "2001-01-01"]) == 2
    assert "no archived uploads for 2001-01-01" in capsys.readouterr().err


def test_replacing_refuses_while_a_writer_runs(stored):
    data_dir, config = stored
    os.unlink(day_file_path(data_dir, DAY2))
    with WriterLock(data_dir):
        result = subprocess.run([sys.executable, "-m", "hisparc_datastore.cli", "rebuild", str(config),
                                 DAY2.isoformat(), "--replace"], capture_output=True, text=True)
    assert result.returncode == 2
    assert "another writer is running" in result.stderr
    assert not day_file_path(data_dir, DAY2).exists()
