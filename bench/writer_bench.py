"""Writer benchmark: how close the writer comes to the work it cannot avoid.

On one simulated backlog (50 stations across a UTC midnight, 100-event
uploads; per station-second about 0.6 CIC with four ~1.2 kB traces and one
SIN, a WTR every 5 s at every fifth station, a CFG per station per day) it
measures, in one run:

- the writer: ``datastore writer CONFIG --once`` as a separate process, fsync on;
- decode-only: read, unpickle and decode every queue file (traces included), write nothing;
- the HDF5 floor: append the same rows and blobs, prepared in advance, in the
  same batches with the same flush + fsync per batch, with no per-event Python;
- the writer's time / (decode-only + floor): the goal is at most 1.5;
- the writer's peak memory, at two backlog sizes (it must not grow with the backlog);
- the deployed writer's way of writing (one row appended and flushed per event)
  on a sample of the same events, for comparison.

Absolute times drift on shared machines; compare the ratios.
"""

from __future__ import annotations

import argparse
import datetime
import shutil
import subprocess
import sys
import time
from pathlib import Path

import tables

from hisparc_datastore.config import load_settings
from hisparc_datastore.decoding import parse_queue_file
from hisparc_datastore.plugins import load_registry
from hisparc_datastore.rows import StationRows
from hisparc_datastore.simulate import simulate
from hisparc_datastore.storage import BLOBS, DayFile, day_file_path, station_path
from hisparc_datastore.writer import cut_batches

ROOT = Path(__file__).resolve().parents[1]
DATASTORE = Path(sys.executable).with_name("datastore")


def fresh_copy(source: Path, target: Path) -> Path:
    """A data_dir holding the backlog's queue, as the receiver left it."""
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("*.h5", "archive", "*.log"))
    config = (source / "config.ini").read_text().replace(str(source), str(target))
    (target / "config.ini").write_text(config)
    return target / "config.ini"


def queue_files(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "incoming").iterdir(), key=lambda p: p.stat().st_mtime_ns)


def run_writer(config: Path) -> tuple[float, float]:
    """Wall time and peak resident memory (MB) of one ``datastore writer --once``."""
    start = time.perf_counter()
    process = subprocess.Popen([str(DATASTORE), "writer", str(config), "--once", "--quiet"],
                               stdout=subprocess.DEVNULL)
    # The child's own high-water mark (VmHWM), polled while it runs: its
    # rusage maxrss would also count this big parent's pages from before exec.
    peak_kb = 0
    status = Path(f"/proc/{process.pid}/status")
    while process.poll() is None:
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak_kb = max(peak_kb, int(line.split()[1]))
        except (FileNotFoundError, ProcessLookupError):
            pass
        time.sleep(0.02)
    elapsed = time.perf_counter() - start
    if process.returncode != 0:
        sys.exit(f"writer failed with exit code {process.returncode}")
    return elapsed, peak_kb / 1024


def decode_only(files: list[Path], registry) -> tuple[float, int]:
    """Read, unpickle and decode every file, blobs included; store nothing."""
    start = time.perf_counter()
    events = 0
    for path in files:
        upload = parse_queue_file(path.read_bytes())
        for event in upload.event_list:
            slots = registry.get(event["header"]["eventtype_uploadcode"]).slots
            for item in event["datalist"]:
                slot = slots.get(item["data_uploadcode"])
                if slot is not None and slot.blob is not None:
                    slot.blob(item["data"])
            events += 1
    return time.perf_counter() - start, events


def prepare_batches(files: list[Path], registry, settings) -> list[dict]:
    """The writer's row arrays and blobs per (date, cluster, station), in the writer's batches."""
    batches = []
    blob_counts: dict[tuple, int] = {}
    by_name = {path.name: path for path in files}
    for names in cut_batches([(path.name, path.stat().st_size) for path in files],
                             settings.batch_uploads, settings.batch_bytes):
        groups: dict[tuple, StationRows] = {}
        for path in (by_name[name] for name in names):
            upload = parse_queue_file(path.read_bytes())
            for event in upload.event_list:
                moment = event["header"]["datetime"]
                key = (moment.date(), upload.cluster, upload.station_id)
                groups.setdefault(key, StationRows()).add(
                    registry.get(event["header"]["eventtype_uploadcode"]), event, moment)
        built = {}
        for key, rows in groups.items():
            arrays, _ = rows.build(blob_counts.get(key, 0))
            blob_counts[key] = blob_counts.get(key, 0) + len(rows.blobs)
            built[key] = (arrays, rows.blobs)
        batches.append(built)
    return batches


def hdf5_floor(batches: list[dict], data_dir: Path, fsync: bool) -> float:
    """Append prepared rows and blobs as the writer does: per batch, then flush + fsync."""
    shutil.rmtree(data_dir, ignore_errors=True)
    files: dict[Path, DayFile] = {}
    start = time.perf_counter()
    for built in batches:
        touched = set()
        for (date, cluster, station), (arrays, blobs) in built.items():
            path = day_file_path(data_dir, date)
            if path not in files:
                path.parent.mkdir(parents=True, exist_ok=True)
                files[path] = DayFile(path)
            day_file = files[path]
            touched.add(day_file)
            day_file.append_blobs(cluster, station, blobs)
            for event_type, records in arrays.items():
                day_file.append_rows(cluster, station, event_type, records)
        for day_file in touched:
            day_file.flush(fsync)
    for day_file in files.values():
        day_file.close()
    return time.perf_counter() - start


