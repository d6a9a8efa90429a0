"""Power cuts: the states a cut can leave, built from strace records of the real processes
(bench/crashstates.py). The model itself is checked against the disk; the station
list (fetch-stations, config-server) and writer-state.json are the old or the new version in
every state; a short run of bench/powercut.py restarts receiver and writer on crash states
(make chaos runs the long one)."""

import datetime
import http.server
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import xmlrpc.client
from pathlib import Path

import pytest

from hisparc_datastore.sim.simulate import simulated_uploads, stations, write_queue
from hisparc_datastore.testing.helpers import wait_for
from hisparc_datastore.testing.serveprocess import free_port

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))
import crashstates  # noqa: E402 - the power-cut model, beside bench/powercut.py that uses it

ROOT = Path(__file__).resolve().parents[1]
POWERCUT = ROOT / "bench" / "powercut.py"
DATASTORE = Path(sys.executable).parent / "datastore"
OLD = "99,amsterdam,old_password\n"
NEW = "99,amsterdam,new_password\n" + "".join(f"{n},utrecht,s{n}\n" for n in range(501, 700))

pytestmark = pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")


def record(tmp_path: Path, command: list[str], root: Path, snapshot: Path) -> list[crashstates.Op]:
    """Run ``command`` under strace; the operations it made under ``root``."""
    trace = tmp_path / "trace.txt"
    subprocess.run(crashstates.strace_command(trace) + command, cwd=tmp_path, check=True,
                   capture_output=True, timeout=300)
    with open(trace, encoding="ascii", errors="replace") as lines:
        return crashstates.parse_trace(lines, root, tmp_path)


def every_state(root: Path, snapshot: Path, ops: list[crashstates.Op], seeds: int = 3):
    """Every state after every operation, every variant, with a few draws of the torn ones."""
    for seed in range(seeds):
        model = crashstates.Model(root, snapshot=snapshot)
        yield from crashstates.crash_states(model, ops, set(range(len(ops))), random.Random(seed), 6)


