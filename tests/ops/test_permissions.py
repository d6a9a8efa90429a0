"""Permissions that explain themselves (issue 18, item 3): a path the service's user may not
write or read is one line naming it and the user, exit 2, never a traceback, in every command;
a receiver that could not queue an upload does not start.

The commands run as another user than the owner of the files: as root the tests run them as
``nobody`` (setpriv), since root ignores mode bits; as any other user they take the write bits
away instead. The commands are those of a venv outside the checkout (the
``world_readable_install`` fixture), which ``nobody`` may enter whatever the checkout's mode.
"""

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

STATIONS = "501,amsterdam,pw501\n"


@pytest.fixture
def base():
    """A folder every user may enter (pytest's tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="datastore-permissions-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def as_other_user(world_readable_install: Path) -> Callable[..., subprocess.CompletedProcess]:
    def run(*argv: object) -> subprocess.CompletedProcess:
        command = [str(world_readable_install / "datastore"), *map(str, argv)]
        if os.geteuid() == 0:
            if not shutil.which("setpriv"):
                pytest.skip("running as root without setpriv: cannot drop to another user")
            command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--", *command]
        return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd="/")

    return run


def deny_writing(*paths: Path) -> None:
    """Owned by root and not writable by others already; for a non-root run, the bits go."""
    if os.geteuid() != 0:
        for path in paths:
            path.chmod(path.stat().st_mode & ~0o222)


def setup(base: Path, log: Path | None = None, folders: bool = True) -> Path:
    data_dir = base / "data"
    data_dir.mkdir()
    if folders:
        for name in ("tmp", "incoming", "partial", "suspicious", "quarantine", "archive"):
            (data_dir / name).mkdir()
    (base / "stations.csv").write_text(STATIONS)
    config = base / "config.ini"
    config.write_text(f"[General]\nlog={log or ''}\nstation_list={base}/stations.csv\n"
                      f"data_dir={data_dir}\nstation_list_url=http://127.0.0.1:9/config\n"
                      "[Writer]\nsleep=0.2\nfsync=false\n")
    return config


def assert_one_line(done: subprocess.CompletedProcess, command: str, *parts: str) -> None:
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"datastore {command}: "), done.stderr
    for part in parts:
        assert part in lines[0], lines[0]


@pytest.mark.parametrize("command", [["serve", "--bind", "127.0.0.1:0"], ["writer", "--once"],
                                     ["config-server", "--bind", "127.0.0.1:0"]])
def test_an_unwritable_log_file_is_one_line_in_every_service(as_other_user, base, command):
    log = base / "hisparc.log"
    log.write_text("")
    deny_writing(log)
    config = setup(base, log=log)
    done = as_other_user(command[0], config, *command[1:])
    assert_one_line(done, command[0], str(log), "permission denied")


def test_a_writer_that_may_not_write_data_dir_names_the_lock(as_other_user, base):
    config = setup(base)
    deny_writing(base / "data")
    done = as_other_user("writer", config, "--once")
    assert_one_line(done, "writer", str(base / "data" / "writer.lock"), "permission denied (running as ")


def test_a_receiver_that_could_not_queue_refuses_to_start(as_other_user, base):
    config = setup(base)
    deny_writing(base / "data", *(base / "data").iterdir())
    done = as_other_user("serve", config, "--bind", "127.0.0.1:0")
    assert_one_line(done, "serve", f"[General] data_dir: '{base / 'data'}'", "may not create files in",
                    "every upload would be answered 205")


def test_a_receiver_that_may_not_create_the_queue_folders_says_which(as_other_user, base):
    config = setup(base, folders=False)
    deny_writing(base / "data")
    done = as_other_user("serve", config, "--bind", "127.0.0.1:0")
    assert_one_line(done, "serve", str(base / "data"), "permission denied")


@pytest.mark.parametrize("command", [["status"], ["quarantine"], ["requeue", "x"], ["rebuild", "2024-01-01"]])
def test_a_data_dir_it_may_not_read_is_one_line(as_other_user, base, command):
    config = setup(base)
    (base / "data" / "quarantine" / "x").write_text("")
    for folder in (base / "data").iterdir():
        folder.chmod(0o700)  # root's alone (for a non-root run: its own, but see below)
    if os.geteuid() != 0:
        pytest.skip("a folder of one's own stays readable to oneself")
    done = as_other_user(command[0], config, *command[1:])
    assert_one_line(done, command[0], "permission denied")


def test_check_names_every_path_the_user_may_not_write(as_other_user, base):
    log = base / "hisparc.log"
    log.write_text("")
    config = setup(base, log=log)
    deny_writing(log, base / "data", base / "data" / "incoming")
    done = as_other_user("check", config, "--serve-bind", "", "--config-server-bind", "")
    assert done.returncode == 1, done.stdout + done.stderr
    failed = [line for line in done.stdout.splitlines() if line.startswith("FAIL")]
    assert any(f"[General] data_dir {base / 'data'}: " in line and "may not create files in" in line
               for line in failed), failed
    assert any(line.startswith("FAIL  incoming/:") for line in failed), failed
    assert any(f"[General] log {log}: " in line for line in failed), failed
    assert any("station list" in line and "may not create files in" in line for line in failed), failed


def test_init_where_the_user_may_not_create_data_dir_is_one_line(as_other_user, base):
    config = setup(base)
    (base / "data").rename(base / "elsewhere")
    deny_writing(base)
    done = as_other_user("init", config)
    assert_one_line(done, "init", str(base / "data"), "permission denied")
    assert not (base / "data").exists()


def test_the_commands_other_users_run_come_from_outside_the_checkout(world_readable_install):
    """What makes these tests pass in a checkout in a 0700 folder: the core and the plugins that
    the other user imports are installed copies, in folders every user may enter."""
    where = subprocess.run([str(world_readable_install / "python"), "-c",
                            "import hisparc_datastore, datastore_hisparc; print(hisparc_datastore.__file__)"],
                           capture_output=True, text=True, timeout=120, cwd="/")
    assert where.returncode == 0, where.stderr
    module = Path(where.stdout.strip())
    checkout = Path(__file__).resolve().parents[2]
    assert checkout not in module.parents, module
    for folder in module.parents:
        assert folder.stat().st_mode & 0o005 == 0o005, f"{folder} is closed to other users"
