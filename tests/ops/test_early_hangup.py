"""A SIGHUP in a service's first half second (logrotate's postrotate meeting a restart) is
taken note of, not obeyed: the writer, the receiver and the config-server each catch it from
the package's first line, well before they are ready, and act on it once they are; the
writer's preparing child ignores a SIGHUP sent to the writer's process group."""

import datetime
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tables

from hisparc_datastore.codec.decoding import Upload
from hisparc_datastore.testing.helpers import event, queue_uploads, wait_for
from hisparc_datastore.testing.serveprocess import free_port

DATASTORE = Path(sys.executable).with_name("datastore")
ATTEMPTS = 5
READY = {"writer": "writer started", "serve": "receiving uploads on",
         "config-server": "config server on"}


def write_config(tmp_path, extra=""):
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "station_list.csv").write_text("501,amsterdam,pw\n")
    config = tmp_path / "config.ini"
    config.write_text(
        f"[General]\nlog={tmp_path}/log/datastore.log\nloglevel=info\n"
        f"station_list={tmp_path}/station_list.csv\ndata_dir={tmp_path}/data\nminimum_year=2000\n"
        f"station_list_url=http://127.0.0.1:9/none\n[Writer]\nfsync=false\nsleep=0.2\n{extra}")
    return config


def catches_sighup(pid: int) -> bool:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = next(line for line in text.splitlines() if line.startswith("SigCgt:"))
    return bool(int(caught.split()[1], 16) & (1 << (signal.SIGHUP - 1)))


def start(command, config, **popen):
    args = [str(DATASTORE), command, str(config), "--quiet"]
    if command in ("serve", "config-server"):
        args += ["--bind", f"127.0.0.1:{free_port()}"]
    return subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, **popen)


@pytest.mark.parametrize("command", ["writer", "serve", "config-server"])
def test_a_sighup_before_the_service_is_ready_is_acted_on_once_it_is(tmp_path, command):
    config = write_config(tmp_path)
    log = tmp_path / "log" / "datastore.log"
    # Poll closely: the handler must be in place long before the service is ready (it was
    # set only once the service was ready, and an earlier SIGHUP ended it: rc -1). On a
    # loaded machine this test may be descheduled past the window, so a start that is
    # seen late is ended and tried again; a service that catches SIGHUP only once it is
    # ready is late every time.
    for _ in range(ATTEMPTS):
        process = start(command, config)
        deadline = time.monotonic() + 120
        # Spinning, not sleeping: a sleeping test waits behind every busy process for its
        # next turn, and on a loaded machine the service was ready by then.
        while not catches_sighup(process.pid) and process.poll() is None and time.monotonic() < deadline:
            pass
        early = not (log.exists() and READY[command] in log.read_text())
        if early:
            break
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, process.stderr.read()
        log.unlink()
    try:
        process.send_signal(signal.SIGHUP)
        assert early, f"{command} caught SIGHUP only once it was ready, {ATTEMPTS} starts out of {ATTEMPTS}"
        assert wait_for(lambda: log.exists() and READY[command] in log.read_text()
                        or process.poll() is not None, 120)
        assert process.poll() is None, process.stderr.read()
        assert wait_for(lambda: "SIGHUP: log reopened" in log.read_text())
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, process.stderr.read()


def test_the_writers_preparing_child_ignores_a_sighup_to_the_group(tmp_path):
    """logrotate may signal the whole group: the child died of it and the writer logged a
    failure and prepared the batches itself."""
    config = write_config(tmp_path, "prepare_process=true\nbatch_uploads=5\n")
    moment = datetime.datetime(2017, 2, 26, 7, 26, 4)
    # Uploads of 50 events: a batch of single events took the writer 4 ms, so on a loaded
    # machine it stored all of them before the child had started, and nothing showed that
    # the child was ever there to be signalled.
    uploads = [Upload(501, "amsterdam", [event("CIC", moment, {"PH1": n}, nanoseconds=n)
                                         for n in range(k, k + 50)])
               for k in range(0, 20000, 50)]
    queue_uploads(tmp_path / "data", uploads)
    log = tmp_path / "log" / "datastore.log"
    process = start("writer", config, start_new_session=True)
    try:
        assert wait_for(lambda: log.exists() and READY["writer"] in log.read_text(), 120)

        def drained_under_hangups():
            os.killpg(process.pid, signal.SIGHUP)
            return (process.poll() is not None
                    or not any((tmp_path / "data" / "incoming").iterdir()))
        assert wait_for(drained_under_hangups, 300, interval=0.02)
        assert process.poll() is None, process.stderr.read()
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, process.stderr.read()
    text = log.read_text()
    ahead = re.search(r"(\d+) batches prepared ahead in a second process", text)
    assert ahead and int(ahead.group(1)) > 0, text
    assert "the process preparing the next batch failed" not in text, text
    day = next((tmp_path / "data").rglob("2017_2_26.h5"))
    with tables.open_file(day) as h5:
        values = sorted(int(row["pulseheights"][0]) for row in
                        h5.get_node("/hisparc/cluster_amsterdam/station_501/events").iterrows())
    assert values == list(range(20000))
