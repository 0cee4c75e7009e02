"""`bench.server.traffic_layout`, the traffic of `bench server` and `bench sim`: seeded, and spawnable
on every shipped map (vehicles on driving lanes, walkers off them, nothing overlapping)."""
from __future__ import annotations

import math

import pytest

from bench.server import traffic_layout
from envs.maps import load_network, load_xodr_text
from envs.server.protocol import ATTR_RGB, Transform
from envs.server.world import World


def test_same_seed_same_layout_and_near_puts_the_nearest_points_first():
    network = load_network("town")
    assert traffic_layout(network, 10, 10, seed=4) == traffic_layout(network, 10, 10, seed=4)
    assert traffic_layout(network, 10, 10, seed=4) != traffic_layout(network, 10, 10, seed=5)
    ego = network.spawn_points()[0]
    cars, _ = traffic_layout(network, 5, 0, seed=0, near=(ego.x, ego.y))
    distances = [math.hypot(c.x - ego.x, c.y - ego.y) for c in cars]
    assert distances == sorted(distances) and distances[0] > 1.0  # the ego's own point is left out


@pytest.mark.parametrize("map_name", ["town", "straight", "junction", "curves"])
def test_layout_spawns_without_overlap_walkers_off_the_driving_lanes(map_name):
    network = load_network(map_name)
    cars, people = traffic_layout(network, 50, 50, seed=0)
    world = World(network, map_name, load_xodr_text(map_name))
    for p in cars + people:  # World.spawn refuses an overlapping body
        colour = [["color", ATTR_RGB, p.color]] if p.color else []
        world.spawn(p.blueprint, colour, Transform(p.x, p.y, 0.3, 0.0, p.yaw, 0.0))
    assert all(network.locate(c.x, c.y).lane_type == "driving" for c in cars)
    assert all((hit := network.locate(p.x, p.y)) is None or hit.lane_type != "driving" for p in people)
    assert all(0.3 <= c.throttle <= 0.6 for c in cars) and all(1.0 <= p.speed <= 1.8 for p in people)
    with pytest.raises(ValueError, match="free spawn points"):
        traffic_layout(network, 1000, 0, seed=0)
