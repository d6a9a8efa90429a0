"""The second process that prepares the writer's next batch: it gives what the writer would
have prepared itself, and nothing that happens to it loses, doubles or stops anything."""

import base64
import contextlib
import datetime
import logging
import os
import signal
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
import tables

from hisparc_datastore.codec.decoding import Upload, parse_event_list
from hisparc_datastore.plugin.registry import Registry, load_registry
from hisparc_datastore.storage.layout import day_file_path
from hisparc_datastore.testing.helpers import event, queue_uploads, settings_for, wait_for
from hisparc_datastore.writer import prefetch as preparer_module
from hisparc_datastore.writer.prefetch import Preparer
from hisparc_datastore.writer.prepare import Screen, prepare_file
from hisparc_datastore.writer.service import Writer

BIN = Path(sys.executable).parent
MIDNIGHT = datetime.datetime(2024, 5, 7)
TRACE = base64.b64encode(zlib.compress(b"hello world")).decode()


@pytest.fixture
def real_events(testdata):
    return parse_event_list((testdata / "uploads" / "py2_s510_100events").read_bytes())


def across_midnight(station_id: int, minutes: int) -> Upload:
    """CIC events with traces and singles, on both sides of midnight, one odd event."""
    events = []
    for n in range(minutes * 6):
        moment = MIDNIGHT + datetime.timedelta(seconds=10 * n - minutes * 30)
        events.append(event("SIN", moment, {"MAS_CH1_LOW": n, "SLV_CH2_HIGH": station_id}))
        events.append(event("CIC", moment, {"TR1": TRACE, "PH1": n},
                            nanoseconds=n))
    events.append(event("SIN", MIDNIGHT, {"MAS_CH1_LOW": "not a number"}))
    return Upload(station_id, "Utrecht", events)


def day_files(data_dir: Path) -> dict:
    """Every node of every day file: table rows and blobs, as readers see them."""
    found = {}
    for path in sorted(data_dir.rglob("*.h5")):
        with tables.open_file(path) as h5:
            for node in h5.walk_nodes("/", "Leaf"):
                rows = node.read()
                # table rows as their bytes on disk, with the dtype that gives them meaning
                found[(path.name, node._v_pathname)] = (
                    (rows.dtype, rows.tobytes()) if isinstance(rows, np.ndarray) else rows)
    return found


def answered_by_the_child(preparer: Preparer, names: list[str]) -> list:
    """Hand ``names`` to the child, let it answer, and take the batch: all of it is the child's."""
    preparer.submit(names)
    assert wait_for(lambda: preparer.answered(names), timeout=120), "the child gave no answer"
    here = preparer.uploads_here
    prepared = preparer.take(names, threading.Event())
    assert prepared is not None and preparer.uploads_here == here
    return prepared


def assert_same(theirs, ours) -> None:
    """Two prepared uploads hold the same rows, blobs, dates and rejected events."""
    assert (theirs.name, theirs.station_id, theirs.cluster, theirs.events, theirs.dates) == \
           (ours.name, ours.station_id, ours.cluster, ours.events, ours.dates)
    assert [reason for _, reason in theirs.rejected] == [reason for _, reason in ours.rejected]
    assert list(theirs.days) == list(ours.days)
    for date in ours.days:
        assert theirs.days[date].blobs == ours.days[date].blobs
        assert theirs.days[date].arrays.keys() == ours.days[date].arrays.keys()
        for code, records in ours.days[date].arrays.items():
            assert theirs.days[date].arrays[code].dtype == records.dtype
            assert theirs.days[date].arrays[code].tobytes() == records.tobytes()


def prepared_here(paths: list[Path]) -> list:
    screen = Screen(load_registry(), 2016)
    return [prepare_file(path, screen) for path in paths]


