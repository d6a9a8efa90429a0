"""Fills a queue with uploads from simulated stations, for the demo and the benchmarks.

The core simulates nothing itself: every installed plugin answers the
``datastore_simulate_events`` hook for each station, and the events are cut
into 100-event uploads as the Windows station software sends them, queued in
the order they would arrive.
"""

from __future__ import annotations

import datetime
import os
import random
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import attrs

from hisparc_datastore.codec.decoding import Upload
from hisparc_datastore.config import ConfigError
from hisparc_datastore.plugin.hookspecs import SimulatedStation
from hisparc_datastore.plugin.registry import get_plugin_manager
from hisparc_datastore.util.durable import write_atomically
from hisparc_datastore.writer.lock import writer_holding

BATCH_SIZE = 100
CLUSTERS = ("Amsterdam", "Utrecht", "Leiden", "Twente", "Bristol")
FIRST_STATION = 501

CONFIG_TEMPLATE = """\
[General]
log={data_dir}/datastore.log
loglevel=info
station_list={data_dir}/station_list.csv
data_dir={data_dir}
minimum_year={minimum_year}

[Writer]
sleep=1
"""


@attrs.frozen
class SimulationResult:
    stations: tuple[SimulatedStation, ...]
    uploads: int
    events: int
    queue_bytes: int
    # events per upload code: what the installed plugins simulated, nothing claimed beyond
    by_code: Mapping[str, int] = attrs.field(factory=dict)


def stations(count: int) -> tuple[SimulatedStation, ...]:
    """``count`` stations; every fifth has a weather station, every tenth a lightning detector."""
    return tuple(
        SimulatedStation(number=FIRST_STATION + i, cluster=CLUSTERS[i % len(CLUSTERS)],
                         has_weather=i % 5 == 0, has_lightning=i % 10 == 0)
        for i in range(count)
    )


def simulated_uploads(station_list: tuple[SimulatedStation, ...], start: datetime.datetime,
                      seconds: int, seed: int = 1, extra_plugins=()) -> list[Upload]:
    """Every station's events, batched per station and ordered by when each batch would arrive."""
    hook = get_plugin_manager(extra_plugins).hook
    batches = []
    for station in station_list:
        rng = random.Random(f"{seed}-{station.number}")
        events = [event for answer in hook.datastore_simulate_events(
            station=station, start=start, seconds=seconds, rng=rng) for event in answer]
        events.sort(key=lambda e: (e["header"]["datetime"], e["header"]["nanoseconds"]))
        for i in range(0, len(events), BATCH_SIZE):
            batch = events[i:i + BATCH_SIZE]
            batches.append((batch[-1]["header"]["datetime"], station.number,
                            Upload(station.number, station.cluster, batch)))
    batches.sort(key=lambda item: item[:2])
    return [upload for _, _, upload in batches]


def write_queue(data_dir: str | os.PathLike, uploads: list[Upload]) -> int:
    """Queue ``uploads`` into ``data_dir/incoming`` in order; returns the bytes written."""
    incoming = Path(data_dir, "incoming")
    incoming.mkdir(parents=True, exist_ok=True)
    total = 0
    for i, upload in enumerate(uploads):
        payload = upload.to_queue_bytes()
        # the writer claims oldest first by mtime; names sort the same way for people
        path = incoming / f"sim-{i:07d}-{upload.station_id}"
        write_atomically(path, payload, fsync=False)
        os.utime(path, ns=(1_000_000_000 * (1_700_000_000 + i),) * 2)
        total += len(payload)
    return total


def prepare(data_dir: str | os.PathLike, station_count: int, seed: int = 1,
            minimum_year: int = 2020, force: bool = False) -> tuple[Path, tuple[SimulatedStation, ...]]:
    """Write ``data_dir/config.ini`` and the station list (passwords drawn from ``seed``);
    unless ``force``, refuse (ConfigError) a data_dir a writer holds, or to replace a file
    that holds something else."""
    data_dir = Path(data_dir).resolve()
    station_list = stations(station_count)
    rng = random.Random(seed)
    files = {
        data_dir / "config.ini": CONFIG_TEMPLATE.format(data_dir=data_dir, minimum_year=minimum_year),
        data_dir / "station_list.csv": "".join(
            f"{s.number},{s.cluster.lower()},{rng.getrandbits(48):012x}\n" for s in station_list),
    }
    if not force:
        refuse_live(data_dir, files)
    data_dir.mkdir(parents=True, exist_ok=True)
    for path, text in files.items():
        path.write_text(text)
    return data_dir, station_list


