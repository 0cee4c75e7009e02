"""The shared controller stack: the path follower steers towards the path and stops when asked."""
from __future__ import annotations

import numpy as np

from control import IDM, PathFollower


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
