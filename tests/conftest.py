import datetime
import importlib.metadata
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import venv
from collections.abc import Iterator
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


@pytest.fixture(scope="session")
def world_readable_install(wheels) -> Iterator[Path]:
    """The ``bin`` folder of a venv outside the checkout with the core and the three plugins
    installed from their wheels, every file readable by every user: the tests that drop to
    ``nobody`` run the commands from here, since ``nobody`` cannot enter a checkout made in a
    private folder (``mktemp -d``, a 0700 home). The dependencies are pinned to the versions
    this run imports, so pip takes them from its cache or the configured index as for any
    install, and the commands run what the rest of the suite tests."""
    root = Path(tempfile.mkdtemp(prefix="datastore-installed-", dir="/tmp"))
    try:
        env_dir = root / "venv"
        venv.create(env_dir, with_pip=True)
        ours = {"hisparc-datastore", *(f"hisparc-datastore-{p}" for p in PLUGINS)}
        pins = sorted({f"{d.metadata['Name']}=={d.version}" for d in importlib.metadata.distributions()
                       if d.metadata["Name"] and d.metadata["Name"].lower() not in ours})
        (root / "pins.txt").write_text("\n".join(pins) + "\n")
        done = subprocess.run(
            [str(env_dir / "bin" / "python"), "-m", "pip", "install", "--quiet", "--find-links", str(wheels),
             "--constraint", str(root / "pins.txt"), "hisparc-datastore[all]"],
            capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stdout + done.stderr
        # whatever the umask and the checkout's mode, every user may read and run it
        for path in [root, *root.rglob("*")]:
            if not path.is_symlink():
                path.chmod(path.stat().st_mode | (0o555 if path.is_dir() or path.stat().st_mode & 0o100
                                                  else 0o444))
        if os.geteuid() == 0 and shutil.which("setpriv"):
            tried = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--",
                                    str(env_dir / "bin" / "python"), "-c", "import hisparc_datastore"],
                                   capture_output=True, text=True, timeout=120, cwd="/")
            if tried.returncode != 0:
                # the venv is open to all; only the interpreter it was made from can be closed
                pytest.skip(f"nobody cannot run the interpreter {sys._base_executable} this venv was made "
                            f"from: {tried.stderr.strip()[-300:]}")
        yield env_dir / "bin"
    finally:
        shutil.rmtree(root, ignore_errors=True)
