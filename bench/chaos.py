"""Crash harness: SIGKILL the writer at random instants and check nothing is lost or doubled.

A fixed set of uploads (several stations, two UTC dates, all event types) is
stored twice: once by an undisturbed writer (the reference) and once by a
writer that is killed with SIGKILL at random instants and restarted each
time, then left to drain. Every day file of the second run must open and
read fully, and its rows, compared one by one with the reference's (blobs
resolved to their bytes), must show nothing lost and nothing duplicated;
every blob of every station's blobs array must read (each on its own) and
equal the reference's, and every blob an event refers to must equal the
bytes its station sent (``sent_blobs``). The reference itself must hold
every event and every blob that was sent. Every upload with a
configuration event gets a second one sharing its datalist list, and its queue
file is written with Python's pickle as the deployed receiver writes it: Python
writes the shared list once and refers to it again, and nothing may be
quarantined for that.

Then the same uploads are posted over HTTP to a receiver that is killed
with SIGKILL at random instants and restarted (``receiver_chaos.py``); once
drained by a writer, its day files must equal the reference as well, and no
half-written file may be left in ``tmp/``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import attrs
import receiver_chaos
from sent_blobs import SentBlobs, compare_sent

from hisparc_datastore.codec.decoding import Upload
from hisparc_datastore.plugin.registry import load_registry
from hisparc_datastore.sim.simulate import CONFIG_TEMPLATE, simulated_uploads, stations, write_queue
from hisparc_datastore.sim.summary import read_all, unreadable_blobs
from hisparc_datastore.storage.contents import multiset_difference
from hisparc_datastore.storage.layout import BLOBS

ROOT = Path(__file__).resolve().parents[1]
DATASTORE = Path(sys.executable).with_name("datastore")


def share_config_datalists(uploads: list[Upload]) -> tuple[list[Upload], set[int]]:
    """Every upload with a CFG event gets a second CFG event (a second later) whose datalist is
    the very same list; returns the uploads and the positions of those that share."""
    shared, sharing = [], set()
    for i, upload in enumerate(uploads):
        config = next((e for e in upload.event_list if e["header"]["eventtype_uploadcode"] == "CFG"), None)
        if config is None:
            shared.append(upload)
            continue
        again = {"header": config["header"] | {"datetime": config["header"]["datetime"]
                                               + datetime.timedelta(seconds=1)},
                 "datalist": config["datalist"]}
        shared.append(Upload(upload.station_id, upload.cluster, [*upload.event_list, again]))
        sharing.add(i)
    return shared, sharing


def make_data_dir(path: Path, uploads, batch_uploads: int, deployed_style: set[int] = frozenset()) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    write_queue(path, uploads)
    for i in deployed_style:  # as the deployed receiver writes a queue file: Python's pickle of a dict
        upload = uploads[i]
        queued = path / "incoming" / f"sim-{i:07d}-{upload.station_id}"
        times = queued.stat().st_mtime_ns
        queued.write_bytes(pickle.dumps({"station_id": upload.station_id, "cluster": upload.cluster,
                                         "event_list": upload.event_list}))
        os.utime(queued, ns=(times, times))
    config = path / "config.ini"
    config.write_text(CONFIG_TEMPLATE.format(data_dir=path, minimum_year=2020).replace("sleep=1", "sleep=0.2")
                      + f"batch_uploads={batch_uploads}\n")
    return config


def writer(config: Path, once: bool) -> subprocess.Popen:
    command = [str(DATASTORE), "writer", str(config), "--quiet"] + (["--once"] if once else [])
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def read_reference(data_dir: Path, uploads: list[Upload], registry) -> dict:
    """read_all of the undisturbed run's day files, once they are known to hold every event
    and every blob that was sent; exits otherwise."""
    expected, unreadable = read_all(data_dir, registry)
    stored = sum(len(rows) for (_, _, table), rows in expected.items() if table != BLOBS)
    sent = sum(len(upload.event_list) for upload in uploads)
    truth = compare_sent(uploads, data_dir, registry)
    if unreadable or stored != sent or unreadable_blobs(expected) or truth.differing:
        sys.exit(f"the undisturbed writer stored {stored} of {sent} events; unreadable: {unreadable}; "
                 f"{truth}: {list(truth.examples)}")
    return expected


def run_to_completion(config: Path) -> None:
    process = writer(config, once=True)
    _, err = process.communicate()
    if process.returncode != 0:
        sys.exit(f"writer failed ({process.returncode}): {err.decode()[-2000:]}")



def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--stations", type=int, default=4)
    parser.add_argument("--seconds", type=int, default=3600,
                        help="simulated time per station, half before and half after a midnight")
    parser.add_argument("--batch-uploads", type=int, default=3,
                        help="small batches: many transactions, so kills land at every step")
    parser.add_argument("--receiver-kills", type=int, default=None,
                        help="SIGKILLs of the receiver (default: as many as --kills)")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--dir", type=Path, default=ROOT / "chaos-data")
    args = parser.parse_args(argv)

    rng = random.Random(args.seed)
    start = datetime.datetime(2026, 11, 24) - datetime.timedelta(seconds=args.seconds // 2)
    uploads = simulated_uploads(stations(args.stations), start, args.seconds, seed=args.seed)
    uploads, sharing = share_config_datalists(uploads)
    sent = sum(len(upload.event_list) for upload in uploads)
    codes = sorted({e["header"]["eventtype_uploadcode"] for u in uploads for e in u.event_list})
    print(f"uploads: {len(uploads)} from {args.stations} stations, {sent} events, "
          f"types: {' '.join(codes)}; queue files with two CFG events sharing one datalist, "
          f"written with Python's pickle: {len(sharing)}", flush=True)

    registry = load_registry()
    reference_config = make_data_dir(args.dir / "reference", uploads, args.batch_uploads, sharing)
    began = time.monotonic()
    run_to_completion(reference_config)
    full_run = time.monotonic() - began
    expected = read_reference(reference_config.parent, uploads, registry)

    # How long a writer takes to start doing anything: kills are spread from
    # before that moment to well into the work.
    began = time.monotonic()
    run_to_completion(make_data_dir(args.dir / "calibrate", [], 1))
    startup = time.monotonic() - began
    work = max(full_run - startup, 0.1)

    config = make_data_dir(args.dir / "run", uploads, args.batch_uploads, sharing)
    data_dir = config.parent
    journal = data_dir / "writer.journal"
    kills = mid_batch = idle = 0
    while kills < args.kills:
        process = writer(config, once=False)
        # from mid-start-up to a slice of the work: the kills spread over the whole run
        time.sleep(rng.uniform(0.5 * startup, startup + 2.5 * work / args.kills))
        # the writer removes its journal when a batch is done, so it may be
        # gone between any check and the read: only a read tells
        with contextlib.suppress(FileNotFoundError, ValueError, KeyError):
            mid_batch += json.loads(journal.read_text())["state"] == "applying"
        drained = not any((data_dir / "incoming").iterdir()) and not any((data_dir / "partial").iterdir())
        process.send_signal(signal.SIGKILL)
        process.wait()
        kills += 1
        idle += drained
    run_to_completion(config)

    found = compare(expected, data_dir, registry, uploads)
    healed = list((data_dir / "quarantine").glob("*.h5.damaged-*Z"))
    kept = set(healed) | {p.with_name(p.name + ".reason") for p in healed}
    left = [p.name for d in ("incoming", "partial", "quarantine") for p in (data_dir / d).iterdir()
            if p not in kept]
    quarantined = [p.name for p in (data_dir / "quarantine").iterdir() if p not in kept]
    print(f"kills: {kills}, lost: {found.lost}, duplicated: {found.duplicated}, "
          f"unreadable files: {len(found.unreadable_files)}, {found.blobs_line()}")
    print(f"(kills while a batch was being applied: {mid_batch}, after the queue had drained: {idle}; "
          f"undisturbed run {full_run:.1f} s, "
          f"start-up {startup:.1f} s; day files HDF5 left torn, rebuilt from the archive: {len(healed)}; "
          f"files left in the queue: {len(left)}; journal left: {journal.exists()})", flush=True)
    print(f"quarantined: {len(quarantined)}", flush=True)
    found.print_details()
    writer_ok = found.ok and not left and not journal.exists()
    receiver_kills = args.kills if args.receiver_kills is None else args.receiver_kills
    return 0 if writer_ok & receiver_run(args, uploads, expected, registry, rng, receiver_kills) else 1


@attrs.frozen
class Comparison:
    """How a crashed run's day files differ from the reference's and from what was sent."""

    lost: int  # rows of the reference absent (blobs resolved to their bytes)
    duplicated: int  # rows present more often than in the reference, or not in it
    blobs_arrays: int  # rows of the stations' blobs arrays not matched in the reference's
    unreadable_files: list[str]
    unreadable_blobs: dict  # (file name, station) -> the blobs that did not read
    sent: SentBlobs

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.blobs_arrays or self.unreadable_files
                    or self.unreadable_blobs or self.sent.differing)

    def blobs_line(self) -> str:
        return (f"unreadable blobs: {sum(map(len, self.unreadable_blobs.values()))}, "
                f"blobs differing: {self.sent.differing}")

    def print_details(self) -> None:
        print(f"(every blob read one by one: {self.sent}; blobs array rows differing from the "
              f"reference: {self.blobs_arrays})")
        for (name, station), damaged in sorted(self.unreadable_blobs.items()):
            print(f"unreadable blobs: {name} {station}: {len(damaged)} (the first, row "
                  f"{damaged[0].index}: {damaged[0].error})")
        for line in self.unreadable_files:
            print("unreadable:", line)
        for line in self.sent.examples:
            print("differing from what was sent:", line)


def compare(expected: dict, data_dir: Path, registry, uploads: list[Upload]) -> Comparison:
    """How data_dir's day files differ from ``expected`` (read_all of the reference) and
    from ``uploads``."""
    actual, unreadable = read_all(data_dir, registry)
    lost = duplicated = blobs = 0
    for node in set(expected) | set(actual):
        missing, extra = multiset_difference(expected.get(node, []), actual.get(node, []))
        if node[2] == BLOBS:
            blobs += missing + extra
        else:
            lost += missing
            duplicated += extra
    return Comparison(lost, duplicated, blobs, unreadable, unreadable_blobs(actual),
                      compare_sent(uploads, data_dir, registry))


def receiver_run(args, uploads, expected: dict, registry, rng: random.Random, kills: int) -> bool:
    """Post the uploads to a receiver killed ``kills`` times, drain, compare with the reference."""
    config = make_data_dir(args.dir / "receiver", [], args.batch_uploads)
    data_dir = config.parent
    log = data_dir / "processes.log"

    def drainer() -> subprocess.Popen:
        # beside the stations, not killed: uploads leave incoming/ while claims are settled
        with open(log, "ab") as err:
            return subprocess.Popen([str(DATASTORE), "writer", str(config), "--quiet"],
                                    stdout=subprocess.DEVNULL, stderr=err)

    began = time.monotonic()
    chaos = receiver_chaos.run(config, uploads, kills, rng, drainer, log)
    run_to_completion(config)
    found = compare(expected, data_dir, registry, uploads)
    left = [p.name for d in ("incoming", "partial", "quarantine", "suspicious")
            for p in (data_dir / d).iterdir()]
    replies = ", ".join(f"{code or '(empty)'}: {n}" for code, n in chaos.posting.replies.most_common())
    # No disk faults here, so a 205 can only mean a claim kept a station waiting.
    kept_waiting = chaos.posting.replies.get("205", 0)
    print(f"receiver kills: {chaos.kills}, lost: {found.lost}, duplicated: {found.duplicated}, "
          f"tmp leftovers: {chaos.tmp_leftovers}, {found.blobs_line()}")
    print(f"(receiver killed at a named step of a request: {chaos.at_steps}; uploads answered 100: "
          f"{chaos.posting.delivered}, given up: {chaos.posting.undelivered}; answered 205 (kept "
          f"waiting): {kept_waiting}; replies heard: {replies}; "
          f"unreadable files: {len(found.unreadable_files)}; files left in the queue: {len(left)}; "
          f"{time.monotonic() - began:.0f} s)", flush=True)
    found.print_details()
    return (found.ok and chaos.tmp_leftovers == chaos.posting.undelivered == kept_waiting
            == len(left) == 0)

if __name__ == "__main__":
    sys.exit(main())
