"""Ray-cast sensors: `sensor.lidar.ray_cast`, `sensor.lidar.ray_cast_semantic`, `sensor.other.radar`,
`sensor.other.obstacle`, measured against the scene the cameras draw (`Renderer.boxes`: the map's scenery boxes,
traffic-light lamps and every actor's boxes, plus the ground plane) by `render/raycast.py`.

Wire formats, from CARLA 0.9.16's LibCarla (`sensor/data/LidarData.h`, `SemanticLidarData.h`, `RadarData.h`,
`s11n/LidarSerializer.h`, `SemanticLidarSerializer.h`, `RadarSerializer.h`, `ObstacleDetectionEventSerializer.h`),
each after the 48-byte sensor header:

- LiDAR: uint32 header {horizontal angle (float bits, radians), channel count, points of channel 0..n-1}, then
  float32 {x, y, z, intensity} per point, channel after channel;
- semantic LiDAR: the same header, then per point {float32 x, y, z, cos_inc_angle, uint32 object_idx, object_tag};
- radar: float32 {velocity, azimuth, altitude, depth} per detection, nothing else;
- obstacle: msgpack [self rpc::Actor, other rpc::Actor, float distance].

Points are in the sensor's frame with CARLA's axes (x forward, y right, z up, metres). Sensor type ids are the
positions in LibCarla's `sensor/SensorRegistry.h` (0.9.16: obstacle 7, radar 9, semantic LiDAR 10, LiDAR 11).

Behaviour follows CARLA's RayCastLidar/RayCastSemanticLidar/Radar/ObstacleDetectionSensor: channels spread evenly
from upper_fov to lower_fov; each tick a channel fires round(points_per_second * dt / channels) rays (at most
MAX_RAYS_PER_TICK in all, as the radar) over the rotation_frequency * horizontal_fov * dt degrees the head turns,
continuing from where the last tick stopped;
intensity exp(-atmosphere_attenuation_rate * distance); a ray is dropped before casting with probability
dropoff_general_rate, a hit below dropoff_intensity_limit kept with probability
(1 - dropoff_zero_intensity) + intensity * dropoff_zero_intensity / dropoff_intensity_limit; noise_stddev moves a
point along its ray. Radar rays are drawn uniformly in the elliptic cone of its fovs; a detection's velocity is
(v_target - v_radar) . (unit vector radar -> hit), negative when approaching. The obstacle sensor sweeps a sphere
of hit_radius `distance` metres along its forward axis and reports the nearest actor (only vehicles and walkers
with only_dynamics), never its parent.
"""
from __future__ import annotations

import math
import struct
from collections.abc import Callable

import msgpack
import numpy as np

from .geometry import rotation_matrix
from .render.boxes import BoxSet
from .render.raycast import GROUND, NO_HIT, cast
from .render.renderer import renderer_for
from .sensor_model import SensorModel, number

# positions in LibCarla 0.9.16's SensorRegistry (sensor/SensorRegistry.h)
OBSTACLE_TYPE_ID, RADAR_TYPE_ID, SEMANTIC_LIDAR_TYPE_ID, LIDAR_TYPE_ID = 7, 9, 10, 11

MAX_CHANNELS = 256
MAX_RANGE = 1000.0  # m
MAX_POINTS_PER_SECOND = 10_000_000
MAX_RAYS_PER_TICK = 2_000_000  # one tick's rays: bounds the memory a measurement takes (about 150 B per ray)


def _check(blueprint_range: str, name: str, value: float, ok: bool) -> None:
    if not ok:
        raise ValueError(f"attribute '{name}' = {value:g} is out of range: must be {blueprint_range}")


def _renderer(world):
    return renderer_for(world.network, world.map_name)


def _rng(attribute: Callable[[str, str], str]) -> np.random.Generator:
    """The sensor's own random stream, seeded by its `noise_seed` attribute."""
    seed = number(attribute, "noise_seed", "0")
    _check("a whole number, 0 or more", "noise_seed", seed, seed >= 0 and seed == int(seed))
    return np.random.default_rng(int(seed))


def _since_last(model, world, dt: float) -> float:
    """Seconds since `model` last measured (`dt` the first time): the time a LiDAR head turns or a radar fires for,
    longer than a tick with `sensor_tick`."""
    delta = dt if model.last_time is None else world.elapsed - model.last_time
    model.last_time = world.elapsed
    return max(delta, 0.0)


