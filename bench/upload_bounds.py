"""Measures what one hostile upload costs everyone else (issue 19, items 2 and 4).

``fairness``: an upload with events on N days is queued, then an honest upload of
another station; the writer runs; prints how long after the writer started the
honest upload was stored, and where the big one went.

``memory``: ten queue files of 1.95 M ``None`` events each; the writer (with its
preparing child) runs once over them in a fresh process; prints the peak RSS of
the writer and of the child (``--events 20000 --uploads 50 --max-events 20000``:
a full batch of the largest uploads the bounds accept).

Run with the project's venv: ``python bench/upload_bounds.py fairness --days 6500``.
Figures under load are rough; this is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import datetime
import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from hisparc_datastore.codec.decoding import Upload
from hisparc_datastore.plugin.registry import load_registry
from hisparc_datastore.testing.helpers import event, queue_uploads, settings_for
from hisparc_datastore.writer.service import Writer


def _singles(moment: datetime.datetime, low: int) -> dict:
    return event("SIN", moment, {"MAS_CH1_LOW": low})


def fairness(days: int) -> dict:
    start = datetime.datetime(2005, 1, 1, 12)
    big = Upload(666, "Attack", [_singles(start + datetime.timedelta(days=i), i) for i in range(days)])
    honest = Upload(501, "Utrecht", [_singles(datetime.datetime(2024, 3, 1, 10), 7)])
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        big_path, honest_path = queue_uploads(data_dir, [big, honest])
        writer = Writer(settings_for(data_dir, sleep=0.05), load_registry())
        thread = threading.Thread(target=writer.run)
        started = time.monotonic()
        thread.start()
        honest_at = big_at = None
        try:
            while honest_at is None or big_at is None:
                now = time.monotonic() - started
                gone = [not (data_dir / d / p.name).exists()
                        for p in (big_path, honest_path) for d in ("incoming", "partial")]
                if honest_at is None and all(gone[2:]):
                    honest_at = now
                if big_at is None and all(gone[:2]):
                    big_at = now
                time.sleep(0.05)
        finally:
            writer.stop()
            thread.join()
        suspicious = sorted(p.name for p in (data_dir / "suspicious").iterdir()
                            if not p.name.endswith(".reason"))
        return {"days": days, "honest_stored_after_s": round(honest_at, 2),
                "big_done_after_s": round(big_at, 2),
                "big_in_suspicious": big_path.name in suspicious,
                "day_files": len(list(data_dir.rglob("*.h5")))}


def flood(uploads: int, days: int) -> dict:
    """``uploads`` uploads of one station with events on ``days`` dates each, then, once the
    writer is busy with them, an honest upload of another station: how long it waited."""
    start = datetime.datetime(2021, 1, 1, 12)
    big = [Upload(666, "Attack", [_singles(start + datetime.timedelta(days=(i * days + d) % 3000), d)
                                  for d in range(days)]) for i in range(uploads)]
    honest = Upload(501, "Utrecht", [_singles(datetime.datetime(2024, 3, 1, 10), 7)])
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        queue_uploads(data_dir, big)
        writer = Writer(settings_for(data_dir, sleep=0.05), load_registry())
        thread = threading.Thread(target=writer.run)
        thread.start()
        try:
            while not writer.tally.uploads:  # busy with the backlog
                time.sleep(0.01)
            (honest_path,) = queue_uploads(data_dir, [honest])
            arrived = time.monotonic()
            while any((data_dir / d / honest_path.name).exists() for d in ("incoming", "partial")):
                time.sleep(0.01)
            waited = time.monotonic() - arrived
            backlog = sum(1 for _ in (data_dir / "incoming").iterdir())
        finally:
            writer.stop()
            thread.join()
        return {"uploads": uploads, "days_each": days, "honest_waited_s": round(waited, 2),
                "backlog_left_when_stored": backlog}


def memory(uploads: int, events: int, max_events: int | None) -> dict:
    # The queue files are made and the writer is run in processes of their own: a process
    # started by this one would inherit the peak RSS this one reached (Linux keeps it across
    # exec), and the writer's figure would be this process's.
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        subprocess.run([sys.executable, __file__, "memory-make", str(data_dir), str(uploads), str(events)],
                       check=True)
        size = sum(p.stat().st_size for p in (data_dir / "incoming").iterdir())
        command = [sys.executable, __file__, "memory-run", str(data_dir)]
        if max_events is not None:
            command += ["--max-events", str(max_events)]
        run = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
        suspicious = [p for p in (data_dir / "suspicious").iterdir() if not p.name.endswith(".reason")]
        quarantine = [p for p in (data_dir / "quarantine").iterdir() if not p.name.endswith(".reason")]
        return {"uploads": uploads, "events_each": events, "queue_bytes": size, **run,
                "suspicious": len(suspicious), "quarantined": len(quarantine)}


def memory_make(data_dir: Path, uploads: int, events: int) -> None:
    for i in range(uploads):
        queue_uploads(data_dir, [Upload(501 + i, "Utrecht", [None] * events)])


def memory_run(data_dir: Path, max_events: int | None) -> dict:
    overrides = {} if max_events is None else {"max_events_per_upload": max_events}
    started = time.monotonic()
    Writer(settings_for(data_dir, **overrides), load_registry()).run(once=True)
    elapsed = time.monotonic() - started
    writer_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"writer_peak_rss_mb": round(writer_kb / 1024, 1), "child_peak_rss_mb": round(child_kb / 1024, 1),
            "sum_mb": round((writer_kb + child_kb) / 1024, 1), "seconds": round(elapsed, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    fair = sub.add_parser("fairness")
    fair.add_argument("--days", type=int, default=6500)
    flooding = sub.add_parser("flood")
    flooding.add_argument("--uploads", type=int, default=200)
    flooding.add_argument("--days", type=int, default=31)
    mem = sub.add_parser("memory")
    mem.add_argument("--uploads", type=int, default=10)
    mem.add_argument("--events", type=int, default=1_950_000)
    mem.add_argument("--max-events", type=int, default=None, help="max_events_per_upload (new code)")
    make = sub.add_parser("memory-make")
    make.add_argument("data_dir", type=Path)
    make.add_argument("uploads", type=int)
    make.add_argument("events", type=int)
    run = sub.add_parser("memory-run")
    run.add_argument("data_dir", type=Path)
    run.add_argument("--max-events", type=int, default=None)
    args = parser.parse_args()
    if args.what == "fairness":
        result = fairness(args.days)
    elif args.what == "flood":
        result = flood(args.uploads, args.days)
    elif args.what == "memory":
        result = memory(args.uploads, args.events, args.max_events)
    elif args.what == "memory-make":
        memory_make(args.data_dir, args.uploads, args.events)
        return
    else:
        result = memory_run(args.data_dir, args.max_events)
    json.dump(result, sys.stdout)
    print()


if __name__ == "__main__":
    main()
