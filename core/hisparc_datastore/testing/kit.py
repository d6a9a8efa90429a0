"""``Datastore``: a datastore in a folder of its own, with the plugins under test, a real
receiver and a real writer. The ``datastore`` fixture hands one to each test.

In-process services (the default) are quick and see plugins registered as objects;
``processes=True`` runs ``datastore serve`` and ``datastore writer`` as child processes,
as an operator would, and sees installed plugins only.
"""

from __future__ import annotations

import calendar
import datetime
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import attrs
import numpy as np
import tables

from hisparc_datastore.codec.decoding import Upload, parse_event_list, parse_queue_file
from hisparc_datastore.config import load_settings
from hisparc_datastore.plugin.eventtype import EventType
from hisparc_datastore.plugin.hookspecs import SimulatedStation
from hisparc_datastore.plugin.registry import Registry, build_registry, get_plugin_manager
from hisparc_datastore.queue.folders import Queue
from hisparc_datastore.sim.stationclient import post_once, station_form
from hisparc_datastore.storage.layout import date_of_day_file, day_file_path, station_path
from hisparc_datastore.testing.helpers import queue_uploads
from hisparc_datastore.testing.serveprocess import ServeProcess
from hisparc_datastore.util.durable import write_atomically
from hisparc_datastore.writer.service import Tally, Writer

DATASTORE = Path(sys.executable).with_name("datastore")
DEFAULT_CLUSTER = "Amsterdam"

CONFIG = """\
[General]
station_list={station_list}
data_dir={data_dir}
minimum_year={minimum_year}

[Writer]
sleep=0.2
# a test's files need not survive a power cut; one process is quicker for a few uploads
fsync=false
prepare_process=false
"""


class ProcessesSeeInstalledPluginsOnly(RuntimeError):
    """A plugin registered as an object lives in the test's process: a child process cannot use it."""


@attrs.frozen
class Quarantined:
    """A file in ``data_dir/quarantine`` and why it is there."""

    name: str
    reason: str


def upload_events(path: str | os.PathLike) -> list:
    """The events of an upload as a station posts it (its pickled event list, e.g. a file of
    ``../shared/testdata/uploads``), decoded as the receiver decodes them."""
    return parse_event_list(Path(path).read_bytes())


def queue_file_events(path: str | os.PathLike) -> list:
    """The events of a queue file as the receiver wrote it."""
    return parse_queue_file(Path(path).read_bytes()).event_list


def unix_seconds(moment: datetime.datetime) -> int:
    """The ``timestamp`` the writer stores for a header ``datetime`` (UTC, fraction dropped)."""
    return calendar.timegm(moment.utctimetuple())


