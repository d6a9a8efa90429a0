"""A SIGHUP in a service's first half second (logrotate's postrotate meeting a restart) is
taken note of, not obeyed: the writer, the receiver and the config-server each catch it from
the package's first line, well before they are ready, and act on it once they are; the
writer's preparing child ignores a SIGHUP sent to the writer's process group."""

import collections
import datetime
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tables

from hisparc_datastore.codec.decoding import Upload
from hisparc_datastore.testing.helpers import event, wait_for
from hisparc_datastore.testing.serveprocess import free_port
from hisparc_datastore.util.durable import write_atomically

DATASTORE = Path(sys.executable).with_name("datastore")
ATTEMPTS = 5
FAILED = "the process preparing the next batch failed"
READY = {"writer": "writer started", "serve": "receiving uploads on",
         "config-server": "config server on"}


def write_config(tmp_path, extra=""):
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "station_list.csv").write_text("501,amsterdam,pw\n")
    config = tmp_path / "config.ini"
    config.write_text(
        f"[General]\nlog={tmp_path}/log/datastore.log\nloglevel=info\n"
        f"station_list={tmp_path}/station_list.csv\ndata_dir={tmp_path}/data\nminimum_year=2000\n"
        f"station_list_url=http://127.0.0.1:9/none\n[Writer]\nfsync=false\nsleep=0.2\n{extra}")
    return config


def _signal_mask(pid: int, field: str) -> int | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    line = next((line for line in text.splitlines() if line.startswith(field + ":")), None)
    return int(line.split()[1], 16) if line else None


def catches_sighup(pid: int) -> bool:
    return bool((_signal_mask(pid, "SigCgt") or 0) & (1 << (signal.SIGHUP - 1)))