class _Lidar(SensorModel):
    def __init__(self, attribute: Callable[[str, str], str]):
        super().__init__(attribute)
        self.channels = int(number(attribute, "channels", "32"))
        self.range = number(attribute, "range", "10.0")
        self.points_per_second = int(number(attribute, "points_per_second", "56000"))
        self.rotation_frequency = number(attribute, "rotation_frequency", "10.0")
        self.upper_fov = number(attribute, "upper_fov", "10.0")
        self.lower_fov = number(attribute, "lower_fov", "-30.0")
        self.horizontal_fov = number(attribute, "horizontal_fov", "360.0")
        _check(f"1..{MAX_CHANNELS}", "channels", self.channels, 1 <= self.channels <= MAX_CHANNELS)
        _check(f"more than 0 and at most {MAX_RANGE:g} m", "range", self.range, 0.0 < self.range <= MAX_RANGE)
        _check(f"1..{MAX_POINTS_PER_SECOND}", "points_per_second", self.points_per_second,
               1 <= self.points_per_second <= MAX_POINTS_PER_SECOND)
        _check("more than 0 and at most 1000 Hz", "rotation_frequency", self.rotation_frequency,
               0.0 < self.rotation_frequency <= 1000.0)
        _check("-90..90 degrees", "upper_fov", self.upper_fov, -90.0 <= self.upper_fov <= 90.0)
        _check(f"-90..upper_fov ({self.upper_fov:g}) degrees", "lower_fov", self.lower_fov,
               -90.0 <= self.lower_fov <= self.upper_fov)
        _check("more than 0 and at most 360 degrees", "horizontal_fov", self.horizontal_fov,
               0.0 < self.horizontal_fov <= 360.0)
        step = 0.0 if self.channels == 1 else (self.upper_fov - self.lower_fov) / (self.channels - 1)
        self.elevation = np.radians(self.upper_fov - step * np.arange(self.channels))
        self.angle = 0.0  # degrees: where the head stopped after the last measurement
        self.last_time: float | None = None

    def rays(self, delta: float) -> tuple[np.ndarray, np.ndarray]:
        """(channels, points) local unit directions of one tick's rays, as CARLA's head sweeps them (at most
        MAX_RAYS_PER_TICK in all); advances it."""
        per_channel = min(int(round(self.points_per_second * delta / self.channels)),
                          MAX_RAYS_PER_TICK // self.channels)
        sweep = self.rotation_frequency * self.horizontal_fov * delta
        step = sweep / per_channel if per_channel else 0.0
        yaw = np.fmod(self.angle + step * np.arange(per_channel), self.horizontal_fov) - self.horizontal_fov / 2.0
        self.angle = math.fmod(self.angle + sweep, self.horizontal_fov)
        h = np.radians(yaw)[None, :]
        v = self.elevation[:, None]
        directions = np.stack(np.broadcast_arrays(np.cos(v) * np.cos(h), np.cos(v) * np.sin(h), np.sin(v)), -1)
        return directions, h

    def scan(self, world, actor, dt: float):
        """One tick's rays cast from the sensor: (directions (C, P, 3) local, hits of the flattened world rays,
        boxes, owners)."""
        local, _ = self.rays(_since_last(self, world, dt))
        rotation = rotation_matrix(*actor.transform[3:6])
        world_dirs = local.reshape(-1, 3) @ rotation.T
        boxes, owner = _renderer(world).boxes(world)
        hits = cast(np.asarray(actor.transform[:3], float), world_dirs, boxes, self.range)
        return local, hits, boxes, owner

    def header_bytes(self, counts: np.ndarray) -> bytes:
        angle = struct.unpack("<I", struct.pack("<f", math.radians(self.angle)))[0]
        return np.concatenate([[angle, self.channels], counts]).astype("<u4").tobytes()


class RayCastLidar(_Lidar):
    type_id = LIDAR_TYPE_ID

    def __init__(self, attribute: Callable[[str, str], str]):
        super().__init__(attribute)
        self.attenuation = number(attribute, "atmosphere_attenuation_rate", "0.004")
        self.dropoff_general = number(attribute, "dropoff_general_rate", "0.45")
        self.dropoff_limit = number(attribute, "dropoff_intensity_limit", "0.8")
        self.dropoff_zero = number(attribute, "dropoff_zero_intensity", "0.4")
        self.noise_stddev = number(attribute, "noise_stddev", "0.0")
        self.rng = _rng(attribute)
        _check("0 or more", "atmosphere_attenuation_rate", self.attenuation, self.attenuation >= 0.0)
        for name, value in (("dropoff_general_rate", self.dropoff_general),
                            ("dropoff_intensity_limit", self.dropoff_limit),
                            ("dropoff_zero_intensity", self.dropoff_zero)):
            _check("0..1", name, value, 0.0 <= value <= 1.0)
        _check("0 or more m", "noise_stddev", self.noise_stddev, self.noise_stddev >= 0.0)

    def measure(self, world, actor, contacts, dt, header) -> list[bytes]:
        if not self.due(world.elapsed):
            return []
        local, hits, _, _ = self.scan(world, actor, dt)
        shape = local.shape[:2]
        distance = hits.distance.reshape(shape)
        kept = np.isfinite(distance)
        if self.dropoff_general > 0.0:
            kept &= ~(self.rng.random(shape) < self.dropoff_general)
        intensity = np.exp(-self.attenuation * np.where(kept, distance, 0.0))
        if self.dropoff_limit > 0.0:
            beta, alpha = 1.0 - self.dropoff_zero, self.dropoff_zero / self.dropoff_limit
            weak = kept & (intensity <= self.dropoff_limit)
            kept &= ~weak | (self.rng.random(shape) < alpha * intensity + beta)
        if self.noise_stddev > 0.0:
            distance = distance + self.rng.normal(0.0, self.noise_stddev, shape)
        points = local[kept] * distance[kept][:, None]
        body = np.concatenate([points, intensity[kept][:, None]], axis=1).astype("<f4")
        return [header(self.type_id) + self.header_bytes(kept.sum(axis=1)) + body.tobytes()]


SEMANTIC_POINT = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("cos", "<f4"), ("idx", "<u4"),
                           ("tag", "<u4")])


