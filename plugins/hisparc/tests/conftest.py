from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[3].parent / "shared"


@pytest.fixture
def testdata() -> Path:
    if not (SHARED / "testdata").is_dir():
        pytest.fail(f"shared test data not found at {SHARED / 'testdata'}")
    return SHARED / "testdata"


@pytest.fixture
def seed_text() -> str:
    return (SHARED / "seed" / "datastore-writer-docs.txt").read_text(encoding="utf-8")
