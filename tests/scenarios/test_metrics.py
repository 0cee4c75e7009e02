"""Leaderboard 2.0 / Bench2Drive formulas against hand-computed cases."""
from __future__ import annotations

import math

import numpy as np
import pytest

from scenarios import metrics


def test_penalty_multiplies_the_2_0_coefficients():
    # one pedestrian (0.5), two vehicle collisions (0.6^2), one red light (0.7): 0.5 * 0.36 * 0.7 = 0.126
    kinds = ["collisions_pedestrian", "collisions_vehicle", "collisions_vehicle", "red_light"]
    assert metrics.infraction_penalty(kinds) == pytest.approx(0.126)
    assert metrics.infraction_penalty(["stop_infraction", "scenario_timeouts", "collisions_layout",
                                       "yield_emergency_vehicle_infractions"]) == pytest.approx(0.8 * 0.7 * 0.65 * 0.7)


def test_outside_lanes_and_min_speed_terms():
    # 10 % outside lanes: x0.9; quarters at 100, 50, 80, 100 %: x(1-0.3*0.5) x(1-0.3*0.2) = 0.85 * 0.94
    penalty = metrics.infraction_penalty([], 10.0, [100.0, 50.0, 80.0, 100.0])
    assert penalty == pytest.approx(0.9 * 0.85 * 0.94)


def test_route_score_and_global_mean_with_missing_routes():
    score = metrics.score_route(80.0, ["collisions_vehicle", "outside_route_lanes", "route_timeout"], 0.0, [])
    assert (score.driving_score, score.route_completion, score.infraction_penalty) == pytest.approx((48.0, 80.0, 0.6))
    assert metrics.global_score([100.0, 48.0, None]) == pytest.approx(148.0 / 3)
    assert metrics.global_score([]) == 0.0


def test_infractions_per_km_use_driven_distance():
    # 2 collisions over 500 m at 100 % and 1000 m at 50 %: km = 0.5 + 0.5 = 1.0
    assert metrics.infractions_per_km({"collisions_vehicle": 2}, [500.0, 1000.0], [100.0, 50.0]) == \
        {"collisions_vehicle": pytest.approx(2.0)}


def test_bench2drive_success_ignores_only_min_speed():
    assert metrics.bench2drive_success(True, ["min_speed_infractions"])
    assert not metrics.bench2drive_success(True, ["red_light"])
    assert not metrics.bench2drive_success(False, [])


def test_comfort_of_a_steady_drive_and_of_a_jerky_one():
    t = np.arange(200) * 0.05
    steady = metrics.comfort(10.0 * t, np.zeros_like(t), np.zeros_like(t), 0.05)
    assert steady == 1.0
    speed = np.where(np.arange(200) < 100, 10.0, 0.0)  # a stop from 10 m/s within one step
    x = np.cumsum(speed) * 0.05
    assert metrics.comfort(x, np.zeros_like(x), np.zeros_like(x), 0.05) < 1.0


CAR = np.array([2.0, 1.0])  # half length and width


def _ttc(ego_xy, ego_v, ego_yaw, other_xy, other_v, other_yaw) -> float:
    return metrics.time_to_collision(np.array(ego_xy, float), np.array(ego_v, float), ego_yaw, CAR,
                                     np.array([other_xy], float), np.array([other_v], float),
                                     np.array([other_yaw]), np.array([CAR]))


def test_time_to_collision_of_oriented_boxes():
    # head-on: fronts 16 m apart, closing at 10 m/s
    assert _ttc([0, 0], [5, 0], 0.0, [20, 0], [-5, 0], 0.0) == pytest.approx(1.6)
    # a car turned across the lane 10 m ahead shows its 1 m half width: the ego's front reaches 9 m at 1.4 s
    assert _ttc([0, 0], [5, 0], 0.0, [10, 0], [0, 0], math.pi / 2) == pytest.approx(1.4)
    # crossing paths: x overlaps for t in [1.7, 2.3] and so does y
    assert _ttc([0, 0], [10, 0], 0.0, [20, -20], [0, 10], math.pi / 2) == pytest.approx(1.7)
    assert _ttc([0, 0], [0, 0], 0.0, [3.5, 0], [0, 0], 0.0) == 0.0  # already touching
    # never: diverging, side by side in the next lane (bounding circles would overlap here), stopped 4 m behind
    assert math.isinf(_ttc([0, 0], [-5, 0], 0.0, [20, 0], [5, 0], 0.0))
    assert math.isinf(_ttc([0, 0], [5, 0], 0.0, [0, 3.5], [5, 0], 0.0))
    assert math.isinf(_ttc([0, 0], [0, 0], 0.0, [8, 0], [0, 0], 0.0))
    # beyond the horizon
    assert math.isinf(_ttc([0, 0], [1, 0], 0.0, [100, 0], [0, 0], 0.0))