class Datastore:
    """A data_dir, a config.ini and a station list in ``path``, with the plugins under test.

    ``installed``: use the plugins installed in this environment; ``plugins``: objects
    (modules, instances) to register as well, as a test would with :meth:`register`.
    """

    def __init__(self, path: str | os.PathLike, *, plugins: Iterable[object] = (), installed: bool = True,
                 processes: bool = False, minimum_year: int = 2000) -> None:
        self.path = Path(path)
        self.data_dir = self.path / "data"
        self.config = self.path / "config.ini"
        self.station_list = self.path / "station_list.csv"
        self.processes = processes
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config.write_text(CONFIG.format(station_list=self.station_list, data_dir=self.data_dir,
                                             minimum_year=minimum_year))
        self._clusters: dict[int, str] = {}
        self._write_station_list()
        self.pm = get_plugin_manager(load_installed=installed)
        self._objects: list[object] = []
        for plugin in plugins:
            self.register(plugin)
        self._receiver = None

    # -- the plugins ----------------------------------------------------------------------------

    def register(self, plugin: object) -> None:
        """Use ``plugin`` (a module or an object with hook implementations) from now on."""
        self.pm.register(plugin)
        self._objects.append(plugin)

    @property
    def registry(self) -> Registry:
        """Every event type of the plugins in use, by upload code (checked as at start-up)."""
        return build_registry(self.pm)

    def event_type(self, upload_code: str) -> EventType:
        found = self.registry.get(upload_code)
        if found is None:
            raise LookupError(f"no plugin in use declares upload code {upload_code!r}")
        return found

    def simulated_events(self, station: int = 501, start: datetime.datetime = datetime.datetime(2026, 1, 1),
                         seconds: int = 600, seed: int = 1, **flags: bool) -> list[dict]:
        """The events every plugin in use simulates for ``station`` (``flags``: ``has_weather``,
        ``has_lightning``), in time order, as ``datastore simulate`` makes them."""
        simulated = SimulatedStation(station, self.cluster(station), **flags)
        answers = self.pm.hook.datastore_simulate_events(
            station=simulated, start=start, seconds=seconds, rng=random.Random(f"{seed}-{station}"))
        events = [event for answer in answers for event in answer]
        return sorted(events, key=lambda e: (e["header"]["datetime"], e["header"].get("nanoseconds", 0)))

    # -- stations -------------------------------------------------------------------------------

    def cluster(self, station: int) -> str:
        return self._clusters.get(station, DEFAULT_CLUSTER)

    def add_station(self, station: int, cluster: str = DEFAULT_CLUSTER) -> None:
        """List ``station`` (password ``password-N``) in ``cluster`` for the receiver."""
        if self._clusters.get(station) != cluster:
            self._clusters[station] = cluster
            self._write_station_list()

    def _write_station_list(self) -> None:
        # a new file by rename: the running receiver sees a new inode and reads it again
        text = "".join(f"{n},{c.lower()},password-{n}\n" for n, c in sorted(self._clusters.items()))
        write_atomically(self.station_list, text.encode(), fsync=False)

    # -- the services ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The receiver's address, started on first use on a free loopback port."""
        if self._receiver is None:
            if self.processes:
                self._check_no_objects("datastore serve")
                self._receiver = ServeProcess(self.config, log=self.path / "serve.log").wait_ready()
            else:
                from hisparc_datastore.receiver.app import build_app
                from hisparc_datastore.receiver.server import ServerThread

                self._receiver = ServerThread(build_app(load_settings(self.config))).start()
        return self._receiver.url

    def post(self, station: int, events: Sequence[dict], cluster: str | None = None) -> str:
        """Post ``events`` as one upload of ``station`` to the real receiver, as the station
        software does; the receiver's return code (``'100'``: queued)."""
        self.add_station(station, cluster or self.cluster(station))
        upload = Upload(station, self.cluster(station), list(events))
        return post_once(self.url, station_form(upload, f"password-{station}"), timeout=120)

    def queue(self, events: Sequence[dict], station: int = 501, cluster: str | None = None) -> None:
        """Put ``events`` into the queue as one upload, as the receiver would."""
        self.add_station(station, cluster or self.cluster(station))
        queue_uploads(self.data_dir, [Upload(station, self.cluster(station), list(events))])

    def queue_file(self, path: str | os.PathLike) -> None:
        """Put a queue file (as a receiver wrote it) into the queue, byte for byte."""
        incoming = self.data_dir / "incoming"
        incoming.mkdir(exist_ok=True)
        shutil.copyfile(path, incoming / Path(path).name)

    def store(self, events: Sequence[dict] | None = None, station: int = 501,
              cluster: str | None = None) -> Tally | None:
        """Queue ``events`` (if given) as one upload of ``station``, then drain the queue with
        the real writer. In-process: what it did; with processes: None (it exited 0)."""
        if events is not None:
            self.queue(events, station, cluster)
        if self.processes:
            self._check_no_objects("datastore writer")
            done = subprocess.run([str(DATASTORE), "writer", str(self.config), "--once", "--quiet"],
                                  capture_output=True, text=True, timeout=600)
            if done.returncode != 0:
                raise AssertionError(f"datastore writer exited with {done.returncode}: {done.stderr[-3000:]}")
            return None
        return Writer(load_settings(self.config), self.registry).run(once=True)

    def _check_no_objects(self, command: str) -> None:
        if self._objects:
            raise ProcessesSeeInstalledPluginsOnly(
                f"{command} runs in a process of its own and cannot use plugins registered as "
                f"objects ({', '.join(map(repr, self._objects))}); install them, or use "
                "in-process services (processes=False)")

    def close(self) -> None:
        if self._receiver is not None:
            self._receiver.stop()
            self._receiver = None

    # -- reading back ---------------------------------------------------------------------------

    def day_file(self, date: datetime.date) -> Path:
        """Where the day file of ``date`` is (or would be)."""
        return day_file_path(self.data_dir, date)

    def read_station(self, station: int, date: datetime.date) -> dict[str, object]:
        """Every node of the station's group in the day file of ``date``, by name: tables as
        record arrays, ``blobs`` as a list of bytes."""
        with tables.open_file(self.day_file(date), "r") as h5:
            group = h5.get_node(station_path(self.cluster(station), station))
            return {node._v_name: [bytes(b) for b in node.read()] if node._v_name == "blobs" else node.read()
                    for node in h5.list_nodes(group)}

    def day_files(self) -> list[Path]:
        return sorted(self.data_dir.glob("[0-9]*/*/*.h5"), key=date_of_day_file)

    def _dates(self, date: datetime.date | None) -> list[datetime.date]:
        if date is not None:
            return [date]
        return [date_of_day_file(path) for path in self.day_files()]

    def read(self, table: str, station: int, date: datetime.date | None = None) -> np.ndarray:
        """The rows of ``table`` of ``station`` in the day file of ``date`` (None: every day
        file, in date order), as a numpy record array; empty when there are none."""
        parts = []
        for day in self._dates(date):
            path = day_file_path(self.data_dir, day)
            if not path.exists():
                continue
            with tables.open_file(path, "r") as h5:
                where = f"{station_path(self.cluster(station), station)}/{table}"
                if where in h5:
                    parts.append(h5.get_node(where).read())
        if parts:
            return np.concatenate(parts)
        by_table = {t.table_name: t for t in self.registry}
        if table not in by_table:
            raise LookupError(f"no plugin in use declares a table {table!r}")
        return np.zeros(0, dtype=by_table[table].dtype)

    def blobs(self, station: int, date: datetime.date) -> list[bytes]:
        """The station's ``blobs`` in the day file of ``date``."""
        path = day_file_path(self.data_dir, date)
        if not path.exists():
            return []
        with tables.open_file(path, "r") as h5:
            where = f"{station_path(self.cluster(station), station)}/blobs"
            return [bytes(blob) for blob in h5.get_node(where).read()] if where in h5 else []

    def quarantined(self) -> list[Quarantined]:
        """Every file in quarantine, with its reason (one line per refused event)."""
        return [Quarantined(name, reason) for name, reason in Queue(self.data_dir).quarantined()]

    def assert_stored(self, events: Sequence[dict], station: int = 501) -> None:
        """Fail unless every event is stored in its table, as consecutive rows in the order
        given, each value as the plugin's declaration says: sent values in their columns
        (blobs decoded into ``blobs``), defaults where nothing was sent, the header's time."""
        groups: dict[tuple, list] = {}
        for event in events:
            header = event["header"]
            event_type = self.event_type(header["eventtype_uploadcode"])
            groups.setdefault((header["datetime"].date(), event_type), []).append(event)
        problems = []
        for (date, event_type), group in groups.items():
            rows = self.read(event_type.table_name, station, date)
            blobs = self.blobs(station, date)
            problems += _match(event_type, group, rows, blobs, f"{event_type.table_name} of {date}")
        if problems:
            raise AssertionError("\n".join(problems[:20]))


