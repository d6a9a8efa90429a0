import datetime

import pytest


@pytest.fixture
def moment() -> datetime.datetime:
    return datetime.datetime(2017, 2, 26, 7, 26, 4)