def test_the_child_prepares_what_the_writer_would_prepare_itself(tmp_path, real_events):
    paths = queue_uploads(tmp_path, [Upload(510, "Utrecht", real_events), across_midnight(501, 3)])
    preparer = Preparer(tmp_path / "incoming", load_registry(), 2016)
    try:
        ahead = answered_by_the_child(preparer, [path.name for path in paths])
    finally:
        preparer.close()
    assert preparer.batches_ahead == 1 and preparer.uploads_here == 0
    for theirs, ours in zip(ahead, prepared_here(paths), strict=True):
        assert_same(theirs, ours)
    midnight = ahead[1]
    assert sorted(midnight.days) == [datetime.date(2024, 5, 6), datetime.date(2024, 5, 7)]
    assert len(midnight.rejected) == 1 and "not a number" in midnight.rejected[0][1]
    assert len(ahead[0].days[datetime.date(2017, 2, 26)].arrays["CIC"]) > 0


def test_the_writer_prepares_from_the_back_what_the_child_has_not_taken(tmp_path):
    paths = queue_uploads(tmp_path, [across_midnight(501 + n, 1 + n % 3) for n in range(40)])
    names = [path.name for path in paths]
    preparer = Preparer(tmp_path / "incoming", load_registry(), 2016)
    try:
        answered_by_the_child(preparer, names[:1])  # the child is up and waiting
        # Taken at once: the child works from the front, the writer from the back; however the
        # two happen to share it, the uploads come back whole and in order.
        preparer.submit(names[1:])
        prepared = preparer.take(names[1:], threading.Event())
        assert prepared is not None
        for theirs, ours in zip(prepared, prepared_here(paths[1:]), strict=True):
            assert_same(theirs, ours)
        shared = preparer.uploads_here
        # A child that cannot begin: the writer prepares the whole batch itself.
        os.kill(preparer._process.pid, signal.SIGSTOP)
        try:
            preparer.submit(names[:5])
            prepared = preparer.take(names[:5], threading.Event())
        finally:
            os.kill(preparer._process.pid, signal.SIGCONT)
        assert preparer.uploads_here == shared + 5
        for theirs, ours in zip(prepared, prepared_here(paths[:5]), strict=True):
            assert_same(theirs, ours)
        # Woken, it skips that batch and answers the next one in full.
        assert [item.station_id for item in answered_by_the_child(preparer, names[5:8])] == [506, 507, 508]
    finally:
        preparer.close()


def test_day_files_are_the_same_with_and_without_the_second_process(tmp_path, real_events):
    uploads = [across_midnight(501 + n % 3, 2 + n % 4) for n in range(12)]
    uploads += [Upload(510, "Utrecht", real_events)] * 2
    results = {}
    for mode in (True, False):
        data_dir = tmp_path / str(mode)
        queue_uploads(data_dir, uploads)
        # one or two uploads a batch: many batches, each but the first prepared ahead
        writer = Writer(settings_for(data_dir, batch_uploads=2, prepare_process=mode), load_registry())
        tally = writer.run(once=True)
        assert tally.uploads == 14 and sum(tally.quarantined_events.values()) == 12
        # each batch after the first prepared by the child, or by the writer rather than wait
        assert (writer.preparer.batches_ahead + writer.preparer.uploads_here > 0) is mode
        results[mode] = day_files(data_dir)
        assert len(os.listdir(data_dir / "quarantine")) == 2 * 12  # events and reasons
    assert results[True] == results[False]
    dtype, events = results[True][("2024_5_7.h5", "/hisparc/cluster_utrecht/station_501/events")]
    events = np.frombuffer(events, dtype=dtype)
    assert events["event_id"].tolist() == list(range(1, len(events) + 1))  # counts on over batches
    traces = events["traces"][:, 0]
    assert traces.tolist() == list(range(len(events)))  # a blob each, indices dense over batches
    blobs = results[True][("2024_5_7.h5", "/hisparc/cluster_utrecht/station_501/blobs")]
    assert set(blobs) == {base64.b64decode(TRACE)}


def kill_mid_batch(preparer: Preparer, names: list[str]) -> None:
    """Hand ``names`` to the child and kill it once it has taken some but not all of them."""
    preparer.submit(names)
    number = preparer._waiting[tuple(names)]
    child = preparer._child
    assert wait_for(lambda: child.split[0] == number and child.split[1] >= 1, timeout=120, interval=0.001)
    os.kill(child.process.pid, signal.SIGSTOP)
    if child.split[1] >= len(names):
        os.kill(child.process.pid, signal.SIGCONT)
        pytest.skip("the child finished the batch before it could be stopped")
    os.kill(child.process.pid, signal.SIGKILL)


