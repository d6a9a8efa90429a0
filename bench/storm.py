"""Storm: the writer and the receiver SIGKILLed in turn under a live load of stations sending
real traces; every row, every blob and every trace must come out as sent.

Twenty stations (by default) post their uploads over HTTP to a running
``datastore serve``, spread over the storm, each in order and retrying until
answered ``100`` (``receiver_chaos.post_paced``). Every coincidence carries four
real zlib-compressed traces as stations send them: base64 texts taken at run
time from a real upload of station 510 (``../shared/testdata/uploads``).
Meanwhile a ``datastore writer`` in service mode drains the queue. Every 1.5 to
4.5 s (times ``--pace``) one of them is killed with SIGKILL and started again:
the writer, then the receiver, and so on.

Afterwards the queue is drained by ``datastore writer --once`` and the day
files are compared with those of an undisturbed writer given the same uploads:
every row of every table and every blob of every station's blobs array, by
content (each blob read on its own, so a damaged one is counted and named per
station while the others still compare); and every blob an event refers to
must equal the bytes its station sent (``sent_blobs``). The tally line:

    storm kills: N (writer W, receiver R), lost: 0, duplicated: 0, unreadable blobs: 0,
    blobs differing: 0, files healed: H

Exits 1 on any loss, duplicate, unreadable or differing blob, or upload left.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import attrs
import chaos
import receiver_chaos

from hisparc_datastore.codec.decoding import Upload, parse_event_list
from hisparc_datastore.plugin.registry import load_registry
from hisparc_datastore.sim.simulate import simulated_uploads, stations
from hisparc_datastore.storage.verify import damaged_files_set_aside
from hisparc_datastore.testing.serveprocess import ServeProcess, free_port

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HISPARC_SHARED", ROOT.parent / "shared"))
TRACE_UPLOAD = SHARED / "testdata" / "uploads" / "py2_s510_100events"
TRACE_CODES = ("TR1", "TR2", "TR3", "TR4")
MIDNIGHT = datetime.datetime(2026, 11, 24)
GAP = (1.5, 4.5)  # seconds between kills, before --pace


def real_traces() -> list[str]:
    """The trace texts (base64 of zlib-compressed samples) of a real station's upload."""
    events = parse_event_list(TRACE_UPLOAD.read_bytes())
    return [item["data"] for event in events if event["header"]["eventtype_uploadcode"] == "CIC"
            for item in event["datalist"] if item["data_uploadcode"] in TRACE_CODES]


