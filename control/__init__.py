"""Vehicle control: the one controller stack of slimdrive, used by the learned policy, the expert, the cruise
baseline and the scenarios' own vehicles, so that all of them drive alike.

* `pure_pursuit`: steering towards the path point one speed-dependent lookahead away;
* `SpeedController`: throttle and brake that reach a wanted speed (PI on the speed error, an optional
  acceleration feed-forward);
* `IDM`: the Intelligent Driver Model's acceleration for a desired speed and a gap;
* `PathFollower`: the two together for a path given in the vehicle's own frame (a policy's waypoints).

Pure numpy and math, plus the project's one angle wrap (`envs.maps.geometry.wrap_angle`): this package sits
just above the simulator and maps in the layers (docs/architecture.md) and imports nothing else of slimdrive.
Angles: CARLA's world frame (x forward, y right in the ego frame; yaw in degrees, clockwise seen from above).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from envs.maps.geometry import wrap_angle

MAX_STEER_DEG = 38.0  # the embedded cars' wheel lock; on CARLA the pursuit loop absorbs a different one
LOOKAHEAD_MIN_M, LOOKAHEAD_PER_MPS = 4.0, 0.6
WHEELBASE_M = 2.9  # a mid-size car's; pursuit is insensitive to it within a few decimetres


def pure_pursuit(x: float, y: float, yaw_deg: float, speed: float, path: np.ndarray, wheelbase: float) -> float:
    """Steer in [-1, 1] towards the point of `path` ((n, 2) metres) one lookahead distance from (x, y)."""
    lookahead = LOOKAHEAD_MIN_M + LOOKAHEAD_PER_MPS * speed
    distance = np.hypot(path[:, 0] - x, path[:, 1] - y)
    ahead = np.flatnonzero(distance >= lookahead)
    tx, ty = path[ahead[0]] if len(ahead) else path[-1]
    alpha = wrap_angle(math.atan2(ty - y, tx - x) - math.radians(yaw_deg), math.pi)
    ld = max(math.hypot(tx - x, ty - y), 1e-3)
    wheel = math.atan2(2.0 * wheelbase * math.sin(alpha), ld)
    return float(np.clip(wheel / math.radians(MAX_STEER_DEG), -1.0, 1.0))


@dataclass(frozen=True)
class IDM:
    """Intelligent Driver Model (Treiber et al. 2000): acceleration from speed, desired speed and the gap."""
    max_accel: float = 2.0
    comfort_decel: float = 3.0
    time_headway: float = 1.2
    min_gap: float = 4.0
    exponent: float = 4.0

    def accel(self, speed: float, desired: float, gap: float | None = None, closing: float = 0.0) -> float:
        free = 1.0 - (speed / max(desired, 0.1)) ** self.exponent if desired > 0.1 else -1.0
        if gap is None:
            return self.max_accel * free
        wanted = self.min_gap + max(0.0, speed * self.time_headway +
                                    speed * closing / (2.0 * math.sqrt(self.max_accel * self.comfort_decel)))
        return self.max_accel * (free - (wanted / max(gap, 0.1)) ** 2)


class SpeedController:
    """Throttle/brake that follow a wanted speed with a PI on the speed error and an acceleration feed-forward."""

    def __init__(self, dt: float = 0.05, kp: float = 0.25, ki: float = 0.05) -> None:
        self.dt, self.kp, self.ki = dt, kp, ki
        self.integral = 0.0

    def reset(self) -> None:
        self.integral = 0.0

    def control(self, speed: float, target: float, accel: float = 0.0) -> tuple[float, float]:
        """(throttle, brake) to reach `target` m/s, adding `accel` m/s^2 (e.g. IDM's) as feed-forward."""
        if target < 0.1 and speed < 0.3:
            self.integral = 0.0
            return 0.0, 1.0  # hold still
        error = target - speed
        self.integral = float(np.clip(self.integral + error * self.dt, -2.0, 2.0))
        command = self.kp * error + self.ki * self.integral + accel / 4.0
        if command >= 0.0:
            return float(np.clip(command + 0.05, 0.0, 0.8)), 0.0
        return 0.0, float(np.clip(-command, 0.0, 1.0))


class PathFollower:
    """`control(path, target_speed, speed) -> [steer, throttle, brake]` for a path in the vehicle's own frame
    ((n, 2) metres, x forward, y right): pure pursuit on the path, the speed controller on the target speed."""

    def __init__(self, dt: float = 0.05, wheelbase: float = WHEELBASE_M) -> None:
        self.wheelbase = wheelbase
        self.speed_control = SpeedController(dt)

    def reset(self) -> None:
        self.speed_control.reset()

    def control(self, path: np.ndarray, target_speed: float, speed: float, brake: bool = False) -> np.ndarray:
        """`brake` forces a full stop request whatever the target speed (a policy's hazard head)."""
        path = np.concatenate([np.zeros((1, 2)), np.asarray(path, dtype=np.float64).reshape(-1, 2)])
        steer = pure_pursuit(0.0, 0.0, 0.0, speed, path, self.wheelbase)
        throttle, brake_amount = self.speed_control.control(speed, 0.0 if brake else max(target_speed, 0.0))
        return np.array([steer, throttle, brake_amount], dtype=np.float32)