def test_a_child_killed_in_a_batch_leaves_the_writer_to_prepare_it_itself(tmp_path, caplog):
    paths = queue_uploads(tmp_path, [across_midnight(501 + n, 4) for n in range(60)])
    names = [path.name for path in paths]
    preparer = Preparer(tmp_path / "incoming", load_registry(), 2016)
    try:
        answered_by_the_child(preparer, names[:1])
        kill_mid_batch(preparer, names[1:])
        with caplog.at_level(logging.WARNING):
            assert preparer.take(names[1:], threading.Event()) is None  # the caller prepares them
        assert "the writer prepares the batch itself" in caplog.text
        assert preparer.failures == 1 and preparer.enabled
        assert answered_by_the_child(preparer, names[:1])[0].station_id == 501  # a new child
    finally:
        preparer.close()


def test_after_three_deaths_no_child_is_started_again(tmp_path):
    paths = queue_uploads(tmp_path, [across_midnight(501 + n, 4) for n in range(60)])
    names = [path.name for path in paths]
    preparer = Preparer(tmp_path / "incoming", load_registry(), 2016)
    for _ in range(3):
        answered_by_the_child(preparer, names[:1])
        kill_mid_batch(preparer, names[1:])
        assert preparer.take(names[1:], threading.Event()) is None
    assert not preparer.enabled and preparer._process is None
    preparer.submit(names[:1])
    assert preparer._process is None and preparer.take(names[:1], threading.Event()) is None


def test_a_stop_while_waiting_for_the_child_returns_at_once(tmp_path):
    paths = queue_uploads(tmp_path, [across_midnight(501, 1)])
    preparer = Preparer(tmp_path / "incoming", load_registry(), 2016)
    stop = threading.Event()
    stop.set()
    try:
        preparer.submit([paths[0].name])
        os.kill(preparer._process.pid, signal.SIGSTOP)  # it cannot answer
        assert preparer.take([paths[0].name], stop) is None
        assert preparer.failures == 0
    finally:
        os.kill(preparer._process.pid, signal.SIGCONT)
        preparer.close()


def test_a_child_that_finds_other_event_types_is_not_used(tmp_path, caplog):
    registry = load_registry()
    fewer = Registry({code: t for code, t in registry.by_code.items() if code != "WTR"},
                     {code: owner for code, owner in registry.owners.items() if code != "WTR"})
    paths = queue_uploads(tmp_path, [across_midnight(501, 1)])
    names = [paths[0].name]
    preparer = Preparer(tmp_path / "incoming", fewer, 2016)
    with caplog.at_level(logging.WARNING):
        preparer.submit(names)
        assert wait_for(lambda: preparer.answered(names), timeout=120)
        assert preparer.take(names, threading.Event()) is None
    assert not preparer.enabled and "other event types" in caplog.text


def test_a_batch_the_writer_prepared_itself_is_not_taken_for_the_next(tmp_path):
    paths = queue_uploads(tmp_path, [across_midnight(501, 1), across_midnight(502, 1)])
    first, second = [paths[0].name], [paths[1].name]
    preparer = Preparer(tmp_path / "incoming", load_registry(), 2016)
    try:
        preparer.submit(first)
        assert preparer.take(second, threading.Event()) is None  # never sent
        # the answer for the first is dropped when the second is taken
        assert answered_by_the_child(preparer, second)[0].station_id == 502
        assert not preparer._child.answers
    finally:
        preparer.close()


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except FileNotFoundError:
        return []
    return [int(child) for child in text.split()]


