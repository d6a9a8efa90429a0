"""Everything the deployed datastore stores, we store: the deployed receiver and writer are the
oracle (run as processes, never imported). Hypothesis generates legitimate uploads;
each is posted to both receivers over HTTP, both queues are drained by their own writers, and
the deployed queue is also drained by ours (the switch-over). The rows must be equal.

Where ours differs on purpose, a test below says so: code-running pickles are refused (never
posted to the deployed receiver, which would run them), a retry is queued once, LIT/LCG/LST
are stored, an upload whose shared references expand beyond the bound is refused, and a Python 2
byte string is stored as the bytes sent (the deployed datastore re-encodes it). Events both
leave out (text beyond latin-1 in a blob) are compared as absent: the deployed writer discards
them, ours keeps them in quarantine with the reason.

``DIFFERENTIAL_UPLOADS`` sets how many uploads the generated test tries (``make fuzz``: 2,000).

Three data directories take part:

``deployed``  the deployed receiver (../shared/reference/deployed-receiver) and writer
``ours``      ``datastore serve`` and ``datastore writer --once``
``switch``    the deployed receiver's queue files (its ``tmp*`` names, its pickle of
              station_id/cluster/event_list), copied before the deployed writer drains
              them, drained by ``datastore writer --once``: the queue left at switch-over

Every upload is posted for a station of its own, so each station's rows in the day files
are that upload's rows. The deployed code is only ever run as a process, never imported.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import http.client
import math
import os
import pickle
import random
import shutil
import socket
import struct
import subprocess
import sys
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import attrs
import numpy as np
import pytest
import tables
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from hisparc_datastore.plugin.registry import load_registry
from hisparc_datastore.queue.folders import REASON_SUFFIX
from hisparc_datastore.testing.helpers import sample_values
from hisparc_datastore.testing.serveprocess import ServeProcess, free_port

DATASTORE = Path(sys.executable).with_name("datastore")
STATIONS = 20_000  # one station per upload, listed up front: the deployed receiver reads the list once
CLUSTERS = ("Amsterdam", "Utrecht", "Enschede", "Eindhoven")
#: Tables the deployed writer never fills: its LIT, LCG and LST column names do not exist in
#: its tables, so it discards those messages. Ours stores them, on purpose.
STORED_BY_US_ONLY = frozenset({"lightning", "lightning_config", "lightning_status"})
#: The answer our receiver gives an upload over the bound on shared references.
SHARED_REFERENCE_BOUND = "bound on shared references"
OK = "100"


def password(station: int) -> str:
    return f"pw{station}"


def cluster_of(station: int) -> str:
    return CLUSTERS[station % len(CLUSTERS)]


def form(station: int, payload: bytes) -> bytes:
    """The form a station posts: its pickle as latin-1 text, and the md5 of those bytes."""
    return urllib.parse.urlencode({
        "station_id": str(station), "password": password(station),
        "data": payload.decode("latin-1"), "checksum": hashlib.md5(payload).hexdigest(),
    }).encode("ascii")


def post(port: int, body: bytes, timeout: float = 300.0) -> str:
    """One POST to a receiver on a loopback port; its return code, or ``HTTP <status>``."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("POST", "/", body, {"Content-Type": "application/x-www-form-urlencoded"})
        reply = connection.getresponse()
        text = reply.read().decode("latin-1").strip()
        return text if reply.status == 200 else f"HTTP {reply.status}"
    finally:
        connection.close()


