"""``datastore serve`` as a child process on a loopback port: for the crash tests and the
chaos harness, which kill it with SIGKILL and start it again on the same port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

DATASTORE = Path(sys.executable).with_name("datastore")
# Generous: a busy 2-core machine may take seconds to import and start a Python process.
READY_TIMEOUT = 120.0


class ServeFailed(RuntimeError):
    """The receiver exited or did not start listening in time."""


def free_port() -> int:
    """A port nobody listens on now (the receiver binds it with SO_REUSEADDR)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServeProcess:
    """One ``datastore serve CONFIG`` process; ``crash_at`` sets ``DATASTORE_CRASH_AT``."""

    def __init__(self, config: str | os.PathLike, port: int | None = None,
                 crash_at: str | None = None, log: str | os.PathLike | None = None) -> None:
        self.config = Path(config)
        self.port = port or free_port()
        env = dict(os.environ)
        env.pop("DATASTORE_CRASH_AT", None)
        if crash_at:
            env["DATASTORE_CRASH_AT"] = crash_at
        self._log = open(log, "ab") if log else None  # noqa: SIM115 - closed in wait()
        self.process = subprocess.Popen(
            [str(DATASTORE), "serve", str(self.config), "--bind", f"127.0.0.1:{self.port}"],
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=self._log or subprocess.DEVNULL)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> ServeProcess:
        """Return once the port accepts connections (the receiver settles what a killed one
        left behind before it listens); raise ServeFailed if it exits or takes too long."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServeFailed(f"datastore serve exited with {self.process.returncode}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=5).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise ServeFailed(f"datastore serve did not listen on port {self.port} in {timeout:.0f} s")

    def kill(self) -> int:
        """SIGKILL (if still running) and reap; the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        return self.wait()

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM: a clean stop (exit status 0); SIGKILL if it does not stop in time."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.wait()

    def wait(self, timeout: float | None = 60.0) -> int:
        try:
            return self.process.wait(timeout)
        finally:
            if self._log is not None and self.process.returncode is not None:
                self._log.close()
                self._log = None
