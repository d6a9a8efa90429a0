"""Day-shaped benchmark: a midday hour of the whole network against day files of a real day's size.

Two parts, each side by side with the writer deployed today
(``../shared/reference/deployed-writer``, run as a process):

**The hour.** Day files of ``--day-gb`` (default 5.0 GB) are grown once per writer run
(see :func:`grow_day_file`), then an hour of 140 stations (11:00 to 12:00 UTC) is
replayed into ``incoming/`` at ``--speed`` times real time while the writer runs as the
service it is (``datastore writer CONFIG``; the deployed one pass after pass with a 1 s
sleep, as its loop does). The hour holds what a real midday brings:

- 10 stations arriving late: their first upload of the day (a new station group);
- 10 stations restarting: a configuration message (CFG, and WCG with a weather station);
- first error, comparator and satellite messages of the day (new tables) at 29 stations;
- one station returning after ``--backlog-days`` offline (default 3) with its backlog, into
  full-size past day files (copies of the grown file, which lack that station).

It reports per writer: events per second of wall time from the first upload fed to the
last stored, events per CPU second, bytes written (the kernel's ``write_bytes`` of
``/proc/PID/io``, summed over the writer and its reaped child: ``ru_oublock`` of
``wait4``) per byte the day files grew, the longest time an upload waited (from being
put in ``incoming/`` to being gone from ``incoming/`` and ``partial/``: stored), and peak
memory of the writer and its child.

**Small uploads.** One upload of a few events at noon, drained by ``--once`` (ours) or
one pass (deployed), into a day file of 2 and 10 GB: one that appends to a station the
file holds, one that adds a station, one that adds a table. Each new station or table is
a different one, so the runs follow each other on one file with no copy in between.

How the day files are grown: 140 simulated stations (minus the late and the returning
one) in the layout our writer makes (its own functions make the groups, tables and blobs
node), each node with the rows of the seconds before 11:00 at the simulation's rates
(0.6 CIC with four real station-501 traces and one SIN per second, a WTR every 5 s at
every fifth station, CMP/SAT/ERR now and then, CFG at midnight), as many seconds as the
size asks for (5 GB: about 3 hours). Row values other than times, ids and blob indices
are zeros: the size, node count, chunking and metadata are a real day file's.

Disk: about 4 x day-gb (today and three past days), plus as much again while our writer
copies a day file before adding a node, plus ~3.5 GB of queue. Everything is deleted at
the end. Absolute times drift on shared machines.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from writer_bench import DATASTORE, PYTHON, ROOT, stored_rows, tree_rss_mb  # noqa: E402

# ../shared from the main checkout; one level more from a worktree under /work/wt
DEPLOYED = next((path for path in (ROOT.parent / "shared", ROOT.parent.parent / "shared")
                 if path.is_dir()), ROOT.parent / "shared") / "reference/deployed-writer/run_deployed.py"

DAY = datetime.datetime(2026, 11, 24)
HOUR_START = DAY + datetime.timedelta(hours=11)
STATIONS = 140
# Which simulated stations (by position in sim.simulate.stations) play which part.
LATE = range(129, 139)  # absent from the grown day file: their first upload of the day
RETURNING = 139  # absent from today's and the past days' files: comes back with a backlog
RESTARTING = range(30, 40)  # send a configuration message at 11:00
NO_ERRORS = range(0, 15)  # the grown file has no errors table for them
NO_COMPARATOR = range(15, 22)
NO_SATELLITES = range(22, 29)
# rows per station-second in the grown file, per upload code (CFG/WCG: one, at midnight)
RATES = {"CIC": 0.6, "SIN": 1.0, "CMP": 1 / 300, "SAT": 1 / 600, "ERR": 1 / 1800,
         "WTR": 1 / 5, "WER": 1 / 3600}
ONCE_AT_MIDNIGHT = ("CFG", "WCG")


# ---------------------------------------------------------------- growing day files (child)

def grow_day_file(path: Path, target_bytes: int, absent: set[int]) -> dict:
    """Grow the day file ``path`` to about ``target_bytes`` (see the module docstring)."""
    import numpy as np
    from writer_bench import real_traces

    from hisparc_datastore.plugin.registry import load_registry
    from hisparc_datastore.sim import simulate
    from hisparc_datastore.storage import layout, vlblobs

    registry = load_registry()
    traces = real_traces()
    stations = [s for i, s in enumerate(simulate.stations(STATIONS)) if i not in absent]
    per_second = 0.6 * (4 * statistics.mean(map(len, traces)) + 93) + 40 + 0.2 * 50
    seconds = int(target_bytes / (len(stations) * per_second))
    midnight = int(DAY.replace(tzinfo=datetime.timezone.utc).timestamp())
    start = midnight + 11 * 3600 - seconds
    path.parent.mkdir(parents=True, exist_ok=True)
    h5 = layout.open_day_file(path, fsync=False)
    rows = 0
    for index, station in enumerate(simulate.stations(STATIONS)):
        if index in absent:
            continue
        codes = ["CFG", "CIC", "SIN", "CMP", "SAT", "ERR"]
        if station.has_weather:
            codes += ["WCG", "WTR", "WER"]
        skip = {"ERR": NO_ERRORS, "CMP": NO_COMPARATOR, "SAT": NO_SATELLITES}
        codes = [c for c in codes if index not in skip.get(c, ())]
        group = layout.get_or_create_station_group(h5, station.cluster, station.number)
        blobs: list[bytes] = []
        for code in codes:
            event_type = registry.get(code)
            table = layout.get_or_create_table(h5, group, event_type)
            n = 1 if code in ONCE_AT_MIDNIGHT else max(1, int(RATES[code] * seconds))
            records = np.zeros(n, dtype=table.dtype)
            records["event_id"] = np.arange(1, n + 1)
            records["timestamp"] = (np.full(n, midnight) if code in ONCE_AT_MIDNIGHT
                                    else start + np.arange(n) * seconds // n)
            for column in dict.fromkeys(event_type.columns[code] for code in event_type.blobs):
                shape = records[column].shape
                count = int(np.prod(shape))
                records[column] = (len(blobs) + np.arange(count)).reshape(shape)
                if column == "traces":
                    blobs += [traces[(rows + i) % len(traces)] for i in range(count)]
                else:
                    blobs += [f"{column} of station {station.number}".encode()] * count
            table.append(records)
            rows += n
        vlblobs.append_blobs(layout.get_or_create_blobs(h5, group), blobs)
        h5.flush()
    h5.close()
    return {"seconds": seconds, "rows": rows, "bytes": path.stat().st_size}


def grow(path: Path, gb: float, absent: set[int]) -> None:
    t = time.perf_counter()
    out = json.loads(subprocess.check_output(
        [str(PYTHON), __file__, "--grow", str(path), str(gb), json.dumps(sorted(absent))]))
    print(f"  grew {path.name}: {out['bytes'] / 1e9:.2f} GB, {out['rows']:,} rows, the "
          f"{out['seconds'] / 3600:.1f} h before 11:00 of {STATIONS - len(absent)} stations "
          f"({time.perf_counter() - t:.0f} s)", flush=True)


# ---------------------------------------------------------------- the hour's queue (child)

def make_hour(staging: Path, backlog_days: int, minutes: int, seed: int = 7) -> dict:
    """Write the hour's uploads into ``staging``, named and dated in arrival order; return
    the schedule: [(seconds after 11:00, name, events)]."""
    import base64
    import random

    import attrs
    from writer_bench import real_traces

    from hisparc_datastore.sim import simulate

    traces = [base64.encodebytes(blob).decode("ascii") for blob in real_traces()]
    rng = random.Random(seed)
    span = 60 * minutes
    simulate.prepare(staging, STATIONS, seed)
    stations = [attrs.evolve(s, has_lightning=False) for s in simulate.stations(STATIONS)]
    (staging / "incoming").mkdir(exist_ok=True)
    arrivals: list[tuple[float, int, object]] = []

    def real(upload):
        for event in upload.event_list:
            if event["header"]["eventtype_uploadcode"] == "CIC":
                for item in event["datalist"]:
                    if item["data_uploadcode"] in ("TR1", "TR2", "TR3", "TR4"):
                        item["data"] = traces[rng.randrange(len(traces))]
        return upload

    for index, station in enumerate(stations):
        if index == RETURNING:
            continue
        for upload in simulate.simulated_uploads((station,), HOUR_START, span, seed):
            if index not in RESTARTING and index not in LATE:
                # the software started before 11:00: no configuration message at 11:00
                upload.event_list[:] = [e for e in upload.event_list
                                        if e["header"]["eventtype_uploadcode"] not in ONCE_AT_MIDNIGHT
                                        or e["header"]["datetime"] != HOUR_START]
            last = upload.event_list[-1]["header"]["datetime"]
            arrivals.append(((last - HOUR_START).total_seconds() + 1, station.number, real(upload)))
    # The returning station: its backlog from backlog_days ago at noon, then this hour, sent
    # in order, evenly from 2 minutes in to 2 minutes before the end (the station software
    # sends as fast as it can).
    station = stations[RETURNING]
    moment = HOUR_START - datetime.timedelta(days=backlog_days) + datetime.timedelta(hours=1)
    end = HOUR_START + datetime.timedelta(seconds=span)
    returning = []
    while moment < end:
        next_midnight = datetime.datetime.combine(moment.date() + datetime.timedelta(days=1),
                                                  datetime.time())
        seconds = int((min(next_midnight, end) - moment).total_seconds())
        returning += simulate.simulated_uploads((station,), moment, seconds, seed)
        moment += datetime.timedelta(seconds=seconds)
    for i, upload in enumerate(returning):
        arrivals.append((120 + (span - 240) * i / len(returning), station.number, real(upload)))
    arrivals.sort(key=lambda item: item[:2])
    schedule = []
    for i, (at, number, upload) in enumerate(arrivals):
        name = f"hour-{i:07d}-{number}"
        path = staging / "incoming" / name
        path.write_bytes(upload.to_queue_bytes())
        os.utime(path, ns=(1_000_000_000 * (1_700_000_000 + i),) * 2)  # claimed oldest first
        schedule.append((at, name, len(upload.event_list)))
    return {"schedule": schedule, "returning": station.number,
            "past_days": [(DAY - datetime.timedelta(days=d)).date().isoformat()
                          for d in range(1, backlog_days + 1)]}


# ---------------------------------------------------------------- running one writer

class Feed(threading.Thread):
    """Hard-links each staged upload into ``incoming/`` at its time (``speed`` x real time)."""

    def __init__(self, staging: Path, incoming: Path, schedule: list, speed: float) -> None:
        super().__init__(daemon=True)
        self.staging, self.incoming, self.schedule, self.speed = staging, incoming, schedule, speed
        self.fed: dict[str, float] = {}
        self.start_time = 0.0

    def run(self) -> None:
        self.start_time = time.perf_counter()
        for at, name, _ in self.schedule:
            delay = self.start_time + (at / self.speed if self.speed else 0) - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            tmp = self.incoming / f".{name}.feed"
            os.link(self.staging / name, tmp)
            # in place before it counts as queued, as the receiver's rename does
            os.replace(tmp, self.incoming / name)
            self.fed[name] = time.perf_counter()


def writer_command(who: str, config: Path, once: bool) -> tuple[list[str], dict]:
    """The command line and environment of a writer: ``deployed``, ``ours``, or ``before``
    (ours with the core at ``$DAY_BENCH_BEFORE_CORE``, a checkout of an earlier commit)."""
    env = dict(os.environ)
    if who == "deployed":
        return [str(PYTHON), str(DEPLOYED.resolve()), str(config)], env
    if who == "before":
        env["PYTHONPATH"] = os.environ["DAY_BENCH_BEFORE_CORE"]
    # $DAY_BENCH_WRAP: a command to run our writer under (strace, to see where the bytes go)
    wrap = os.environ.get("DAY_BENCH_WRAP", "").split()
    return [*wrap, str(DATASTORE), "writer", str(config), *(["--once"] if once else []), "--quiet"], env


def day_file_bytes(data_dir: Path) -> int:
    return sum(p.stat().st_size for p in data_dir.rglob("*.h5"))


def run_hour(who: str, data_dir: Path, staging: Path, schedule: list, speed: float) -> dict:
    config = data_dir / "config.ini"
    incoming, partial = data_dir / "incoming", data_dir / "partial"
    incoming.mkdir(exist_ok=True)
    partial.mkdir(exist_ok=True)
    before = day_file_bytes(data_dir)
    feed = Feed(staging / "incoming", incoming, schedule, speed)
    stored: dict[str, float] = {}
    usage = {"written": 0, "cpu": 0.0, "peak": 0.0}
    done = threading.Event()

    def account(pid: int) -> None:
        while True:
            finished, status, rusage = os.wait4(pid, os.WNOHANG)
            if finished:
                break
            usage["peak"] = max(usage["peak"], tree_rss_mb(pid))
            time.sleep(0.05)
        if os.waitstatus_to_exitcode(status) not in (0, -signal.SIGTERM):
            sys.exit(f"{who} writer failed with {os.waitstatus_to_exitcode(status)}")
        usage["written"] += rusage.ru_oublock * 512  # write_bytes of /proc/PID/io, children reaped
        usage["cpu"] += rusage.ru_utime + rusage.ru_stime
        usage["peak"] = max(usage["peak"], rusage.ru_maxrss / 1024)

    if who != "deployed":
        command, env = writer_command(who, config, once=False)
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, env=env)
        runner = threading.Thread(target=account, args=(process.pid,))
        runner.start()
    else:
        def deployed_loop() -> None:  # the deployed loop: a pass, then sleep 1 s
            while not done.is_set():
                process = subprocess.Popen([str(PYTHON), str(DEPLOYED.resolve()), str(config)],
                                           stdout=subprocess.DEVNULL)
                account(process.pid)
                done.wait(1)
        runner = threading.Thread(target=deployed_loop)
        runner.start()
    time.sleep(2)  # the service started; the feed begins
    feed.start()
    names = {name for _, name, _ in schedule}
    while len(stored) < len(names):
        queued = set(os.listdir(incoming)) | set(os.listdir(partial))
        now = time.perf_counter()
        for name in list(feed.fed):
            if name not in stored and name not in queued:
                stored[name] = now
        time.sleep(0.1)
    done.set()
    if who != "deployed":
        process.send_signal(signal.SIGTERM)
    runner.join()
    events = sum(n for _, _, n in schedule)
    waits = [stored[name] - feed.fed[name] for name in names]
    wall = max(stored.values()) - feed.start_time
    added = day_file_bytes(data_dir) - before
    for folder in ("quarantine", "suspicious"):
        leftovers = list((data_dir / folder).glob("*")) if (data_dir / folder).exists() else []
        if leftovers:
            sys.exit(f"{who}: {len(leftovers)} files in {folder}/, e.g. {leftovers[0]}")
    return {"events": events, "events_s": events / wall, "events_cpu_s": events / usage["cpu"],
            "written": usage["written"], "added": added, "archive": compressed_archive(data_dir),
            "max_wait": max(waits),
            "median_wait": statistics.median(waits), "peak": usage["peak"], "wall": wall}


def compressed_archive(data_dir: Path) -> int:
    """Bytes of the archive our writer wrote itself: the uploads it compressed when idle (an
    upload is archived as a hard link to the receiver's file, which writes nothing)."""
    return sum(p.stat().st_size for p in data_dir.glob("archive/**/*.gz"))


def hour(args: argparse.Namespace) -> list[dict]:
    work = args.dir
    staging = work / "staging"
    t = time.perf_counter()
    made = json.loads(subprocess.check_output(
        [str(PYTHON), __file__, "--make-hour", str(staging), str(args.backlog_days), str(args.minutes)]))
    schedule = made["schedule"]
    events = sum(n for _, _, n in schedule)
    size = sum(p.stat().st_size for p in (staging / "incoming").iterdir())
    print(f"the hour ({args.minutes} min): {events:,} events in {len(schedule):,} uploads of {STATIONS} "
          f"stations "
          f"({size / 1e9:.1f} GB queued; station {made['returning']} returns with "
          f"{args.backlog_days} days of backlog), made in {time.perf_counter() - t:.0f} s; "
          f"replayed at {args.speed:g}x", flush=True)
    results = []
    for who in args.writers:
        data_dir = work / who
        shutil.rmtree(data_dir, ignore_errors=True)
        data_dir.mkdir(parents=True)
        for name in ("station_list.csv",):
            shutil.copy(staging / name, data_dir / name)
        # "ours+commit_s=0": ours with [Writer] settings of its own, to compare them in one run
        settings = "".join(f"{setting}\n" for setting in who.partition("+")[2].split(",") if setting)
        (data_dir / "config.ini").write_text(
            (staging / "config.ini").read_text().replace(str(staging.resolve()), str(data_dir.resolve()))
            .replace("[Writer]\n", f"[Writer]\n{settings}"))
        from_path = layout_path(data_dir, DAY.date())
        grow(from_path, args.day_gb, set(LATE) | {RETURNING})
        for day in made["past_days"]:
            shutil.copyfile(from_path, layout_path(data_dir, datetime.date.fromisoformat(day)))
        rows_before = stored_rows(data_dir)
        subprocess.run(["sync"], check=True)
        result = run_hour(who.partition("+")[0], data_dir, staging, schedule, args.speed)
        rows = stored_rows(data_dir) - rows_before
        if rows != events:
            sys.exit(f"{who} stored {rows:,} rows of {events:,} events")
        result["who"] = who
        results.append(result)
        print(f"  {who:<16} {result['events_s']:>7,.0f} ev/s wall  {result['events_cpu_s']:>7,.0f} ev/CPU-s  "
              f"written/added {result['written'] / result['added']:5.2f} "
              f"({result['written'] / 1e9:.1f} / {result['added'] / 1e9:.2f} GB; of the written, "
              f"{result['archive'] / 1e9:.2f} GB compressed archive)  "
              f"longest wait {result['max_wait']:6.1f} s (median {result['median_wait']:.1f} s)  "
              f"peak {result['peak']:4.0f} MB", flush=True)
        shutil.rmtree(data_dir)
    shutil.rmtree(staging)
    return results


def layout_path(data_dir: Path, date: datetime.date) -> Path:
    path = data_dir / str(date.year) / str(date.month) / f"{date.year}_{date.month}_{date.day}.h5"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


# ---------------------------------------------------------------- small uploads

def small_upload(target: Path, station_index: int, code: str, seed: int) -> None:
    """Queue one upload of station ``station_index``: 10 SIN, or one ``code`` message."""
    from hisparc_datastore import station_event
    from hisparc_datastore.codec.decoding import Upload
    from hisparc_datastore.sim import simulate

    station = simulate.stations(STATIONS)[station_index]
    noon = DAY + datetime.timedelta(hours=12, seconds=seed)
    values = {"SIN": {"MAS_CH1_LOW": 300}, "ERR": {"ERRMSG": "GPS: lost fix"}}
    events = [station_event(code, noon + datetime.timedelta(seconds=i), values[code])
              for i in range(10 if code == "SIN" else 1)]
    simulate.write_queue(target, [Upload(station.number, station.cluster, events)])


def small(args: argparse.Namespace) -> list[tuple]:
    rows = []
    for gb in args.small_gb:
        work = args.dir / f"small-{gb:g}"
        shutil.rmtree(work, ignore_errors=True)
        subprocess.check_call([str(PYTHON), "-c", "import sys; from hisparc_datastore.sim import simulate; "
                               "simulate.prepare(sys.argv[1], int(sys.argv[2]), 7)",
                               str(work), str(STATIONS)])
        path = layout_path(work, DAY.date())
        grow(path, gb, set(LATE) | {RETURNING})
        times: dict[tuple, list[float]] = {}
        late, no_errors = iter(LATE), iter(NO_ERRORS)
        writers = args.small_writers
        for round_ in range(args.rounds):
            for kind in ("appends", "adds a station", "adds a table"):
                for who in writers if round_ % 2 == 0 else writers[::-1]:
                    # a station the file holds; a new one each time; one without an errors table
                    index, code = ((40 + round_, "SIN") if kind == "appends" else
                                   (next(late), "SIN") if kind == "adds a station" else
                                   (next(no_errors), "ERR"))
                    subprocess.check_call([str(PYTHON), __file__, "--small-upload", str(work), str(index),
                                           code, str(round_)])
                    command, env = writer_command(who, work / "config.ini", once=True)
                    subprocess.run(["sync"], check=True)
                    t = time.perf_counter()
                    subprocess.check_call(command, stdout=subprocess.DEVNULL, env=env)
                    times.setdefault((kind, who), []).append(time.perf_counter() - t)
                    if list((work / "incoming").iterdir()):
                        sys.exit(f"{who} left the upload in incoming/")
        size = path.stat().st_size / 1e9
        for kind in ("appends", "adds a station", "adds a table"):
            rows.append((size, kind, {who: statistics.median(times[(kind, who)]) for who in writers}))
        shutil.rmtree(work)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--day-gb", type=float, default=5.0, help="size of each grown day file")
    parser.add_argument("--speed", type=float, default=6.0,
                        help="the hour replayed at this many times real time; 0: queued at once")
    parser.add_argument("--backlog-days", type=int, default=3)
    parser.add_argument("--minutes", type=int, default=60, help="of the hour (fewer: a quick try)")
    parser.add_argument("--small-gb", type=float, nargs="*", default=[2.0, 10.0])
    parser.add_argument("--rounds", type=int, default=3, help="of each small upload")
    parser.add_argument("--writers", nargs="+", default=["deployed", "ours"],
                        help="of the hour: deployed, ours, before (ours with the core at "
                             "$DAY_BENCH_BEFORE_CORE); ours+commit_s=0,gather_s=0: ours with those "
                             "[Writer] settings")
    parser.add_argument("--small-writers", nargs="+", default=["deployed", "ours"])
    parser.add_argument("--skip-hour", action="store_true")
    parser.add_argument("--dir", type=Path, default=ROOT / "bench-day-data")
    parser.add_argument("--grow", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--make-hour", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--small-upload", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.grow:
        path, gb, absent = args.grow
        print(json.dumps(grow_day_file(Path(path), int(float(gb) * 1e9), set(json.loads(absent)))))
        return 0
    if args.make_hour:
        print(json.dumps(make_hour(Path(args.make_hour[0]), int(args.make_hour[1]), int(args.make_hour[2]))))
        return 0
    if args.small_upload:
        target, index, code, seed = args.small_upload
        small_upload(Path(target), int(index), code, int(seed))
        return 0
    if not DEPLOYED.exists():
        sys.exit(f"the deployed writer is not at {DEPLOYED}")
    args.dir.mkdir(parents=True, exist_ok=True)
    try:
        results = [] if args.skip_hour else hour(args)
        small_rows = small(args) if args.small_gb else []
    finally:
        shutil.rmtree(args.dir, ignore_errors=True)
    if results:
        print(f"\nthe hour, {STATIONS} stations against {args.day_gb:g} GB day files, replayed at "
              f"{args.speed:g}x; fsync and archive on for ours")
        print(f"{'writer':<18} {'ev/s':>8} {'ev/CPU-s':>9} {'written/added':>14} {'longest wait':>13} "
              f"{'peak':>8}")
        for r in results:
            print(f"{r['who']:<18} {r['events_s']:>8,.0f} {r['events_cpu_s']:>9,.0f} "
                  f"{r['written'] / r['added']:>14.2f} {r['max_wait']:>11.1f} s {r['peak']:>5.0f} MB")
    if small_rows:
        print(f"\none small upload at noon, median of {args.rounds}: wall time of the process")
        print(f"{'day file':>9} {'the upload':<16} " + " ".join(f"{who:>17}" for who in args.small_writers))
        base = {size: times for size, kind, times in small_rows if kind == "appends"}
        for size, kind, times in small_rows:
            cells = [f"{times[who]:.2f} s"
                     + ("" if kind == "appends" else f" ({times[who] - base[size][who]:+.2f})")
                     for who in args.small_writers]
            print(f"{size:>6.2f} GB {kind:<16} " + " ".join(f"{cell:>17}" for cell in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
