"""Controllers that turn the network's waypoints and target speed into a CARLA-style action.

The action is ``[steer in [-1, 1], throttle in [0, 1], brake in [0, 1]]`` (the fields of
``carla.VehicleControl``). Waypoints are in the ego frame, metres, x forward and y right, so a waypoint with
positive y lies to the right and asks for positive (rightward) steer, as in CARLA.

Lateral: a PID on the heading error towards an aim point (the mean of the first ``aim_waypoints`` waypoints),
normalised so that 90 degrees is 1. Longitudinal: a PID on the speed error gives the throttle; the controller
brakes instead when the target speed is below ``stop_speed`` or the car is faster than ``brake_ratio`` times the
target. Gains live in ``conf/model/*.yaml`` under ``controller``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np


@dataclass(frozen=True)
class ControllerConfig:
    dt: float = 0.05  # s, the simulation step the PIDs integrate over
    steer_kp: float = 1.25
    steer_ki: float = 0.75
    steer_kd: float = 0.3
    aim_waypoints: int = 2
    speed_kp: float = 5.0
    speed_ki: float = 0.5
    speed_kd: float = 1.0
    max_throttle: float = 0.75
    stop_speed: float = 0.4  # m/s: a target speed below this means "stand still"
    brake_ratio: float = 1.1
    brake: float = 1.0  # brake strength when braking
    integral_limit: float = 1.0  # anti-windup clamp on each PID's integral term

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "ControllerConfig":
        known = set(cls.__dataclass_fields__)
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"controller config: unknown keys {sorted(unknown)}; known keys are {sorted(known)}")
        return cls(**dict(values))


class PID:
    """Textbook PID in discrete time with a clamped integral (anti-windup)."""

    def __init__(self, kp: float, ki: float, kd: float, dt: float, integral_limit: float) -> None:
        self.kp, self.ki, self.kd, self.dt = kp, ki, kd, dt
        self.integral_limit = integral_limit
        self.reset()

    def reset(self) -> None:
        self.integral = 0.0
        self.previous: float | None = None

    def step(self, error: float) -> float:
        self.integral = float(np.clip(self.integral + error * self.dt, -self.integral_limit, self.integral_limit))
        derivative = 0.0 if self.previous is None else (error - self.previous) / self.dt
        self.previous = error
        return self.kp * error + self.ki * self.integral + self.kd * derivative


class WaypointController:
    """Lateral and longitudinal PIDs: ``control(waypoints, target_speed, speed) -> [steer, throttle, brake]``."""

    def __init__(self, cfg: ControllerConfig) -> None:
        self.cfg = cfg
        self.lateral = PID(cfg.steer_kp, cfg.steer_ki, cfg.steer_kd, cfg.dt, cfg.integral_limit)
        self.longitudinal = PID(cfg.speed_kp, cfg.speed_ki, cfg.speed_kd, cfg.dt, cfg.integral_limit)

    def reset(self) -> None:
        self.lateral.reset()
        self.longitudinal.reset()

    def control(self, waypoints: np.ndarray, target_speed: float, speed: float) -> np.ndarray:
        """waypoints: (n, 2) metres in the ego frame; target_speed and speed in m/s."""
        cfg = self.cfg
        aim_x, aim_y = waypoints[: cfg.aim_waypoints].mean(axis=0)
        heading_error = math.atan2(aim_y, aim_x) / (math.pi / 2)
        steer = float(np.clip(self.lateral.step(heading_error), -1.0, 1.0))

        throttle_command = self.longitudinal.step(target_speed - speed)
        if target_speed < cfg.stop_speed or speed > cfg.brake_ratio * target_speed:
            throttle, brake = 0.0, cfg.brake
        else:
            throttle, brake = float(np.clip(throttle_command, 0.0, cfg.max_throttle)), 0.0
        return np.array([steer, throttle, brake], dtype=np.float32)
