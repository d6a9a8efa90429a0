import datetime
import logging
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = ("hisparc", "weather", "lightning")


@pytest.fixture
def moment() -> datetime.datetime:
    return datetime.datetime(2017, 2, 26, 7, 26, 4)


@pytest.fixture(autouse=True)
def restore_logging():
    """The command line configures the root logger for the process; undo that for the next test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)


@pytest.fixture(scope="session")
def wheels(tmp_path_factory) -> Path:
    """The wheels ``make dist`` builds, the core's and each plugin's: built once per run, for the
    tests that install them in a fresh venv (tests/test_dist.py, tests/plugin/test_new_plugin.py)."""
    dist = tmp_path_factory.mktemp("dist")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--verbose", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(dist), str(ROOT), *(str(ROOT / "plugins" / p) for p in PLUGINS)],
        capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stdout + build.stderr
    output = build.stdout + build.stderr
    # project.license as a table was deprecated by setuptools 77
    assert "BuildBackendWarning" not in output and "deprecated" not in output.lower(), output
    return dist
