"""Fixtures for every suite of this repository, the core's and the three plugins':
the testing kit's ``datastore`` fixture, and this project's shared material.

``testdata`` and ``seed_text`` find the real station uploads and the seed's writer
documentation in ``../shared`` beside the checkout (``HISPARC_SHARED`` overrides). They
belong to this repository: a plugin of its own has no ``../shared``.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytest_plugins = ["hisparc_datastore.testing"]


@pytest.fixture(scope="session")
def shared(pytestconfig: pytest.Config) -> Path:
    """``../shared`` beside the checkout, or ``HISPARC_SHARED``."""
    override = os.environ.get("HISPARC_SHARED")
    return Path(override) if override else Path(pytestconfig.rootpath).resolve().parent / "shared"


@pytest.fixture
def testdata(shared: Path) -> Path:
    """``shared/testdata``: real station uploads and queue files with their expected values."""
    path = shared / "testdata"
    if not path.is_dir():
        pytest.fail(f"shared test data not found at {path} (set HISPARC_SHARED)")
    return path


@pytest.fixture
def seed_text(shared: Path) -> str:
    """The seed's writer documentation, the authority for every table description."""
    path = shared / "seed" / "datastore-writer-docs.txt"
    if not path.is_file():
        pytest.fail(f"seed documentation not found at {path} (set HISPARC_SHARED)")
    return path.read_text(encoding="utf-8")


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[int], Path]]:
    """``tmpfs(megabytes)`` mounts a file system that small under tmp_path, to be filled (root
    only: the test is skipped with the reason otherwise); every mount is undone after."""
    mounts: list[Path] = []

    def mount(megabytes: int) -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting a small tmpfs to fill needs root")
        point = tmp_path / f"disk{len(mounts)}"
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(point)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounts.append(point)
        return point

    try:
        yield mount
    finally:
        for point in mounts:
            subprocess.run(["umount", "-l", str(point)], check=False)
