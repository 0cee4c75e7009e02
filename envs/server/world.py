"""The simulated world: actors, settings, weather, traffic lights and the fixed-step tick.

`World` knows nothing about sockets. The RPC layer calls its methods with decoded arguments and turns
`CarlaError` into CARLA's error responses; the tick returns the stream messages to publish.
"""
from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from envs.maps.geometry import wrap_angle
from envs.maps.speed_limits import SpeedLimits

from . import collision, navigation, physics
from .blueprints import BY_ID, SPECTATOR, TRAFFIC_LIGHT, Blueprint
from .geometry import compose, relative_to, rotation_matrix
from .protocol import (
    ACTOR_DYNAMIC_STATE,
    ACTOR_STATE_ACTIVE,
    ATTR_STRING,
    EPISODE_HEADER,
    EPISODE_STATE_TYPE_ID,
    SIM_STATE_MAP_CHANGE,
    SIM_STATE_NONE,
    WORLD_OBSERVER_STREAM,
    EpisodeSettings,
    Transform,
    VehicleControl,
    WalkerControl,
    Weather,
    bounding_box_msg,
    sensor_header,
    stream_token,
)
from .sensor_model import SensorModel
from .sensors import geo_reference, make_sensor_model
from .traffic_lights import GREEN, LightGroup, TrafficLight

GRAVITY = 9.81
SPEED_LIMIT_KMH = 50.0  # a vehicle's limit until it is on a lane the map gives one (and on maps that give none)
SPAWN_CLEARANCE = 0.05  # m of overlap tolerated at spawn (bodies touching the ground or each other)
# Measures the sensors of a tick side by side (`World._sensor_messages`): a thread per core, up to four
_SENSOR_POOL = ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1), thread_name_prefix="sensors")


class CarlaError(Exception):
    """An error reported to the client as CARLA does (the client raises RuntimeError with this message)."""


class NotServed(CarlaError):
    """A CARLA call (or batch command) this simulator does not serve. The server also logs it: the client sends
    some calls without waiting for their answer (`actor.set_enable_gravity`), so it never sees their error."""


def not_served(call: str, why: str = "") -> NotServed:
    """The error of a call this simulator does not serve, naming the call."""
    return NotServed(f"{call} is not served by the slimdrive embedded simulator" + (f" ({why})" if why else ""))


@dataclass(eq=False)
class Actor:
    id: int
    blueprint: Blueprint
    attributes: list[list]  # [[id, type, value], ...] as the client described them
    transform: np.ndarray  # [x, y, z, pitch, yaw, roll], world frame
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(3))
    angular_velocity: np.ndarray = field(default_factory=lambda: np.zeros(3))  # deg/s
    acceleration: np.ndarray = field(default_factory=lambda: np.zeros(3))
    parent: Actor | None = None
    relative: np.ndarray | None = None  # transform relative to the parent
    simulate_physics: bool = True
    collisions_enabled: bool = True
    constant_velocity: np.ndarray | None = None  # local frame, m/s
    vehicle_control: VehicleControl = field(default_factory=VehicleControl)
    walker_control: WalkerControl = field(default_factory=WalkerControl)
    speed: float = 0.0  # signed speed along the heading (vehicles)
    wheel_angle: float = 0.0
    light_state: int = 0  # carla.VehicleLightState bits
    speed_limit: float = SPEED_LIMIT_KMH  # km/h: the map's limit where the vehicle last was on a lane
    stream_id: int = 0
    sensor: SensorModel | None = None
    traffic_light: TrafficLight | None = None  # for traffic-light actors
    trigger_volume: tuple[np.ndarray, np.ndarray] | None = None  # (centre in actor frame, extent)
    navigated_frame: int = -1  # the frame of the last ApplyWalkerState: such a walker holds its pose between them
    dead: bool = False  # a walker killed by a vehicle in the client's walker navigation (set_actor_dead)

    @property
    def kind(self) -> str:
        return self.blueprint.kind

    def attribute(self, name: str, default: str = "") -> str:
        for attr_id, _, value in self.attributes:
            if attr_id == name:
                return value
        return default


