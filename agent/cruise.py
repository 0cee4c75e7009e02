"""The naive baseline: follows the route at a constant speed and ignores everything else.

It reads only the observation (`target_point`, `speed`), steering at the target point by pure pursuit,
so it shows what the scenarios cost a driver that does not look.
"""
from __future__ import annotations

import math

import numpy as np

from scenarios.tracking import MAX_STEER_DEG, SpeedController

WHEELBASE_M = 2.9


class Cruise:
    def __init__(self, speed_mps: float = 8.0) -> None:
        self.speed = speed_mps
        self.speed_control = SpeedController()

    def reset(self) -> None:
        self.speed_control.reset()

    def footprint(self) -> dict:
        return {"parameters": 0, "weight_bytes": 0, "ops_per_step": 1.0e3}

    def act(self, obs) -> np.ndarray:
        x, y = (float(v) for v in obs["target_point"])  # ego frame: x forward, y right
        wheel = math.atan2(2.0 * WHEELBASE_M * y, max(x * x + y * y, 1e-3))  # pure pursuit: 2 L sin(a) / ld
        steer = float(np.clip(wheel / math.radians(MAX_STEER_DEG), -1.0, 1.0))
        throttle, brake = self.speed_control.control(float(np.asarray(obs["speed"]).reshape(-1)[0]), self.speed)
        return np.array([steer, throttle, brake], dtype=np.float32)
