"""Driving along a path: lane paths over `carla.Waypoint`s, pure-pursuit steering, the Intelligent Driver
Model and a speed controller. Used by the scenario's vehicles and by the expert, so that both drive alike.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import carla
import numpy as np

PATH_STEP_M = 1.0
MAX_STEER_DEG = 38.0  # the embedded cars' wheel lock; on CARLA the pursuit loop absorbs a different one
LOOKAHEAD_MIN_M, LOOKAHEAD_PER_MPS = 4.0, 0.6


def _yaw_delta(a: float, b: float) -> float:
    return (b - a + 180.0) % 360.0 - 180.0


class LanePath:
    """The points a vehicle is about to drive: its lane ahead, choosing `turn` at junctions; a lane change
    blends into the neighbouring lane over a distance. Extended lazily, trimmed behind the vehicle."""

    def __init__(self, start: carla.Waypoint, turn: str = "straight") -> None:
        self.turn = turn
        self.points: list[tuple[float, float]] = [(start.transform.location.x, start.transform.location.y)]
        self.tail = start
        self.extend(40.0)

    def _choose(self, options: list[carla.Waypoint]) -> carla.Waypoint:
        if len(options) == 1:
            return options[0]
        yaw = self.tail.transform.rotation.yaw

        def turn_of(w: carla.Waypoint) -> float:  # heading change 12 m into the option (CARLA: right is +)
            ahead = w.next(12.0)
            return _yaw_delta(yaw, (ahead[0] if ahead else w).transform.rotation.yaw)
        if self.turn == "left":
            return min(options, key=turn_of)
        if self.turn == "right":
            return max(options, key=turn_of)
        return min(options, key=lambda w: abs(turn_of(w)))

    def extend(self, length: float) -> None:
        while len(self.points) * PATH_STEP_M < length:
            options = self.tail.next(PATH_STEP_M)
            if not options:
                return  # the lane ends
            self.tail = self._choose(options)
            self.points.append((self.tail.transform.location.x, self.tail.transform.location.y))

    def change_lane(self, current: carla.Waypoint, side: str, distance: float) -> bool:
        """From `current` (the vehicle's lane where it is), a smooth move into the neighbouring lane on `side`
        over `distance` metres replaces the path; False if there is no such lane."""
        steps = max(int(distance / PATH_STEP_M), 2)
        points = []
        for i in range(steps + 1):
            ahead = current.next(i * PATH_STEP_M) if i else [current]
            if not ahead:
                break
            here = ahead[0]
            other = here.get_left_lane() if side == "left" else here.get_right_lane()
            if other is None:
                return False
            a = 0.5 - 0.5 * math.cos(math.pi * i / steps)  # smooth from 0 to 1
            p, q = here.transform.location, other.transform.location
            points.append((p.x + a * (q.x - p.x), p.y + a * (q.y - p.y)))
            self.tail = other
        self.points = points
        self.extend(40.0)
        return True

    def advance(self, x: float, y: float) -> None:
        """Drop the points the vehicle has passed and keep 40 m ahead."""
        pts = np.array(self.points)
        k = int(np.argmin(np.hypot(pts[:, 0] - x, pts[:, 1] - y)))
        self.points = self.points[k:]
        self.extend(40.0)

    def as_array(self) -> np.ndarray:
        return np.array(self.points)


def pure_pursuit(x: float, y: float, yaw_deg: float, speed: float, path: np.ndarray, wheelbase: float) -> float:
    """Steer in [-1, 1] towards the path point one lookahead distance away (pure pursuit)."""
    lookahead = LOOKAHEAD_MIN_M + LOOKAHEAD_PER_MPS * speed
    distance = np.hypot(path[:, 0] - x, path[:, 1] - y)
    ahead = np.flatnonzero(distance >= lookahead)
    tx, ty = path[ahead[0]] if len(ahead) else path[-1]
    yaw = math.radians(yaw_deg)
    alpha = math.atan2(ty - y, tx - x) - yaw
    alpha = (alpha + math.pi) % (2 * math.pi) - math.pi
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
    """Throttle/brake that follow a wanted acceleration with a speed-error PI trim."""

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
