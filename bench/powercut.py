"""Power-cut harness: the states a power cut can leave, built from a recording of the real
receiver and writer, each restarted and checked for lost, doubled or unreadable data.

1. Record. On a fresh ``data_dir``, a real ``datastore serve`` takes uploads from three
   stations across a UTC midnight (each station posts its uploads in order, retries
   whatever is not answered ``100``, and sends some uploads twice, as after a lost reply),
   then a real ``datastore writer --once`` drains them (small batches, fsync and the
   archive on); twice, so the second round meets day files and an archive. Every process
   runs under ``strace`` (bench/crashstates.py explains why strace, and the
   model).
2. Build states. The records are replayed into the model of the file system; after chosen
   operations (every directory operation, fsync and logged line is a candidate, half
   of the chosen ones in the receiver's records, half in the writer's), states are made
   from the persistence choices the model allows (unsynced data lost, kept or torn;
   unsynced directory operations lost in order). Identical states are made once.
3. Check each state. On a copy of it, the receiver starts as ``datastore serve`` does
   (its recovery, then requests through its WSGI application, in this process for
   speed: the same code minus the socket); every station posts, in order, every upload
   it had not heard ``100`` for before the crash (the log line saying ``100`` is written
   just before the reply, so it stands for the reply); then the writer drains the queue
   (``Writer.run(once=True)``, as ``--once``). Then: every day file must open and read,
   and every blob of every station too, each on its own (else *unreadable*); its rows
   and blobs arrays, compared with those of the undisturbed recording, must show no
   event or blob missing (*lost*) or extra (*duplicated*); every blob an event refers to
   must equal the bytes its station sent (else *blobs differing*); nothing may be left in
   tmp/, incoming/, partial/, suspicious/ or quarantine/, no journal, and every upload
   must have been answered ``100`` (else *stuck*).

Prints ``power-cut states: N, lost: 0, duplicated: 0, unreadable: 0, stuck: 0, blobs
differing: 0`` (counts
of states with each fault) and exits 1 if any is not 0; failing states are kept under
``--dir``/states (as cut, and after the restart) for inspection.

Run from the repository root:  .venv/bin/python bench/powercut.py [--states 300]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import logging
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import attrs
import crashstates
from chaos import read_reference
from sent_blobs import compare_sent

from hisparc_datastore.codec.decoding import Upload
from hisparc_datastore.config import load_settings
from hisparc_datastore.plugin.registry import load_registry
from hisparc_datastore.receiver.app import build_app
from hisparc_datastore.sim.simulate import simulated_uploads, stations
from hisparc_datastore.sim.stationclient import post_once, station_form
from hisparc_datastore.sim.summary import read_all, unreadable_blobs
from hisparc_datastore.storage.contents import multiset_difference
from hisparc_datastore.testing.serveprocess import free_port
from hisparc_datastore.writer.service import Writer

ROOT = Path(__file__).resolve().parents[1]
DATASTORE = Path(sys.executable).with_name("datastore")
MIDNIGHT = datetime.datetime(2026, 11, 24)
LEFT_OVER = ("tmp", "incoming", "partial", "suspicious", "quarantine")
RETRIES = 20  # a retry answered 205 (a claim of a live request) is tried again; never needed here
_ANSWERED = re.compile(r"station (\d+) from \S+: 100, .*?\((?:\d+ events -> \w+/\d+-\d+-\d+-\d+-([0-9a-f]{8})"
                       r"|duplicate of an upload with md5 ([0-9a-f]{32}))")


def make_uploads(seed: int) -> list[Upload]:
    """Ten uploads from three stations, each station's events from 2 minutes before to 2 minutes
    after a UTC midnight, cut into 4, 3 and 3 uploads."""
    result = []
    for station, parts in zip(stations(3), (4, 3, 3), strict=True):
        events = [e for u in simulated_uploads((station,), MIDNIGHT - datetime.timedelta(seconds=120),
                                               240, seed=seed) for e in u.event_list]
        size = -(-len(events) // parts)
        result += [Upload(station.number, station.cluster, events[i:i + size])
                   for i in range(0, len(events), size)]
    return result


def write_setup(base: Path, data_dir: Path, uploads: list[Upload]) -> tuple[Path, dict[int, str]]:
    """The config (small batches, fsync and archive on) and the station list (outside the
    modelled tree: it is not what is being cut)."""
    passwords = {u.station_id: f"pw{u.station_id}" for u in uploads}
    clusters = {u.station_id: u.cluster for u in uploads}
    (base / "stations.csv").write_text("".join(f"{n},{clusters[n].lower()},{pw}\n"
                                               for n, pw in passwords.items()))
    config = base / "config.ini"
    config.write_text(f"[General]\nlog={base}/log/datastore.log\nloglevel=info\n"
                      f"station_list={base}/stations.csv\ndata_dir={data_dir}\nminimum_year=2020\n"
                      "[Writer]\nsleep=0.2\nbatch_uploads=3\narchive_days=14\nfsync=true\n")
    return config, passwords


def _traced(command: list[str], trace: Path, cwd: Path) -> subprocess.Popen:
    # stderr into a file: a pipe nobody reads would stop the process once full
    with open(trace.with_suffix(".stderr"), "wb") as err:
        return subprocess.Popen(crashstates.strace_command(trace) + command, cwd=cwd,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)


def _stderr(trace: Path) -> str:
    return trace.with_suffix(".stderr").read_text(errors="replace")[-2000:]


def _traced_child(tracer: subprocess.Popen, program: str, timeout: float = 60.0) -> int:
    """The pid of the command strace runs: its child whose command line names ``program``.

    strace forks short-lived children of its own at start-up to probe the kernel, and the
    command's child is strace until it execs: both carry strace's command line, which names
    ``program`` too. Taking one of them (more likely on a busy machine, where they live longer)
    sent the stop signal to a process that was gone, and the receiver never stopped."""
    deadline = time.monotonic() + timeout
    path = Path(f"/proc/{tracer.pid}/task/{tracer.pid}/children")
    while time.monotonic() < deadline:
        for child in (path.read_text().split() if path.exists() else []):
            try:
                command = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if Path(os.fsdecode(command[0])).name == "strace":
                continue  # not exec'd yet, or one of strace's own probes
            if any(part.endswith(program.encode()) for part in command):
                return int(child)
        time.sleep(0.05)
    raise RuntimeError("strace did not start its command")


def _post_station(url: str, uploads: list[Upload], password: str, twice: set[int],
                  failures: list[str]) -> None:
    try:
        _post_all(url, uploads, password, twice)
    except Exception as exc:  # noqa: BLE001 - reported by the recording thread
        failures.append(str(exc))


def _post_all(url: str, uploads: list[Upload], password: str, twice: set[int]) -> None:
    for upload in uploads:
        body = station_form(upload, password)
        for _ in range(2 if id(upload) in twice else 1):  # the second as after a lost reply
            for _attempt in range(60):
                if post_once(url, body, timeout=120) == "100":
                    break
                time.sleep(0.5)
            else:
                raise RuntimeError(f"station {upload.station_id}: no 100 after 60 attempts")


def record(base: Path, uploads: list[Upload]) -> list[Path]:
    """Run the real processes under strace on a fresh ``base/data``; returns the traces in order."""
    shutil.rmtree(base, ignore_errors=True)
    data_dir = base / "data"
    data_dir.mkdir(parents=True)
    (base / "initial").mkdir()
    config, passwords = write_setup(base, data_dir, uploads)
    by_station: dict[int, list[Upload]] = {}
    for upload in uploads:
        by_station.setdefault(upload.station_id, []).append(upload)
    rounds = [{n: batch[:len(batch) // 2] for n, batch in by_station.items()},
              {n: batch[len(batch) // 2:] for n, batch in by_station.items()}]
    twice = {id(batch[0]) for batch in by_station.values()}
    traces = []
    for number, chosen in enumerate(rounds):
        port = free_port()
        trace = base / f"trace-{len(traces)}-serve.txt"
        tracer = _traced([str(DATASTORE), "serve", str(config), "--bind", f"127.0.0.1:{port}"], trace, base)
        child = _traced_child(tracer, "datastore")
        try:
            _take_uploads(tracer, trace, port, chosen, passwords, twice)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGTERM)  # never left running, whatever went wrong
            try:
                stopped = tracer.wait(timeout=120)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGKILL)
                stopped = tracer.wait(timeout=120)
        if stopped != 0:
            raise RuntimeError(f"the traced receiver did not stop cleanly: {_stderr(trace)}")
        traces.append(trace)
        trace = base / f"trace-{len(traces)}-writer.txt"
        tracer = _traced([str(DATASTORE), "writer", str(config), "--once", "--quiet"], trace, base)
        if tracer.wait(timeout=600) != 0:
            raise RuntimeError(f"the traced writer failed in round {number}: {_stderr(trace)}")
        traces.append(trace)
    return traces


def _take_uploads(tracer: subprocess.Popen, trace: Path, port: int, chosen: dict[int, list[Upload]],
                  passwords: dict[int, str], twice: set[int]) -> None:
    """Wait for the traced receiver to listen, then let each station post its uploads."""
    deadline = time.monotonic() + 120
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
            break
        except OSError:
            if time.monotonic() > deadline or tracer.poll() is not None:
                raise RuntimeError(f"the traced receiver did not listen: {_stderr(trace)}") from None
            time.sleep(0.1)
    failures: list[str] = []
    threads = [threading.Thread(target=_post_station,
                                args=(f"http://127.0.0.1:{port}/", batch, passwords[n], twice, failures))
               for n, batch in chosen.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if tracer.poll() is not None or failures:
        raise RuntimeError(f"the traced receiver ended early ({tracer.returncode}) or a station "
                           f"failed ({failures}): {_stderr(trace)}")



@attrs.frozen
class Verdict:
    lost: int
    duplicated: int
    unreadable: list[str]
    stuck: list[str]
    rebuilt: int  # damaged day files rebuilt from the archive
    blobs_differing: int  # blobs events refer to that differ from what their stations sent

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.unreadable or self.stuck or self.blobs_differing)


def _post(app, body: bytes) -> str:
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/", "REMOTE_ADDR": "127.0.0.1",
               "CONTENT_TYPE": "application/x-www-form-urlencoded", "CONTENT_LENGTH": str(len(body)),
               "wsgi.input": io.BytesIO(body)}
    return b"".join(app(environ, lambda status, headers: None)).decode().strip()


def check_state(data_dir: Path, base: Path, uploads: list[Upload], passwords: dict[int, str],
                answered: set[int], registry, expected: dict) -> Verdict:
    """Restart the receiver and the writer on ``data_dir`` and compare with ``expected``."""
    config = base / "check.ini"
    config.write_text(f"[General]\nlog={base}/log/check.log\nloglevel=info\n"
                      f"station_list={base}/stations.csv\ndata_dir={data_dir}\nminimum_year=2020\n"
                      "[Writer]\nsleep=0.2\nbatch_uploads=3\narchive_days=14\nfsync=false\n")
    settings = load_settings(config)
    stuck = []
    app = build_app(settings)
    try:
        app.recover()  # what `datastore serve` does before it listens
        for index, upload in enumerate(uploads):  # each station's in order
            if index in answered:
                continue
            body = station_form(upload, passwords[upload.station_id])
            codes = []
            for _ in range(RETRIES):
                codes.append(_post(app, body))
                if codes[-1] == "100":
                    break
            else:
                stuck.append(f"upload {index} of station {upload.station_id} answered {codes}")
    finally:
        if app.dedup is not None:
            app.dedup.close()
    Writer(settings, registry).run(once=True)
    rebuilt = 0
    for name in LEFT_OVER:
        left = sorted(p.name for p in (data_dir / name).iterdir()) if (data_dir / name).exists() else []
        # A day file HDF5 left damaged is rebuilt from the archive and kept for the operator
        # as quarantine/NAME.damaged-TIME (docs/exactly-once.md): that is not a stuck upload.
        rebuilt += sum(1 for n in left if ".damaged-" in n and not n.endswith(".reason"))
        left = [n for n in left if ".damaged-" not in n]
        if left:
            stuck.append(f"{name}/: {left[:5]}")
    if (data_dir / "writer.journal").exists():
        stuck.append("writer.journal left")
    rows, unreadable = read_all(data_dir, registry)
    unreadable += [f"{name} {station}: {len(damaged)} blobs do not read ({damaged[0].error})"
                   for (name, station), damaged in sorted(unreadable_blobs(rows).items())]
    lost = duplicated = 0
    for key in set(expected) | set(rows):
        missing, extra = multiset_difference(expected.get(key, []), rows.get(key, []))
        lost += missing
        duplicated += extra
    return Verdict(lost, duplicated, unreadable, stuck, rebuilt,
                   compare_sent(uploads, data_dir, registry).differing)


def answered_by(ops: list[crashstates.Op], uploads: list[Upload]) -> list[set[int]]:
    """For each prefix length of ``ops``: the uploads whose ``100`` was logged within it."""
    import hashlib
    import pickle

    keys = {}
    for index, upload in enumerate(uploads):
        md5 = hashlib.md5(pickle.dumps(upload.event_list, protocol=2)).hexdigest()
        keys[(upload.station_id, md5[:8])] = keys[(upload.station_id, md5)] = index
    sets, current = [set()], set()
    for op in ops:
        if op.kind == "mark":
            for match in _ANSWERED.finditer(op.data.decode("utf-8", "replace")):
                key = (int(match.group(1)), match.group(2) or match.group(3))
                if key in keys:
                    current = current | {keys[key]}
        sets.append(current)
    return sets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--states", type=int, default=300, help="how many distinct states to check")
    parser.add_argument("--variants", type=int, default=2, help="states per crash point")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--dir", type=Path, default=ROOT / "powercut-data")
    parser.add_argument("--record-only", action="store_true")
    args = parser.parse_args(argv)
    logging.disable(logging.CRITICAL)  # a restart's messages are expected; its results are checked

    rng = random.Random(args.seed)
    uploads = make_uploads(args.seed)
    sent = sum(len(u.event_list) for u in uploads)
    days = sorted({e["header"]["datetime"].date() for u in uploads for e in u.event_list})
    print(f"uploads: {len(uploads)} from {len({u.station_id for u in uploads})} stations, {sent} events, "
          f"days: {' '.join(map(str, days))}", flush=True)
    base = args.dir / "recording"
    began = time.monotonic()
    traces = record(base, uploads)
    data_dir = base / "data"
    registry = load_registry()
    expected = read_reference(data_dir, uploads, registry)
    # Each state is built where the recorded one was: the processes name files by absolute
    # path (the journal does), and a restart after a power cut finds them at the same place.
    shutil.rmtree(base / "recorded", ignore_errors=True)
    data_dir.rename(base / "recorded")
    ops, segments = [], []
    for trace in traces:
        with open(trace, encoding="ascii", errors="replace") as lines:
            part = crashstates.parse_trace(lines, data_dir, base, log=base / "log" / "datastore.log")
        segments.append((trace.stem.split("-")[-1], len(ops), len(ops) + len(part)))
        ops += part
    print(f"recorded {len(ops)} operations in {len(traces)} traces in {time.monotonic() - began:.0f} s",
          flush=True)
    # The model's own check: all of the records, all kept, is the disk the processes left.
    model = crashstates.Model(data_dir, snapshot=base / "initial")
    for op in ops:
        model.apply(op)
    end = model.state(len(model.dirops), crashstates.kept)
    recorded = {str(p.relative_to(base / "recorded")): (None if p.is_dir() else p.read_bytes())
                for p in (base / "recorded").rglob("*") if not p.name.endswith("-shm")}
    if end.files != recorded:
        print(f"the model does not replay to the recorded disk: {sorted(set(end.files) ^ set(recorded))}")
        return 1
    if args.record_only:
        return 0
    answered = answered_by(ops, uploads)

    # Half the crash points in the receiver's records, half in the writer's; half as many
    # again as the states need, since identical states are made once (300 asked gave 290).
    points_wanted = -(-args.states * 3 // (2 * args.variants)) + 8
    candidates = crashstates.interesting_points(ops)
    chosen: set[int] = set()
    for role in ("serve", "writer"):
        pool = [i for i in candidates for name, lo, hi in segments if name == role and lo <= i < hi]
        step = max(1, len(pool) // max(1, points_wanted // 2))
        offset = rng.randrange(step)
        chosen |= set(pool[offset::step])
    _, passwords = write_setup(base, data_dir, uploads)  # same list; the states share it

    # Identical states are made once, so how many the points give is known only by making
    # them: count first, then check an even spread of exactly --states of them, so that the
    # writer's last records are covered as well as the receiver's first.
    def states():
        model = crashstates.Model(data_dir, snapshot=base / "initial")
        return crashstates.crash_states(model, ops, chosen, random.Random(args.seed + 1), args.variants)

    made = sum(1 for _ in states())
    wanted = min(args.states, made)
    totals = {"lost": 0, "duplicated": 0, "unreadable": 0, "stuck": 0, "blobs differing": 0}
    by_role = {"serve": 0, "writer": 0}
    rebuilt = 0
    checked = failed = 0
    states_dir = args.dir / "states"
    shutil.rmtree(states_dir, ignore_errors=True)
    began = time.monotonic()
    for index, state in enumerate(states()):
        if (index + 1) * wanted // made == index * wanted // made:
            continue
        role = next(name for name, lo, hi in segments if lo < state.after <= hi)
        shutil.rmtree(data_dir, ignore_errors=True)
        state.materialise(data_dir)
        verdict = check_state(data_dir, base, uploads, passwords, answered[state.after], registry, expected)
        checked += 1
        by_role[role] += 1
        totals["lost"] += verdict.lost > 0
        totals["duplicated"] += verdict.duplicated > 0
        totals["unreadable"] += bool(verdict.unreadable)
        totals["stuck"] += bool(verdict.stuck)
        totals["blobs differing"] += verdict.blobs_differing > 0
        rebuilt += verdict.rebuilt > 0
        if not verdict.ok:
            failed += 1
            kept = states_dir / f"{checked - 1:04d}"
            shutil.copytree(data_dir, kept / "after-restart", symlinks=True)
            state.materialise(kept / "as-cut")
            print(f"state {checked - 1:04d}: crash in the {role} after operation {state.after} "
                  f"({ops[state.after - 1].kind} {ops[state.after - 1].path}), {state.variant}: "
                  f"lost {verdict.lost} events, duplicated {verdict.duplicated}, "
                  f"unreadable {verdict.unreadable}, stuck {verdict.stuck}, "
                  f"blobs differing {verdict.blobs_differing}", flush=True)
        if checked % 25 == 0:
            print(f"  {checked} states checked in {time.monotonic() - began:.0f} s", flush=True)
    print(f"crash points in the receiver: {by_role['serve']} states, "
          f"in the writer: {by_role['writer']} states; a damaged day file rebuilt from the archive "
          f"in {rebuilt} states")
    print(f"power-cut states: {checked}, lost: {totals['lost']}, duplicated: {totals['duplicated']}, "
          f"unreadable: {totals['unreadable']}, stuck: {totals['stuck']}, "
          f"blobs differing: {totals['blobs differing']}", flush=True)
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