def snapshot_of(root: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "snapshot"
    shutil.copytree(root, copy)
    return copy


# -- the model -------------------------------------------------------------------------------

SEQUENCE = """
import os
d = {root!r}
fd = os.open(d + "/synced", os.O_WRONLY | os.O_CREAT, 0o644)
os.write(fd, b"a" * 1500)
os.fsync(fd)
os.write(fd, b"b" * 1500)
os.close(fd)
dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
os.fsync(dfd)
fd = os.open(d + "/unsynced", os.O_WRONLY | os.O_CREAT, 0o644)
os.write(fd, b"c" * 100)
os.close(fd)
os.rename(d + "/synced", d + "/renamed")
"""


def test_the_model_makes_exactly_the_states_its_rules_allow(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    ops = record(tmp_path, [sys.executable, "-c", SEQUENCE.format(root=str(root))], root,
                 snapshot_of(root, tmp_path))
    assert [op.kind for op in ops] == ["open", "write", "fsync", "write", "open", "fsync", "open", "write",
                                      "rename"]

    def after(count: int) -> list[dict]:
        """The states a crash after the first ``count`` operations leaves."""
        result = []
        for seed in range(5):
            model = crashstates.Model(root, snapshot=tmp_path / "snapshot")
            result += [state.files for state in crashstates.crash_states(
                model, ops, {count - 1}, random.Random(seed), 6)]
        return result

    after_all = after(len(ops))
    names = {tuple(sorted(files)) for files in after_all}
    # the directory fsync made "synced" certain; the later create and rename may or may not be
    # on disk, but in order: never the rename without the create before it
    assert names == {("synced",), ("synced", "unsynced"), ("renamed", "unsynced")}
    contents = {files.get("synced", files.get("renamed")) for files in after_all}
    # the fsynced 1500 bytes always; of the unsynced 1500: none, all, or whole sectors of them
    assert b"a" * 1500 in contents and b"a" * 1500 + b"b" * 1500 in contents
    assert all(c.startswith(b"a" * 1500) and set(c[1500:]) <= {ord("b")} for c in contents)
    assert {len(c) for c in contents} <= {1500, 1536, 2048, 2560, 3000}
    assert {files.get("unsynced") for files in after_all if "unsynced" in files} <= {b"", b"c" * 100}
    # before the directory fsync, the file's creation itself may be lost
    assert any("synced" not in files for files in after(3))


COPY = """
import os, shutil
d = {root!r}
shutil.copyfile(d + "/day.h5", d + "/.day.h5.before.tmp")  # sendfile(2): no bytes pass the process
fd = os.open(d + "/.day.h5.before.tmp", os.O_RDONLY)
os.fsync(fd)
os.close(fd)
os.rename(d + "/.day.h5.before.tmp", d + "/.day.h5.before")
"""


def test_the_model_takes_a_copy_made_by_sendfile_from_the_source_as_it_stood(tmp_path):
    """The writer copies a day file before it adds a group (shutil.copyfile, which is sendfile
    on Linux): strace shows no bytes, so the model must take them from the source. Before it
    did, every state held an empty copy, and recovery put that empty copy back."""
    root = tmp_path / "root"
    root.mkdir()
    original = os.urandom(70_000)
    (root / "day.h5").write_bytes(original)
    ops = record(tmp_path, [sys.executable, "-c", COPY.format(root=str(root))], root,
                 snapshot_of(root, tmp_path))
    assert "copy" in [op.kind for op in ops]
    states = list(every_state(root, tmp_path / "snapshot", ops))
    copies = [state.files[".day.h5.before"] for state in states if ".day.h5.before" in state.files]
    assert copies and all(copy == original for copy in copies)  # fsynced before its rename
    unsynced = {state.files.get(".day.h5.before.tmp") for state in states} - {None}
    assert original in unsynced and all(original.startswith(part) or len(part) == len(original)
                                        for part in unsynced)


def test_the_model_replays_a_recording_of_the_real_processes_to_the_disk_they_left(tmp_path):
    """The whole of a real receiver's and writer's records, all kept, is the disk as it is."""
    data = tmp_path / "data"
    config = tmp_path / "config.ini"
    data.mkdir()
    (tmp_path / "stations.csv").write_text("501,amsterdam,pw\n")
    config.write_text(f"[General]\nlog={tmp_path}/datastore.log\nstation_list={tmp_path}/stations.csv\n"
                      f"data_dir={data}\nminimum_year=2020\n[Writer]\nbatch_uploads=2\n")
    uploads = simulated_uploads(stations(1), datetime.datetime(2026, 11, 24), 300)
    write_queue(data, uploads)
    snapshot = snapshot_of(data, tmp_path)
    ops = record(tmp_path, [str(DATASTORE), "writer", str(config), "--once", "--quiet"], data, snapshot)
    model = crashstates.Model(data, snapshot=snapshot)
    for op in ops:
        model.apply(op)
    state = model.state(len(model.dirops), crashstates.kept)
    on_disk = {str(p.relative_to(data)): (None if p.is_dir() else p.read_bytes())
               for p in data.rglob("*") if not p.name.endswith("-shm")}
    assert state.files == on_disk
    assert any(path.endswith(".h5") for path in on_disk)
    # The writer leaves no name change unsynced but the pruning of old archived uploads (their
    # receipt times here are of 2023), which is merely done again if a cut undoes it.
    uncertain = model.dirops[model.certain:]
    assert all(kind == "unlink" and path.startswith("archive/") for kind, path, _ in uncertain), uncertain


# -- the station list --------------------------------------------------------------------------

class PublicDB:
    def __init__(self, body: bytes) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/config/datastore"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def station_list_setup(tmp_path: Path) -> tuple[Path, Path, PublicDB]:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "stations.csv").write_text(OLD)
    publicdb = PublicDB(NEW.encode())
    config = tmp_path / "config.ini"
    config.write_text(f"[General]\nlog={tmp_path}/datastore.log\nstation_list={etc}/stations.csv\n"
                      f"data_dir={tmp_path}/data\nstation_list_url={publicdb.url}\n")
    return etc, config, publicdb


def assert_old_or_new(etc: Path, ops: list[crashstates.Op], snapshot: Path) -> int:
    states = 0
    seen_new = False
    for state in every_state(etc, snapshot, ops):
        states += 1
        assert state.files.get("stations.csv") in (OLD.encode(), NEW.encode()), (state.after, state.variant)
        assert state.files.get("stations.csv.previous") in (None, OLD.encode())
        seen_new |= state.files.get("stations.csv") == NEW.encode()
    assert seen_new
    return states


def test_fetch_stations_leaves_the_old_list_or_the_new_one_after_a_power_cut(tmp_path):
    etc, config, publicdb = station_list_setup(tmp_path)
    try:
        snapshot = snapshot_of(etc, tmp_path)
        ops = record(tmp_path, [str(DATASTORE), "fetch-stations", str(config)], etc, snapshot)
    finally:
        publicdb.close()
    assert (etc / "stations.csv").read_text() == NEW
    assert [op.kind for op in ops if op.kind in ("fsync", "rename")] == ["fsync", "rename", "fsync"] * 2
    assert assert_old_or_new(etc, ops, snapshot) > 20


def test_config_server_leaves_the_old_list_or_the_new_one_after_a_power_cut(tmp_path):
    etc, config, publicdb = station_list_setup(tmp_path)
    port = free_port()
    trace = tmp_path / "trace.txt"
    try:
        snapshot = snapshot_of(etc, tmp_path)
        tracer = subprocess.Popen(crashstates.strace_command(trace) + [
            str(DATASTORE), "config-server", str(config), "--bind", f"127.0.0.1:{port}"],
            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            proxy = xmlrpc.client.ServerProxy(f"http://127.0.0.1:{port}/RPC2")

            def reloaded() -> bool:
                try:
                    return proxy.reload_datastore()
                except OSError:
                    return False

            assert wait_for(reloaded, timeout=120, interval=0.2)
        finally:
            # strace's own start-up probes are children too: stop the one running datastore
            for child in Path(f"/proc/{tracer.pid}/task/{tracer.pid}/children").read_text().split():
                try:
                    command = Path(f"/proc/{child}/cmdline").read_bytes()
                except OSError:
                    continue
                if b"datastore" in command:
                    os.kill(int(child), signal.SIGTERM)
            tracer.wait(120)
    finally:
        publicdb.close()
    with open(trace, encoding="ascii", errors="replace") as lines:
        ops = crashstates.parse_trace(lines, etc, tmp_path)
    assert (etc / "stations.csv").read_text() == NEW
    assert assert_old_or_new(etc, ops, snapshot) > 20


def test_an_unsynced_replacement_would_be_caught(tmp_path):
    """The other side: a rename without the fsyncs leaves an empty list in some state."""
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "stations.csv").write_text(OLD)
    snapshot = snapshot_of(etc, tmp_path)
    code = ("from pathlib import Path; from hisparc_datastore.util.durable import write_atomically; "
            f"write_atomically(Path({str(etc / 'stations.csv')!r}), {NEW.encode()!r}, fsync=False)")
    ops = record(tmp_path, [sys.executable, "-c", code], etc, snapshot)
    contents = {state.files.get("stations.csv") for state in every_state(etc, snapshot, ops)}
    assert b"" in contents or any(c not in (OLD.encode(), NEW.encode()) for c in contents)


# -- writer-state.json ------------------------------------------------------------------------

def test_writer_state_is_the_old_version_or_the_new_one_after_a_power_cut(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (tmp_path / "stations.csv").write_text("501,amsterdam,pw\n")
    config = tmp_path / "config.ini"
    config.write_text(f"[General]\nlog={tmp_path}/datastore.log\nstation_list={tmp_path}/stations.csv\n"
                      f"data_dir={data}\nminimum_year=2020\n[Writer]\nbatch_uploads=1\narchive_days=0\n")
    uploads = simulated_uploads(stations(1), datetime.datetime(2026, 11, 24), 400)
    assert len(uploads) >= 3
    write_queue(data, uploads[:1])
    subprocess.run([str(DATASTORE), "writer", str(config), "--once", "--quiet"], check=True, timeout=300)
    old = (data / "writer-state.json").read_bytes()
    write_queue(data, uploads[1:3])
    for path in (data / "incoming").iterdir():
        path.rename(path.with_name("b-" + path.name))  # not the names the first batch had
    snapshot = snapshot_of(data, tmp_path)
    ops = record(tmp_path, [str(DATASTORE), "writer", str(config), "--once", "--quiet"], data, snapshot)
    new = (data / "writer-state.json").read_bytes()
    versions = set()
    # every state after an operation on the state file or its directory, every variant
    points = {i for i, op in enumerate(ops) if "writer-state" in op.path or "writer-state" in op.target
              or op.path == str(data)}
    assert points
    for seed in range(3):
        model = crashstates.Model(data, snapshot=snapshot)
        for state in crashstates.crash_states(model, ops, points, random.Random(seed), 6):
            content = state.files.get("writer-state.json")
            assert content is not None, (state.after, state.variant)
            versions.add(content)
    for content in versions:
        json.loads(content)  # never torn
    # one batch each: the versions are the old one, the one after each batch
    assert old in versions and new in versions
    assert json.loads(new)["batches"] == 2 and json.loads(old)["batches"] == 1


# -- the receiver and the writer, restarted on crash states ----------------------------------

def test_short_power_cut_run_loses_doubles_and_leaves_nothing(tmp_path):
    result = subprocess.run([sys.executable, str(POWERCUT), "--states", "20", "--dir", str(tmp_path)],
                            capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout + result.stderr
    line = re.search(r"power-cut states: (\d+), lost: (\d+), duplicated: (\d+), unreadable: (\d+), "
                     r"stuck: (\d+), blobs differing: (\d+)", result.stdout)
    assert line, result.stdout
    assert line.groups() == ("20", "0", "0", "0", "0", "0")
    roles = re.search(r"crash points in the receiver: (\d+) states, in the writer: (\d+) states",
                      result.stdout)
    assert roles and int(roles.group(1)) >= 6 and int(roles.group(2)) >= 6, result.stdout
    assert "days: 2026-11-23 2026-11-24" in result.stdout  # across a UTC midnight
