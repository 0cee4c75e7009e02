"""Helpers for the camera tests (imported by name: tests are not a package): an ego on a straight road of `town`
and actors placed relative to it."""
from __future__ import annotations

import math

import carla
import numpy as np

from envs.rig import load_rig, spawn_rig

# A straight stretch of `town`: the ego drives towards -x in the right-hand lane, the next junction is
# more than 40 m ahead.
EGO = (65.0, -1.75, 180.0)
SEMANTIC_CAR, SEMANTIC_TRUCK, SEMANTIC_PEDESTRIAN, SEMANTIC_ROAD = 14, 15, 12, 1


class Stage:
    """Spawns actors at (ahead, right) metres from the ego's pose and reads frame-matched images."""

    def __init__(self, world: carla.World):
        self.world = world
        self.library = world.get_blueprint_library()
        self.rigs: list = []
        self.ego = self.spawn("vehicle.tesla.model3", 0.0, 0.0)

    def transform(self, ahead: float, right: float, z: float = 0.3, yaw: float = 0.0) -> carla.Transform:
        x, y, heading = EGO
        c, s = math.cos(math.radians(heading)), math.sin(math.radians(heading))
        location = carla.Location(x + ahead * c - right * s, y + ahead * s + right * c, z)
        return carla.Transform(location, carla.Rotation(yaw=heading + yaw))

    def spawn(self, blueprint_id: str, ahead: float, right: float, yaw: float = 0.0, color: str | None = None):
        bp = self.library.find(blueprint_id)
        if color is not None:
            bp.set_attribute("color", color)
        return self.world.spawn_actor(bp, self.transform(ahead, right, yaw=yaw))

    def cameras(self, rig: str = "tesla8", sensor_type: str = "sensor.camera.rgb", **overrides):
        sensors = spawn_rig(self.world, self.ego, load_rig(rig, **overrides), sensor_type)
        self.rigs.append(sensors)
        sensors.warm_up(self.world)
        return sensors

    def capture(self, *rigs) -> list[dict[str, np.ndarray]]:
        frame = self.world.tick()
        return [r.read(frame) for r in rigs]

    def close(self) -> None:
        for sensors in self.rigs:
            sensors.destroy()


def depth_metres(bgra: np.ndarray) -> np.ndarray:
    """CARLA's depth decoding: (R + G*256 + B*256^2) / (256^3 - 1) * 1000."""
    b, g, r = (bgra[..., i].astype(np.float64) for i in range(3))
    return (r + g * 256.0 + b * 65536.0) / (256.0 ** 3 - 1.0) * 1000.0


def semantic(bgra: np.ndarray) -> np.ndarray:
    return bgra[..., 2]


def focal(width: int, fov: float) -> float:
    return width / (2.0 * math.tan(math.radians(fov) / 2.0))
