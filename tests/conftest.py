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
# every distribution under plugins/ (the Makefile and pyproject.toml name each; see
# tests/plugin/test_plugin_guide.py)
PLUGINS = tuple(sorted(path.name for path in (ROOT / "plugins").iterdir()
                       if (path / "pyproject.toml").is_file()))


# What `make test-fast` leaves out: the tests that start services, kill processes, build and
# install wheels or fuzz at length. Kept here, one list, rather than a mark in each module.
SLOW_MODULES = {
    "test_chaos.py", "test_power_cut.py", "test_differential.py", "test_dist.py", "test_import_cycles.py",
    "ops/test_check.py", "ops/test_logs.py", "ops/test_permissions.py", "ops/test_status.py",
    "ops/test_units.py", "ops/test_walkthrough.py",
    "plugin/test_external_plugin.py", "plugin/test_new_plugin.py",
    "receiver/test_receiver_churn.py", "receiver/test_receiver_cli.py", "receiver/test_receiver_crashes.py",
    "receiver/test_receiver_disk_full.py", "receiver/test_receiver_hostile.py",
    "sim/test_simulate_post.py", "stations/test_config_server.py",
    "writer/test_crash_points.py", "writer/test_disk_full.py", "writer/test_disk_full_tmpfs.py",
    "writer/test_fuzz.py", "writer/test_preparer.py", "writer/test_readers.py", "writer/test_rebuild.py",
    "writer/test_single_writer.py", "writer/test_unwritable_day_file.py", "writer/test_upload_bounds.py",
    "writer/test_writer_hostile.py", "writer/test_writer_service.py",
}
SLOW_TESTS = {
    "test_simulated_day_spanning_data_is_stored_in_all_fourteen_tables",
    "test_an_idle_connection_does_not_block_the_writers_scrapes",
    "test_each_hostile_upload_and_queue_file_is_refused_cheaply",
    "test_nesting_is_bounded_by_the_shape_of_the_data",
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: left out of `make test-fast`")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        path = Path(item.path)
        module = path.relative_to(here).as_posix() if here in path.parents else None
        if module in SLOW_MODULES or item.originalname in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)


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
        versions: dict[str, str] = {}
        for dist in importlib.metadata.distributions():  # the first found is the one imported
            name = (dist.metadata["Name"] or "").lower()
            if name and name not in ours:
                versions.setdefault(name, dist.version)
        pins = sorted(f"{name}=={version}" for name, version in versions.items())
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
