"""The writer as a service: stops cleanly on signals and idles without using the CPU."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tables

from hisparc_datastore.codec.decoding import Upload, parse_event_list
from hisparc_datastore.testing.helpers import queue_uploads, wait_for

BIN = Path(sys.executable).parent


def start_writer(tmp_path: Path, sleep: float = 0.2) -> subprocess.Popen:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "data").mkdir(exist_ok=True)  # no service creates data_dir
    config = tmp_path / "config.ini"
    config.write_text(
        f"[General]\nlog={tmp_path}/log/writer.log\nloglevel=info\n"
        f"station_list={tmp_path}/stations.csv\ndata_dir={tmp_path}/data\nminimum_year=2016\n"
        f"[Writer]\nsleep={sleep}\n"
    )
    return subprocess.Popen([BIN / "datastore", "writer", str(config), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_stop_the_writer_cleanly_with_status_0(tmp_path, testdata, signum):
    events = parse_event_list((testdata / "uploads/py2_s510_100events").read_bytes())
    writer = start_writer(tmp_path)
    queue_uploads(tmp_path / "data", [Upload(510, "Amsterdam", events)])
    assert wait_for(lambda: not list((tmp_path / "data/incoming").iterdir())
                    and not list((tmp_path / "data/partial").iterdir()))
    writer.send_signal(signum)
    assert writer.wait(timeout=30) == 0, writer.stderr.read()
    with tables.open_file(tmp_path / "data/2017/2/2017_2_26.h5") as f:  # closed properly
        station = f.root.hisparc.cluster_amsterdam.station_510
        assert station.events.nrows == 36 and station.singles.nrows == 64
    log = (tmp_path / "log/writer.log").read_text()
    assert f"received {signum.name}" in log and "writer stopped: 1 uploads, 100 events" in log


@pytest.mark.parametrize("archived", [0, 20_000])
def test_an_idle_writer_sleeps_instead_of_spinning(tmp_path, archived):
    # weeks of archived uploads must not be walked at every look at the queue
    for i in range(archived):
        day = tmp_path / "data" / "archive" / "2026" / "11" / str(1 + i % 14)
        day.mkdir(parents=True, exist_ok=True)
        (day / f"upload-{i}.gz").write_bytes(b"")
    writer = start_writer(tmp_path, sleep=0.5)
    try:
        assert wait_for(lambda: (tmp_path / "data/writer.lock").exists())
        # Start-up (the one walk of the archive) takes longer on a loaded
        # machine than any fixed pause: wait until it has gone quiet.
        assert wait_for(lambda: _cpu_used_in(writer.pid, 0.5) < 0.05)
        before = _cpu_seconds(writer.pid)
        time.sleep(3.0)
        used = _cpu_seconds(writer.pid) - before
        # A spinning loop would use ~3 s of CPU here; polling every 0.5 s uses milliseconds.
        assert used < 0.3, f"idle writer used {used:.2f} s of CPU in 3 s"
    finally:
        writer.send_signal(signal.SIGTERM)
        assert writer.wait(timeout=30) == 0


def _cpu_used_in(pid: int, seconds: float) -> float:
    before = _cpu_seconds(pid)
    time.sleep(seconds)
    return _cpu_seconds(pid) - before


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def test_a_writer_run_in_a_program_gives_its_signals_back_when_it_returns(tmp_path):
    from hisparc_datastore.plugin.registry import load_registry
    from hisparc_datastore.testing.helpers import settings_for
    from hisparc_datastore.writer.service import Writer

    def ours(signum, frame):
        pass

    before = {signum: signal.signal(signum, ours) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        Writer(settings_for(tmp_path), load_registry()).run(once=True)
        # a SIGTERM for the program after the writer is done is the program's again
        assert signal.getsignal(signal.SIGTERM) is ours and signal.getsignal(signal.SIGINT) is ours
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)
