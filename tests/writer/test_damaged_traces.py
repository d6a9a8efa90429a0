"""A damaged day file never goes unnoticed: ``datastore verify`` names it, and a writer that
finds stored blobs unreadable after undoing a killed batch sets the file aside, rebuilds it
from the archive, logs CRITICAL, and is unhealthy in ``datastore status`` and on /metrics."""

import datetime
import json
import os
import signal
import subprocess
import sys

import numpy as np
import tables

from hisparc_datastore.plugin.registry import load_registry
from hisparc_datastore.sim.simulate import CONFIG_TEMPLATE, simulated_uploads, stations, write_queue
from hisparc_datastore.sim.summary import day_files
from hisparc_datastore.storage.contents import read_contents
from hisparc_datastore.storage.layout import BLOBS
from hisparc_datastore.storage.verify import verify_day_file
from hisparc_datastore.testing.helpers import settings_for
from hisparc_datastore.writer import metrics
from hisparc_datastore.writer.service import Writer

START = datetime.datetime(2025, 6, 30, 10, 0, 0)
SLOT = 16


def datastore(*args, crash_at=None):
    env = dict(os.environ)
    env.pop("DATASTORE_CRASH_AT", None)
    if crash_at:
        env["DATASTORE_CRASH_AT"] = crash_at
    return subprocess.run([sys.executable, "-m", "hisparc_datastore.cli", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=300)


def queued(path, uploads):
    write_queue(path, uploads)
    config = path / "config.ini"
    config.write_text(CONFIG_TEMPLATE.format(data_dir=path, minimum_year=2020) + "batch_uploads=4\n")
    return config


def damage_blob(path, node_path, row):
    """Make ``row`` of a blobs array name a heap collection at a nonsense address."""
    with tables.open_file(str(path), "a") as h5:
        node = h5.get_node(node_path)
        chunk = (row // node.chunkshape[0] * node.chunkshape[0],)
        slots = np.frombuffer(node.read_chunk(chunk), dtype=np.uint8).reshape(-1, SLOT).copy()
        slots[row - chunk[0], 4:12] = 0xEE
        node.write_chunk(chunk, slots.tobytes())


def test_verify_names_a_damaged_blob_and_passes_sound_files(tmp_path):
    uploads = simulated_uploads(stations(2), START, 240, seed=5)
    config = queued(tmp_path, uploads)
    assert datastore("writer", config, "--once", "--quiet").returncode == 0
    (path,) = day_files(tmp_path)
    sound = datastore("verify", config, "2025-06-30")
    assert sound.returncode == 0, sound.stdout + sound.stderr
    assert f"{path}: ok" in sound.stdout and "1 day files read, 0 damaged" in sound.stdout

    with tables.open_file(str(path)) as h5:
        node_path = next(n._v_pathname for n in h5.walk_nodes("/", "VLArray") if n.nrows > 3)
    damage_blob(path, node_path, 2)
    found = datastore("verify", config)
    assert found.returncode == 1
    assert f"{path}: DAMAGED" in found.stdout
    assert f"{node_path}: 1 rows unreadable (rows 2)" in found.stdout
    assert "1 day files read, 1 damaged" in found.stdout

    typo = datastore("verify", config, "2025-13-01")
    assert typo.returncode == 2 and "'2025-13-01' is not a date" in typo.stderr
    absent = datastore("verify", config, "2025-07-04")
    assert absent.returncode == 2 and "no day file" in absent.stderr


def test_stored_blobs_found_unreadable_after_an_undo_are_healed_and_reported(tmp_path):
    uploads = simulated_uploads(stations(2), START, 600, seed=7)
    reference = tmp_path / "reference"
    write_queue(reference, uploads)
    Writer(settings_for(reference, batch_uploads=4), load_registry()).run(once=True)
    expected = read_contents(day_files(reference)[0], load_registry())

    # killed in a batch that only appends (one that adds nodes is undone from a copy)
    for count in range(5, 40, 2):
        data_dir = tmp_path / f"run-{count}"
        config = queued(data_dir, uploads)
        killed = datastore("writer", config, "--once", "--quiet", crash_at=f"blobs-appended:{count}")
        assert killed.returncode == -signal.SIGKILL
        journal = json.loads((data_dir / "writer.journal").read_text())
        assert journal["state"] == "applying"
        if not journal["copies"]:
            break
    (path,) = day_files(data_dir)
    # a stored blob of a node the killed batch touched is damaged (as a crash inside HDF5 would)
    node_path, rows = next((node, rows) for node, rows in journal["sizes"][str(path)].items()
                           if node.endswith(f"/{BLOBS}") and rows)
    damage_blob(path, node_path, rows - 1)

    finished = datastore("writer", config, "--once")
    assert finished.returncode == 0, finished.stderr
    assert "CRITICAL" in finished.stderr and f"{node_path}: 1 rows unreadable" in finished.stderr
    assert "rebuilt from the archive" in finished.stderr
    # every row and every blob, by content, as the undisturbed writer stored them
    assert read_contents(path, load_registry()) == expected
    assert verify_day_file(path) == []
    (aside,) = (data_dir / "quarantine").glob("*.h5.damaged-*[0-9]Z")
    assert verify_day_file(aside)  # the damaged file is kept, and it is the damaged one

    status = datastore("status", config, "--json")
    assert status.returncode == 1
    report = json.loads(status.stdout)
    assert report["damaged_day_files"] == [str(aside)]
    assert any(str(aside) in problem for problem in report["problems"])

    writer = Writer(settings_for(data_dir), load_registry())
    assert "datastore_writer_damaged_day_files 1\n" in metrics.render(writer)