def storm_uploads(station_count: int, seconds: int, seed: int) -> list[Upload]:
    """The simulated stations' uploads across a UTC midnight, every trace a real one."""
    traces = real_traces()
    rng = random.Random(seed)
    start = MIDNIGHT - datetime.timedelta(seconds=seconds // 2)
    uploads = simulated_uploads(stations(station_count), start, seconds, seed=seed)
    for upload in uploads:
        for event in upload.event_list:
            if event["header"]["eventtype_uploadcode"] == "CIC":
                for item in event["datalist"]:
                    if item["data_uploadcode"] in TRACE_CODES:
                        item["data"] = traces[rng.randrange(len(traces))]
    return uploads


def start_writer(config: Path, log: Path) -> subprocess.Popen:
    """``datastore writer`` in service mode, its messages appended to ``log``."""
    with open(log, "ab") as err:
        return subprocess.Popen([str(chaos.DATASTORE), "writer", str(config)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)


@attrs.frozen
class Storm:
    writer_kills: int
    receiver_kills: int
    mid_batch: int  # writer kills while its journal said a batch was being applied
    posting: receiver_chaos.Posting
    seconds: float


def storm(config: Path, uploads: list[Upload], kills: int, pace: float, rng: random.Random) -> Storm:
    """Post ``uploads`` while the writer and the receiver are killed in turn, ``kills`` in all;
    return once every station has been answered (or given up) and both stopped cleanly."""
    data_dir = config.parent
    log = data_dir / "processes.log"
    journal = data_dir / "writer.journal"
    passwords = receiver_chaos.write_station_list(data_dir / "station_list.csv", uploads)
    startup = receiver_chaos.startup_seconds(config)
    # the stations' load lasts as long as the kills: their gaps and the receiver's restarts
    span = kills * (sum(GAP) / 2 * pace + startup / 2)
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    by_station: dict[int, list[Upload]] = {}
    for upload in uploads:
        by_station.setdefault(upload.station_id, []).append(upload)
    posting = receiver_chaos.Posting()
    threads = [threading.Thread(target=receiver_chaos.post_paced, args=(url, batch, passwords, span, posting),
                                name=f"station-{number}", daemon=True)
               for number, batch in by_station.items()]

    began = time.monotonic()
    receiver = ServeProcess(config, port=port, log=log).wait_ready()
    writer = start_writer(config, log)
    for thread in threads:
        thread.start()
    killed = Counter()
    mid_batch = 0
    try:
        for kill in range(kills):
            time.sleep(rng.uniform(*GAP) * pace)
            if kill % 2 == 0:
                # the writer removes its journal after a batch: only a read tells
                with contextlib.suppress(FileNotFoundError, ValueError, KeyError):
                    mid_batch += json.loads(journal.read_text())["state"] == "applying"
                writer.kill()
                writer.wait()
                killed["writer"] += 1
                writer = start_writer(config, log)
            else:
                receiver.kill()
                killed["receiver"] += 1
                receiver = ServeProcess(config, port=port, log=log).wait_ready()
        for thread in threads:
            thread.join(receiver_chaos.GIVE_UP_AFTER * 2)
    finally:
        stopped = receiver.stop()
        writer.terminate()
        writer.wait(120)
    if stopped != 0:
        raise RuntimeError(f"the last receiver did not stop cleanly ({stopped}): see {log}")
    return Storm(killed["writer"], killed["receiver"], mid_batch, posting, time.monotonic() - began)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=100, help="SIGKILLs in all, writer and receiver in turn")
    parser.add_argument("--stations", type=int, default=20)
    parser.add_argument("--seconds", type=int, default=14400,
                        help="simulated time per station, half before and half after a midnight "
                             "(the default: 4,763 uploads, 475,379 events from 20 stations, enough "
                             "to keep the writer busy through the kills)")
    parser.add_argument("--pace", type=float, default=1.0,
                        help="scales the 1.5 to 4.5 s between kills (short runs: less than 1)")
    parser.add_argument("--batch-uploads", type=int, default=50, help="the writer's batch_uploads")
    parser.add_argument("--seed", type=int, default=2027)
    parser.add_argument("--dir", type=Path, default=ROOT / "storm-data")
    args = parser.parse_args(argv)

    rng = random.Random(args.seed)
    uploads = storm_uploads(args.stations, args.seconds, args.seed)
    sent = sum(len(upload.event_list) for upload in uploads)
    print(f"uploads: {len(uploads)} from {args.stations} stations, {sent} events, "
          f"traces from {TRACE_UPLOAD.name}: {len(real_traces())}", flush=True)

    registry = load_registry()
    reference = chaos.make_data_dir(args.dir / "reference", uploads, args.batch_uploads)
    chaos.run_to_completion(reference)
    expected = chaos.read_reference(reference.parent, uploads, registry)

    config = chaos.make_data_dir(args.dir / "storm", [], args.batch_uploads)
    data_dir = config.parent
    result = storm(config, uploads, args.kills, args.pace, rng)
    chaos.run_to_completion(config)

    found = chaos.compare(expected, data_dir, registry, uploads)
    healed = damaged_files_set_aside(data_dir)  # each damaged day file, rebuilt from the archive
    kept = set(healed) | {p.with_name(p.name + ".reason") for p in healed}
    left = [p.name for d in ("incoming", "partial", "quarantine", "suspicious", "tmp")
            for p in (data_dir / d).iterdir() if p not in kept]
    log = (data_dir / "datastore.log").read_text(errors="replace")
    replies = ", ".join(f"{code or '(empty)'}: {n}" for code, n in result.posting.replies.most_common())
    print(f"storm kills: {result.writer_kills + result.receiver_kills} (writer {result.writer_kills}, "
          f"receiver {result.receiver_kills}), lost: {found.lost}, duplicated: {found.duplicated}, "
          f"{found.blobs_line()}, files healed: {len(healed)}")
    print(f"(writer kills while a batch was being applied: {result.mid_batch}; uploads answered 100: "
          f"{result.posting.delivered}, given up: {result.posting.undelivered}; replies heard: {replies}; "
          f"unreadable files: {len(found.unreadable_files)}; files left in the queue: {len(left)}; "
          f"writer log: batches undone {log.count('undoing an unfinished batch')}, "
          f"could not store {log.count('could not store')}, CRITICAL {log.count('CRITICAL')}; "
          f"storm {result.seconds:.0f} s)",
          flush=True)
    found.print_details()
    journal_left = (data_dir / "writer.journal").exists()
    if journal_left:
        print("the writer's journal was left behind")
    return 0 if found.ok and not left and not journal_left and result.posting.undelivered == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
