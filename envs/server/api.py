"""The RPC surface: one method per CARLA call name, with CARLA's argument order and result shapes.

`Simulator` owns the current `World`, switches maps, and ticks. Methods marked `@call` are the bound RPC
functions; `result` says how the value is wrapped: "value" as `Response<T>`, "void" as `Response<void>`, "raw" not at
all (only `apply_batch`). Arguments arrive already stripped of the leading `Metadata`.

Nothing here answers without doing what the call means: a CARLA call that is not bound gets rpclib's error
naming it (`transport.py`), and the bound calls this simulator cannot honour (`NOT_SERVED`) raise
`world.not_served`, CARLA's error shape naming the call (the client raises RuntimeError). docs/server.md
lists both; tests/server/test_served.py holds the doc to this table.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from envs import maps

from . import protocol as pr
from .blueprints import BLUEPRINTS
from .geometry import rotation_angles
from .render.renderer import renderer_for
from .world import CarlaError, World, not_served

RpcFunction = Callable[..., object]
REGISTRY: dict[str, tuple[str, str]] = {}  # rpc name -> (method name, result wrapping)

GENERATED_MAP_NAME = "OpenDriveMap"
ANY_LABEL = 255  # carla.CityObjectLabel.Any

# Bound CARLA calls that are not served, and why: each raises `not_served` naming itself.
NOT_SERVED = {
    "get_names_of_all_objects": "the scenery's objects have no names, and no served call takes one",
    "set_actor_enable_gravity": "bodies move kinematically in the ground plane; there is no gravity to switch",
}


def call(name: str | None = None, void: bool = False, raw: bool = False):
    def register(method):
        REGISTRY[name or method.__name__] = (method.__name__, "raw" if raw else "void" if void else "value")
        return method
    return register


def _map_short_name(name: str) -> str:
    return name.rstrip("/").split("/")[-1]


class Simulator:
    def __init__(self, map_name: str, port: int):
        """`map_name`: a shipped map, or a path to an .xodr file that is then served under its file stem."""
        self.port = port
        self._episode_counter = 1
        self.maps: dict[str, str] = {name: name for name in maps.available_maps()}  # served name -> source
        if map_name not in self.maps:
            path = Path(map_name)
            maps.load_xodr_text(path)  # raises MapError naming the available maps
            self.maps[path.stem] = str(path)
            map_name = path.stem
        self.world = self._new_world(map_name, maps.load_xodr_text(self.maps[map_name]))
        self._last_tick_wall = time.monotonic()
        self.traffic_managers: dict[int, tuple[str, int]] = {}
        self.on_tick: Callable[[list[tuple[int, bytes]]], None] = lambda messages: None

    def _new_world(self, name: str, xodr: str, first_stream_id: int = pr.WORLD_OBSERVER_STREAM + 1) -> World:
        if name == GENERATED_MAP_NAME:
            network = maps.RoadNetwork.from_xodr(xodr, name)
        else:
            network = maps.load_network(self.maps[name])
        world = World(network, name, xodr, episode_id=self._episode_counter, port=self.port,
                      first_stream_id=first_stream_id)
        self._episode_counter += 1
        return world

    def _switch(self, name: str, xodr: str, reset_settings: bool) -> None:
        previous = self.world
        self.world = self._new_world(name, xodr, first_stream_id=previous.next_stream_id)
        if not reset_settings:
            self.world.settings = previous.settings
        self.world.map_changed = (name, xodr) != (previous.map_name, previous.xodr)
        self.step()  # publish the new episode so that waiting clients see its id

    # ---------------------------------------------------------------------------------------- ticking
    def step(self) -> int:
        """Advance the world one step and publish its state and sensor data. Returns the new frame."""
        now = time.monotonic()
        fixed = self.world.settings.fixed_delta_seconds
        dt = fixed if fixed is not None else min(max(now - self._last_tick_wall, 1e-3), 0.1)
        self._last_tick_wall = now
        output = self.world.tick(dt)
        self.on_tick(output.messages)
        return output.frame

    # ------------------------------------------------------------------------------ version and episode
    @call()
    def version(self) -> str:
        return pr.CARLA_VERSION

    @call()
    def tick_cue(self) -> int:
        if self.world.settings.synchronous_mode:
            return self.step()
        return self.world.frame + 1

    @call()
    def get_episode_info(self) -> list:
        return [self.world.episode_id, [pr.stream_token(pr.WORLD_OBSERVER_STREAM, self.port + 1)]]

    @call()
    def get_sensor_token(self, stream_id: int) -> list:
        if stream_id != pr.WORLD_OBSERVER_STREAM and stream_id not in self.world.streams:
            raise CarlaError(f"get_sensor_token: no sensor stream {stream_id}")
        return [pr.stream_token(int(stream_id), self.port + 1)]  # streaming::Token is an array of one bin

    @call()
    def get_episode_settings(self) -> list:
        return self.world.settings.to_msg()

    @call()
    def set_episode_settings(self, settings) -> int:
        try:
            self.world.settings = pr.EpisodeSettings.from_msg(settings)
        except (TypeError, ValueError) as exc:
            raise CarlaError(f"set_episode_settings: {exc}") from exc
        return self.world.frame

    @call()
    def get_required_files(self, folder: str = "") -> list:
        return []  # served: the client needs no files (the map comes whole with get_map_data)

    @call()
    def query_lights_state(self, client: str = "") -> list:
        return []  # served: no street lights for carla.LightManager (the scenery's lamps are not lights)

    # ------------------------------------------------------------------------------------------- maps
    @call()
    def get_map_info(self) -> list:
        spawn_points = [pr.Transform(x, y, z, 0.0, yaw, 0.0).to_msg()
                        for x, y, z, yaw in self.world.network.spawn_points()]
        return [f"Carla/Maps/{self.world.map_name}", spawn_points]

    @call()
    def get_map_data(self) -> str:
        return self.world.xodr

    @call()
    def get_available_maps(self) -> list:
        return [f"/Game/Carla/Maps/{name}" for name in self.maps]

    @call(void=True)
    def load_new_episode(self, map_name: str, reset_settings: bool = True, map_layers: int = 0xFFFF) -> None:
        name = _map_short_name(str(map_name)) or self.world.map_name  # reload_world sends ""
        if name == GENERATED_MAP_NAME and self.world.map_name == GENERATED_MAP_NAME:
            self._switch(name, self.world.xodr, bool(reset_settings))
            return
        if name not in self.maps:
            raise CarlaError(f"map '{map_name}' not found; available: {', '.join(self.maps)}")
        self._switch(name, maps.load_xodr_text(self.maps[name]), bool(reset_settings))

    @call(void=True)
    def copy_opendrive_to_file(self, opendrive: str, parameters=None) -> None:
        try:
            maps.RoadNetwork.from_xodr(str(opendrive), GENERATED_MAP_NAME)
        except maps.MapError as exc:
            raise CarlaError(f"opendrive could not be correctly parsed: {exc}") from exc
        self._switch(GENERATED_MAP_NAME, str(opendrive), reset_settings=True)

    # ------------------------------------------------------------ traffic manager registry
    # CARLA's Traffic Manager runs inside a client process; the server only records where it listens.
    @call()
    def is_traffic_manager_running(self, port: int) -> bool:
        return int(port) in self.traffic_managers

    @call()
    def get_traffic_manager_running(self, port: int) -> list:
        return list(self.traffic_managers.get(int(port), ("", 0)))

    @call()
    def add_traffic_manager_running(self, endpoint) -> bool:
        host, port = endpoint
        if int(port) in self.traffic_managers:
            return False
        self.traffic_managers[int(port)] = (str(host), int(port))
        return True

    @call()
    def destroy_traffic_manager(self, port: int) -> bool:
        return self.traffic_managers.pop(int(port), None) is not None

    # ------------------------------------------------------------------------------------------ weather
    @call()
    def get_weather_parameters(self) -> list:
        return self.world.weather.to_msg()

    @call(void=True)
    def set_weather_parameters(self, weather) -> None:
        try:
            self.world.weather = pr.Weather.from_msg(weather)
        except (TypeError, ValueError) as exc:
            raise CarlaError(f"set_weather_parameters: {exc}") from exc

    # ------------------------------------------------------------------------------------------- actors
    @call()
    def get_actor_definitions(self) -> list:
        return [bp.to_msg(uid) for uid, bp in enumerate(BLUEPRINTS, start=1)]

    @call()
    def get_spectator(self) -> list:
        return self.world.actor_msg(self.world.spectator)

    @call()
    def get_actors_by_id(self, ids) -> list:
        return [self.world.actor_msg(self.world.actors[i]) for i in ids if i in self.world.actors]

    @call()
    def spawn_actor(self, description, transform) -> list:
        return self.world.actor_msg(self._spawn(description, transform, None))

    @call()
    def spawn_actor_with_parent(self, description, transform, parent: int, attachment: int = 0,
                                socket: str = "") -> list:
        return self.world.actor_msg(self._spawn(description, transform, int(parent)))

    def _spawn(self, description, transform, parent: int | None):
        try:
            _, blueprint_id, attributes = description
            attributes = [[str(a), int(t), str(v)] for a, t, v in attributes]
            pose = pr.Transform.from_msg(transform)
        except (TypeError, ValueError) as exc:
            raise CarlaError(f"spawn_actor: malformed actor description or transform ({exc})") from exc
        return self.world.spawn(str(blueprint_id), attributes, pose, parent)

    @call()
    def destroy_actor(self, actor_id: int) -> bool:
        return self.world.destroy(int(actor_id))

    @call()
    def get_actor_bounding_box(self, actor_id: int) -> list:
        return self.world.actor_msg(self.world.actor(int(actor_id)))[3]

    @call(name="get_all_level_BBs")
    def get_all_level_bbs(self, label: int = ANY_LABEL) -> list:
        """The map's static scenery (buildings, trees, street lamps, traffic-light poles and heads: what the cameras
        draw besides the ground and the actors) with `label` (`carla.CityObjectLabel`; 255 is Any), in the world
        frame. The scene is built on first use (a few seconds for a town) and shared with the cameras."""
        boxes = renderer_for(self.world.network, self.world.map_name).scene.boxes
        labels = boxes.tag[:, 0]  # a scenery box has one label on all its faces
        keep = np.flatnonzero(labels == int(label)) if int(label) != ANY_LABEL else range(len(labels))
        return [pr.bounding_box_msg(boxes.center[i], boxes.extent[i], rotation_angles(boxes.rot[i])) for i in keep]

    @call()
    def get_names_of_all_objects(self, *_) -> list:
        raise not_served("get_names_of_all_objects", NOT_SERVED["get_names_of_all_objects"])

    @call(void=True)
    def set_actor_location(self, actor_id: int, location) -> None:
        actor = self.world.actor(int(actor_id))
        pose = pr.Transform(*pr.vector3(location, "location"), *actor.transform[3:6])
        self.world.set_transform(actor, pose)

    @call(void=True)
    def set_actor_transform(self, actor_id: int, transform) -> None:
        self.world.set_transform(self.world.actor(int(actor_id)), pr.Transform.from_msg(transform))

    @call(void=True)
    def set_actor_target_velocity(self, actor_id: int, velocity) -> None:
        self.world.set_target_velocity(self.world.actor(int(actor_id)), pr.vector3(velocity, "velocity"))

    @call(void=True)
    def set_actor_target_angular_velocity(self, actor_id: int, velocity) -> None:
        self.world.set_target_angular_velocity(self.world.actor(int(actor_id)),
                                                pr.vector3(velocity, "angular velocity"))

    @call(void=True)
    def enable_actor_constant_velocity(self, actor_id: int, velocity) -> None:
        actor = self.world.actor(int(actor_id))
        if actor.kind != "vehicle":  # as CARLA: only vehicles keep a constant velocity
            raise CarlaError(f"enable_actor_constant_velocity: actor {actor.id} ({actor.blueprint.id}) "
                             "is not a vehicle")
        actor.constant_velocity = pr.vector3(velocity, "velocity")

    @call(void=True)
    def disable_actor_constant_velocity(self, actor_id: int) -> None:
        self.world.actor(int(actor_id)).constant_velocity = None

    @call(void=True)
    def set_actor_simulate_physics(self, actor_id: int, enabled: bool) -> None:
        actor = self.world.actor(int(actor_id))
        actor.simulate_physics = bool(enabled)
        if not enabled:
            actor.velocity, actor.speed = np.zeros(3), 0.0

    @call(void=True)
    def set_actor_collisions(self, actor_id: int, enabled: bool) -> None:
        self.world.actor(int(actor_id)).collisions_enabled = bool(enabled)

    @call(void=True)
    def set_actor_enable_gravity(self, *_) -> None:
        raise not_served("set_actor_enable_gravity", NOT_SERVED["set_actor_enable_gravity"])

    @call(void=True)
    def apply_control_to_vehicle(self, actor_id: int, control) -> None:
        self.world.apply_vehicle_control(self.world.actor(int(actor_id)), pr.VehicleControl.from_msg(control))

    @call(void=True)
    def apply_control_to_walker(self, actor_id: int, control) -> None:
        self.world.apply_walker_control(self.world.actor(int(actor_id)), pr.WalkerControl.from_msg(control))

    @call()
    def get_vehicle_light_state(self, actor_id: int) -> list:
        return [self.world.actor(int(actor_id)).light_state]

    @call(void=True)
    def set_vehicle_light_state(self, actor_id: int, state) -> None:
        self.world.actor(int(actor_id)).light_state = int(state[0] if isinstance(state, (list, tuple)) else state)

    @call()
    def get_vehicle_light_states(self) -> list:
        return [[a.id, a.light_state] for a in self.world.actors.values() if a.kind == "vehicle"]

    # ----------------------------------------------------------------------------------- traffic lights
    def _light(self, actor_id: int):
        actor = self.world.actor(int(actor_id))
        if actor.traffic_light is None:
            raise CarlaError(f"actor {actor_id} ({actor.blueprint.id}) is not a traffic light")
        return actor.traffic_light

    @call(void=True)
    def set_traffic_light_state(self, actor_id: int, state: int) -> None:
        try:
            self._light(actor_id).set_state(int(state))
        except ValueError as exc:
            raise CarlaError(f"set_traffic_light_state: {exc}") from exc

    @call(void=True)
    def set_traffic_light_green_time(self, actor_id: int, seconds: float) -> None:
        self._light(actor_id).green_time = max(pr.finite(seconds, "green_time"), 0.0)

    @call(void=True)
    def set_traffic_light_yellow_time(self, actor_id: int, seconds: float) -> None:
        self._light(actor_id).yellow_time = max(pr.finite(seconds, "yellow_time"), 0.0)

    @call(void=True)
    def set_traffic_light_red_time(self, actor_id: int, seconds: float) -> None:
        self._light(actor_id).red_time = max(pr.finite(seconds, "red_time"), 0.0)

    @call(void=True)
    def freeze_traffic_light(self, actor_id: int, freeze: bool) -> None:
        self._light(actor_id).frozen = bool(freeze)

    @call(void=True)
    def freeze_all_traffic_lights(self, freeze: bool) -> None:
        for group in self.world.light_groups:
            for light in group.lights:
                light.frozen = bool(freeze)

    @call(void=True)
    def reset_traffic_light_group(self, actor_id: int) -> None:
        self._light(actor_id).group.reset()

    @call(void=True)
    def reset_all_traffic_lights(self) -> None:
        for group in self.world.light_groups:
            group.reset()

    @call()
    def get_group_traffic_lights(self, actor_id: int) -> list:
        return [light.actor_id for light in self._light(actor_id).group.lights]

    @call()
    def get_light_boxes(self, actor_id: int) -> list:
        actor = self.world.actor(int(actor_id))
        self._light(actor_id)
        head = actor.transform[:3] + np.array([0.0, 0.0, 4.0])
        return [pr.bounding_box_msg(head, (0.2, 0.2, 0.5), actor.transform[3:6], actor.id)]


    # ------------------------------------------------------------------------------------------- batch
    @call(raw=True)
    def apply_batch(self, commands, do_tick_cue: bool = False) -> list:
        """Run rpc::Command variants in order; answers a bare list of `Response<ActorId>`, one per command."""
        responses = []
        for command in commands:
            try:
                responses.append(pr.response(self._run_command(command[0])))
            except CarlaError as exc:
                responses.append(pr.response_error(str(exc), void=False))
            except (TypeError, ValueError, KeyError, IndexError) as exc:
                responses.append(pr.response_error(f"apply_batch: malformed command {command!r:.120} ({exc})",
                                                   void=False))
        if do_tick_cue:
            self.tick_cue()
        return responses

    def _run_command(self, variant, future_actor: int = 0) -> int:
        index, fields = variant
        if index == BATCH_SPAWN:
            description, transform, parent, _attachment, _socket, do_after = fields
            parent_id = int(parent[1]) if parent and parent[0] else None
            actor = self._spawn(description, transform, parent_id)
            for follow_up in do_after:
                self._run_command(follow_up[0], future_actor=actor.id)
            return actor.id
        name = BATCH_COMMANDS.get(index)
        if name is None:
            raise not_served(f"apply_batch: command type {index}")
        actor_id = int(fields[0]) or future_actor
        getattr(self, name)(actor_id, *fields[1:])
        return actor_id


BATCH_SPAWN = 0
# rpc::Command variant index -> the RPC method with the same arguments (actor id first)
BATCH_COMMANDS = {
    1: "destroy_actor", 2: "apply_control_to_vehicle", 4: "apply_control_to_walker", 6: "set_actor_transform",
    8: "set_actor_target_velocity", 9: "set_actor_target_angular_velocity", 14: "set_actor_simulate_physics",
    15: "set_actor_enable_gravity", 18: "set_vehicle_light_state", 20: "set_traffic_light_state",
    21: "set_actor_location",
}
