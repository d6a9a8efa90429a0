"""``datastore simulate`` keeps out of a live data_dir (issue 25, point 6): a data_dir a writer
holds, or a config.ini or station list it would replace with other content, is refused
unless ``--force``; a fresh folder, or the same simulation again, is not."""

import subprocess
import sys
from pathlib import Path

from hisparc_datastore.writer.lock import WriterLock

ARGS = ("--stations", "2", "--hours", "0.05")


def simulate(folder: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hisparc_datastore.cli", "simulate", str(folder), *ARGS,
                           *extra], capture_output=True, text=True, timeout=300)


def test_a_data_dir_a_writer_holds_is_refused_unless_forced(tmp_path):
    live = tmp_path / "live"
    live.mkdir()
    with WriterLock(live):  # a writer runs there (a lock held by this process)
        done = simulate(live)
        assert done.returncode == 2
        assert f"datastore simulate: {live}: a writer is running there (pid " in done.stderr
        assert "simulated uploads would be stored in its day files" in done.stderr
        assert not (live / "incoming").exists() and not (live / "config.ini").exists()
        forced = simulate(live, "--force")
        assert forced.returncode == 0, forced.stderr
        assert len(list((live / "incoming").iterdir())) > 0


def test_a_real_configuration_or_station_list_is_not_replaced_unless_forced(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (real / "station_list.csv").write_text("501,amsterdam,the_real_password\n")
    done = simulate(real, "--prepare")
    assert done.returncode == 2
    assert (f"{real / 'station_list.csv'} exists and holds something else: simulate would replace it"
            in done.stderr)
    assert (real / "station_list.csv").read_text() == "501,amsterdam,the_real_password\n"
    assert not (real / "config.ini").exists()

    (real / "station_list.csv").unlink()
    (real / "config.ini").write_text("[General]\ndata_dir=/srv/datastore/data\n")
    assert simulate(real).returncode == 2
    assert (real / "config.ini").read_text() == "[General]\ndata_dir=/srv/datastore/data\n"
    assert not (real / "incoming").exists()

    assert simulate(real, "--force").returncode == 0
    assert "data_dir=/srv/datastore/data" not in (real / "config.ini").read_text()


def test_a_fresh_folder_and_the_same_simulation_again_are_accepted(tmp_path):
    folder = tmp_path / "sim"
    first = simulate(folder)
    assert first.returncode == 0, first.stderr
    queued = len(list((folder / "incoming").iterdir()))
    again = simulate(folder)  # its own files, unchanged: nothing real is in the way
    assert again.returncode == 0, again.stderr
    assert len(list((folder / "incoming").iterdir())) == queued > 0  # the same uploads, by name