@dataclass
class TickOutput:
    frame: int
    state: tuple[int, bytes]  # (observer stream id, episode state payload)
    sensors: Callable[[], list[tuple[int, bytes]]]  # measures this tick's sensors: (stream id, payload)
    contacts: list = field(default_factory=list)  # this tick's contacts (actor, actor, impulse): the recorder's


class World:
    def __init__(self, network, map_name: str, xodr: str, episode_id: int = 1, port: int = 2000,
                 observer_stream: int = WORLD_OBSERVER_STREAM):
        """`observer_stream`: this episode's own id for the episode-state stream. Ids are never reused across
        episodes: CARLA 0.9.16's client replaces its Episode on a map change, unsubscribing the old one's id
        while subscribing the new one's, and one id for both lets the old one's late unsubscribe cut off the new
        one (a hang or a crash in the client). Sensor streams take the ids after it."""
        self.network = network
        self.map_name = map_name
        self.xodr = xodr
        self.geo_reference = geo_reference(xodr)
        self.episode_id = episode_id
        self.stream_port = port + 1
        self.settings = EpisodeSettings()
        self.weather = Weather()
        self.frame = 0
        self.elapsed = 0.0
        self.map_changed = True  # the first state of an episode announces its map
        self.actors: dict[int, Actor] = {}
        self._next_id = 1
        self.observer_stream = observer_stream
        self.next_stream_id = observer_stream + 1  # unique across episodes: old listeners never get new sensors' data
        self.streams: dict[int, Actor] = {}
        self._gone: dict[int, tuple[int, Actor]] = {}  # recently destroyed: id -> (frame, actor), see `gone`
        self.light_groups: list[LightGroup] = []
        self._volumes = None  # cached traffic-light trigger boxes, see _trigger_volumes
        self._speed_limits: SpeedLimits | None = None  # painted on the first tick with vehicles
        self._spins: dict[int, np.ndarray] = {}  # vehicle id -> target angular velocity (deg/s) for the next tick
        self.spectator = self._add(SPECTATOR, [], np.array([0.0, 0.0, 50.0, -60.0, 0.0, 0.0]))
        self.spectator.simulate_physics = False
        self._create_traffic_lights()

    # ------------------------------------------------------------------------------------------- actors
    def _add(self, blueprint: Blueprint, attributes: list[list], transform: np.ndarray) -> Actor:
        actor = Actor(self._next_id, blueprint, attributes, transform.astype(float))
        self._next_id += 1
        self.actors[actor.id] = actor
        return actor

    def _create_traffic_lights(self) -> None:
        by_junction: dict[object, LightGroup] = {}
        for record in self.network.traffic_lights():
            group = by_junction.setdefault(record.junction_id, LightGroup())
            pose = np.array([record.pose.x, record.pose.y, record.pose.z, 0.0, record.pose.yaw, 0.0])
            actor = self._add(TRAFFIC_LIGHT, [["sign_id", ATTR_STRING, record.id]], pose)
            actor.simulate_physics = False
            actor.collisions_enabled = False
            trigger_world = np.array([*record.trigger.center, 0.0, record.trigger.yaw, 0.0])
            local = relative_to(pose, trigger_world)
            actor.trigger_volume = (local[:3], np.array(record.trigger.extent))
            actor.traffic_light = TrafficLight(actor.id, record.id, len(group.lights), group)
            group.lights.append(actor.traffic_light)
        self.light_groups = list(by_junction.values())
        for group in self.light_groups:
            group.reset()

    def blueprint(self, blueprint_id: str) -> Blueprint:
        if blueprint_id not in BY_ID:
            raise CarlaError(f"unknown actor blueprint '{blueprint_id}'")
        return BY_ID[blueprint_id]

    def actor(self, actor_id: int) -> Actor:
        actor = self.actors.get(actor_id)
        if actor is None:
            raise CarlaError(f"unable to find actor {actor_id}: not found")
        return actor

    def spawn(self, blueprint_id: str, attributes: list[list], transform: Transform,
              parent_id: int | None = None) -> Actor:
        blueprint = self.blueprint(blueprint_id)
        parent = self.actor(parent_id) if parent_id else None
        pose = np.array(transform.as_tuple())
        if parent is not None:
            relative, pose = pose, compose(parent.transform, pose)
        if blueprint.kind in ("vehicle", "prop"):
            pose[2] = self.ground_height(pose[0], pose[1])
        elif blueprint.kind == "walker":
            pose[2] = self.ground_height(pose[0], pose[1]) + blueprint.body.extent[2]
        if blueprint.body is not None and parent is None and self._overlaps_any(blueprint, pose):
            raise CarlaError("Spawn failed because of collision at spawn position")
        sensor = None
        if blueprint.kind == "sensor":  # checked before the actor exists: a bad attribute leaves nothing behind
            try:
                sensor = make_sensor_model(blueprint.id, Actor(0, blueprint, attributes, pose).attribute)
            except ValueError as exc:
                raise CarlaError(f"Spawn failed: {blueprint.id} {exc}") from exc
        actor = self._add(blueprint, attributes, pose)
        if parent is not None:
            actor.parent, actor.relative = parent, relative
        if sensor is not None:
            actor.sensor, actor.stream_id = sensor, self.next_stream_id
            self.next_stream_id += 1
            self.streams[actor.stream_id] = actor
        return actor

    def destroy(self, actor_id: int) -> bool:
        actor = self.actors.get(actor_id)
        if actor is None or actor is self.spectator or actor.traffic_light is not None:
            raise CarlaError(f"unable to destroy actor {actor_id}: not found")
        for child in [a for a in self.actors.values() if a.parent is actor]:
            # CARLA keeps an attached actor when its parent goes (its examples destroy the vehicle, then its
            # cameras): detached where it stands, it measures from there
            child.parent, child.relative = None, None
            child.velocity, child.angular_velocity, child.acceleration = np.zeros(3), np.zeros(3), np.zeros(3)
        del self.actors[actor_id]
        self.streams.pop(actor.stream_id, None)
        self._gone[actor_id] = (self.frame, actor)
        return True

    def gone(self, actor_id: int) -> Actor | None:
        """An actor destroyed since the last tick's state went out, or in the tick before: clients still hold it in
        their snapshot, and the client's Traffic Manager asks for its bounding box (an error there aborts the
        client, as when a script destroys an autopilot vehicle and then applies settings)."""
        entry = self._gone.get(actor_id)
        return entry[1] if entry is not None else None

    def _overlaps_any(self, blueprint: Blueprint, pose: np.ndarray) -> bool:
        others = [a for a in self.actors.values()
                  if a.blueprint.body is not None and a.collisions_enabled and a.parent is None
                  and a.traffic_light is None]
        if not others:
            return False
        probe = Actor(0, blueprint, [], pose)
        center = self._box_centers([probe] + others)
        shrink = SPAWN_CLEARANCE
        extent = np.array([np.maximum(np.array(blueprint.body.extent) - shrink, 0.01)]
                          + [np.maximum(np.array(a.blueprint.body.extent) - shrink, 0.01) for a in others])
        yaw = np.array([pose[4]] + [a.transform[4] for a in others])
        return any(c.a == 0 for c in collision.find_contacts(center, extent, yaw))

    def ground_height(self, x: float, y: float) -> float:
        """0 everywhere: bodies move in the ground plane, so an uploaded map's elevation is not followed
        (its road surface height would be `network.locate(x, y).z`); see docs/server.md."""
        return 0.0

    def set_transform(self, actor: Actor, transform: Transform) -> None:
        pose = np.array(transform.as_tuple())
        if actor.parent is not None:
            actor.relative = pose
            actor.transform = compose(actor.parent.transform, pose)
        else:
            actor.transform = pose
        actor.speed = 0.0 if actor.kind == "vehicle" else actor.speed
        self._update_children()

    def set_target_velocity(self, actor: Actor, velocity: np.ndarray) -> None:
        actor.velocity = velocity.astype(float)
        if actor.kind == "vehicle":
            actor.speed = float(np.dot(velocity, rotation_matrix(*actor.transform[3:6])[:, 0]))

    def set_target_angular_velocity(self, actor: Actor, angular_velocity: np.ndarray) -> None:
        """As `set_target_velocity`: the next tick starts from it. A vehicle turns at this rate (yaw, deg/s)
        through the next tick instead of the bicycle model's, and reports it; then its model takes over again."""
        actor.angular_velocity = angular_velocity.astype(float)
        if actor.kind == "vehicle":
            self._spins[actor.id] = actor.angular_velocity.copy()

    def apply_vehicle_control(self, actor: Actor, control: VehicleControl) -> None:
        if actor.kind != "vehicle":
            raise CarlaError(f"actor {actor.id} ({actor.blueprint.id}) is not a vehicle")
        actor.vehicle_control = control

    def apply_walker_control(self, actor: Actor, control: WalkerControl) -> None:
        if actor.kind != "walker":
            raise CarlaError(f"actor {actor.id} ({actor.blueprint.id}) is not a walker")
        actor.walker_control = control

    def apply_walker_state(self, actor: Actor, transform: Transform, speed: float) -> None:
        """A walker's pose and speed from the client's walker navigation (batch ApplyWalkerState), as CARLA's
        server: the navigation mesh's point is the walker's feet, the walker's origin is its body's centre, and
        the walker walks at `speed` the way it faces."""
        if actor.kind != "walker":
            raise CarlaError(f"ApplyWalkerState: actor {actor.id} ({actor.blueprint.id}) is not a walker")
        if actor.dead:
            raise CarlaError(f"ApplyWalkerState: walker {actor.id} is dead (set_actor_dead)")
        speed = max(float(speed), 0.0)
        if not math.isfinite(speed):
            raise CarlaError(f"ApplyWalkerState: speed is {speed}, not a finite number")
        pose = np.array(transform.as_tuple())
        pose[2] = self.ground_height(pose[0], pose[1]) + actor.blueprint.body.extent[2]
        pose[3] = pose[5] = 0.0
        heading = math.radians(pose[4])
        forward = np.array([math.cos(heading), math.sin(heading), 0.0])
        actor.transform = pose
        actor.velocity = forward * speed
        actor.walker_control = WalkerControl(forward, speed, False)
        actor.navigated_frame = self.frame  # its controller follows it on the next tick (`_update_children`)

    def set_dead(self, actor: Actor) -> None:
        """`set_actor_dead`, which CARLA 0.9.16's client sends when a vehicle runs over a walker in its walker
        navigation (after destroying the walker's controller): the walker lies where it is and walks no more."""
        if actor.kind != "walker":
            raise CarlaError(f"set_actor_dead: actor {actor.id} ({actor.blueprint.id}) is not a walker")
        actor.dead = True
        actor.velocity = np.zeros(3)
        actor.walker_control = WalkerControl(actor.walker_control.direction, 0.0, False)

    @functools.cached_property
    def navigation_file(self) -> str | None:
        """The name of the map's walker navigation file (None on a map without sidewalks), known without building
        the mesh."""
        return navigation.file_name(self.xodr) if navigation.has_sidewalks(self.network) else None

    def navigation_mesh(self) -> bytes | None:
        """The map's navigation mesh (built once per map and process; about 1.5 s for `town`, or read from the
        machine's disk cache)."""
        return navigation.mesh_bytes(self.network, self.xodr)

    def actor_msg(self, actor: Actor) -> list:
        """rpc::Actor: [id, parent_id, description, bounding box, semantic tags, stream token]."""
        body = actor.blueprint.body
        if actor.trigger_volume is not None:
            center, extent = actor.trigger_volume
            bbox = bounding_box_msg(center, extent, actor_id=actor.id)
        elif body is not None:
            bbox = bounding_box_msg(body.center, body.extent, actor_id=actor.id)
        else:
            bbox = bounding_box_msg((0, 0, 0), (0, 0, 0), actor_id=actor.id)
        tags = bytes([body.semantic_tag]) if body is not None else b""
        token = stream_token(actor.stream_id, self.stream_port) if actor.stream_id else b""
        description = [0, actor.blueprint.id, [list(a) for a in actor.attributes]]
        return [actor.id, actor.parent.id if actor.parent else 0, description, bbox, tags, token]

    # --------------------------------------------------------------------------------------------- tick
    def tick(self, dt: float) -> TickOutput:
        self.frame += 1
        if self._gone:
            self._gone = {i: (f, a) for i, (f, a) in self._gone.items() if f >= self.frame - 2}
        self.elapsed += dt
        movers = [a for a in self.actors.values() if a.kind in ("vehicle", "walker")]
        previous_velocity = [a.velocity for a in movers]  # replaced, never mutated, by the steps below
        self._step_vehicles(dt)
        self._step_walkers(dt)
        contacts = self._collide()
        for actor, before in zip(movers, previous_velocity):
            actor.acceleration = (actor.velocity - before) / dt
        self._update_children()
        for group in self.light_groups:
            group.step(dt)
        # The episode state goes out before any sensor data (`Simulator.step`): the client's apply_batch_sync(...,
        # True) waits for the state while holding Python's GIL, and sensor callbacks that reach the client first
        # block its stream threads on that GIL, so the state would never be read (a deadlock until the timeout).
        return TickOutput(self.frame, (self.observer_stream, self.episode_state(dt)),
                          lambda: self._sensor_messages(contacts, dt), contacts)

    def _movable(self, kind: str) -> list[Actor]:
        return [a for a in self.actors.values() if a.kind == kind and a.parent is None and a.simulate_physics]

    def _step_vehicles(self, dt: float) -> None:
        vehicles = self._movable("vehicle")
        spins, self._spins = self._spins, {}
        spinning = [(a, a.transform[4], spins[a.id]) for a in vehicles if a.id in spins] if spins else []
        self._move_vehicles(vehicles, dt)
        for actor, yaw, rate in spinning:  # a target angular velocity turns the vehicle through this tick
            actor.transform[4] = wrap_angle(yaw + rate[2] * dt)
            actor.angular_velocity = rate
            if actor.constant_velocity is None:
                heading = math.radians(actor.transform[4])
                actor.velocity = np.array([actor.speed * math.cos(heading), actor.speed * math.sin(heading), 0.0])

    def _move_vehicles(self, vehicles: list[Actor], dt: float) -> None:
        constant = [a for a in vehicles if a.constant_velocity is not None]
        for actor in constant:
            actor.velocity = rotation_matrix(*actor.transform[3:6]) @ actor.constant_velocity
            actor.transform[:3] += actor.velocity * dt
            actor.speed = float(actor.constant_velocity[0])
        driven = [a for a in vehicles if a.constant_velocity is None]
        if not driven:
            return
        bodies = [a.blueprint.body for a in driven]
        controls = [a.vehicle_control for a in driven]
        arr = lambda values: np.array(values, dtype=float)  # noqa: E731
        batch = physics.VehicleBatch(
            x=arr([a.transform[0] for a in driven]), y=arr([a.transform[1] for a in driven]),
            yaw=arr([a.transform[4] for a in driven]), speed=arr([a.speed for a in driven]),
            wheel_angle=arr([a.wheel_angle for a in driven]),
            throttle=arr([c.throttle for c in controls]), steer=arr([c.steer for c in controls]),
            brake=arr([c.brake for c in controls]), hand_brake=arr([c.hand_brake for c in controls]),
            reverse=np.array([c.reverse for c in controls], dtype=bool),
            wheelbase=arr([b.wheelbase for b in bodies]), max_steer=np.radians(arr([b.max_steer_deg for b in bodies])),
            max_accel=arr([b.max_accel for b in bodies]), power_per_kg=arr([b.max_power_per_kg for b in bodies]),
            max_brake=arr([b.max_brake for b in bodies]), max_speed=arr([b.max_speed for b in bodies]),
        )
        x, y, yaw, speed, wheel = physics.step_vehicles(batch, dt)
        yaw_rate = wrap_angle(yaw - batch.yaw) / dt
        for i, actor in enumerate(driven):
            actor.transform[0], actor.transform[1], actor.transform[4] = x[i], y[i], yaw[i]
            actor.speed, actor.wheel_angle = float(speed[i]), float(wheel[i])
            heading = math.radians(yaw[i])
            actor.velocity = np.array([speed[i] * math.cos(heading), speed[i] * math.sin(heading), 0.0])
            actor.angular_velocity = np.array([0.0, 0.0, yaw_rate[i]])

    def _step_walkers(self, dt: float) -> None:
        # A walker under the client's navigation (its controller turned its physics off) is where its last
        # ApplyWalkerState put it: stepping it by its speed as well would put it ahead of the client's crowd. Once
        # the states stop (controller.stop()) it stands still. The states come from the client's stream thread and
        # may land either side of a tick, so a walker stands only after two ticks without one.
        for actor in self.actors.values():
            if (actor.kind == "walker" and actor.navigated_frame >= 0 and self.frame - actor.navigated_frame > 2
                    and (actor.velocity.any() or actor.walker_control.speed)):
                actor.velocity = np.zeros(3)
                actor.walker_control = WalkerControl(actor.walker_control.direction, 0.0, False)
        walkers = [a for a in self._movable("walker")
                   if not a.dead and (self.frame - a.navigated_frame > 2 or a.navigated_frame < 0)]
        if not walkers:
            return
        direction = np.array([a.walker_control.direction for a in walkers], dtype=float)
        speed = np.array([a.walker_control.speed for a in walkers], dtype=float)
        max_speed = np.array([a.blueprint.body.max_speed for a in walkers])
        velocity = physics.walker_velocity(direction, speed, max_speed)
        for actor, v in zip(walkers, velocity):
            actor.velocity = v
            actor.transform[:3] += v * dt
            if v[0] or v[1]:
                actor.transform[4] = math.degrees(math.atan2(v[1], v[0]))

    def _collide(self) -> list[tuple[Actor, Actor, np.ndarray]]:
        bodies = [a for a in self.actors.values()
                  if a.blueprint.body is not None and a.collisions_enabled and a.parent is None
                  and a.traffic_light is None]
        if len(bodies) < 2:
            return []
        center = self._box_centers(bodies)
        extent = np.array([a.blueprint.body.extent for a in bodies])
        yaw = np.array([a.transform[4] for a in bodies])
        contacts = collision.find_contacts(center, extent, yaw)
        if not contacts:
            return []
        position = np.array([a.transform[:3] for a in bodies])
        velocity = np.array([a.velocity for a in bodies])
        inv_mass = np.array([1.0 / a.blueprint.body.mass if a.blueprint.body.mass > 0 and a.simulate_physics
                             else 0.0 for a in bodies])
        events = []
        for contact in contacts:
            impulse = collision.resolve(contact, position, velocity, inv_mass)
            events.append((bodies[contact.a], bodies[contact.b], impulse))
        moved = {i for c in contacts for i in (c.a, c.b) if inv_mass[i] > 0.0}
        for i in moved:
            actor = bodies[i]
            actor.transform[:2] = position[i, :2]
            actor.velocity = velocity[i]
            if actor.kind == "vehicle":
                yaw = math.radians(actor.transform[4])
                actor.speed = float(velocity[i, 0] * math.cos(yaw) + velocity[i, 1] * math.sin(yaw))
        return events

    @staticmethod
    def _box_centers(bodies: list[Actor]) -> np.ndarray:
        """World box centres, turning the body offset by yaw only (bodies stand upright on flat ground)."""
        pose = np.array([a.transform for a in bodies])
        offset = np.array([a.blueprint.body.center for a in bodies])
        yaw = np.radians(pose[:, 4])
        cos, sin = np.cos(yaw), np.sin(yaw)
        return pose[:, :3] + np.stack([offset[:, 0] * cos - offset[:, 1] * sin,
                                       offset[:, 0] * sin + offset[:, 1] * cos, offset[:, 2]], axis=1)

    def _update_children(self) -> None:
        for actor in self.actors.values():
            if actor.parent is not None:
                actor.transform = compose(actor.parent.transform, actor.relative)
                actor.velocity = actor.parent.velocity.copy()
                actor.angular_velocity = actor.parent.angular_velocity.copy()
                actor.acceleration = actor.parent.acceleration.copy()

    # ------------------------------------------------------------------------------------- traffic lights
    def _trigger_volumes(self) -> tuple[list[Actor], np.ndarray, np.ndarray, np.ndarray]:
        """Traffic-light actors with their trigger boxes in the world frame: centres (L, 2), yaws (L,),
        extents (L, 2)."""
        if self._volumes is None:
            lights = [a for a in self.actors.values() if a.trigger_volume is not None]
            centers = [compose(a.transform, np.array([*a.trigger_volume[0], 0.0, 0.0, 0.0]))[:2] for a in lights]
            self._volumes = (lights, np.array(centers).reshape(-1, 2),
                             np.radians([a.transform[4] for a in lights]),
                             np.array([a.trigger_volume[1][:2] for a in lights]).reshape(-1, 2))
        return self._volumes

    def traffic_lights_of(self, vehicles: list[Actor], xy: np.ndarray | None = None) -> list[Actor | None]:
        """For each vehicle (at `xy`, (N, 2), when given), the traffic light whose trigger volume holds its
        origin (CARLA's rule)."""
        lights, centers, yaws, extents = self._trigger_volumes()
        if not lights or not vehicles:
            return [None] * len(vehicles)
        xy = np.array([v.transform[:2] for v in vehicles]) if xy is None else xy
        delta = xy[:, None, :] - centers[None, :, :]
        cos, sin = np.cos(yaws)[None, :], np.sin(yaws)[None, :]
        along = delta[..., 0] * cos + delta[..., 1] * sin
        across = -delta[..., 0] * sin + delta[..., 1] * cos
        inside = (np.abs(along) <= extents[None, :, 0]) & (np.abs(across) <= extents[None, :, 1])
        first = np.argmax(inside, axis=1)
        return [lights[k] if inside[i, k] else None for i, k in enumerate(first.tolist())]

    # ------------------------------------------------------------------------------------ episode state
    def episode_state(self, dt: float) -> bytes:
        actors = list(self.actors.values())
        states = np.zeros(len(actors), dtype=ACTOR_DYNAMIC_STATE)
        states["id"] = [a.id for a in actors]
        states["actor_state"] = ACTOR_STATE_ACTIVE
        states["transform"] = [a.transform for a in actors]
        states["velocity"] = [a.velocity for a in actors]
        states["angular_velocity"] = [a.angular_velocity for a in actors]
        states["acceleration"] = [a.acceleration for a in actors]
        data = states["data"]
        vehicles = [i for i, a in enumerate(actors) if a.kind == "vehicle"]
        if vehicles:
            self._fill_vehicles(data["vehicle"], vehicles, [actors[i] for i in vehicles])
        walkers = [i for i, a in enumerate(actors) if a.kind == "walker"]
        if walkers:
            controls = [actors[i].walker_control for i in walkers]
            data["walker"]["direction"][walkers] = [c.direction for c in controls]
            data["walker"]["speed"][walkers] = [c.speed for c in controls]
            data["walker"]["jump"][walkers] = [c.jump for c in controls]
        for i, actor in enumerate(actors):
            if actor.traffic_light is not None:
                light, tl = actor.traffic_light, data["traffic_light"]
                tl["sign_id"][i] = light.sign_id.encode()[:32]
                tl["green_time"][i], tl["yellow_time"][i] = light.green_time, light.yellow_time
                tl["red_time"][i], tl["elapsed_time"][i] = light.red_time, light.elapsed
                tl["pole_index"][i], tl["time_is_frozen"][i], tl["state"][i] = (
                    light.pole_index, light.frozen, light.state)
        sim_state = SIM_STATE_MAP_CHANGE if self.map_changed else SIM_STATE_NONE
        self.map_changed = False
        header = sensor_header(EPISODE_STATE_TYPE_ID, self.frame, self.elapsed, Transform())
        episode = EPISODE_HEADER.pack(self.episode_id, self.elapsed, dt, 0, 0, 0, sim_state)
        return header + episode + states.tobytes()

    def _fill_vehicles(self, data: np.ndarray, rows: list[int], vehicles: list[Actor]) -> None:
        controls = [v.vehicle_control for v in vehicles]
        data["throttle"][rows] = [c.throttle for c in controls]
        data["steer"][rows] = [c.steer for c in controls]
        data["brake"][rows] = [c.brake for c in controls]
        data["hand_brake"][rows] = [c.hand_brake for c in controls]
        data["reverse"][rows] = [c.reverse for c in controls]
        data["manual_gear_shift"][rows] = [c.manual_gear_shift for c in controls]
        data["gear"][rows] = [c.gear for c in controls]
        xy = np.array([v.transform[:2] for v in vehicles])
        if self._speed_limits is None:
            self._speed_limits = SpeedLimits(self.network, self.xodr)
        last = np.array([v.speed_limit for v in vehicles])
        here = self._speed_limits.at(xy)
        limit = np.where(np.isnan(here), last, here)  # off every lane a vehicle keeps the last limit it had
        for i in np.flatnonzero(limit != last).tolist():
            vehicles[i].speed_limit = float(limit[i])
        data["speed_limit"][rows] = limit
        lights = self.traffic_lights_of(vehicles, xy)
        data["has_traffic_light"][rows] = [light is not None for light in lights]
        data["traffic_light_id"][rows] = [light.id if light else 0 for light in lights]
        data["traffic_light_state"][rows] = [light.traffic_light.state if light else GREEN for light in lights]

    # ------------------------------------------------------------------------------------------ sensors
    def _sensor_messages(self, contacts: list[tuple[Actor, Actor, np.ndarray]], dt: float) -> list[tuple[int, bytes]]:
        # A sensor without a parent measures from its own transform, as CARLA's (an IMU or GNSS at rest, a camera
        # on a pole)
        sensors = [a for a in self.streams.values() if a.sensor is not None]
        # Event sensors (collisions) first: cheap, and the env reads them after waiting for the cameras' images
        sensors.sort(key=lambda a: not a.sensor.is_event)

        def measure(actor: Actor) -> list[tuple[int, bytes]]:
            header = lambda type_id: sensor_header(type_id, self.frame, self.elapsed,  # noqa: E731
                                                   Transform(*actor.transform))
            return [(actor.stream_id, p) for p in actor.sensor.measure(self, actor, contacts, dt, header)]

        # Cameras render in compiled code and OpenCV, which release the GIL: threads (one per core) render them
        # side by side. Each sensor's data depends only on the world, so the order of the threads does not matter.
        measured = _SENSOR_POOL.map(measure, sensors) if len(sensors) > 1 else map(measure, sensors)
        return [message for messages in measured for message in messages]
