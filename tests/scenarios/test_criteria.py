"""Leaderboard criteria judged in closed loop through the stock client: running a red light."""
from __future__ import annotations

import math

import carla
import numpy as np
import pytest

from envs.driving_env import DrivingEnv


def _follow_route(obs) -> np.ndarray:
    """Steer at the route's target point at a modest throttle (ignores lights: the test sets them)."""
    x, y = (float(v) for v in obs["target_point"])
    return np.array([np.clip(1.5 * math.atan2(y, max(x, 0.1)), -1.0, 1.0), 0.55, 0.0], np.float32)


@pytest.mark.parametrize("state, expected", [(carla.TrafficLightState.Red, 1), (carla.TrafficLightState.Green, 0)])
def test_crossing_the_junction_on_red_is_a_red_light_infraction(state, expected):
    env = DrivingEnv(map="junction", rig="front1", image_size_x=64, image_size_y=32, route_length_m=120.0)
    try:
        obs, _ = env.reset(seed=0)
        handles = env.privileged
        for light in handles.world.get_actors().filter("traffic.traffic_light"):
            light.set_state(state)
            light.freeze(True)
        crossed = False
        for _ in range(400):
            obs, _, terminated, truncated, info = env.step(_follow_route(obs))
            crossed |= handles.map.get_waypoint(handles.ego.get_location()).is_junction
            if terminated or truncated or (crossed and info["route_completion"] > 90):
                break
        assert crossed, "the route did not lead through the junction"
        kinds = [i["kind"] for i in info["infractions"]]
        assert kinds.count("red_light") == expected, kinds
        if expected:
            (red,) = [i for i in info["infractions"] if i["kind"] == "red_light"]
            lights = {light.id for light in handles.world.get_actors().filter("traffic.traffic_light")}
            assert red["detail"]["traffic_light_id"] in lights
    finally:
        env.close()