def ground_tags(world, points: np.ndarray) -> np.ndarray:
    """Semantic tags of the ground texels under world points (N, 3)."""
    ground = _renderer(world).scene.ground
    if not len(points):
        return np.zeros(0, np.uint32)
    texel = np.c_[points[:, :2], np.ones(len(points))] @ ground.texel_matrix().T
    col = np.clip(np.round(texel[:, 0]).astype(np.intp), 0, ground.tag.shape[1] - 1)
    row = np.clip(np.round(texel[:, 1]).astype(np.intp), 0, ground.tag.shape[0] - 1)
    return ground.tag[row, col].astype(np.uint32)


class RayCastSemanticLidar(_Lidar):
    type_id = SEMANTIC_LIDAR_TYPE_ID

    def measure(self, world, actor, contacts, dt, header) -> list[bytes]:
        if not self.due(world.elapsed):
            return []
        local, hits, boxes, owner = self.scan(world, actor, dt)
        shape = local.shape[:2]
        kept = np.isfinite(hits.distance)
        rotation = rotation_matrix(*actor.transform[3:6])
        directions = local.reshape(-1, 3)[kept]
        distance = hits.distance[kept]
        box, face = hits.box[kept], hits.face[kept]
        out = np.zeros(int(kept.sum()), SEMANTIC_POINT)
        points = directions * distance[:, None]
        out["x"], out["y"], out["z"] = points[:, 0], points[:, 1], points[:, 2]
        out["cos"] = -np.einsum("ni,ni->n", directions @ rotation.T, hits.normal[kept])
        on_box = box >= 0
        out["idx"][on_box] = owner[box[on_box]]
        out["tag"][on_box] = boxes.tag[box[on_box], face[on_box]]
        on_ground = box == GROUND
        world_points = np.asarray(actor.transform[:3], float) + points[on_ground] @ rotation.T
        out["tag"][on_ground] = ground_tags(world, world_points)
        counts = kept.reshape(shape).sum(axis=1)
        return [header(self.type_id) + self.header_bytes(counts) + out.tobytes()]


RADAR_POINT = np.dtype([("velocity", "<f4"), ("azimuth", "<f4"), ("altitude", "<f4"), ("depth", "<f4")])


