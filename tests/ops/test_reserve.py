"""The reserve at both ends (issue 25, point 5): ``check`` fails below it, the receiver answers
205 below its own so the writer always has room, and ``writer --once`` gives up with the
reason instead of waiting for ever. The small disks are real tmpfs mounts (root only)."""

import datetime
import hashlib
import os
import pickle
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import tables

from hisparc_datastore.cli import main
from hisparc_datastore.config import load_settings
from hisparc_datastore.receiver.app import build_app
from hisparc_datastore.receiver.server import ServerThread
from hisparc_datastore.sim.summary import day_files
from hisparc_datastore.testing.helpers import event

MB = 2**20


def write_config(folder: Path, data_dir: Path, writer_mb: int, receiver_mb: int) -> Path:
    (folder / "stations.csv").write_text("99,amsterdam,pw99\n")
    (folder / "stations.csv").chmod(0o640)
    data_dir.mkdir(exist_ok=True)
    config = folder / "config.ini"
    config.write_text(f"[General]\nlog=\nloglevel=info\nstation_list={folder}/stations.csv\n"
                      f"data_dir={data_dir}\nminimum_year=2016\n[Writer]\nfsync=false\n"
                      f"prepare_process=false\nreserve_mb={writer_mb}\n"
                      f"[Receiver]\nreceiver_reserve_mb={receiver_mb}\n")
    return config


def leave_free(disk: Path, megabytes: float) -> None:
    """Fill ``disk`` until about ``megabytes`` are left."""
    target = int(megabytes * MB)
    with open(disk / "filler", "ab") as fh:
        while (free := os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize) > target:
            fh.write(b"\0" * min(free - target, 4 * MB))
            fh.flush()


def payload(n: int, events: int = 3000) -> bytes:
    moment = datetime.datetime(2024, 5, 6, 7, 0, 0)
    return pickle.dumps([event("SIN", moment + datetime.timedelta(seconds=i),
                               {"MAS_CH1_LOW": n * events + i}) for i in range(events)], protocol=2)


def post(url: str, data: bytes) -> str:
    form = {"station_id": "99", "password": "pw99", "data": data.decode("latin-1"),
            "checksum": hashlib.md5(data).hexdigest()}
    with urllib.request.urlopen(url, urllib.parse.urlencode(form).encode(), timeout=120) as reply:
        return reply.read().decode()


def run(*argv) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hisparc_datastore.cli", *map(str, argv)],
                          capture_output=True, text=True, timeout=300)


def test_check_fails_below_each_reserve_and_passes_above_them(tmp_path, tmpfs, capsys):
    disk = tmpfs(64)
    leave_free(disk, 49)
    config = write_config(tmp_path, disk / "data", writer_mb=100, receiver_mb=200)
    assert main(["check", str(config), "--serve-bind", "", "--config-server-bind", ""]) == 1
    out = capsys.readouterr().out
    assert f"FAIL  free space in {disk / 'data'}: 4" in out
    assert "below [Writer] reserve_mb = 100: the writer would store nothing" in out

    write_config(tmp_path, disk / "data", writer_mb=20, receiver_mb=60)
    assert main(["check", str(config), "--serve-bind", "", "--config-server-bind", ""]) == 1
    assert "below [Receiver] receiver_reserve_mb = 60: every upload would be answered 205" in (
        capsys.readouterr().out)

    # a receiver's reserve not above the writer's leaves the writer no room: refused too
    write_config(tmp_path, disk / "data", writer_mb=20, receiver_mb=20)
    assert main(["check", str(config), "--serve-bind", "", "--config-server-bind", ""]) == 1
    assert ("FAIL  [Receiver] receiver_reserve_mb = 20: not above [Writer] reserve_mb = 20"
            in capsys.readouterr().out)

    write_config(tmp_path, disk / "data", writer_mb=20, receiver_mb=30)
    assert main(["check", str(config), "--serve-bind", "", "--config-server-bind", ""]) == 0
    assert "above both reserves (20 MB writer, 30 MB receiver)" in capsys.readouterr().out


def test_the_receiver_answers_205_below_its_reserve_and_the_writer_stores_every_upload_it_took(
        tmp_path, tmpfs):
    disk = tmpfs(48)
    config = write_config(tmp_path, disk / "data", writer_mb=4, receiver_mb=16)
    assert main(["init", str(config)]) == 0
    leave_free(disk, 17)  # room above the reserve for a few uploads of ~350 kB
    settings = load_settings(config)
    answers = []
    with ServerThread(build_app(settings)) as server:
        for n in range(200):
            answers.append(post(server.url, payload(n)))
            if answers[-1] != "100":
                break
        free_when_refused = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
        # the same upload again, refused again: the station keeps it and retries
        assert post(server.url, payload(len(answers) - 1)) == "205"
    accepted = answers.count("100")
    assert answers[-1] == "205" and answers[:-1] == ["100"] * accepted and accepted >= 2
    assert free_when_refused >= 16 * MB - 1 * MB
    # nothing set aside: a copy in quarantine would spend the writer's room
    assert os.listdir(disk / "data/quarantine") == []

    done = run("writer", config, "--once")
    assert done.returncode == 0, done.stderr
    [day_file] = day_files(disk / "data")
    with tables.open_file(day_file) as h5:
        stored = sorted(h5.get_node("/hisparc/cluster_amsterdam/station_99/singles").col("mas_ch1_low"))
    assert stored == list(range(accepted * 3000))


def test_the_receiver_takes_uploads_when_the_reserve_is_met_or_off(tmp_path):
    config = write_config(tmp_path, tmp_path / "data", writer_mb=0, receiver_mb=0)
    assert main(["init", str(config)]) == 0
    with ServerThread(build_app(load_settings(config))) as server:
        assert post(server.url, payload(1, events=10)) == "100"
    write_config(tmp_path, tmp_path / "data", writer_mb=0, receiver_mb=1)
    with ServerThread(build_app(load_settings(config))) as server:
        assert post(server.url, payload(2, events=10)) == "100"
    assert len(os.listdir(tmp_path / "data/incoming")) == 2


def test_writer_once_exits_1_with_the_reason_when_the_disk_is_short(tmp_path, tmpfs):
    disk = tmpfs(32)
    config = write_config(tmp_path, disk / "data", writer_mb=64, receiver_mb=0)
    assert main(["init", str(config)]) == 0
    with ServerThread(build_app(load_settings(config))) as server:
        assert post(server.url, payload(0, events=50)) == "100"
    done = run("writer", config, "--once")
    assert done.returncode == 1
    [line] = [line for line in done.stderr.splitlines() if "gave up" in line]
    assert "disk full: " in line and f"MB free in {disk / 'data'}" in line
    assert "with [Writer] reserve_mb = 64; 1 uploads stay claimed in" in line and "partial" in line
    assert len(os.listdir(disk / "data/partial")) == 1 and day_files(disk / "data") == []

    # room again: the next run stores the claimed upload
    write_config(tmp_path, disk / "data", writer_mb=1, receiver_mb=0)
    done = run("writer", config, "--once")
    assert done.returncode == 0, done.stderr
    assert "stored 50 events from 1 uploads" in done.stdout
    assert os.listdir(disk / "data/partial") == []
