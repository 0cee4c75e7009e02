"""The naive baseline: follows the route at a constant speed and ignores everything else.

It reads only the observation (`target_point`, `speed`) and drives the target point with the shared
controllers (`control.PathFollower`), so it shows what the scenarios cost a driver that does not look.
"""
from __future__ import annotations

import numpy as np

from control import PathFollower
from envs.budget import Footprint


class Cruise:
    def __init__(self, speed_mps: float = 8.0) -> None:
        self.speed = speed_mps
        self.follower = PathFollower()

    def reset(self) -> None:
        self.follower.reset()

    def footprint(self) -> Footprint:
        return Footprint.privileged_baseline()

    def act(self, obs) -> np.ndarray:
        target = np.asarray(obs["target_point"], dtype=np.float64).reshape(1, 2)  # ego frame: x forward, y right
        return self.follower.control(target, self.speed, float(np.asarray(obs["speed"]).reshape(-1)[0]))
