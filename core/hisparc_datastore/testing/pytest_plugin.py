"""pytest fixtures for detector plugin suites (registered through the ``pytest11`` entry point).

``testdata`` and ``seed_text`` find the project's shared material: the real
station uploads and the seed's writer documentation, in ``../shared`` beside
the checkout (``HISPARC_SHARED`` overrides). A suite that asks for them where
they are absent fails and says where it looked.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def _shared(config: pytest.Config) -> Path:
    override = os.environ.get("HISPARC_SHARED")
    return Path(override) if override else Path(config.rootpath).resolve().parent / "shared"


@pytest.fixture
def testdata(request: pytest.FixtureRequest) -> Path:
    """``shared/testdata``: real station uploads and queue files with their expected values."""
    path = _shared(request.config) / "testdata"
    if not path.is_dir():
        pytest.fail(f"shared test data not found at {path} (set HISPARC_SHARED)")
    return path


@pytest.fixture
def seed_text(request: pytest.FixtureRequest) -> str:
    """The seed's writer documentation, the authority for every table description."""
    path = _shared(request.config) / "seed" / "datastore-writer-docs.txt"
    if not path.is_file():
        pytest.fail(f"seed documentation not found at {path} (set HISPARC_SHARED)")
    return path.read_text(encoding="utf-8")
