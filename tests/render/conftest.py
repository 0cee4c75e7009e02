"""The `stage` fixture: an ego on a straight road of `town`, cleaned up after each test."""
from __future__ import annotations

import pytest

from render_helpers import Stage


@pytest.fixture
def stage(world):
    s = Stage(world)
    yield s
    s.close()
