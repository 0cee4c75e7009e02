"""Shared fixtures: each shipped map parsed once by us and once by the stock CARLA client."""

from __future__ import annotations

import carla
import pytest

from envs.maps import available_maps, load_network, load_xodr_text

SHIPPED = ["straight", "curves", "junction", "town"]


@pytest.fixture(scope="session", params=SHIPPED)
def shipped(request: pytest.FixtureRequest) -> tuple[str, carla.Map, object]:
    name = request.param
    assert name in available_maps()
    return name, carla.Map(name, load_xodr_text(name)), load_network(name)
