"""Only one writer may write a data_dir: a second one refuses and names the first."""

import os
import signal
import subprocess
import sys
import time

from hisparc_datastore.writer.lock import WriterAlreadyRunning, WriterLock


def config_for(tmp_path):
    config = tmp_path / "config.ini"
    config.write_text(f"[General]\nlog=\nloglevel=info\nstation_list={tmp_path / 's.csv'}\n"
                      f"data_dir={tmp_path}\n[Writer]\nsleep=0.1\n")
    return config


def test_a_second_writer_refuses_to_start_and_names_the_running_one(tmp_path):
    config = config_for(tmp_path)
    command = [sys.executable, "-m", "hisparc_datastore.cli", "writer", str(config), "--quiet"]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            lock = tmp_path / "writer.lock"
            if lock.exists() and f"pid {first.pid}" in lock.read_text():
                break
            time.sleep(0.05)
        second = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert second.returncode == 2
        assert "another writer is running" in second.stderr
        assert f"pid {first.pid}" in second.stderr
        assert first.poll() is None  # the first one carries on
    finally:
        first.send_signal(signal.SIGTERM)
        assert first.wait(30) == 0


def test_the_lock_goes_with_a_killed_writer(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from hisparc_datastore.writer.lock import WriterLock\n"
        f"lock = WriterLock({str(tmp_path)!r}).__enter__(); print('locked', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "locked"
    try:
        WriterLock(tmp_path).__enter__()
        raise AssertionError("a second lock was granted")
    except WriterAlreadyRunning as exc:
        assert f"pid {child.pid}" in str(exc)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    with WriterLock(tmp_path):  # the kernel released it with the process
        assert f"pid {os.getpid()}" in (tmp_path / "writer.lock").read_text()
