"""``datastore check`` fails set-ups the services cannot run (issue 28, point 8): a queue
folder on another file system than data_dir (the services rename and link between them),
and risky permissions: a queue folder any user may write, a world-writable config.ini, a
station list any user may read, a symlinked quarantine/ or log file. The receiver and the
writer refuse such a data_dir at start too. Both sides: a sound set-up passes."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hisparc_datastore.cli import main


def write_config(tmp_path: Path) -> Path:
    (tmp_path / "stations.csv").write_text("501,amsterdam,pw501\n")
    (tmp_path / "stations.csv").chmod(0o640)
    (tmp_path / "log").mkdir()
    config = tmp_path / "config.ini"
    config.write_text(f"[General]\nlog={tmp_path}/log/datastore.log\nstation_list={tmp_path}/stations.csv\n"
                      f"data_dir={tmp_path}/data\nminimum_year=2016\n[Writer]\nreserve_mb=0\nfsync=false\n"
                      "[Receiver]\nreceiver_reserve_mb=1\n")
    config.chmod(0o640)
    assert main(["init", str(config)]) == 0
    return config


def check(config: Path, capsys) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["check", str(config), "--serve-bind", "", "--config-server-bind", ""])
    return code, capsys.readouterr().out


def run(*argv) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hisparc_datastore.cli", *map(str, argv)],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def mount_over():
    """``mount_over(folder)`` mounts a small tmpfs over an existing folder (root only)."""
    mounted: list[Path] = []

    def mount(folder: Path) -> None:
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs over a queue folder needs root")
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(folder)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(folder)

    try:
        yield mount
    finally:
        for folder in mounted:
            subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_sound_set_up_passes(tmp_path, capsys):
    config = write_config(tmp_path)
    code, out = check(config, capsys)
    assert code == 0, out
    assert "FAIL" not in out


@pytest.mark.parametrize("folder", ["incoming", "archive"])
def test_a_queue_folder_on_another_file_system_fails_check_and_the_services_refuse_it(
        tmp_path, capsys, mount_over, folder):
    config = write_config(tmp_path)
    mount_over(tmp_path / "data" / folder)
    code, out = check(config, capsys)
    assert code == 1
    assert (f"FAIL  queue folders: {folder}/ on another file system than {tmp_path / 'data'}: uploads are "
            "moved between the queue folders by rename and link, which cannot cross file systems") in out
    # the services say the same at start, instead of answering 205 or retrying for ever
    serve = run("serve", config, "--bind", "127.0.0.1:0")
    assert serve.returncode == 2 and f"{folder}/ on another file system" in serve.stderr
    assert "every upload would be answered 205" in serve.stderr
    writer = run("writer", config, "--once")
    assert writer.returncode == 2 and f"{folder}/ on another file system" in writer.stderr


def test_risky_permissions_fail_check_each_named(tmp_path, capsys):
    config = write_config(tmp_path)
    data = tmp_path / "data"
    (data / "incoming").chmod(0o777)
    config.chmod(0o666)
    (tmp_path / "stations.csv").chmod(0o644)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (data / "quarantine").rmdir()
    (data / "quarantine").symlink_to(elsewhere)
    (tmp_path / "other.log").write_text("")
    (tmp_path / "log/datastore.log").symlink_to(tmp_path / "other.log")
    code, out = check(config, capsys)
    assert code == 1
    assert (f"FAIL  {data / 'incoming'}: mode 0777: any user may put or remove uploads; chmod o-w "
            "(0775 at most)") in out
    assert f"FAIL  configuration {config}: mode 0666: any user may change it; chmod o-w" in out
    assert (f"FAIL  [General] station_list {tmp_path / 'stations.csv'}: mode 0644: any user may read the "
            "passwords; chmod 0640") in out
    assert (f"FAIL  {data / 'quarantine'}: a symbolic link: what the services write there lands in "
            f"{elsewhere}") in out
    assert (f"FAIL  [General] log {tmp_path / 'log/datastore.log'}: a symbolic link: the services would "
            f"append to {tmp_path / 'other.log'}") in out

    # put right, each passes again
    (data / "incoming").chmod(0o775)
    config.chmod(0o640)
    (tmp_path / "stations.csv").chmod(0o640)
    (data / "quarantine").unlink()
    (data / "quarantine").mkdir()
    (tmp_path / "log/datastore.log").unlink()
    code, out = check(config, capsys)
    assert code == 0, out


def test_group_writable_folders_and_a_group_readable_list_are_not_risky(tmp_path, capsys):
    # the units' UMask=0002 makes queue folders 0775; the docs make the list 0640
    config = write_config(tmp_path)
    for name in ("tmp", "incoming", "partial", "suspicious", "quarantine", "archive"):
        (tmp_path / "data" / name).chmod(0o775)
    (tmp_path / "stations.csv").chmod(0o640)
    config.chmod(0o644)  # readable by all is fine: it holds no password
    code, out = check(config, capsys)
    assert code == 0, out
