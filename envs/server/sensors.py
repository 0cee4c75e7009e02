"""Server-side sensors that are not cameras: collision events, GNSS and IMU measurements (LiDARs, radar and the
obstacle sensor are in `lidar.py`); `make_sensor_model` maps every streamed blueprint to its model.

Each model turns the world after a tick into zero or more stream payloads (header + data) in the layouts
of LibCarla's serializers (msgpack arrays after the 48-byte header). `sensor.other.lane_invasion` is computed
by the client from the map, so the server only hosts its actor and streams nothing.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable

import msgpack
import numpy as np

from .cameras import DepthCamera, InstanceSegmentationCamera, RgbCamera, SemanticCamera
from .geometry import rotation_matrix
from .lidar import ObstacleSensor, Radar, RayCastLidar, RayCastSemanticLidar
from .protocol import SENSOR_TYPE_ID
from .sensor_model import SensorModel, number

EARTH_RADIUS = 6378137.0  # m, as CARLA's geom::GeoLocation
TMERC_SCALE = 0.9996  # k0 of the client's transverse Mercator
GRAVITY = 9.81


class CollisionSensor(SensorModel):
    type_id = SENSOR_TYPE_ID["sensor.other.collision"]
    is_event = True

    def measure(self, world, actor, contacts, dt, header) -> list[bytes]:
        payloads = []
        for a, b, impulse in contacts:
            if actor.parent is a:
                me, other, j = a, b, -impulse
            elif actor.parent is b:
                me, other, j = b, a, impulse
            else:
                continue
            body = msgpack.packb([world.actor_msg(me), world.actor_msg(other), [float(v) for v in j]],
                                 use_bin_type=True)
            payloads.append(header(self.type_id) + body)
        return payloads


class NoisySensor(SensorModel):
    def __init__(self, attribute: Callable[[str, str], str]):
        super().__init__(attribute)
        self._attribute = attribute
        self._rng = np.random.default_rng(int(number(attribute, "noise_seed", "0")))

    def noise(self, name: str) -> float:
        std = float(self._attribute(name, "0.0") or 0.0)
        return float(self._rng.normal(0.0, std)) if std > 0.0 else 0.0


def geo_reference(xodr: str) -> tuple[float, float]:
    """(lat_0, lon_0) in degrees from the OpenDRIVE header's proj string; (0, 0) when absent, as CARLA."""
    found = {key: float(value) for key, value in re.findall(r"\+(lat_0|lon_0)=([-+0-9.eE]+)", xodr[:4096])}
    return found.get("lat_0", 0.0), found.get("lon_0", 0.0)


class GnssSensor(NoisySensor):
    """Latitude/longitude by the client's own spherical transverse Mercator (as
    `carla.Map.transform_to_geolocation`) around the map's geo-reference."""

    type_id = SENSOR_TYPE_ID["sensor.other.gnss"]

    def measure(self, world, actor, contacts, dt, header) -> list[bytes]:
        if not self.due(world.elapsed):
            return []
        x, y, z = actor.transform[:3]
        lat0, lon0 = world.geo_reference
        d = x / (TMERC_SCALE * EARTH_RADIUS)
        e = y / (TMERC_SCALE * EARTH_RADIUS) + math.radians(lat0)
        latitude = math.degrees(math.asin(math.sin(e) / math.cosh(d)))
        longitude = lon0 + math.degrees(math.atan2(math.sinh(d), math.cos(e)))
        latitude += float(self._attribute("noise_lat_bias", "0") or 0) + self.noise("noise_lat_stddev")
        longitude += float(self._attribute("noise_lon_bias", "0") or 0) + self.noise("noise_lon_stddev")
        altitude = z + float(self._attribute("noise_alt_bias", "0") or 0) + self.noise("noise_alt_stddev")
        return [header(self.type_id) + msgpack.packb([latitude, longitude, altitude])]  # geom::GeoLocation


class ImuSensor(NoisySensor):
    """Accelerometer (m/s^2, gravity included), gyroscope (rad/s) in the sensor frame, compass (rad from north)."""

    type_id = SENSOR_TYPE_ID["sensor.other.imu"]

    def measure(self, world, actor, contacts, dt, header) -> list[bytes]:
        if not self.due(world.elapsed):
            return []
        to_local = rotation_matrix(*actor.transform[3:6]).T
        accel = to_local @ (actor.acceleration + np.array([0.0, 0.0, GRAVITY]))
        gyro = to_local @ np.radians(actor.angular_velocity)
        accel += [self.noise(f"noise_accel_stddev_{axis}") for axis in "xyz"]
        gyro += [self.noise(f"noise_gyro_stddev_{axis}") for axis in "xyz"]
        forward = rotation_matrix(*actor.transform[3:6])[:, 0]
        compass = math.acos(max(-1.0, min(1.0, -forward[1] / max(math.hypot(forward[0], forward[1]), 1e-9))))
        if forward[0] < 0.0:
            compass = 2.0 * math.pi - compass
        body = [[float(v) for v in accel], [float(v) for v in gyro], compass]
        return [header(self.type_id) + msgpack.packb(body)]


_MODELS = {
    "sensor.camera.rgb": RgbCamera,
    "sensor.camera.depth": DepthCamera,
    "sensor.camera.semantic_segmentation": SemanticCamera,
    "sensor.camera.instance_segmentation": InstanceSegmentationCamera,
    "sensor.lidar.ray_cast": RayCastLidar,
    "sensor.lidar.ray_cast_semantic": RayCastSemanticLidar,
    "sensor.other.radar": Radar,
    "sensor.other.obstacle": ObstacleSensor,
    "sensor.other.collision": CollisionSensor,
    "sensor.other.gnss": GnssSensor,
    "sensor.other.imu": ImuSensor,
}


def make_sensor_model(blueprint_id: str, attribute: Callable[[str, str], str]) -> SensorModel | None:
    """The model that streams this sensor's data, or None for sensors the client computes itself."""
    model = _MODELS.get(blueprint_id)
    return model(attribute) if model is not None else None
