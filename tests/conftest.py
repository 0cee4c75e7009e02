"""Shared fixtures: a real simulator process on free loopback ports and stock `carla` clients for it."""
from __future__ import annotations

import carla
import pytest

from envs.server.launch import launch


@pytest.fixture(scope="module")
def server():
    """One embedded simulator per test module, started and stopped (by pid) by that module."""
    with launch("town") as process:
        yield process


@pytest.fixture
def client(server) -> carla.Client:
    client = carla.Client(server.host, server.port)
    client.set_timeout(10.0)
    return client


@pytest.fixture
def world(client):
    """A synchronous 20 Hz world, restored to asynchronous mode and emptied of spawned actors afterwards."""
    world = client.get_world()
    settings = world.get_settings()
    settings.synchronous_mode, settings.fixed_delta_seconds = True, 0.05
    world.apply_settings(settings)
    yield world
    kinds = ("sensor", "vehicle", "walker", "static")  # sensors first, as CARLA's clean-up order asks
    spawned = sorted((a for a in world.get_actors() if a.type_id.split(".")[0] in kinds),
                     key=lambda a: kinds.index(a.type_id.split(".")[0]))
    client.apply_batch_sync([carla.command.DestroyActor(a.id) for a in spawned], False)
    settings.synchronous_mode, settings.fixed_delta_seconds = False, None
    world.apply_settings(settings)
