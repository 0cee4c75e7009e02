"""Camera rigs: which cameras a vehicle carries, loaded from `conf/rig/<name>.yaml`, and spawned through
the CARLA client API so that the same rig runs on the embedded server and on CARLA.

    rig = load_rig("tesla8", image_size_x=256, image_size_y=128)
    cameras = spawn_rig(world, vehicle, rig)          # listening, one queue per camera
    cameras.warm_up(world)                            # synchronous mode: until every stream delivers
    frame = world.tick(); images = cameras.read(frame)  # {name: (H, W, 4) uint8 BGRA}, frame-matched
    cameras.destroy()
"""
from __future__ import annotations

import math
import queue
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .config import CONF_DIR, load_conf

RIG_DIR = CONF_DIR / "rig"
MAX_MOUNT_DISTANCE = 3.0  # m from the vehicle origin, CARLA leaderboard's sensor rule
CAMERA_TYPES = ("sensor.camera.rgb", "sensor.camera.depth", "sensor.camera.semantic_segmentation")


class RigError(ValueError):
    """A rig file that cannot be used; the message names the file, the camera and the field."""


@dataclass(frozen=True)
class CameraMount:
    name: str
    x: float
    y: float
    z: float
    pitch: float
    yaw: float
    roll: float
    fov: float  # horizontal, degrees


@dataclass(frozen=True)
class Rig:
    name: str
    image_size_x: int
    image_size_y: int
    cameras: tuple[CameraMount, ...]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.cameras]


def rig_from_config(cfg: Mapping[str, Any], source: str = "rig config", **overrides: Any) -> Rig:
    """A validated `Rig` from a mapping (a Hydra/OmegaConf node or a dict); `overrides` replace top-level keys."""
    data = dict(cfg)
    data.update({k: v for k, v in overrides.items() if v is not None})
    for key in ("name", "image_size_x", "image_size_y", "cameras"):
        if key not in data:
            raise RigError(f"{source}: missing field '{key}'")
    width, height = int(data["image_size_x"]), int(data["image_size_y"])
    if width <= 0 or height <= 0:
        raise RigError(f"{source}: image_size_x/image_size_y must be positive, got {width}x{height}")
    mounts = []
    for i, cam in enumerate(data["cameras"]):
        cam = dict(cam)
        where = f"{source}: camera {i} ({cam.get('name', '?')})"
        missing = [f for f in CameraMount.__dataclass_fields__ if f not in cam]
        if missing:
            raise RigError(f"{where}: missing field(s) {', '.join(missing)}")
        mount = CameraMount(str(cam["name"]), *(float(cam[f]) for f in ("x", "y", "z", "pitch", "yaw", "roll", "fov")))
        distance = math.sqrt(mount.x ** 2 + mount.y ** 2 + mount.z ** 2)
        if distance > MAX_MOUNT_DISTANCE:
            raise RigError(f"{where}: mounted {distance:.2f} m from the vehicle origin; CARLA allows at most "
                           f"{MAX_MOUNT_DISTANCE} m (move x/y/z closer)")
        if not 0.0 < mount.fov < 180.0:
            raise RigError(f"{where}: fov {mount.fov} must be between 0 and 180 degrees")
        mounts.append(mount)
    names = [m.name for m in mounts]
    if len(set(names)) != len(names) or not names:
        raise RigError(f"{source}: camera names must be unique and at least one camera given, got {names}")
    return Rig(str(data["name"]), width, height, tuple(mounts))


def load_rig(name: str, **overrides: Any) -> Rig:
    """The rig `conf/rig/<name>.yaml` (or a path to a yaml file), e.g. `load_rig("tesla8", image_size_x=512)`."""
    path = Path(name) if name.endswith((".yaml", ".yml")) else RIG_DIR / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in RIG_DIR.glob("*.yaml")))
        raise RigError(f"unknown rig '{name}': expected one of {known} or the path of a yaml file")
    return rig_from_config(load_conf(path.resolve()), str(path), **overrides)


def bgra_array(image) -> np.ndarray:
    """A `carla.Image` as an (H, W, 4) uint8 BGRA array (a copy: the client reuses the buffer)."""
    return np.frombuffer(image.raw_data, np.uint8).reshape(image.height, image.width, 4).copy()


@dataclass
class RigSensors:
    """The spawned cameras of a rig, each feeding its own queue (CARLA practice: one queue per sensor)."""

    rig: Rig
    actors: list  # carla.Sensor, in rig order
    queues: list[queue.Queue] = field(default_factory=list)

    def read(self, frame: int, timeout: float = 10.0) -> dict[str, np.ndarray]:
        """The image of every camera for `frame` (older frames are dropped); raises TimeoutError."""
        out = {}
        for mount, q in zip(self.rig.cameras, self.queues):
            while True:
                try:
                    image = q.get(timeout=timeout)
                except queue.Empty:
                    raise TimeoutError(f"camera '{mount.name}' sent no image for frame {frame} "
                                       f"within {timeout:.0f} s") from None
                if image.frame == frame:
                    out[mount.name] = bgra_array(image)
                    break
                if image.frame > frame:
                    raise TimeoutError(f"camera '{mount.name}' skipped frame {frame} (got {image.frame})")
        return out

    def warm_up(self, world, ticks: int = 20) -> int:
        """Tick a synchronous world until every camera has delivered a frame; returns that frame.

        A camera's stream is subscribed asynchronously by the client, so the first ticks after spawning may
        reach the server before the subscription: their images are lost, not late.
        """
        for _ in range(ticks):
            frame = world.tick()
            try:
                self.read(frame, timeout=1.0)
                return frame
            except TimeoutError:
                continue
        raise TimeoutError(f"rig '{self.rig.name}': cameras delivered no complete frame in {ticks} ticks")

    def destroy(self) -> None:
        """Stop, then destroy every camera (stop first, or the client may call back into a dead actor)."""
        for actor in self.actors:
            actor.stop()
        for actor in self.actors:
            actor.destroy()
        self.actors.clear()


def spawn_rig(world, vehicle, rig: Rig, sensor_type: str = "sensor.camera.rgb", sensor_tick: float = 0.0) -> RigSensors:
    """Spawn the rig's cameras attached to `vehicle` through the CARLA client (`carla.World`, `carla.Actor`)."""
    import carla

    if sensor_type not in CAMERA_TYPES:
        raise RigError(f"sensor_type '{sensor_type}' is not a camera; expected one of {', '.join(CAMERA_TYPES)}")
    blueprint = world.get_blueprint_library().find(sensor_type)
    blueprint.set_attribute("image_size_x", str(rig.image_size_x))
    blueprint.set_attribute("image_size_y", str(rig.image_size_y))
    blueprint.set_attribute("sensor_tick", str(sensor_tick))
    sensors = RigSensors(rig, [])
    try:
        for mount in rig.cameras:
            blueprint.set_attribute("fov", str(mount.fov))
            blueprint.set_attribute("role_name", mount.name)
            transform = carla.Transform(carla.Location(mount.x, mount.y, mount.z),
                                        carla.Rotation(pitch=mount.pitch, yaw=mount.yaw, roll=mount.roll))
            sensors.actors.append(world.spawn_actor(blueprint, transform, attach_to=vehicle))
    except RuntimeError:
        sensors.destroy()
        raise
    for actor in sensors.actors:
        q: queue.Queue = queue.Queue()
        actor.listen(q.put)
        sensors.queues.append(q)
    return sensors