def stopped(pid: int) -> bool:
    """Whether the process is stopped (or gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("T", "t", "Z")


def run_a_step(pid: int) -> None:
    """Let the stopped process run for about a millisecond, and stop it again."""
    os.kill(pid, signal.SIGCONT)
    time.sleep(0.001)
    os.kill(pid, signal.SIGSTOP)
    wait_for(lambda: stopped(pid), 10, interval=0.001)


def start(command, config, **popen):
    args = [str(DATASTORE), command, str(config), "--quiet"]
    if command in ("serve", "config-server"):
        args += ["--bind", f"127.0.0.1:{free_port()}"]
    # Started as systemd starts it, SIGHUP at its default: under nohup (ignored, and so
    # inherited) a service leaves it ignored until it is ready.
    return subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, preexec_fn=default_sighup, **popen)


def default_sighup() -> None:
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


@pytest.mark.parametrize("command", ["writer", "serve", "config-server"])
def test_a_sighup_before_the_service_is_ready_is_acted_on_once_it_is(tmp_path, command):
    config = write_config(tmp_path)
    log = tmp_path / "log" / "datastore.log"
    # The handler must be in place long before the service is ready (it was set only once
    # the service was ready, and an earlier SIGHUP ended it: rc -1). The service is run in
    # short steps, stopped between them, until it catches SIGHUP: a test that only watched
    # it was descheduled past the window on a loaded machine (5 starts of 5 seen late in a
    # make test beside other work). A start seen late all the same is tried again; a
    # service that catches SIGHUP only once it is ready is late every time.
    for _ in range(ATTEMPTS):
        process = start(command, config)
        os.kill(process.pid, signal.SIGSTOP)
        deadline = time.monotonic() + 120
        while not catches_sighup(process.pid) and process.poll() is None and time.monotonic() < deadline:
            run_a_step(process.pid)
        early = not (log.exists() and READY[command] in log.read_text())
        if early:
            break
        process.send_signal(signal.SIGCONT)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, process.stderr.read()
        log.unlink()
    try:
        process.send_signal(signal.SIGHUP)  # waits while the service is stopped
        process.send_signal(signal.SIGCONT)
        assert early, f"{command} caught SIGHUP only once it was ready, {ATTEMPTS} starts out of {ATTEMPTS}"
        assert wait_for(lambda: log.exists() and READY[command] in log.read_text()
                        or process.poll() is not None, 120)
        assert process.poll() is None, process.stderr.read()
        assert wait_for(lambda: "SIGHUP: log reopened" in log.read_text())
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, process.stderr.read()


def preparing_child(writer_pid: int) -> int | None:
    """The pid of the writer's preparing child, while it runs (the resource tracker, its
    other spawned child, is not it; a dead child awaiting its join has no command line)."""
    for task in Path(f"/proc/{writer_pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for pid in children:
            if running_child(int(pid)):
                return int(pid)
    return None


def running_child(pid: int) -> bool:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"multiprocessing.spawn" in command and b"resource_tracker" not in command


def set_up(pid: int) -> bool:
    """Whether the child has unblocked SIGHUP: it starts with it blocked, and a hangup sent
    before then waits and meets whatever it chose for SIGHUP."""
    blocked = _signal_mask(pid, "SigBlk")
    return blocked is not None and not blocked & (1 << (signal.SIGHUP - 1))


def test_the_writers_preparing_child_ignores_a_sighup_to_the_group(tmp_path):
    """logrotate may signal the whole group: the child died of it and the writer logged a
    failure and prepared the batches itself."""
    config = write_config(tmp_path, "prepare_process=true\nbatch_uploads=5\n")
    moment = datetime.datetime(2017, 2, 26, 7, 26, 4)
    data = tmp_path / "data"
    incoming = data / "incoming"
    # Twenty uploads of 50 events, queued again and again: without traces or fsync the writer
    # stores a batch in milliseconds, and it ends the child whenever the queue is empty. A
    # queue filled once was drained before the child had started (seen in CI), and one
    # encoded as it is fed could not keep up.
    uploads = [Upload(501, "amsterdam", [event("CIC", moment, {"PH1": n % 1000}, nanoseconds=n)
                                         for n in range(k, k + 50)]) for k in range(0, 1000, 50)]
    encoded = [upload.to_queue_bytes() for upload in uploads]
    copies = collections.Counter()

    def feed(count: int) -> None:
        for i in range(count):
            index = i % len(encoded)
            write_atomically(incoming / f"{time.time_ns()}-501-{i}", encoded[index], fsync=False)
            copies[index] += 1

    def drains() -> int:
        """Times the queue ran dry, the last one counted once the writer has gone on."""
        batches = re.findall(r"; (\d+) left in incoming/", log.read_text())
        # After a batch that left it dry, the writer may still be ending its child.
        return batches.count("0") - (batches[-1:] == ["0"])

    log = tmp_path / "log" / "datastore.log"
    incoming.mkdir(parents=True)
    feed(20)
    process = start("writer", config, start_new_session=True)
    try:
        assert wait_for(lambda: log.exists() and READY["writer"] in log.read_text(), 120)
        # Hang up the group from the moment the child appears, until it has had five hangups
        # after unblocking SIGHUP and is still there to prepare the uploads queued after them.
        signalled: set[int] = set()
        hits = drained = 0
        deadline = time.monotonic() + 120
        while process.poll() is None and time.monotonic() < deadline:
            if sum(1 for _ in incoming.iterdir()) < 300:
                feed(300)
            child = preparing_child(process.pid)
            ready = child is not None and set_up(child)
            os.killpg(process.pid, signal.SIGHUP)
            if ready:
                if not signalled:
                    drained = drains()
                signalled.add(child)
                hits += 1
            if hits >= 5:
                if all(running_child(pid) for pid in signalled):
                    break
                # Gone: killed by a hangup, or ended by the writer because the queue ran dry
                # all the same. Only the second leaves its mark; then try again with the next.
                assert drains() > drained, "the preparing child died of a SIGHUP"
                signalled.clear()
                hits = 0
            assert FAILED not in log.read_text(), log.read_text()
            time.sleep(0.01)
        assert hits >= 5, process.poll()
        feed(20)
        total = 50 * sum(copies.values())
        assert wait_for(lambda: committed_events(log) == total, 300)
        assert process.poll() is None, process.stderr.read()
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, process.stderr.read()
    text = log.read_text()
    assert "SIGHUP: log reopened" in text, text
    assert FAILED not in text, text
    day = next(data.rglob("2017_2_26.h5"))
    with tables.open_file(day) as h5:
        rows = h5.get_node("/hisparc/cluster_amsterdam/station_501/events").read()
    found = zip(rows["nanoseconds"].tolist(), rows["pulseheights"][:, 0].tolist(), strict=True)
    assert sorted(found) == sorted((n, n % 1000) for index, count in copies.items()
                                   for n in range(50 * index, 50 * index + 50)
                                   for _ in range(count))


def committed_events(log: Path) -> int:
    return sum(int(events) for events in
               re.findall(r"committed: \d+ uploads of \d+ batches, (\d+) events", log.read_text()))