def refuse_live(data_dir: Path, files: dict[Path, str]) -> None:
    """A simulation belongs in a folder of its own: its fake events queued where a writer runs
    would be stored in real day files, and its config.ini and station list would replace real
    ones (a real password lost). Raise ConfigError naming what is in the way."""
    holder = writer_holding(data_dir) if data_dir.is_dir() else None
    if holder:
        raise ConfigError(f"{data_dir}: a writer is running there ({holder}): simulated uploads would "
                          "be stored in its day files; simulate into a folder of its own (or --force)")
    for path, text in files.items():
        try:
            current = path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise ConfigError(f"{path}: {exc.strerror or exc}") from None
        if current != text:
            raise ConfigError(f"{path} exists and holds something else: simulate would replace it "
                              "(a real configuration or station list?); simulate into a folder of its "
                              "own (or --force)")


def simulate(data_dir: str | os.PathLike, station_count: int, seconds: int,
             start: datetime.datetime, seed: int = 1, minimum_year: int = 2020,
             force: bool = False) -> SimulationResult:
    """Write a config, a station list and a queue of simulated uploads into ``data_dir``."""
    data_dir, station_list = prepare(data_dir, station_count, seed, minimum_year, force)
    uploads = simulated_uploads(station_list, start, seconds, seed)
    size = write_queue(data_dir, uploads)
    by_code = Counter(event["header"]["eventtype_uploadcode"] for u in uploads for event in u.event_list)
    return SimulationResult(station_list, len(uploads), sum(by_code.values()), size, dict(by_code))


def simulate_command(data_dir: str, stations: int, hours: float, start: str, seed: int,
                     post: str | None = None, prepare_only: bool = False, concurrency: int = 8,
                     give_up_after: float = 600.0, force: bool = False) -> int:
    moment = datetime.datetime.fromisoformat(start)
    minimum_year = min(2020, moment.year)
    if prepare_only:
        path, _ = prepare(data_dir, stations, seed, minimum_year, force)
        print(f"config: {path / 'config.ini'}, station list: {path / 'station_list.csv'}")
        return 0
    if post:
        return _post_command(data_dir, post, stations, hours, moment, seed, minimum_year,
                             concurrency, give_up_after)
    result = simulate(data_dir, stations, round(hours * 3600), moment, seed, minimum_year=minimum_year,
                      force=force)
    # What the installed plugins answered: a station "with weather" has none without its plugin.
    kinds = ", ".join(f"{code} {n}" for code, n in sorted(result.by_code.items())) or "no plugin simulates"
    print(f"simulated {len(result.stations)} stations for {hours:g} h from {moment:%Y-%m-%d %H:%M} UTC: "
          f"{result.events} events ({kinds}) in {result.uploads} uploads "
          f"({result.queue_bytes / 1e6:.1f} MB) queued in {Path(data_dir, 'incoming')}")
    print(f"config: {Path(data_dir, 'config.ini')}")
    return 0


def _post_command(data_dir: str, url: str, station_count: int, hours: float, moment: datetime.datetime,
                  seed: int, minimum_year: int, concurrency: int, give_up_after: float) -> int:
    """Post the simulated uploads to a receiver, as the stations would; the passwords come
    from ``data_dir/station_list.csv`` (written by ``--prepare`` or the operator)."""
    from hisparc_datastore.ops.progress import Progress
    from hisparc_datastore.sim.stationclient import Stations
    from hisparc_datastore.stations.stationlist import parse_station_list

    list_path = Path(data_dir, "station_list.csv")
    if not list_path.exists():
        prepare(data_dir, station_count, seed, minimum_year)
    listed = parse_station_list(list_path.read_text(), str(list_path))
    station_list = stations(station_count)
    uploads = simulated_uploads(station_list, moment, round(hours * 3600), seed)
    client = Stations(url, {n: s.password for n, s in listed.items()}, concurrency, give_up_after)
    with Progress(client.describe):
        result = client.send(uploads)
    events = sum(len(u.event_list) for u in uploads)
    print(f"posted {len(station_list)} simulated stations ({events} events in {len(uploads)} uploads) "
          f"to {url}, {min(concurrency, len(station_list))} at a time: {result.delivered} delivered, "
          f"{result.undelivered} given up")
    print("return codes: " + ", ".join(f"{code} x {n}" for code, n in sorted(result.replies.items())))
    return 0 if result.complete else 1
