"""docs/operations.md end to end as a user without privileges, with a data_dir of its own:
the station list fetched from a (stand-in) publicdb, writer, receiver and config-server
started as the docs and units start them, a real upload stored, status, metrics,
quarantine, summary, publicdb's reload_datastore(), SIGHUP and SIGTERM. Only the install
(pip into /srv as root) and systemctl are left out."""

import hashlib
import http.server
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import urllib.parse
import urllib.request
import xmlrpc.client
from pathlib import Path

import pytest

from hisparc_datastore.testing.helpers import wait_for
from hisparc_datastore.testing.serveprocess import free_port

NOBODY = 65534
STATIONS = b"99,amsterdam,fake_station\n"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="running as another user needs root and setpriv (util-linux)")


def as_nobody(*args: str) -> list[str]:
    return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--", *args]


@pytest.fixture
def datastore(world_readable_install: Path) -> Path:
    """The command from a venv ``nobody`` may enter, whatever the checkout's mode."""
    return world_readable_install / "datastore"


class _PublicDB(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(STATIONS)))
        self.end_headers()
        self.wfile.write(STATIONS)

    def log_message(self, *args):
        pass


@pytest.fixture
def home():
    """A folder of the unprivileged user's own (pytest's tmp_path is root's, mode 0700)."""
    path = Path(tempfile.mkdtemp(prefix="datastore-walkthrough-", dir="/tmp"))
    os.chown(path, NOBODY, NOBODY)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_the_operations_walkthrough_works_for_an_unprivileged_user(home, testdata, datastore):
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(as_nobody(str(datastore), *args), capture_output=True, text=True, timeout=300)

    publicdb = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _PublicDB)
    threading.Thread(target=publicdb.serve_forever, daemon=True).start()
    receiver_port, config_port, metrics_port = free_port(), free_port(), free_port()
    for name in ("data", "stations", "log"):
        (home / name).mkdir()
    config = home / "config.ini"
    config.write_text(
        f"[General]\nlog={home}/log/datastore.log\nloglevel=info\n"
        f"station_list={home}/stations/station_list.csv\ndata_dir={home}/data\nminimum_year=2016\n"
        f"station_list_url=http://127.0.0.1:{publicdb.server_address[1]}/config/datastore\n"
        f"[Writer]\nsleep=0.5\nmax_lag_s=600\nmetrics_bind=127.0.0.1:{metrics_port}\n"
        f"[Receiver]\ntrusted_proxies=127.0.0.1\nreceiver_bind=127.0.0.1:{receiver_port}\n"
        f"[ConfigServer]\nconfig_server_bind=127.0.0.1:{config_port}\n")
    for path in [home / "data", home / "stations", home / "log", config]:
        os.chown(path, NOBODY, NOBODY)
    services = []
    try:
        plugins = run("plugins")
        assert plugins.returncode == 0 and "CIC  events" in plugins.stdout, plugins.stderr

        fetched = run("fetch-stations", str(config))
        assert fetched.returncode == 0, fetched.stderr
        assert "replaced, 1 station(s)" in fetched.stdout
        assert (home / "stations/station_list.csv").stat().st_uid == NOBODY

        for args in (["writer", str(config), "--quiet"],
                     ["serve", str(config), "--quiet"], ["config-server", str(config), "--quiet"]):
            services.append(subprocess.Popen(as_nobody(str(datastore), *args), stdin=subprocess.DEVNULL,
                                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
        log = home / "log/datastore.log"
        for ready in ("writer started", "receiving uploads on", "config server on"):
            assert wait_for(lambda ready=ready: log.exists() and ready in log.read_text(), 120), \
                [s.poll() for s in services]

        payload = (testdata / "uploads/py3event").read_bytes()
        form = urllib.parse.urlencode({"station_id": "99", "password": "fake_station",
                                       "data": payload.decode("latin-1"),
                                       "checksum": hashlib.md5(payload).hexdigest()}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{receiver_port}/", form,
                                         headers={"X-Forwarded-For": "192.0.2.7"})
        with urllib.request.urlopen(request, timeout=60) as reply:
            assert reply.read() == b"100"

        assert wait_for(lambda: "batch stored: 1 uploads" in log.read_text(), 120), log.read_text()
        status = run("status", str(config))
        assert status.returncode == 0, status.stdout + status.stderr
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=60) as reply:
            assert "datastore_writer_uploads_stored_total 1" in reply.read().decode()
        summary = run("summary", str(home / "data"))
        assert summary.returncode == 0 and "99" in summary.stdout, summary.stdout + summary.stderr
        quarantine = run("quarantine", str(config))
        assert quarantine.returncode == 0 and "0 quarantined file(s)" in quarantine.stdout

        proxy = xmlrpc.client.ServerProxy(f"http://127.0.0.1:{config_port}/RPC2")
        assert proxy.reload_datastore() is True

        for service in services:
            service.send_signal(signal.SIGHUP)
        assert wait_for(lambda: log.read_text().count("SIGHUP: log reopened") == 3, 120)
        assert all(service.poll() is None for service in services)
    finally:
        codes = []
        for service in services:
            service.send_signal(signal.SIGTERM)
        for service in services:
            try:
                codes.append(service.wait(timeout=120))
            except subprocess.TimeoutExpired:
                service.kill()
                codes.append(service.wait())
        publicdb.shutdown()
        publicdb.server_close()
    assert codes == [0, 0, 0], [s.stderr.read() for s in services]
    text = log.read_text()
    assert "station 99 from 192.0.2.7: 100" in text
    assert "Traceback" not in text and "PermissionError" not in text
    # everything the services made belongs to the unprivileged user
    assert {p.stat().st_uid for p in home.rglob("*")} == {NOBODY}