class Radar(SensorModel):
    type_id = RADAR_TYPE_ID

    def __init__(self, attribute: Callable[[str, str], str]):
        super().__init__(attribute)
        self.horizontal_fov = number(attribute, "horizontal_fov", "30.0")
        self.vertical_fov = number(attribute, "vertical_fov", "30.0")
        self.range = number(attribute, "range", "100.0")
        self.points_per_second = int(number(attribute, "points_per_second", "1500"))
        for name, value in (("horizontal_fov", self.horizontal_fov), ("vertical_fov", self.vertical_fov)):
            _check("more than 0 and less than 180 degrees", name, value, 0.0 < value < 180.0)
        _check(f"more than 0 and at most {MAX_RANGE:g} m", "range", self.range, 0.0 < self.range <= MAX_RANGE)
        _check(f"1..{MAX_POINTS_PER_SECOND}", "points_per_second", self.points_per_second,
               1 <= self.points_per_second <= MAX_POINTS_PER_SECOND)
        self.rng = _rng(attribute)
        self.last_time: float | None = None

    def measure(self, world, actor, contacts, dt, header) -> list[bytes]:
        if not self.due(world.elapsed):
            return []
        count = min(int(self.points_per_second * _since_last(self, world, dt)), MAX_RAYS_PER_TICK)
        radius = np.sqrt(self.rng.random(count))
        angle = self.rng.random(count) * 2.0 * np.pi
        local = np.stack([np.ones(count), math.tan(math.radians(self.horizontal_fov / 2)) * radius * np.cos(angle),
                          math.tan(math.radians(self.vertical_fov / 2)) * radius * np.sin(angle)], axis=1)
        local /= np.linalg.norm(local, axis=1, keepdims=True)
        rotation = rotation_matrix(*actor.transform[3:6])
        world_dirs = local @ rotation.T
        boxes, owner = _renderer(world).boxes(world)
        hits = cast(np.asarray(actor.transform[:3], float), world_dirs, boxes, self.range)
        kept = hits.box != NO_HIT
        target_velocity = np.zeros((int(kept.sum()), 3))
        box = hits.box[kept]
        for row in np.flatnonzero(box >= 0):
            other = world.actors.get(int(owner[box[row]]))
            if other is not None:
                target_velocity[row] = other.velocity
        out = np.zeros(len(box), RADAR_POINT)
        out["velocity"] = np.einsum("ni,ni->n", target_velocity - actor.velocity, world_dirs[kept])
        out["azimuth"] = np.arctan2(local[kept, 1], local[kept, 0])
        out["altitude"] = np.arctan2(local[kept, 2], np.hypot(local[kept, 0], local[kept, 1]))
        out["depth"] = hits.distance[kept]
        return [header(self.type_id) + out.tobytes()]


def _truthy(text: str) -> bool:
    return str(text).strip().lower() in ("true", "1", "yes")


class ObstacleSensor(SensorModel):
    type_id = OBSTACLE_TYPE_ID
    is_event = True

    def __init__(self, attribute: Callable[[str, str], str]):
        super().__init__(attribute)
        self.distance = number(attribute, "distance", "5.0")
        self.hit_radius = number(attribute, "hit_radius", "0.5")
        self.only_dynamics = _truthy(attribute("only_dynamics", "false"))
        _check(f"more than 0 and at most {MAX_RANGE:g} m", "distance", self.distance,
               0.0 < self.distance <= MAX_RANGE)
        _check("0 or more m", "hit_radius", self.hit_radius, 0.0 <= self.hit_radius <= MAX_RANGE)

    def measure(self, world, actor, contacts, dt, header) -> list[bytes]:
        if not self.due(world.elapsed):
            return []
        kinds = ("vehicle", "walker") if self.only_dynamics else ("vehicle", "walker", "prop")
        others = [a for a in world.actors.values()
                  if a.kind in kinds and a.parent is None and a is not actor.parent and a.blueprint.body is not None]
        if not others:
            return []
        # the actors' bounding boxes grown by the sphere's radius (a slightly larger sweep at the boxes' edges)
        body = [a.blueprint.body for a in others]
        rot = np.array([rotation_matrix(*a.transform[3:6]) for a in others])
        center = np.array([a.transform[:3] for a in others]) + np.einsum("nij,nj->ni", rot,
                                                                        np.array([b.center for b in body]))
        extent = np.array([b.extent for b in body]) + self.hit_radius
        n = len(others)
        boxes = BoxSet(center, rot, extent, np.zeros((n, 6, 3), np.float32), np.zeros((n, 6), np.uint8),
                       np.zeros((n, 6), bool))
        origin = np.asarray(actor.transform[:3], float)
        # an actor the sphere already touches where the sweep starts: distance 0, as an engine sweep that starts
        # in contact reports it (the ray cast leaves out boxes that hold its origin)
        local = np.einsum("kji,kj->ki", rot, origin - center)
        touching = np.flatnonzero(np.all(np.abs(local) <= extent, axis=1))
        if len(touching):
            nearest, distance = int(touching[np.argmin(np.linalg.norm(local[touching], axis=1))]), 0.0
        else:
            forward = rotation_matrix(*actor.transform[3:6])[:, 0]
            hits = cast(origin, forward[None, :], boxes, self.distance, ground=False)
            if hits.box[0] < 0:
                return []
            nearest, distance = int(hits.box[0]), float(hits.distance[0])
        other = others[nearest]
        # as CARLA's event: self_actor is the sensor itself
        body_msg = msgpack.packb([world.actor_msg(actor), world.actor_msg(other), distance], use_bin_type=True)
        return [header(self.type_id) + body_msg]