def preparing(pid: int) -> bool:
    try:
        return alive(pid) and b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def test_a_killed_writer_leaves_no_child_and_the_next_writer_stores_everything_once(tmp_path):
    data_dir = tmp_path / "data"
    queue_uploads(data_dir, [across_midnight(501 + n % 5, 2) for n in range(60)])
    config = tmp_path / "config.ini"
    config.write_text(f"[General]\nstation_list={tmp_path}/stations.csv\ndata_dir={data_dir}\n"
                      "minimum_year=2016\n[Writer]\nfsync=false\nbatch_uploads=1\n")
    writer = subprocess.Popen([BIN / "datastore", "writer", str(config), "--quiet"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: any(map(preparing, children(writer.pid))), timeout=120)
        kids = children(writer.pid)
    finally:
        writer.kill()
        writer.wait()
    # The children see their pipe close and leave by themselves.
    assert wait_for(lambda: not any(alive(kid) for kid in kids), timeout=60), kids
    tally = Writer(settings_for(data_dir, minimum_year=2016), load_registry()).run(once=True)
    with tables.open_file(day_file_path(data_dir, MIDNIGHT.date())) as h5:
        for station_id in range(501, 506):
            singles = h5.get_node(f"/hisparc/cluster_utrecht/station_{station_id}/singles")
            assert singles.nrows == 12 * 6  # 12 uploads, each 6 singles after midnight
    assert tally.uploads <= 60


def test_the_child_is_ended_when_the_queue_is_drained(tmp_path):
    queue_uploads(tmp_path, [across_midnight(501 + n % 4, 2) for n in range(12)])
    writer = Writer(settings_for(tmp_path, batch_uploads=2, sleep=0.05), load_registry())
    started = []
    submit = writer.preparer.submit

    def noting_submit(names):
        submit(names)
        started.append(writer.preparer._child is not None)

    writer.preparer.submit = noting_submit
    service = threading.Thread(target=writer.run)
    service.start()
    try:
        assert wait_for(lambda: writer.tally.uploads == 12, timeout=120)
        # idle: no child kept waiting for a backlog
        assert wait_for(lambda: writer.preparer._child is None, timeout=60)
    finally:
        writer.stop()
        service.join(timeout=60)
    assert started and all(started) and not service.is_alive()


def test_a_child_that_died_idle_is_replaced_at_the_next_batch(tmp_path, caplog):
    paths = queue_uploads(tmp_path, [across_midnight(501, 1), across_midnight(502, 1)])
    first, second = [paths[0].name], [paths[1].name]
    preparer = Preparer(tmp_path / "incoming", load_registry(), 2016)
    try:
        answered_by_the_child(preparer, first)
        dead = preparer._child
        os.kill(dead.process.pid, signal.SIGKILL)
        assert wait_for(lambda: dead.ended is not None, timeout=60)
        with caplog.at_level(logging.WARNING):
            assert answered_by_the_child(preparer, second)[0].station_id == 502
        assert preparer.failures == 1 and preparer._child is not dead
        assert "it stopped" in caplog.text
    finally:
        preparer.close()


def stop_mid_batch(child, number: int, size: int) -> bool:
    """SIGSTOP the child once it has taken part of batch ``number`` and not answered; False
    when it answered first (the caller tries again)."""
    if not wait_for(lambda: child.split[0] == number and child.split[1] >= 1, timeout=120,
                    interval=0.001):
        return False
    os.kill(child.process.pid, signal.SIGSTOP)
    with child.changed:
        answered = number in child.answers
    if answered or child.split[1] >= size:
        os.kill(child.process.pid, signal.SIGCONT)
        return False
    return True


def test_a_stopped_child_is_killed_and_replaced_after_a_time_out(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(preparer_module, "ANSWER_TIMEOUT_S", 2.0)
    paths = queue_uploads(tmp_path, [across_midnight(501 + n, 4) for n in range(60)])
    names = [path.name for path in paths]
    preparer = Preparer(tmp_path / "incoming", load_registry(), 2016)
    try:
        answered_by_the_child(preparer, names[:1])
        preparer.submit(names[1:])
        stopped = preparer._child
        if not stop_mid_batch(stopped, preparer._waiting[tuple(names[1:])], len(names) - 1):
            pytest.skip("the child finished the batch before it could be stopped")
        with caplog.at_level(logging.WARNING):
            # main waited here for ever: the child neither answers nor dies
            assert preparer.take(names[1:], threading.Event()) is None  # the caller prepares them
        assert "gave no answer in 2 s" in caplog.text
        assert preparer.failures == 1 and preparer.enabled
        assert wait_for(lambda: not alive(stopped.process.pid), timeout=60)  # killed, not left stopped
        assert answered_by_the_child(preparer, names[:1])[0].station_id == 501  # a new child
        assert preparer._child is not stopped
    finally:
        preparer.close()


def test_uploads_are_stored_while_the_child_is_stopped(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(preparer_module, "ANSWER_TIMEOUT_S", 2.0)
    # Uploads of 1,801 events, four batches a wave (the first the writer prepares itself):
    # the child takes ~50 ms over each upload, a window the test hits under load. With 361
    # events it missed ten waves of 60 in a make test beside other work, once commit_s had
    # made the writer's batches quicker.
    minutes = 150
    wave = 20
    queue_uploads(tmp_path, [across_midnight(501 + n % 5, minutes) for n in range(wave)])
    writer = Writer(settings_for(tmp_path, minimum_year=2016, batch_uploads=5, sleep=0.05),
                    load_registry())
    service = threading.Thread(target=writer.run)
    stopped = []

    def stop_the_child() -> bool:
        """SIGSTOP the child while it prepares an upload the writer will wait for."""
        child = writer.preparer._child
        if child is None or stopped or not 1 <= child.split[1] <= child.split[2]:
            return False
        number = int(child.split[0])
        os.kill(child.process.pid, signal.SIGSTOP)
        with child.changed:
            answered = number in child.answers
        if answered:
            os.kill(child.process.pid, signal.SIGCONT)  # too late for this batch: try the next
            return False
        stopped.append(child)
        return True

    queued = wave
    with caplog.at_level(logging.WARNING):
        service.start()
        try:
            # The child is caught mid-batch only while a batch is in hand: queue more until it is.
            while True:
                wait_for(lambda target=queued: stop_the_child() or writer.tally.uploads == target,
                         timeout=120, interval=0.001)
                if stopped:
                    break
                assert queued < 600, "never caught mid-batch"
                queue_uploads(tmp_path, [across_midnight(501 + n % 5, minutes) for n in range(wave)])
                queued += wave
            # bounded: the time-out, then the writer prepares the batch itself
            assert wait_for(lambda: writer.tally.uploads == queued, timeout=120), writer.tally
        finally:
            for child in stopped:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.process.pid, signal.SIGCONT)
            writer.stop()
            service.join(timeout=60)
    assert not service.is_alive()
    assert "gave no answer in 2 s" in caplog.text
    assert not alive(stopped[0].process.pid)
    with tables.open_file(day_file_path(tmp_path, MIDNIGHT.date())) as h5:
        for station_id in range(501, 506):
            singles = h5.get_node(f"/hisparc/cluster_utrecht/station_{station_id}/singles")
            assert singles.nrows == queued // 5 * minutes * 3  # each upload once: the singles after midnight


def test_a_child_stopped_while_idle_cannot_block_the_writer_on_a_full_pipe(tmp_path, caplog):
    paths = queue_uploads(tmp_path, [across_midnight(501, 1)])
    preparer = Preparer(tmp_path / "incoming", load_registry(), 2016)
    stopped = None
    outcome = []

    def batches() -> None:
        # Names of uploads already gone (prepared as None at once): only the pipe is at stake.
        for number in range(40):
            names = [f"gone-{number}-{n:04d}-{'x' * 40}" for n in range(300)]  # ~20 kB to send
            preparer.submit(names)
            outcome.append(preparer.take(names, threading.Event()))

    try:
        answered_by_the_child(preparer, [paths[0].name])
        stopped = preparer._child
        os.kill(stopped.process.pid, signal.SIGSTOP)  # idle: it takes no batch, reads nothing
        with caplog.at_level(logging.WARNING):
            writer_side = threading.Thread(target=batches, daemon=True)
            writer_side.start()
            writer_side.join(timeout=120)
        # main: the fourth batch or so blocked for ever in send(), the pipe full
        assert not writer_side.is_alive(), "the writer hung sending to a stopped child"
        assert len(outcome) == 40
        assert "could not hand it a batch" in caplog.text
        assert wait_for(lambda: not alive(stopped.process.pid), timeout=60)  # killed
    finally:
        if stopped is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(stopped.process.pid, signal.SIGCONT)
        preparer.close()
