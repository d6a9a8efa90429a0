"""A detector plugin installed from outside the repository is used with no change to the core."""

import copy
import datetime
import os
import re
import subprocess
import sys
from pathlib import Path

import tables

from hisparc_datastore.codec.decoding import Upload
from hisparc_datastore.testing.helpers import event, queue_uploads

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
FENCE = re.compile(r"^```\w+ file=(\S+)\n(.*?)^```", re.S | re.M)


def write_guide_example(target: Path) -> list[str]:
    """Write the plugin of docs/plugin-guide.md, file by file, as a reader would (the muon/
    excerpts are new-plugin's output: tests/plugin/test_plugin_guide.py checks them)."""
    files = [(name, text) for name, text in FENCE.findall((ROOT / "docs/plugin-guide.md").read_text())
             if not name.startswith("muon/")]
    for name, text in files:
        path = target / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return [name for name, _ in files]


def test_the_guide_example_plugin_installs_and_is_used(tmp_path):
    source = tmp_path / "hisparc-datastore-radon"
    assert write_guide_example(source) == [
        "pyproject.toml", "datastore_radon/descriptions.py", "datastore_radon/__init__.py",
        "conftest.py", "tests/test_radon.py",
    ]
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(site), str(source)],
        check=True, capture_output=True,
    )
    env = {**os.environ, "PYTHONPATH": str(site)}

    listing = subprocess.run([BIN / "datastore", "plugins"], env=env, check=True,
                             capture_output=True, text=True).stdout
    assert "hisparc-datastore-radon 0.1.0" in listing
    assert re.search(r"RDN\s+radon\s+Radon monitor readings", listing)

    data_dir = tmp_path / "data"
    moment = datetime.datetime(2026, 3, 1, 12, 0, 0)
    reading = event("RDN", moment, {"RDN_ACTIVITY": 41.5, "RDN_STATUS": "chamber ok"})
    queue_uploads(data_dir, [Upload(501, "Utrecht", [reading, copy.deepcopy(reading)])])
    config = tmp_path / "config.ini"
    config.write_text(f"[General]\nstation_list={tmp_path}/stations.csv\ndata_dir={data_dir}\n")
    subprocess.run([BIN / "datastore", "writer", str(config), "--once", "--quiet"], env=env,
                   check=True, capture_output=True)

    with tables.open_file(data_dir / "2026/3/2026_3_1.h5") as f:
        station = f.root.hisparc.cluster_utrecht.station_501
        assert station.radon._v_title == "Radon monitor readings"
        rows = station.radon.read()
        assert list(rows["event_id"]) == [1, 2]
        assert list(rows["activity"]) == [41.5, 41.5]
        assert list(rows["chamber_temperature"]) == [-999, -999]
        assert list(rows["status"]) == [0, 1]
        assert station.blobs[1] == b"chamber ok"

    # the guide's tests of the plugin pass, on the testing kit alone
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir",
                           str(source), str(source / "tests")], env=env, cwd=source,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "1 passed" in done.stdout
