"""`LanePath`: the points a scenario vehicle is about to drive, over `carla.Waypoint`s (its lane ahead, a
chosen turn at junctions, smooth lane changes). The vehicle follows it with the shared controllers (`control`).
"""
from __future__ import annotations

import math

import carla
import numpy as np

from envs.maps.geometry import wrap_angle

PATH_STEP_M = 1.0


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
            return wrap_angle((ahead[0] if ahead else w).transform.rotation.yaw - yaw)
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
