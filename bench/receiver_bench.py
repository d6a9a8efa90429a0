"""Benchmark of the upload receiver: uploads per second and latency, durable queue write versus none.

Starts ``datastore serve``'s application on waitress in a child process (so
the clients do not compete with it for the GIL) and posts the real 100-event
batch of station 510 over loopback HTTP, as the station software does, from
1 client and from 8 concurrent keep-alive clients. Every post is a distinct
upload (the nanoseconds of its last event vary, and with them the md5), so
duplicate detection runs but never short-circuits. Two servers are measured:

  durable  the real queue write: tmp/, fsync, rename into incoming/, fsync of the directory
  no-op    the same server with the queue write replaced by nothing (the pickling is kept)

Run from the repository root:  .venv/bin/python bench/receiver_bench.py [--seconds 5] [--dir DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import itertools
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UPLOAD = ROOT.parent / "shared" / "testdata" / "uploads" / "py2_s510_100events"
STATION, CLUSTER, PASSWORD = 510, "Utrecht", "pw510"
MODES = ("durable", "no-op")
CLIENTS = (1, 8)


class UploadFactory:
    """Distinct, valid uploads of the real batch, made cheaply: only the last nanoseconds value varies."""

    def __init__(self, payload: bytes) -> None:
        # The pickle is protocol 0 text: ...S'nanoseconds'\np123\nI0\n...
        last = list(re.finditer(rb"S'nanoseconds'\np\d+\nI(\d+)\n", payload))[-1]
        self.head, self.tail = payload[:last.start(1)], payload[last.end(1):]
        self._head_md5 = hashlib.md5(self.head)
        quote = urllib.parse.quote_plus
        fixed = urllib.parse.urlencode({"station_id": STATION, "password": PASSWORD})
        self._form_head = f"{fixed}&data={quote(self.head.decode('latin-1'))}".encode()
        self._form_tail = quote(self.tail.decode("latin-1")).encode() + b"&checksum="
        self._counter = itertools.count(1)

    def payload(self, n: int) -> bytes:
        return self.head + str(n).encode() + self.tail

    def next_body(self) -> bytes:
        n = next(self._counter) % 1_000_000_000
        digest = self._head_md5.copy()
        digest.update(str(n).encode() + self.tail)
        return self._form_head + str(n).encode() + self._form_tail + digest.hexdigest().encode()


def run_server(mode: str, config: str) -> None:
    """The child process: serve until stdin closes."""
    from hisparc_datastore.config import load_settings
    from hisparc_datastore.ops.logsetup import configure_logging
    from hisparc_datastore.receiver import build_app
    from hisparc_datastore.receiver.server import DEFAULT_THREADS, ServerThread
    from hisparc_datastore.receiver.spool import NullSpool

    settings = load_settings(config)
    configure_logging(settings, also_stderr=False)
    spool = NullSpool(settings.data_dir) if mode == "no-op" else None
    server = ServerThread(build_app(settings, spool=spool), threads=DEFAULT_THREADS).start()
    print(server.port, flush=True)
    sys.stdin.read()
    server.stop()


def start_server(mode: str, workdir: Path) -> tuple[subprocess.Popen, int]:
    data_dir = workdir / mode
    data_dir.mkdir(parents=True)
    (data_dir / "stations.csv").write_text(f"{STATION},{CLUSTER},{PASSWORD}\n")
    config = data_dir / "config.ini"
    config.write_text(f"[General]\nlog={data_dir}/receiver.log\nloglevel=info\n"
                      f"station_list={data_dir}/stations.csv\ndata_dir={data_dir}\nminimum_year=2016\n")
    child = subprocess.Popen([sys.executable, __file__, "--serve", mode, "--config", str(config)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    port = int(child.stdout.readline())
    return child, port


def stop_server(child: subprocess.Popen) -> None:
    child.stdin.close()
    child.wait(timeout=30)


def hammer(port: int, factory: UploadFactory, clients: int, seconds: float) -> tuple[float, list[float]]:
    """Post from ``clients`` keep-alive connections for ``seconds``; returns uploads/s and latencies (s)."""
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine = []
        try:
            while time.perf_counter() < deadline:
                body = factory.next_body()
                started = time.perf_counter()
                connection.request("POST", "/upload", body,
                                   {"Content-Type": "application/x-www-form-urlencoded"})
                reply = connection.getresponse().read()
                mine.append(time.perf_counter() - started)
                if reply != b"100":
                    failures.append(reply.decode(errors="replace"))
                    return
        finally:
            connection.close()
            with lock:
                latencies.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if failures:
        raise SystemExit(f"the receiver answered {failures[0]!r} instead of 100")
    return len(latencies) / elapsed, latencies


def percentile(values: list[float], fraction: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[round(fraction * 100) - 1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each measurement")
    parser.add_argument("--dir", help="where the queues are written (default: a temporary directory)")
    parser.add_argument("--serve", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        run_server(args.serve, args.config)
        return 0

    factory = UploadFactory(UPLOAD.read_bytes())
    size = len(factory.next_body())
    workdir = Path(tempfile.mkdtemp(prefix="receiver-bench-", dir=args.dir))
    results: dict[tuple[str, int], tuple[float, float, float, int]] = {}
    try:
        for mode in MODES:
            child, port = start_server(mode, workdir)
            try:
                _, warm_up = hammer(port, factory, 2, 0.5)  # connections, sqlite, page cache
                posted = len(warm_up)
                for clients in CLIENTS:
                    rate, latencies = hammer(port, factory, clients, args.seconds)
                    posted += len(latencies)
                    results[mode, clients] = (rate, percentile(latencies, 0.50) * 1000,
                                              percentile(latencies, 0.99) * 1000, len(latencies))
            finally:
                stop_server(child)
            queued = len(list((workdir / mode / "incoming").iterdir()))
            if queued != (posted if mode == "durable" else 0):
                raise SystemExit(f"{mode}: {posted} uploads answered 100 but {queued} queued")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    print(f"receiver: {UPLOAD.name} (100 events, {size / 1000:.0f} kB form body), "
          f"{args.seconds:g} s per row, server with 8 threads in its own process")
    print(f"{'queue write':<12} {'clients':>7} {'uploads':>8} {'uploads/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
    for (mode, clients), (rate, p50, p99, count) in results.items():
        print(f"{mode:<12} {clients:>7} {count:>8} {rate:>10.1f} {p50:>8.1f} {p99:>8.1f}")
    for clients in CLIENTS:
        ratio = results["durable", clients][0] / results["no-op", clients][0]
        print(f"durable / no-op throughput, {clients} client(s): {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