def row_by_row(files: list[Path], registry, data_dir: Path, limit: int) -> tuple[float, int]:
    """The deployed writer's pattern: per event, fill a Row, append it, flush the file."""
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    h5 = tables.open_file(data_dir / "rowbyrow.h5", "w")
    stored = 0
    start = time.perf_counter()
    for path in files:
        upload = parse_queue_file(path.read_bytes())
        for event in upload.event_list:
            event_type = registry.get(event["header"]["eventtype_uploadcode"])
            group = station_path(upload.cluster, upload.station_id)
            if group not in h5:
                h5.create_group(group.rsplit("/", 1)[0], group.rsplit("/", 1)[1], createparents=True)
            table_path = f"{group}/{event_type.table_name}"
            if table_path not in h5:
                h5.create_table(group, event_type.table_name, event_type.description)
                if f"{group}/{BLOBS}" not in h5:
                    h5.create_vlarray(group, BLOBS, tables.VLStringAtom())
            table = h5.get_node(table_path)
            blobs = h5.get_node(f"{group}/{BLOBS}")
            row = table.row
            moment = event["header"]["datetime"]
            row["event_id"] = table.nrows + 1
            row["timestamp"] = int(moment.replace(tzinfo=datetime.timezone.utc).timestamp())
            for item in event["datalist"]:
                slot = event_type.slots.get(item["data_uploadcode"])
                if slot is None:
                    continue
                value = item["data"]
                if slot.blob is not None:
                    blobs.append(slot.blob(value))
                    value = blobs.nrows - 1
                if slot.index is None:
                    row[slot.column] = value
                else:
                    column = row[slot.column]
                    column[slot.index] = value
                    row[slot.column] = column
            row.append()
            table.flush()
            h5.flush()
            stored += 1
            if stored >= limit:
                break
        if stored >= limit:
            break
    elapsed = time.perf_counter() - start
    h5.close()
    return elapsed, stored


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stations", type=int, default=50)
    parser.add_argument("--seconds", type=int, default=1200,
                        help="backlog length per station, centred on midnight (default %(default)s)")
    parser.add_argument("--dir", type=Path, default=ROOT / "bench-data")
    parser.add_argument("--row-by-row-events", type=int, default=3000)
    args = parser.parse_args()

    source = args.dir / "backlog"
    start = datetime.datetime(2026, 11, 24) - datetime.timedelta(seconds=args.seconds // 2)
    shutil.rmtree(args.dir, ignore_errors=True)
    t = time.perf_counter()
    sim = simulate(source, args.stations, args.seconds, start, seed=7)
    print(f"backlog: {sim.events} events in {sim.uploads} uploads from {args.stations} stations, "
          f"{sim.queue_bytes / 1e6:.0f} MB, {start:%Y-%m-%d %H:%M} to "
          f"{start + datetime.timedelta(seconds=args.seconds):%Y-%m-%d %H:%M} UTC "
          f"(made in {time.perf_counter() - t:.0f} s)")
    registry = load_registry()
    settings = load_settings(source / "config.ini")
    files = queue_files(source)

    decode_time, events = decode_only(files, registry)
    batches = prepare_batches(files, registry, settings)
    floor_time = hdf5_floor(batches, args.dir / "floor", fsync=settings.fsync)
    del batches
    writer_time, writer_rss = run_writer(fresh_copy(source, args.dir / "writer"))

    small = args.dir / "small"
    small_sim = simulate(small, args.stations, max(args.seconds // 4, 60), start, seed=7)
    _, small_rss = run_writer(small / "config.ini")

    legacy_time, legacy_events = row_by_row(files, registry, args.dir / "rowbyrow",
                                            args.row_by_row_events)

    rate = events / writer_time
    print(f"{'writer (datastore writer --once)':<44} {rate:>10,.0f} events/s  {writer_time:6.2f} s")
    print(f"{'decode-only':<44} {events / decode_time:>10,.0f} events/s  {decode_time:6.2f} s")
    print(f"{'HDF5 floor (prepared appends, flush+fsync)':<44} {events / floor_time:>10,.0f} events/s  "
          f"{floor_time:6.2f} s")
    print(f"{'row by row, flush per event (deployed)':<44} {legacy_events / legacy_time:>10,.0f} events/s "
          f" (sample of {legacy_events})")
    print(f"writer / (decode-only + HDF5 floor) = {writer_time / (decode_time + floor_time):.2f}"
          "   (goal <= 1.5)")
    print(f"writer / deployed row-by-row speed   = {rate / (legacy_events / legacy_time):.1f}x faster")
    print(f"writer peak memory: {writer_rss:.0f} MB for {events} events, "
          f"{small_rss:.0f} MB for {small_sim.events} events   (goal < 300 MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