def _expected(event_type: EventType, event: dict) -> dict[str, object]:
    """Every column of the row ``event`` becomes (blob columns: the blob bytes, or the default)."""
    expected: dict[str, object] = {}
    for name, column in event_type.description.columns.items():
        default = column.dflt
        expected[name] = [default] * column.shape[0] if column.shape else default
    header = event["header"]
    expected.pop("event_id")
    expected["timestamp"] = unix_seconds(header["datetime"])
    if event_type.extended_time:
        expected["nanoseconds"] = header["nanoseconds"]
        expected["ext_timestamp"] = expected["timestamp"] * 1_000_000_000 + header["nanoseconds"]
    for item in event["datalist"]:
        slot = event_type.slots.get(item["data_uploadcode"])
        if slot is None:
            continue  # the writer ignores a code the type does not declare
        value = item["data"]
        if slot.blob is not None:
            value = ("blob", slot.blob(value))
        if slot.index is None:
            expected[slot.column] = value
        else:
            expected[slot.column][slot.index] = value
    return expected


def _same(found: object, wanted: object, blobs: list[bytes], dtype: np.dtype) -> bool:
    if isinstance(wanted, tuple) and wanted[:1] == ("blob",):
        index = int(found)
        return 0 <= index < len(blobs) and blobs[index] == wanted[1]
    as_stored = np.asarray(wanted).astype(dtype.base)
    return bool(np.array_equal(np.asarray(found), as_stored, equal_nan=dtype.base.kind == "f"))


def _match(event_type: EventType, events: list, rows: np.ndarray, blobs: list, where: str) -> list[str]:
    if len(rows) < len(events):
        return [f"{where}: {len(events)} events sent, {len(rows)} rows stored"]
    wanted = [_expected(event_type, event) for event in events]
    best: list[str] | None = None
    for offset in range(len(rows) - len(events) + 1):
        problems = []
        for i, expected in enumerate(wanted):
            row = rows[offset + i]
            if row["event_id"] != offset + i + 1:
                problems.append(f"{where}: row {offset + i} has event_id {int(row['event_id'])}")
            for name, value in expected.items():
                dtype = rows.dtype[name]
                if dtype.shape and isinstance(value, list):
                    for j, element in enumerate(value):
                        if not _same(row[name][j], element, blobs, dtype.base):
                            problems.append(_describe(where, i, f"{name}[{j}]", row[name][j], element, blobs))
                elif not _same(row[name], value, blobs, dtype):
                    problems.append(_describe(where, i, name, row[name], value, blobs))
        if not problems:
            return []
        if best is None or len(problems) < len(best):
            best = problems
    return best or []


def _describe(where: str, i: int, column: str, found: object, wanted: object, blobs: list) -> str:
    if isinstance(wanted, tuple) and wanted[:1] == ("blob",):
        index = int(found)
        got = blobs[index] if 0 <= index < len(blobs) else f"blob index {index}"
        return f"{where}, event {i}: {column} holds {got!r}, expected the blob {wanted[1]!r}"
    return f"{where}, event {i}: {column} is {np.asarray(found).tolist()!r}, expected {wanted!r}"