def wait_listening(port: int, process: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"receiver exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"receiver did not listen on port {port} in {timeout:.0f} s")


def write_config(data_dir: Path, station_list: Path) -> Path:
    data_dir.mkdir(parents=True, exist_ok=True)
    for name in ("tmp", "incoming", "partial", "suspicious"):
        (data_dir / name).mkdir(exist_ok=True)  # the deployed receiver expects tmp/ and suspicious/
    config = data_dir / "config.ini"
    config.write_text(
        f"[General]\nlog={data_dir}/log\nloglevel=warning\nstation_list={station_list}\n"
        f"data_dir={data_dir}\nminimum_year=2020\n\n[Writer]\nsleep=0.1\nfsync=false\n")
    return config


@attrs.frozen
class Outcome:
    """What one upload came to: each receiver's answer, and the rows each system stored."""

    station: int
    deployed_answer: str
    our_answer: str
    deployed_rows: dict
    our_rows: dict
    switch_rows: dict


class Oracle:
    """Both datastores, up for a whole test module; uploads are posted and drained in rounds."""

    def __init__(self, root: Path, reference: Path) -> None:
        self.root = root
        self.reference = reference
        station_list = root / "stations.csv"
        station_list.write_text("".join(f"{s},{cluster_of(s)},{password(s)}\n" for s in range(1, STATIONS)))
        self.dirs = {name: root / name for name in ("deployed", "ours", "switch")}
        self.configs = {name: write_config(path, station_list) for name, path in self.dirs.items()}
        self.next_station = 1
        self.registry = load_registry()
        self.blob_columns = {t.table_name: {slot.column for slot in t.slots.values() if slot.blob}
                             for t in self.registry}
        self.deployed_port = free_port()
        self.deployed = subprocess.Popen(
            [sys.executable, str(reference / "deployed-receiver" / "run_deployed_receiver.py"),
             str(self.configs["deployed"]), f"127.0.0.1:{self.deployed_port}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(root / "deployed.err", "ab"))  # noqa: SIM115
        self.ours = ServeProcess(self.configs["ours"], log=root / "ours.err")
        wait_listening(self.deployed_port, self.deployed)
        # The deployed receiver reads its config and station list at its first request, into
        # globals, without a lock: requests arriving together before that are answered HTTP 500
        # (NoSectionError). uWSGI runs it one request per process, so production never sees
        # this; here one request of an unknown station (206) comes first.
        assert post(self.deployed_port, form(STATIONS, b"warm-up")) == "206"
        # Its first pickle naming numpy imports numpy inside pickle.loads; two threads doing so
        # at once fail (HTTP 500, "partially initialized module 'numpy._core.multiarray'"),
        # which one request per uWSGI process never meets. A pickle that names numpy and then
        # breaks imports it once, stores nothing and is answered 208.
        assert post(self.deployed_port, form(1, b"cnumpy\nfloat64\n\xff")) == "208"
        self.ours.wait_ready()

    def close(self) -> None:
        self.ours.stop()
        if self.deployed.poll() is None:
            self.deployed.terminate()
            try:
                self.deployed.wait(60)
            except subprocess.TimeoutExpired:
                self.deployed.kill()
                self.deployed.wait()

    def stations(self, n: int) -> list[int]:
        first = self.next_station
        self.next_station += n
        if self.next_station >= STATIONS:
            raise RuntimeError(f"more than {STATIONS} uploads in one module")
        return list(range(first, first + n))

    @staticmethod
    def post(port: int, body: bytes, repeat: int) -> str:
        """Post ``repeat`` times (a station retrying); the last answer."""
        return [post(port, body) for _ in range(repeat)][-1]

    # -- one round -------------------------------------------------------------------------

    def round(self, payloads: Iterable[bytes], repeat: int = 1) -> list[Outcome]:
        """Post every payload (``repeat`` times) to both receivers, drain the three queues,
        and return what each upload came to, in order."""
        payloads = list(payloads)
        stations = self.stations(len(payloads))
        bodies = [form(station, payload) for station, payload in zip(stations, payloads, strict=True)]
        with ThreadPoolExecutor(4) as pool:
            deployed = list(pool.map(lambda body: self.post(self.deployed_port, body, repeat), bodies))
            ours = list(pool.map(lambda body: self.post(self.ours.port, body, repeat), bodies))
        # The queue the deployed receiver leaves at switch-over, as it left it.
        for entry in (self.dirs["deployed"] / "incoming").iterdir():
            shutil.copy2(entry, self.dirs["switch"] / "incoming" / entry.name)
        drains = [
            [sys.executable, str(self.reference / "deployed-writer" / "run_deployed.py"),
             str(self.configs["deployed"])],
            [str(DATASTORE), "writer", str(self.configs["ours"]), "--once"],
            [str(DATASTORE), "writer", str(self.configs["switch"]), "--once"],
        ]
        running = [subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE) for command in drains]
        for command, process in zip(drains, running, strict=True):
            _, err = process.communicate(timeout=1800)
            if process.returncode != 0:
                raise RuntimeError(f"{command[1]} exited with {process.returncode}: {err.decode()[-2000:]}")
        for name in ("deployed", "ours", "switch"):
            left = [*(self.dirs[name] / "incoming").iterdir(), *(self.dirs[name] / "partial").iterdir()]
            if left:
                raise RuntimeError(f"{name}: the writer left {len(left)} queue files behind")
        rows = {name: self.rows(path) for name, path in self.dirs.items()}
        for path in self.dirs.values():  # the next round starts with no day files
            for day_file in path.glob("[0-9]*/*/*.h5"):
                day_file.unlink()
        return [Outcome(station, d, o, rows["deployed"].get(station, {}), rows["ours"].get(station, {}),
                        rows["switch"].get(station, {}))
                for station, d, o in zip(stations, deployed, ours, strict=True)]

    # -- reading back ----------------------------------------------------------------------

    def rows(self, data_dir: Path) -> dict[int, dict[tuple, list]]:
        """Every station's rows: {station: {(day, table): [row, ...]}}, each row a tuple of
        its columns' bytes with blob indices replaced by the blob they point at."""
        found: dict[int, dict[tuple, list]] = {}
        for day_file in sorted(data_dir.glob("[0-9]*/*/*.h5")):
            with tables.open_file(day_file, "r") as h5:
                for group in h5.walk_groups("/hisparc"):
                    if not group._v_name.startswith("station_"):
                        continue
                    station = int(group._v_name.removeprefix("station_"))
                    blobs = group.blobs.read() if "blobs" in group else []
                    for table in h5.iter_nodes(group, classname="Table"):
                        found.setdefault(station, {})[(day_file.name, table.name)] = self.resolved(
                            table.name, table.read(), blobs)
        return found

    def resolved(self, table: str, records: np.ndarray, blobs: list) -> list[tuple]:
        blob_columns = self.blob_columns.get(table, set())
        resolved = []
        for record in records:
            row = []
            for name in records.dtype.names:
                value = record[name]
                if name in blob_columns:
                    indices = np.atleast_1d(value).tolist()
                    row.append((name, tuple(None if i < 0 else bytes(blobs[i]) for i in indices)))
                else:
                    row.append((name, np.asarray(value).tobytes()))
            resolved.append(tuple(row))
        return resolved


def differences(outcome: Outcome) -> list[str]:
    """How ours (receiver and writer) and the switch-over writer differ from the deployed
    datastore for one upload, apart from what differs on purpose."""
    found = []
    if outcome.deployed_answer != OK:
        found.append(f"the deployed receiver answered {outcome.deployed_answer}")
    shared = {key for key in outcome.deployed_rows if key[1] not in STORED_BY_US_ONLY}
    for name, rows in (("ours", outcome.our_rows), ("switch-over", outcome.switch_rows)):
        if name == "ours" and outcome.our_answer != OK:
            found.append(f"our receiver answered {outcome.our_answer}")
            continue
        mine = {key for key in rows if key[1] not in STORED_BY_US_ONLY}
        for key in sorted(shared | mine):
            expected, got = outcome.deployed_rows.get(key, []), rows.get(key, [])
            if expected != got:
                found.append(f"{name}: {key[1]} of {key[0]}: {len(got)} rows, the deployed "
                             f"{len(expected)}{first_difference(expected, got)}")
    # LIT, LCG and LST: the deployed writer discards them; both of our writers store them alike.
    for key in set(outcome.our_rows) | set(outcome.switch_rows):
        if key[1] in STORED_BY_US_ONLY and outcome.our_answer == OK \
                and outcome.our_rows.get(key) != outcome.switch_rows.get(key):
            found.append(f"{key[1]} of {key[0]}: our receiver's and the switch-over queue's rows differ")
    return found


def first_difference(expected: list, got: list) -> str:
    for i, (a, b) in enumerate(zip(expected, got, strict=False)):
        if a != b:
            columns = [f"{x[0]}: {x[1]!r:.60} != {y[1]!r:.60}" for x, y in zip(a, b, strict=False) if x != y]
            return f"; row {i}: " + "; ".join(columns[:3])
    return ""


@attrs.define
class Tally:
    """The long run's summary line."""

    tried: int = 0
    identical: int = 0
    on_purpose: Counter = attrs.field(factory=Counter)
    rows: Counter = attrs.field(factory=Counter)  # rows compared, by table
    styles: Counter = attrs.field(factory=Counter)  # uploads tried, by how they were pickled
    differences: list = attrs.field(factory=list)

    def line(self) -> str:
        return (f"uploads tried: {self.tried}, stored identically: {self.identical}, "
                f"refused on purpose: {sum(self.on_purpose.values())}, differences: {len(self.differences)}")


# -- Python 2 style pickles, emitted opcode by opcode ----------------------------------------


class Py2Pickler:
    """Writes plain data as Python 2's pickler did (protocols 0 to 2): text as ``str``
    (STRING/BINSTRING) when it is ASCII and as ``unicode`` otherwise, ``bytes`` as a ``str`` of
    those bytes, big ints as ``long``, booleans as ``I01``/``I00`` before protocol 2, numpy
    scalars as ``numpy.core.multiarray.scalar`` with their raw bytes in a ``str``, and every
    string, list, dict and tuple memoized, so an object used twice is referred to again."""

    def __init__(self, protocol: int) -> None:
        self.protocol = protocol
        self.memo: dict[int, int] = {}
        self.keep: list = []  # memo keys are ids: keep every object alive until the end
        self.globals: dict[bytes, object] = {}
        self.out: list[bytes] = []

    def dumps(self, value) -> bytes:
        if self.protocol >= 2:
            self.out.append(b"\x80" + bytes([self.protocol]))
        self.save(value)
        self.out.append(b".")
        return b"".join(self.out)

    def put(self, value) -> None:
        index = len(self.memo)
        self.memo[id(value)] = index
        self.keep.append(value)
        if self.protocol == 0:
            self.out.append(b"p%d\n" % index)
        elif index < 256:
            self.out.append(b"q" + bytes([index]))
        else:
            self.out.append(b"r" + struct.pack("<I", index))

    def get(self, value) -> bool:
        index = self.memo.get(id(value))
        if index is None:
            return False
        if self.protocol == 0:
            self.out.append(b"g%d\n" % index)
        elif index < 256:
            self.out.append(b"h" + bytes([index]))
        else:
            self.out.append(b"j" + struct.pack("<I", index))
        return True

    def save(self, value) -> None:
        kind = type(value)
        if value is None:
            self.out.append(b"N")
        elif kind is bool:
            self.out.append((b"\x88" if value else b"\x89") if self.protocol >= 2
                            else (b"I01\n" if value else b"I00\n"))
        elif kind is int:
            self.save_int(value)
        elif kind is float:
            self.out.append(b"F" + repr(value).encode() + b"\n" if self.protocol == 0
                            else b"G" + struct.pack(">d", value))
        elif kind is str or kind is bytes:
            if self.get(value):
                return
            self.save_text(value)
            self.put(value)
        elif kind is list:
            if self.get(value):
                return
            self.out.append(b"(l" if self.protocol == 0 else b"]")
            self.put(value)
            for item in value:
                if self.protocol == 0:
                    self.save(item)
                    self.out.append(b"a")
            if self.protocol and value:
                self.out.append(b"(")
                for item in value:
                    self.save(item)
                self.out.append(b"e")
        elif kind is dict:
            if self.get(value):
                return
            self.out.append(b"(d" if self.protocol == 0 else b"}")
            self.put(value)
            if self.protocol == 0:
                for key, item in value.items():
                    self.save(key)
                    self.save(item)
                    self.out.append(b"s")
            elif value:
                self.out.append(b"(")
                for key, item in value.items():
                    self.save(key)
                    self.save(item)
                self.out.append(b"u")
        elif kind.__module__ == "datetime":
            self.save_global(b"datetime", b"datetime")
            self.save_tuple([value.__reduce__()[1][0]])
            self.out.append(b"R")
        elif isinstance(value, np.generic):
            self.save_numpy(value)
        else:
            raise TypeError(f"a Python 2 pickle of {kind.__name__}")

    def save_int(self, value: int) -> None:
        if -(2**31) <= value < 2**31:
            if self.protocol == 0:
                self.out.append(b"I%d\n" % value)
            elif 0 <= value < 256:
                self.out.append(b"K" + bytes([value]))
            elif 0 <= value < 65536:
                self.out.append(b"M" + struct.pack("<H", value))
            else:
                self.out.append(b"J" + struct.pack("<i", value))
        elif self.protocol >= 2:  # long
            raw = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
            self.out.append(b"\x8a" + bytes([len(raw)]) + raw)
        else:
            self.out.append(b"L%dL\n" % value)

    def save_text(self, value: str | bytes) -> None:
        if isinstance(value, str) and not value.isascii():  # a Python 2 unicode
            if self.protocol == 0:
                escaped = value
                for char in "\\\0\n\r\x1a":
                    escaped = escaped.replace(char, f"\\u{ord(char):04x}")
                self.out.append(b"V" + escaped.encode("raw-unicode-escape") + b"\n")
            else:
                raw = value.encode("utf-8", "surrogatepass")
                self.out.append(b"X" + struct.pack("<I", len(raw)) + raw)
            return
        raw = value.encode("ascii") if isinstance(value, str) else value
        if self.protocol == 0:
            self.out.append(b"S'" + b"".join(_escape(byte) for byte in raw) + b"'\n")
        elif len(raw) < 256:
            self.out.append(b"U" + bytes([len(raw)]) + raw)
        else:
            self.out.append(b"T" + struct.pack("<I", len(raw)) + raw)

    def save_global(self, module: bytes, name: bytes) -> None:
        if self.get(self.named(module + b"." + name)):
            return
        self.out.append(b"c" + module + b"\n" + name + b"\n")
        self.put(self.named(module + b"." + name))

    def named(self, key: bytes) -> object:
        """One object per global or dtype, so that the memo refers to it again, as Python 2's did."""
        return self.globals.setdefault(key, object())

    def save_tuple(self, items: list) -> None:
        if self.protocol >= 2 and 1 <= len(items) <= 3:
            for item in items:
                self.save(item)
            self.out.append(bytes([0x84 + len(items)]))  # TUPLE1, TUPLE2, TUPLE3
        else:
            self.out.append(b"(")
            for item in items:
                self.save(item)
            self.out.append(b"t")
        self.put(object())

    def save_numpy(self, value: np.generic) -> None:
        """scalar(dtype, raw): the dtype built by numpy.dtype(code, 0, 1) and BUILD with its byte order."""
        self.save_global(b"numpy.core.multiarray", b"scalar")
        if self.protocol < 2:
            self.out.append(b"(")
        dtype = self.named(value.dtype.str.encode())
        if not self.get(dtype):
            self.save_global(b"numpy", b"dtype")
            self.save_tuple([value.dtype.str[1:], 0, 1])
            self.out.append(b"R")
            self.put(dtype)
            self.save_tuple([3, value.dtype.str[0], None, None, None, -1, -1, 0])
            self.out.append(b"b")
        self.save_text(value.tobytes())
        self.put(object())
        self.out.append(b"\x86" if self.protocol >= 2 else b"t")
        self.put(object())
        self.out.append(b"R")
        self.put(object())


def _escape(byte: int) -> bytes:
    if byte == 0x5C:
        return b"\\\\"
    if byte == 0x27:
        return b"\\'"
    if 0x20 <= byte < 0x7F:
        return bytes([byte])
    return b"\\x%02x" % byte


def trace_text(raw: bytes, lines: bool) -> str:
    """A trace as the station software sends it: base64 text, with line breaks or without."""
    return (base64.encodebytes(raw) if lines else base64.b64encode(raw)).decode("ascii")




# -- the generated uploads ------------------------------------------------------------

UPLOADS = int(os.environ.get("DIFFERENTIAL_UPLOADS", "48"))
BATCH = 16  # uploads per round of posting and draining: starting the writers costs seconds
REGISTRY_TYPES = ("CIC", "ERR", "CFG", "CMP", "SIN", "SAT", "WTR", "WER", "WCG", "LIT", "LER", "LCG", "LST",
                  "LNS")


@pytest.fixture(scope="module")
def oracle(shared, tmp_path_factory):
    reference = shared / "reference"
    if not (reference / "deployed-receiver").is_dir():
        pytest.fail(f"the deployed datastore is not at {reference} (set HISPARC_SHARED)")
    oracle = Oracle(tmp_path_factory.mktemp("oracle"), reference)
    yield oracle
    oracle.close()


@pytest.fixture(scope="module")
def tally(request):
    tally = Tally()
    yield tally
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if tally.tried and reporter is not None:
        reporter.write_line("")
        reporter.write_line(tally.line())
        compared = ", ".join(f"{table} {n}" for table, n in sorted(tally.rows.items()))
        reporter.write_line(f"  rows compared: {compared}")
        reporter.write_line("  uploads: " + ", ".join(f"{s} {n}" for s, n in sorted(tally.styles.items())))
        for reason, count in sorted(tally.on_purpose.items()):
            reporter.write_line(f"  refused on purpose, {count}: {reason}")
        for difference in tally.differences[:20]:
            reporter.write_line(f"  difference: {difference}")


# -- legitimate uploads ------------------------------------------------------------------------

TEXTS = ["", "Hardware: 9 FPGA: 10", "Error: GPS lost", "x" * 3000, "Störung bei 5 °C", "naïve café",
         "温度センサー ☃", "tab\tand\nnewline", "quote ' and backslash \\"]


def number(rng: random.Random, dtype: np.dtype, numpy_scalars: bool):
    """A value that fits the column, often at the edge of what it holds."""
    if dtype.kind == "b":
        value = rng.random() < 0.5
        return np.bool_(value) if numpy_scalars and rng.random() < 0.5 else value
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        value = rng.choice([info.min, info.max, 0, 1, rng.randint(int(info.min), int(info.max))])
        if numpy_scalars:
            wider = np.int64 if dtype.kind == "i" or info.max < 2**63 else np.uint64
            return rng.choice([dtype.type, wider])(value)
        return int(value)
    info = np.finfo(dtype)
    value = rng.choice([0.0, -0.0, 1.5, float(info.max), float(-info.max), float(info.tiny),
                        float(info.smallest_subnormal), math.inf, -math.inf, math.nan,
                        rng.uniform(-1e6, 1e6), float(rng.randint(-1000, 1000))])
    if dtype == np.float32:
        value = float(np.float32(value))
    if rng.random() < 0.1 and math.isfinite(value) and abs(value) < 2**31:
        return int(value)  # pysparc sends some float settings as ints
    return dtype.type(value) if numpy_scalars else value


def data_value(rng: random.Random, event_type, code: str, numpy_scalars: bool, strings: list):
    slot = event_type.slots[code]
    if slot.blob is None:
        return number(rng, event_type.dtype[slot.column].base, numpy_scalars)
    if strings and rng.random() < 0.3:
        return rng.choice(strings)  # the very same string object again
    if code[:-1] == "TR":
        text = trace_text(rng.randbytes(rng.choice([0, 1, 12, 300, 2000])), lines=rng.random() < 0.5)
    else:
        text = rng.choice(TEXTS)
    strings.append(text)
    return text


@attrs.frozen
class Recipe:
    """How Hypothesis chose to make one upload; the values come from a generator seeded with it."""

    seed: int
    style: str  # py3-N: pickle.dumps, protocol N; py2-N: as Python 2 pickled it, protocol N
    numpy_scalars: bool
    share: frozenset  # what is one object used again: item, datalist, header, string, event


recipes = st.builds(
    Recipe, st.integers(0, 2**32),
    st.sampled_from(["py3-0", "py3-1", "py3-2", "py3-3", "py3-4", "py3-5", "py2-0", "py2-1", "py2-2"]),
    st.booleans(), st.frozensets(st.sampled_from(["item", "datalist", "header", "string", "event"])))


def make_upload(recipe: Recipe, position: int) -> tuple[bytes, list, str]:
    """One station's upload: its pickle, the events in it, and how it was made."""
    registry = load_registry()
    rng = random.Random(f"{recipe.seed}/{position}")  # Hypothesis's simplest batch still varies
    share, numpy_scalars, style = recipe.share, recipe.numpy_scalars, recipe.style
    codes = rng.sample(REGISTRY_TYPES, rng.choice([1, 1, 2, 3]))
    n_events = rng.choice([0, 1, 2, 5, 10, rng.randint(1, 10)])
    day = datetime.datetime(rng.randint(2020, 2037), rng.randint(1, 12), rng.randint(1, 28))
    strings: list = []
    events: list = []
    items: dict = {}  # upload code -> data items made so far, for sharing
    datalists: dict = {}
    headers: dict = {}
    for _ in range(n_events):
        if events and "event" in share and rng.random() < 0.3:
            events.append(rng.choice(events))
            continue
        event_type = registry.get(rng.choice(codes))
        upload_code = event_type.upload_code
        if upload_code in headers and "header" in share and rng.random() < 0.4:
            header = headers[upload_code]
        else:
            moment = day + datetime.timedelta(seconds=rng.choice([0, 1, 86399, rng.randrange(3 * 86400)]),
                                              microseconds=rng.choice([0, 0, 999999]))
            header = {"eventtype_uploadcode": upload_code, "datetime": moment,
                      "nanoseconds": rng.choice([0, 999_999_999, rng.randrange(10**9)])}
            if rng.random() < 0.2:  # the Windows station software's extra keys
                header |= {"date": moment.strftime("%Y-%m-%d"), "time": moment.strftime("%H:%M:%S")}
            headers[upload_code] = header
        if upload_code in datalists and "datalist" in share and rng.random() < 0.5:
            datalist = datalists[upload_code]
        else:
            slots = list(event_type.slots)
            chosen = rng.sample(slots, rng.choice([0, len(slots), rng.randint(0, len(slots))]))
            datalist = []
            for code in chosen:
                made = items.setdefault(upload_code, [])
                if made and "item" in share and rng.random() < 0.3:
                    datalist.append(rng.choice(made))
                    continue
                item = {"data_uploadcode": code,
                        "data": data_value(rng, event_type, code, numpy_scalars,
                                           strings if "string" in share else [])}
                made.append(item)
                datalist.append(item)
            if rng.random() < 0.05:
                datalist.append({"data_uploadcode": "NOT_A_CODE", "data": 1})
            datalists[upload_code] = datalist
        events.append({"header": header, "datalist": datalist})
    kind, protocol = style.split("-")
    if kind == "py2":
        payload = Py2Pickler(int(protocol)).dumps(events)
    else:
        payload = pickle.dumps(events, protocol=int(protocol))
    return payload, events, f"{style}{' numpy' if numpy_scalars else ''} shared {sorted(share)}"


def check_recipes(oracle: Oracle, tally: Tally, batch: list[Recipe]) -> None:
    check_round(oracle, tally, [make_upload(recipe, i) for i, recipe in enumerate(batch)])


def check_round(oracle: Oracle, tally: Tally, generated: list) -> None:
    outcomes = oracle.round(payload for payload, _, _ in generated)
    problems = []
    for (_, events, how), outcome in zip(generated, outcomes, strict=True):
        tally.tried += 1
        tally.styles[how.split()[0]] += 1
        for (_, table), rows in outcome.deployed_rows.items():
            tally.rows[table] += len(rows)
        for (_, table), rows in outcome.our_rows.items():
            if table in STORED_BY_US_ONLY:
                tally.rows[f"{table} (ours only)"] += len(rows)
        if outcome.our_answer.startswith("208") and SHARED_REFERENCE_BOUND in our_reason(oracle, outcome):
            tally.on_purpose["shared references beyond the documented bound (docs/exactly-once.md)"] += 1
            continue
        found = differences(outcome)
        if found:
            tally.differences.append(f"station {outcome.station} ({how}, {len(events)} events): {found}")
            problems.append(tally.differences[-1])
        else:
            tally.identical += 1
    assert not problems, "\n".join(problems[:10])
    events = sum(len(events) for _, events, _ in generated)
    stored = sum(len(rows) for outcome in outcomes for rows in outcome.deployed_rows.values())
    assert stored or not events, "the deployed datastore stored none of the generated events"


def our_reason(oracle: Oracle, outcome) -> str:
    """The reason our receiver keeps with a refused upload (its quarantine's reason files)."""
    # a refusal is kept once per station and bytes, as STATION-MD5.refused with its reason beside it
    texts = [path.read_text(errors="replace")
             for path in (oracle.dirs["ours"] / "quarantine").glob(f"{outcome.station}-*{REASON_SUFFIX}")]
    return "\n".join(text for text in texts if text.startswith(f"station {outcome.station} cluster"))


@settings(max_examples=max(1, -(-UPLOADS // BATCH)), deadline=None, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=list(HealthCheck), database=None)
@given(batch=st.lists(recipes, min_size=BATCH, max_size=BATCH))
def test_generated_uploads_are_stored_as_the_deployed_datastore_stores_them(oracle, tally, batch):
    check_recipes(oracle, tally, batch)


# -- what must be equal, and what differs on purpose -------------------------------------------


def real_events(testdata) -> list:
    """Real station data: station 510's batch (CIC and SIN) and a pysparc configuration."""
    events = pickle.loads((testdata / "uploads" / "py2_s510_100events").read_bytes(), encoding="latin1")
    config = pickle.loads((testdata / "uploads" / "py2_pysparc_config").read_bytes(), encoding="latin1")
    return events[:30] + config


def shared_shape(events: list, shape: str) -> list:
    """The real events with one object used again, as an uploader's Python may do."""
    events = [{"header": dict(e["header"]), "datalist": [dict(i) for i in e["datalist"]]} for e in events]
    by_type: dict = {}
    for e in events:
        by_type.setdefault(e["header"]["eventtype_uploadcode"], []).append(e)
    if shape == "datalist item":  # a cached constant item, in every event of its type
        for same in by_type.values():
            first = same[0]["datalist"][0]
            for e in same[1:]:
                e["datalist"][0] = first if e["datalist"][0]["data_uploadcode"] == first["data_uploadcode"] \
                    else e["datalist"][0]
    elif shape == "datalist":  # one config datalist sent with two events
        config = by_type["CFG"][0]
        events.append({"header": dict(config["header"]), "datalist": config["datalist"]})
        for e in by_type["SIN"][1:]:
            e["datalist"] = by_type["SIN"][0]["datalist"]
    elif shape == "header":
        for e in by_type["SIN"][1:4]:
            e["header"] = by_type["SIN"][0]["header"]
    return events


@pytest.mark.parametrize("style", ["py3-0", "py3-2", "py3-4", "py3-5", "py2-0", "py2-2"])
def test_real_uploads_sharing_objects_are_stored_as_the_deployed_datastore_stores_them(
        oracle, testdata, style):
    events = real_events(testdata)
    for event in events:  # the real data is from 2017; both datastores refuse before 2020
        event["header"]["datetime"] = event["header"]["datetime"].replace(year=2024)
    generated = []
    for shape in ("datalist item", "datalist", "header"):
        shared = shared_shape(events, shape)
        kind, protocol = style.split("-")
        payload = (Py2Pickler(int(protocol)).dumps(shared) if kind == "py2"
                   else pickle.dumps(shared, protocol=int(protocol)))
        assert payload.count(b"h") or payload.count(b"g") or payload.count(b"j")
        generated.append((payload, shared, f"{style} {shape}"))
    tally = Tally()
    check_round(oracle, tally, generated)
    assert tally.identical == 3 and sum(tally.rows.values()) >= 3 * 31


def test_the_comparison_sees_a_value_stored_differently(oracle):
    header = {"eventtype_uploadcode": "SIN", "datetime": datetime.datetime(2024, 1, 2), "nanoseconds": 0}
    payload = pickle.dumps([{"header": header, "datalist": [{"data_uploadcode": "MAS_CH1_LOW", "data": 7}]}],
                           protocol=2)
    (outcome,) = oracle.round([payload])
    assert differences(outcome) == []
    ((key, rows),) = outcome.our_rows.items()
    changed = [tuple((name, b"\x08\x00\x00\x00" if name == "mas_ch1_low" else value) for name, value in row)
               for row in rows]
    found = differences(attrs.evolve(outcome, our_rows={key: changed}))
    assert len(found) == 1 and "mas_ch1_low" in found[0], found
    assert differences(attrs.evolve(outcome, switch_rows={})) != []


def test_a_retried_upload_is_stored_twice_by_the_deployed_datastore_and_once_by_ours(oracle):
    # On purpose: the deployed receiver queues every post; ours answers a retry of an upload
    # it already queued with 100 and queues nothing (docs/exactly-once.md).
    events = [{"header": {"eventtype_uploadcode": "SIN", "datetime": datetime.datetime(2024, 1, 2, 3),
                          "nanoseconds": 0}, "datalist": [{"data_uploadcode": "MAS_CH1_LOW", "data": 7}]}]
    (outcome,) = oracle.round([pickle.dumps(events, protocol=2)], repeat=2)
    assert outcome.deployed_answer == OK and outcome.our_answer == OK
    ((key, deployed),) = outcome.deployed_rows.items()
    assert len(deployed) == 2 and len(outcome.our_rows[key]) == 1
    assert outcome.our_rows[key][0][1:] == deployed[0][1:]  # all but event_id
    assert len(outcome.switch_rows[key]) == 2  # the deployed queue holds it twice: both are stored


def test_an_unknown_station_and_a_wrong_password_are_answered_as_the_deployed_receiver_answers(oracle):
    # The station software logs the code it gets; its operator is sent by it to the station list
    # (206) or to the password (203), so both receivers must say the same.
    payload = pickle.dumps([], protocol=2)
    unknown = form(STATIONS + 5, payload)  # beyond the listed stations
    wrong = form(oracle.stations(1)[0], payload).replace(b"password=pw", b"password=xx")
    answers = [(post(oracle.deployed_port, body), post(oracle.ours.port, body)) for body in (unknown, wrong)]
    assert answers == [("206", "206"), ("203", "203")]


class Shell:
    def __reduce__(self):
        return (os.system, ("touch /tmp/differential-was-here",))


def test_a_code_running_pickle_is_refused_by_ours_and_never_posted_to_the_deployed(oracle):
    # On purpose: the deployed receiver unpickles with pickle.loads and would run the command.
    station = oracle.stations(1)[0]
    answer = post(oracle.ours.port, form(station, pickle.dumps([{"header": Shell()}], protocol=2)))
    assert answer.startswith("208")


def test_shared_references_beyond_the_bound_are_refused_by_ours_with_the_bound_named(oracle):
    # On purpose, a documented resource bound (docs/exactly-once.md, "Shared references"):
    # 4,000 events all referring to one 87-item config datalist. The deployed datastore stores
    # them all; ours refuses the upload, keeps it with the reason, and the station hears 208.
    config = {"header": {"eventtype_uploadcode": "CFG", "datetime": datetime.datetime(2024, 1, 2, 3),
                         "nanoseconds": 0},
              "datalist": [{"data_uploadcode": code, "data": 1.0} for code in load_registry().get("CFG").slots
                           if not load_registry().get("CFG").slots[code].blob]}
    payload = pickle.dumps([config] * 4000, protocol=4)
    (outcome,) = oracle.round([payload])
    assert outcome.deployed_answer == OK and sum(map(len, outcome.deployed_rows.values())) == 4000
    assert sum(map(len, outcome.switch_rows.values())) == 0  # the same bound, in the writer
    assert outcome.our_answer.startswith("208") and outcome.our_rows == {}
    assert SHARED_REFERENCE_BOUND in our_reason(oracle, outcome)
    tally = Tally()
    check_round(oracle, tally, [(pickle.dumps([config] * 4, protocol=4), [config] * 4, "py3-4 within")])
    assert tally.identical == 1


@pytest.mark.parametrize("protocol", [0, 2])
def test_python_2_byte_strings_are_stored_as_sent_where_the_deployed_reencodes_them(oracle, protocol):
    # On purpose (found by this oracle): a Python 2 str is bytes. Ours stores a blob of it as the
    # bytes the station sent. The deployed receiver decodes every Python 2 str of such a pickle
    # as UTF-8 and its writer encodes blobs as latin-1: UTF-8 text within latin-1 is stored
    # re-encoded, beyond latin-1 the event is discarded, and bytes that are not UTF-8 make the
    # deployed receiver fail (HTTP 500). Python 2 text that is ASCII is stored alike.
    sent = [b"caf\xc3\xa9 ok", b"\xe2\x82\xac sign", b"caf\xe9", b"plain ASCII"]
    uploads = [Py2Pickler(protocol).dumps([{
        "header": {"eventtype_uploadcode": "ERR", "datetime": datetime.datetime(2024, 1, 2, 3),
                   "nanoseconds": 0},
        "datalist": [{"data_uploadcode": "ERRMSG", "data": text}]}]) for text in sent]
    outcomes = oracle.round(uploads)

    def messages(rows: dict) -> list:
        return [dict(row)["messages"][0] for table in rows.values() for row in table]

    assert [o.our_answer for o in outcomes] == [OK] * 4
    assert [messages(o.our_rows) for o in outcomes] == [[text] for text in sent]
    assert [o.deployed_answer for o in outcomes] == [OK, OK, "HTTP 500", OK]
    assert [messages(o.deployed_rows) for o in outcomes] == [[b"caf\xe9 ok"], [], [], [b"plain ASCII"]]
    assert [messages(o.switch_rows) for o in outcomes] == [[b"caf\xe9 ok"], [], [], [b"plain ASCII"]]


def test_lightning_messages_the_deployed_writer_discards_are_stored_by_ours(oracle):
    # On purpose: the deployed writer's LIT, LCG and LST column names do not exist in its tables,
    # so it discards every such message; ours stores them, from our queue and from its queue alike.
    registry = load_registry()
    events = [{"header": {"eventtype_uploadcode": code, "datetime": datetime.datetime(2024, 1, 2, 3),
                          "nanoseconds": 0},
               "datalist": [{"data_uploadcode": c, "data": v}
                            for c, v in sample_values(registry.get(code)).items()]}
              for code in ("LIT", "LCG", "LST")]
    (outcome,) = oracle.round([pickle.dumps(events, protocol=2)])
    assert differences(outcome) == []
    tables_with_rows = {table for (_, table), rows in outcome.our_rows.items() if rows}
    assert tables_with_rows == STORED_BY_US_ONLY
    assert outcome.switch_rows == outcome.our_rows
    assert not any(outcome.deployed_rows.values())
