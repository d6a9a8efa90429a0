"""The wheels install with pip extras in a fresh virtual environment, and build without warnings.

This is the operator's install path (README, docs/operations.md), so it runs
the real pip in a real new venv; the dependencies come from wherever pip is
configured to find them (PyPI or a local mirror).
"""

import subprocess
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# every distribution under plugins/ (the Makefile and pyproject.toml name each; see
# tests/plugin/test_plugin_guide.py)
PLUGINS = tuple(sorted(path.name for path in (ROOT / "plugins").iterdir()
                       if (path / "pyproject.toml").is_file()))


def test_make_dist_builds_the_core_and_every_plugin(wheels):
    names = sorted(path.name.split("-")[0] for path in wheels.glob("*.whl"))
    assert names == ["hisparc_datastore", *(f"hisparc_datastore_{p}" for p in sorted(PLUGINS))]


def test_extras_install_from_the_wheels_in_a_fresh_venv(wheels, tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python, datastore = env_dir / "bin/python", env_dir / "bin/datastore"

    def install(spec: str) -> None:
        done = subprocess.run([python, "-m", "pip", "install", "--quiet", "--find-links", str(wheels), spec],
                              capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stdout + done.stderr

    def plugins() -> list[str]:
        done = subprocess.run([datastore, "plugins"], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return [line.split()[0] for line in done.stdout.splitlines() if not line.startswith(" ")]

    install("hisparc-datastore[weather]")
    assert plugins() == ["hisparc-datastore-weather"]
    install("hisparc-datastore[all]")
    assert plugins() == [f"hisparc-datastore-{p}" for p in sorted(PLUGINS)]
    # the installed core is the wheel's copy, not this checkout
    where = subprocess.run([python, "-c", "import hisparc_datastore; print(hisparc_datastore.__file__)"],
                           capture_output=True, text=True, timeout=60)
    assert str(env_dir) in where.stdout
