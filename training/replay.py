"""Pose the embedded simulator as a recorded episode was, step by step, and read a rig's images of it: the engine
of `slimdrive dataset rerender` (`training/rerender.py`, docs/data.md "Re-rendering").

The embedded world is kinematic, and a log (schema version 2) holds, per step, the pose of the ego and of every
vehicle, walker and prop and the state of every traffic light; with the ego's blueprint and colour and each
actor's blueprint and colour, that is everything the cameras draw. `Replayer.render` launches the simulator on
the recorded map, spawns the actors with physics off (nothing moves but what is posed), freezes the traffic
lights, and for each recorded step sets every pose and light state, ticks once and reads the images. The poses
the world then reports are checked against the recorded ones: a world that does not take a pose is refused.

Rain streaks are random noise seeded per camera image, so a rainy episode's streaks differ from the recording's.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from envs.maps.geometry import wrap_angle
from envs.rig import Rig, RigSensors, spawn_rig
from envs.server.launch import ServerProcess, launch

from .logs.schema import LogFormatError

POSE_TOLERANCE_M = 1e-3  # read-back pose vs recorded: float32 round trips are exact; anything more is a bug
ROTATION_TOLERANCE_DEG = 1e-2
PARKING_X = -20_000.0  # actors are spawned out of sight here and then posed: recorded poses may overlap
LIGHT_MATCH_M = 0.5  # a recorded traffic light and a world light are the same when this close
CLIENT_TIMEOUT_S = 30.0


class RerenderError(LogFormatError):
    """A recorded episode that cannot be re-rendered; the message names the file and what to do."""


def _transform(carla, pose: dict) -> object:
    return carla.Transform(carla.Location(pose["x"], pose["y"], pose["z"]),
                           carla.Rotation(pitch=pose["pitch"], yaw=pose["yaw"], roll=pose["roll"]))


def _ego_pose(row: dict) -> dict:
    (x, y, z), (roll, pitch, yaw) = row["ego_location"], row["ego_rotation"]
    return {"x": x, "y": y, "z": z, "roll": roll, "pitch": pitch, "yaw": yaw}


def _pose_error(pose: dict, transform) -> tuple[float, float]:
    loc, rot = transform.location, transform.rotation
    metres = math.dist((pose["x"], pose["y"], pose["z"]), (loc.x, loc.y, loc.z))
    degrees = max(abs(wrap_angle(pose["roll"] - rot.roll)), abs(wrap_angle(pose["pitch"] - rot.pitch)),
                  abs(wrap_angle(pose["yaw"] - rot.yaw)))
    return metres, degrees


def _rgb(images: dict[str, np.ndarray], rig: Rig) -> np.ndarray:
    out = np.empty((len(rig.cameras), rig.image_size_y, rig.image_size_x, 3), np.uint8)
    for rgb, name in zip(out, rig.names):
        bgra = images[name]
        rgb[..., 0], rgb[..., 1], rgb[..., 2] = bgra[..., 2], bgra[..., 1], bgra[..., 0]
    return out


class Replayer:
    """One embedded simulator that re-renders episodes one after another (relaunched when the map changes)."""

    def __init__(self) -> None:
        import carla

        self.carla = carla
        self.server: ServerProcess | None = None
        self.client = self.world = None

    @property
    def endpoint(self) -> str:
        return f"{self.server.host}:{self.server.port} (embedded, pid {self.server.pid})" if self.server else ""

    def _connect(self, map_name: str, dt: float) -> None:
        if self.server is not None and (self.server.map_name != map_name or not self.server.alive()):
            self.close()
        if self.server is None:
            self.server = launch(map_name)
            self.client = self.carla.Client(self.server.host, self.server.port)
            self.client.set_timeout(CLIENT_TIMEOUT_S)
            self.world = self.client.get_world()
        settings = self.world.get_settings()
        settings.synchronous_mode, settings.fixed_delta_seconds = True, dt
        self.world.apply_settings(settings)

    def render(self, path: Path, metadata: dict, rows: list[dict], rig: Rig,
               weather) -> Iterator[tuple[dict, np.ndarray]]:
        """For each recorded row: (the row with the poses read back from the posed world, the rig's RGB images
        (N, H, W, 3)). Raises RerenderError when the world does not take a recorded pose."""
        carla = self.carla
        self._connect(str(metadata["map"]), float(metadata.get("fixed_delta_seconds") or 0.05))
        world, client = self.world, self.client
        world.set_weather(weather)
        lights = self._match_lights(path, metadata)
        world.freeze_all_traffic_lights(True)  # each light shows its recorded state, set step by step
        library = world.get_blueprint_library()
        ego_bp = library.find(metadata["ego_blueprint"])
        if metadata.get("ego_color") and ego_bp.has_attribute("color"):
            ego_bp.set_attribute("color", metadata["ego_color"])
        ego_bp.set_attribute("role_name", "hero")
        spawned: dict[int, int] = {}  # recorded actor id -> world actor id
        ego = world.spawn_actor(ego_bp, carla.Transform(carla.Location(PARKING_X, 0.0, 0.0)))
        ego.set_simulate_physics(False)
        sensors: RigSensors | None = None
        light_states: list[int | None] = [None] * len(lights)
        try:
            def pose(row: dict) -> None:
                present = {a["id"]: a for a in row["actors"]}
                gone = [i for i in spawned if i not in present]
                new = [a for i, a in present.items() if i not in spawned]
                if gone:
                    client.apply_batch_sync([carla.command.DestroyActor(spawned.pop(i)) for i in gone])
                if new:
                    self._spawn(path, library, new, spawned)
                commands = [carla.command.ApplyTransform(ego.id, _transform(carla, _ego_pose(row)))]
                commands += [carla.command.ApplyTransform(spawned[i], _transform(carla, a)) for i, a in present.items()]
                for response in client.apply_batch_sync(commands):
                    if response.error:
                        raise RerenderError(f"{path}: step frame {row['frame']}: the simulator refused a pose "
                                            f"({response.error})")
                for k, (light, state) in enumerate(zip(lights, row["light_states"])):
                    if light_states[k] != state:
                        light.set_state(carla.TrafficLightState.values[int(state)])
                        light_states[k] = state

            pose(rows[0])
            sensors = spawn_rig(world, ego, rig)
            sensors.warm_up(world)
            for index, row in enumerate(rows):
                pose(row)
                frame = world.tick()
                images = sensors.read(frame)
                yield self._read_back(path, index, row, world.get_snapshot(), ego.id, spawned), _rgb(images, rig)
        finally:
            if sensors is not None:
                sensors.destroy()
            client.apply_batch_sync([carla.command.DestroyActor(i) for i in [*spawned.values(), ego.id]])

    def _spawn(self, path: Path, library, actors: list[dict], spawned: dict[int, int]) -> None:
        carla = self.carla
        commands = []
        for k, a in enumerate(actors):
            try:
                bp = library.find(a["type_id"])
            except IndexError:
                raise RerenderError(f"{path}: actor {a['id']} has blueprint {a['type_id']!r}, which the embedded "
                                    "simulator does not have") from None
            if a["color"] and bp.has_attribute("color"):
                bp.set_attribute("color", a["color"])
            # out of sight, apart from each other: recorded poses may overlap (a collision), which a spawn refuses
            parking = carla.Transform(carla.Location(PARKING_X - 20.0 * (len(spawned) + k + 1), 0.0, 0.0))
            commands.append(carla.command.SpawnActor(bp, parking)
                            .then(carla.command.SetSimulatePhysics(carla.command.FutureActor, False)))
        for a, response in zip(actors, self.client.apply_batch_sync(commands)):
            if response.error:
                raise RerenderError(f"{path}: could not spawn actor {a['id']} ({a['type_id']}): {response.error}")
            spawned[a["id"]] = response.actor_id

    def _match_lights(self, path: Path, metadata: dict) -> list:
        """The world's traffic-light actors in the order of the metadata's `traffic_lights`, matched by pose."""
        world_lights = list(self.world.get_actors().filter("traffic.traffic_light"))
        where = [(light, light.get_transform().location) for light in world_lights]
        out = []
        for rec in metadata.get("traffic_lights", []):
            near = [light for light, loc in where
                    if math.dist((loc.x, loc.y), (rec["x"], rec["y"])) < LIGHT_MATCH_M]
            if len(near) != 1:
                raise RerenderError(f"{path}: recorded traffic light {rec['id']} at ({rec['x']:.1f}, {rec['y']:.1f}) "
                                    f"matches {len(near)} lights of map {metadata['map']!r}; was the map changed "
                                    "since the recording?")
            out.append(near[0])
        return out

    def _read_back(self, path: Path, index: int, row: dict, snapshot, ego_id: int, spawned: dict[int, int]) -> dict:
        """`row` with the ego and actor poses the posed world reports, checked against the recorded ones."""
        out = dict(row)
        ego = snapshot.find(ego_id).get_transform()
        self._check(path, index, "the ego", _ego_pose(row), ego)
        out["ego_location"] = [ego.location.x, ego.location.y, ego.location.z]
        out["ego_rotation"] = [ego.rotation.roll, ego.rotation.pitch, ego.rotation.yaw]
        actors = []
        for a in row["actors"]:
            t = snapshot.find(spawned[a["id"]]).get_transform()
            self._check(path, index, f"actor {a['id']} ({a['type_id']})", a, t)
            actors.append({**a, "x": t.location.x, "y": t.location.y, "z": t.location.z, "roll": t.rotation.roll,
                           "pitch": t.rotation.pitch, "yaw": t.rotation.yaw})
        out["actors"] = actors
        return out

    @staticmethod
    def _check(path: Path, index: int, what: str, recorded: dict, transform) -> None:
        metres, degrees = _pose_error(recorded, transform)
        if metres > POSE_TOLERANCE_M or degrees > ROTATION_TOLERANCE_DEG:
            raise RerenderError(f"{path}: step {index}: {what} is {metres:.4f} m and {degrees:.3f} deg away from its "
                                "recorded pose in the re-rendering world; the simulator did not take the pose")

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
        self.server = self.client = self.world = None
