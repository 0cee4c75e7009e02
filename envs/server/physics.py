"""Vehicle and walker motion: a kinematic bicycle model with a simple powertrain, integrated in one batch.

The model is what a driving policy needs to feel: throttle pushes with limited power, brakes and drag slow
the car, braking never turns into reversing, steering is rate-limited, and the car turns about a point
between its axles. It is not a tyre model: no skidding, no load transfer.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from envs.maps.geometry import wrap_angle

STEER_RATE = np.radians(360.0)  # front wheel angle rate limit (rad/s): full lock in about 0.1 s
ROLLING_DECEL = 0.15  # m/s^2
DRAG_PER_V2 = 3.5e-4  # 1/m: 0.5 * rho * Cd * A / m for a car
ENGINE_BRAKE = 0.35  # m/s^2 when coasting
HAND_BRAKE_DECEL = 6.0  # m/s^2
MAX_REVERSE_SPEED = 6.0  # m/s


@dataclass
class VehicleBatch:
    """Per-vehicle arrays (length N) for one integration step. Angles in CARLA degrees; speed is signed
    along the heading (negative when reversing)."""

    x: np.ndarray
    y: np.ndarray
    yaw: np.ndarray
    speed: np.ndarray
    wheel_angle: np.ndarray  # rad, current front wheel angle
    throttle: np.ndarray
    steer: np.ndarray
    brake: np.ndarray
    hand_brake: np.ndarray
    reverse: np.ndarray
    wheelbase: np.ndarray
    max_steer: np.ndarray  # rad
    max_accel: np.ndarray
    power_per_kg: np.ndarray
    max_brake: np.ndarray
    max_speed: np.ndarray


def step_vehicles(b: VehicleBatch, dt: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Advance vehicles by `dt`. Returns new (x, y, yaw, speed, wheel_angle) and leaves `b` untouched."""
    target = b.steer * b.max_steer
    wheel = b.wheel_angle + np.clip(target - b.wheel_angle, -STEER_RATE * dt, STEER_RATE * dt)

    direction = np.where(b.reverse, -1.0, 1.0)
    drive = b.throttle * np.minimum(b.max_accel, b.power_per_kg / np.maximum(np.abs(b.speed), 1.0))
    speed = b.speed + direction * drive * dt
    decel = (b.brake * b.max_brake + b.hand_brake * HAND_BRAKE_DECEL + ROLLING_DECEL
             + DRAG_PER_V2 * speed * speed + np.where(b.throttle > 0.0, 0.0, ENGINE_BRAKE))
    speed = np.sign(speed) * np.maximum(np.abs(speed) - decel * dt, 0.0)
    speed = np.clip(speed, -MAX_REVERSE_SPEED, b.max_speed)

    # Kinematic bicycle with the reference point midway between the axles.
    tan_wheel = np.tan(wheel)
    slip = np.arctan(0.5 * tan_wheel)
    mean_speed = 0.5 * (speed + b.speed)
    yaw_rad = np.radians(b.yaw)
    yaw_rate = mean_speed * np.cos(slip) * tan_wheel / b.wheelbase
    heading = yaw_rad + slip + 0.5 * yaw_rate * dt
    x = b.x + mean_speed * np.cos(heading) * dt
    y = b.y + mean_speed * np.sin(heading) * dt
    yaw = np.degrees(yaw_rad + yaw_rate * dt)
    return x, y, wrap_angle(yaw), speed, wheel


def walker_velocity(direction: np.ndarray, speed: np.ndarray, max_speed: np.ndarray) -> np.ndarray:
    """World velocity (N, 3) of walkers from `WalkerControl` direction (any length) and speed."""
    flat = direction.copy()
    flat[:, 2] = 0.0
    norm = np.linalg.norm(flat, axis=1, keepdims=True)
    unit = np.divide(flat, norm, out=np.zeros_like(flat), where=norm > 1e-6)
    return unit * np.minimum(speed, max_speed)[:, None]
