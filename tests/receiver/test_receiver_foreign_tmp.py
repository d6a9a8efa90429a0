"""The receiver removes from ``data_dir/tmp/`` only names the datastore makes, and
``datastore init`` refuses a folder that holds other things and no queue: with data_dir set
to ``/var``, the receiver deleted what other programs keep in ``/var/tmp``."""

import logging
import os
import time

from hisparc_datastore.cli import main
from hisparc_datastore.receiver import build_app
from hisparc_datastore.testing.helpers import settings_for

DEAD_PID = 4_194_304 + 7  # above Linux's pid_max: no process has it


def old(path, hours=2.0):
    moment = time.time() - hours * 3600
    os.utime(path, (moment, moment), follow_symlinks=False)
    return path


def test_only_the_datastores_own_names_are_removed_from_tmp(tmp_path, caplog):
    (tmp_path / "stations.csv").write_text("501,amsterdam,pw\n")
    settings = settings_for(tmp_path / "data", station_list=tmp_path / "stations.csv")
    app = build_app(settings)
    tmp = settings.data_dir / "tmp"
    # another program's files, however old, named like data or not
    foreign = [tmp / name for name in ("sess_8c1f", "systemd-private-abc", "12-34-backup.tar",
                                            "1796531407-999-notours", ".hidden.tmp")]
    for path in foreign:
        path.write_bytes(b"someone else's")
        old(path)
    (tmp / "apt-dir").mkdir()
    old(tmp / "apt-dir")
    # the datastore's own: a dead request's file and a requeue's stale temporary file
    ours = [tmp / f"{int((time.time() - 60) * 1e9)}-{DEAD_PID}-0-501-1e1355c2",
            tmp / f".requeued-20261206T030000-501-x.events.{DEAD_PID}.tmp"]
    for path in ours:
        path.write_bytes(b"half an upload")
    old(ours[1])
    # still being written: a live process's file, a fresh temporary file
    live = [tmp / f"{time.time_ns()}-{os.getpid()}-3-501-1e1355c2", tmp / f".x.events.{os.getpid()}.tmp"]
    for path in live:
        path.write_bytes(b"in progress")
    caplog.set_level(logging.WARNING)
    assert app.recover() == 2
    assert not any(path.exists() for path in ours)
    assert all(path.read_bytes() == b"someone else's" for path in foreign)
    assert (tmp / "apt-dir").is_dir() and all(path.exists() for path in live)
    named = [r.getMessage() for r in caplog.records if "did not make" in r.getMessage()]
    assert len(named) == 1 and "6 entr(ies)" in named[0] and "sess_8c1f" in named[0], named
    app.recover()  # named once, not at every sweep
    assert len([r for r in caplog.records if "did not make" in r.getMessage()]) == 1


def write_config(tmp_path, data_dir):
    (tmp_path / "stations.csv").write_text("501,amsterdam,pw\n")
    config = tmp_path / "config.ini"
    config.write_text(f"[General]\nlog=\nstation_list={tmp_path}/stations.csv\ndata_dir={data_dir}\n"
                      "minimum_year=2016\n[Writer]\nfsync=false\n")
    return config


def test_init_refuses_a_folder_that_holds_other_things(tmp_path, capsys):
    var = tmp_path / "var"
    (var / "tmp").mkdir(parents=True)
    (var / "log").mkdir()
    (var / "lib").mkdir()
    assert main(["init", str(write_config(tmp_path, var))]) == 2
    err = capsys.readouterr().err
    assert f"[General] data_dir: '{var}': holds 3 entr(ies) (lib, log, tmp) but no incoming/: not a " \
           "data_dir" in err and "Traceback" not in err
    assert sorted(p.name for p in var.iterdir()) == ["lib", "log", "tmp"]  # nothing made in it


def test_init_accepts_an_empty_folder_a_fresh_file_system_and_an_existing_data_dir(tmp_path):
    fresh = tmp_path / "mnt"
    (fresh / "lost+found").mkdir(parents=True)
    assert main(["init", str(write_config(tmp_path, fresh))]) == 0
    assert (fresh / "incoming").is_dir() and (fresh / "tmp").is_dir()
    deployed = tmp_path / "deployed"  # the deployed datastore's: its queue and day files
    (deployed / "incoming").mkdir(parents=True)
    (deployed / "partial").mkdir()
    (deployed / "2017" / "2").mkdir(parents=True)
    assert main(["init", str(write_config(tmp_path, deployed))]) == 0
    assert (deployed / "quarantine").is_dir()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["init", str(write_config(tmp_path, empty))]) == 0
