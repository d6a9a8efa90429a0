"""``make demo``: the whole path, stations to day files, through a real receiver.

Runs the real commands one after the other, printing each: writes a config
and station list, starts ``datastore serve`` on a free loopback port, posts
the simulated stations' uploads to it over HTTP, drains the queue with
``datastore writer --once``, prints what the day files hold and the return
codes the receiver answered, and stops the receiver with SIGTERM whatever
happened in between.
"""

from __future__ import annotations

import argparse
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

DATASTORE = str(Path(sys.executable).parent / "datastore")
START_TIMEOUT = 60.0  # seconds for the receiver to listen, generous for a loaded machine
_LISTENING = re.compile(r"receiving uploads on (http://127\.0\.0\.1:\d+/)")


class DemoFailed(RuntimeError):
    pass


def run(*args: str) -> None:
    print("$ datastore " + shlex.join(args), flush=True)
    done = subprocess.run([DATASTORE, *args])
    if done.returncode != 0:
        raise DemoFailed(f"datastore {args[0]} exited with {done.returncode}")


def start_receiver(config: Path, log: Path) -> tuple[subprocess.Popen, str]:
    """``datastore serve`` on a port the kernel picks (no race for a "free" port); the
    address is read from its log line."""
    print(f"$ datastore serve {config} --bind 127.0.0.1:0 2> {log} &", flush=True)
    with open(log, "wb") as stderr:
        process = subprocess.Popen([DATASTORE, "serve", str(config), "--bind", "127.0.0.1:0"],
                                   stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        match = _LISTENING.search(log.read_text(errors="replace"))
        if match:
            return process, match[1]
        if process.poll() is not None:
            raise DemoFailed(f"datastore serve exited with {process.returncode}: see {log}")
        time.sleep(0.1)
    stop_receiver(process)
    raise DemoFailed(f"datastore serve did not start listening within {START_TIMEOUT:.0f} s: see {log}")


def stop_receiver(process: subprocess.Popen) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def receiver_codes(url: str) -> str:
    with urllib.request.urlopen(url + "metrics", timeout=30) as reply:
        text = reply.read().decode()
    codes = re.findall(r'datastore_receiver_uploads_total\{code="(\d+)"\} (\d+)', text)
    return ", ".join(f"{code} x {n}" for code, n in codes if n != "0") or "none"


def demo(data_dir: Path, stations: int, hours: float) -> int:
    data_dir.mkdir(parents=True, exist_ok=True)
    config = data_dir / "config.ini"
    common = ["--stations", str(stations), "--hours", f"{hours:g}"]
    run("simulate", str(data_dir), *common, "--prepare")
    receiver, url = start_receiver(config, data_dir / "serve.log")
    try:
        print(f"receiver listening on {url}", flush=True)
        run("simulate", str(data_dir), *common, "--post", url, "--give-up-after", "120")
        print(f"receiver answered (from its {url}metrics): {receiver_codes(url)}", flush=True)
    finally:
        print(f"$ kill -TERM {receiver.pid}", flush=True)
        code = stop_receiver(receiver)
        print(f"receiver stopped with exit code {code}", flush=True)
    if code != 0:
        raise DemoFailed(f"datastore serve exited with {code}: see {data_dir / 'serve.log'}")
    run("writer", str(config), "--once", "--quiet")
    run("summary", str(data_dir))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--stations", type=int, default=5)
    parser.add_argument("--hours", type=float, default=1.0)
    args = parser.parse_args(argv)
    try:
        return demo(args.data_dir.resolve(), args.stations, args.hours)
    except DemoFailed as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
