"""The shared controller stack: the path follower steers towards the path and stops when asked."""
from __future__ import annotations

import numpy as np

from control import IDM, PathFollower, pure_pursuit


def test_path_follower_steers_towards_the_path_and_brakes_for_a_stop() -> None:
    follower = PathFollower()
    straight = np.array([[2.0, 0.0], [4.0, 0.0], [6.0, 0.0], [8.0, 0.0]])
    steer, throttle, brake = follower.control(straight, target_speed=6.0, speed=2.0)
    assert steer == 0.0 and throttle > 0 and brake == 0
    right = np.array([[2.0, 1.0], [4.0, 2.5], [6.0, 4.0], [8.0, 6.0]])
    assert follower.control(right, target_speed=6.0, speed=6.0)[0] > 0  # +y is right, positive steer is right
    left = right * np.array([1.0, -1.0])
    assert follower.control(left, target_speed=6.0, speed=6.0)[0] < 0
    follower.reset()
    assert follower.control(straight, target_speed=0.0, speed=0.1)[2] == 1.0  # standing: hold still
    steer, throttle, brake = follower.control(straight, target_speed=8.0, speed=8.0, brake=True)
    assert throttle == 0 and brake > 0  # the brake flag overrides the target speed


def test_idm_brakes_harder_for_a_closer_gap() -> None:
    idm = IDM()
    assert idm.accel(10.0, 10.0, gap=10.0) < idm.accel(10.0, 10.0, gap=40.0) < 0.0 < idm.accel(5.0, 10.0)


def test_pure_pursuit_steers_the_short_way_across_the_half_turn() -> None:
    """Heading 179 deg, a path bending to the car's right (its bearings cross the +-180 deg seam): a small
    right turn; the mirrored path, a small left one."""
    yaw = np.radians(179.0)
    along = np.arange(1.0, 30.0)[:, None] * np.array([np.cos(yaw), np.sin(yaw)])
    right = np.array([-np.sin(yaw), np.cos(yaw)])  # CARLA's y points right
    path = along + 0.05 * np.arange(1.0, 30.0)[:, None] ** 1.5 * right
    steer = pure_pursuit(0.0, 0.0, 179.0, 5.0, path, wheelbase=2.9)
    assert 0.0 < steer < 0.5
    assert -0.5 < pure_pursuit(0.0, 0.0, 179.0, 5.0, along - (path - along), wheelbase=2.9) < 0.0
