"""The storm (bench/storm.py): a short run of it (make chaos runs 100 kills), and proof that
its comparison sees what it is there to see: a blob that no longer reads and a trace whose
bytes changed, while the sound ones around them still compare equal."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tables

from hisparc_datastore.codec.decoding import Upload
from hisparc_datastore.plugin.registry import load_registry
from hisparc_datastore.sim.summary import read_all, unreadable_blobs
from hisparc_datastore.testing.kit import upload_events

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))
from sent_blobs import compare_sent  # noqa: E402 - a module of the bench, beside its scripts

STATION = 510
STATION_GROUP = f"/hisparc/cluster_amsterdam/station_{STATION}"


def test_a_short_storm_loses_nothing_and_every_blob_reads_as_sent(tmp_path, shared):
    # The harness waits for readiness and for every station's 100, never for a time: a busy
    # machine makes it slower, not wrong. The deadline is only against a hang.
    result = subprocess.run([sys.executable, str(BENCH / "storm.py"), "--kills", "8", "--stations", "20",
                             "--seconds", "300", "--pace", "0.5", "--dir", str(tmp_path)],
                            capture_output=True, text=True, timeout=1800,
                            env={**os.environ, "HISPARC_SHARED": str(shared)})
    assert result.returncode == 0, result.stdout + result.stderr
    tally = re.search(r"storm kills: (\d+) \(writer (\d+), receiver (\d+)\), lost: (\d+), duplicated: (\d+), "
                      r"unreadable blobs: (\d+), blobs differing: (\d+)", result.stdout)
    assert tally, result.stdout
    assert tally.groups() == ("8", "4", "4", "0", "0", "0", "0")
    uploads = re.search(r"uploads: (\d+) from 20 stations, (\d+) events, traces from "
                        r"py2_s510_100events: 144", result.stdout)
    assert uploads, result.stdout
    answered = re.search(r"uploads answered 100: (\d+), given up: 0;", result.stdout)
    assert answered and answered.group(1) == uploads.group(1), result.stdout
    # every trace of every coincidence, and the configurations' texts, checked against what was sent
    sent = re.search(r"blobs sent: (\d+), differing: 0", result.stdout)
    assert sent and int(sent.group(1)) > 4 * 0.5 * int(uploads.group(2)) * 0.6 / 1.7, result.stdout
    assert "blobs array rows differing from the reference: 0)" in result.stdout


def stored_station_510(datastore, testdata) -> tuple[list[Upload], Path]:
    events = upload_events(testdata / "uploads" / "py2_s510_100events")
    datastore.store(events, station=STATION)
    [path] = datastore.day_files()
    return [Upload(STATION, datastore.cluster(STATION), events)], path


def test_every_blob_of_a_sound_file_reads_and_equals_what_was_sent(datastore, testdata):
    uploads, path = stored_station_510(datastore, testdata)
    rows, unreadable = read_all(datastore.data_dir, load_registry())
    assert unreadable == [] and unreadable_blobs(rows) == {}
    blobs = rows[(path.name, STATION_GROUP, "blobs")]
    assert len(blobs) == 36 * 4 and all(isinstance(blob, bytes) and blob[:1] == b"x" for (blob,) in blobs)
    found = compare_sent(uploads, datastore.data_dir, load_registry())
    assert (found.sent, found.differing) == (144, 0)


def test_blobs_whose_heap_no_longer_reads_are_counted_and_the_others_still_compare(datastore, testdata):
    uploads, path = stored_station_510(datastore, testdata)
    first_run = path.stat().st_size
    # the same events from a second station, stored by a second writer: heap collections of
    # its own, past the end of the file the first run left
    other = Upload(501, datastore.cluster(501), uploads[0].event_list)
    datastore.store(other.event_list, station=501)
    registry = load_registry()
    before, _ = read_all(datastore.data_dir, registry)
    content = bytearray(path.read_bytes())
    collections = [m.start() for m in re.finditer(b"GCOL", content) if m.start() >= first_run]
    assert collections, "the second run made no heap collection of its own"
    for at in collections:  # station 501's
        content[at:at + 4] = b"LOCG"
    path.write_bytes(content)

    rows, unreadable = read_all(datastore.data_dir, registry)
    assert unreadable == []  # the file and its tables still read: only blobs are damaged
    damaged = unreadable_blobs(rows)
    assert list(damaged) == [(path.name, "/hisparc/cluster_amsterdam/station_501")]
    [spoilt] = damaged.values()
    assert 0 < len(spoilt) <= 144
    assert all(blob.error == "bad global heap collection signature" for blob in spoilt)
    # station 510's blobs, in the sound collection, still read and compare equal
    sound = rows[(path.name, STATION_GROUP, "blobs")]
    assert sound == before[(path.name, STATION_GROUP, "blobs")]
    assert all(isinstance(blob, bytes) for (blob,) in sound)
    # the events of 501 that refer to those blobs differ from what was sent, no others
    found = compare_sent([*uploads, other], datastore.data_dir, registry)
    assert (found.sent, found.differing) == (288, len(spoilt))
    assert all("station 501 events" in line for line in found.examples)
    # read whole, as readers do, station 501's array fails
    with tables.open_file(str(path)) as h5, pytest.raises(tables.HDF5ExtError):
        h5.get_node("/hisparc/cluster_amsterdam/station_501", "blobs").read()


def test_a_trace_whose_bytes_changed_differs_from_what_was_sent(datastore, testdata):
    uploads, path = stored_station_510(datastore, testdata)
    registry = load_registry()
    with tables.open_file(str(path)) as h5:
        blobs = h5.get_node(STATION_GROUP, "blobs").read()
        trace = next(blob for blob in blobs if blobs.count(blob) == 1 and len(blob) > 100)
    content = path.read_bytes()
    assert content.count(trace) == 1
    at = content.index(trace) + 50
    path.write_bytes(content[:at] + bytes([content[at] ^ 0xFF]) + content[at + 1:])

    found = compare_sent(uploads, datastore.data_dir, registry)
    assert (found.sent, found.differing) == (144, 1)
    assert "TR" in found.examples[0] and str(STATION) in found.examples[0]
    rows, _ = read_all(datastore.data_dir, registry)
    assert unreadable_blobs(rows) == {}  # it reads; only its bytes are not what was sent
