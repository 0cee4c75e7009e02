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

import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from envs import maps

from . import navigation, recorder
from . import protocol as pr
from .blueprints import BLUEPRINTS
from .geometry import rotation_angles
from .render.renderer import renderer_for, renderer_in_background
from .world import CarlaError, NotServed, World, not_served

log = logging.getLogger("slimdrive.server")
RpcFunction = Callable[..., object]
REGISTRY: dict[str, tuple[str, str]] = {}  # rpc name -> (method name, result wrapping)

GENERATED_MAP_NAME = "OpenDriveMap"
SWITCH_AFTER_S = 1.0  # a loaded map becomes current by then even if no client subscribes to its state stream
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
    def __init__(self, map_name: str, port: int, maps_dir: str | Path | None = None):
        """`map_name`: a shipped map, a map of `maps_dir`, or a path to an .xodr file that is then served under its
        file stem. `maps_dir`: a folder whose `*.xodr` files are served by file stem, as CARLA serves its towns
        (`load_world('Town01')` for `Town01.xodr`); a name there hides a shipped map of the same name."""
        self.port = port
        self._episode_counter = 1
        self.maps: dict[str, str] = {name: name for name in maps.available_maps()}  # served name -> source
        if maps_dir is not None:
            folder = Path(maps_dir)
            if not folder.is_dir():
                raise maps.MapError(f"maps folder {folder} does not exist")
            self.maps.update({path.stem: str(path) for path in sorted(folder.glob("*.xodr"))})
        if map_name not in self.maps:
            path = Path(map_name)
            maps.load_xodr_text(path)  # raises MapError naming the available maps
            self.maps[path.stem] = str(path)
            map_name = path.stem
        self.observer_streams: set[int] = set()  # every episode's state stream id: all carry the current state
        self._opendrive: str | None = None  # the OpenDRIVE text of the last copy_opendrive_to_file
        self._pending: World | None = None  # a loaded map that becomes current on the next tick, see _switch
        self._pending_since = 0.0
        self._pending_asked = False  # whether a client asked for the episode since the map was loaded
        self._pending_watched = False  # whether a client subscribed to the loaded map's state stream
        self._watched_streams: set[int] = set()  # state streams that have had a subscriber
        self.world = self._new_world(map_name, maps.load_xodr_text(self.maps[map_name]), pr.WORLD_OBSERVER_STREAM)
        renderer_in_background(self.world.network, self.world.map_name)
        self._last_tick_wall = time.monotonic()
        self.traffic_managers: dict[int, tuple[str, int]] = {}
        self.on_tick: Callable[[list[tuple[int, bytes]]], None] = lambda messages: None
        # Runs a tick's sensor measurement: at once here; the transport defers it until the call that ticked
        # (tick_cue) has been answered, so that world.tick() returns while cameras render
        self.measure_sensors: Callable[[Callable[[], None]], None] = lambda measure: measure()
        self.answer_discarded = False  # whether the client discards the answer to the call being run (transport)
        self._refused_walker_states: set[tuple[int, int]] = set()  # (episode, actor) of logged refusals
        self.recorder = recorder.Recorder()  # CARLA's recorder and replayer (envs/server/recorder.py)

    def _new_world(self, name: str, xodr: str, observer_stream: int) -> World:
        if name == GENERATED_MAP_NAME:
            network = maps.RoadNetwork.from_xodr(xodr, name)
        else:
            network = maps.load_network(self.maps[name])
        world = World(network, name, xodr, episode_id=self._episode_counter, port=self.port,
                      observer_stream=observer_stream)
        self._episode_counter += 1
        self.observer_streams.add(observer_stream)
        # every client asks for the navigation file when it makes its Episode (get_world, load_world): built on a
        # thread of its own now (or read from the disk cache), the first one does not wait the 1-2 s of a build
        navigation.mesh_bytes(network, xodr, wait=False)
        return world

    def _switch(self, name: str, xodr: str, reset_settings: bool) -> None:
        """Load a map as a new episode that becomes current on the next tick after a client asked for the episode
        (`get_episode_info`), as CARLA's does once the level has loaded. CARLA 0.9.16's client, on load_world,
        drops its Episode (unsubscribing its state stream), asks for the episode, subscribes to the new stream and
        waits for the episode id to change; its new Episode, seeing the change, resets the client's Traffic
        Managers onto the new map. A state of the new episode that reached the old Episode first would reset them
        there instead, on a stream thread racing the Episode's destruction: the crash of load_world after
        get_trafficmanager()."""
        latest = self._pending or self.world
        pending = self._new_world(name, xodr, observer_stream=latest.next_stream_id)
        if not reset_settings:
            pending.settings = latest.settings
        pending.map_changed = (name, xodr) != (self.world.map_name, self.world.xodr)
        self._pending, self._pending_since = pending, time.monotonic()
        self._pending_asked = self._pending_watched = False

    def observer_subscribed(self, stream_id: int) -> bool:
        """A client subscribed to an episode's state stream (`transport`). True for the stream's first subscriber:
        a client that has just loaded a map and replaced its Episode (or a first client), whom the state it is sent
        now should tell that the map changed (see `_activate_pending`) even if the map became current first,
        after `SWITCH_AFTER_S` on a loaded machine."""
        if self._pending is not None and stream_id == self._pending.observer_stream:
            self._pending_watched = True
        first = stream_id not in self._watched_streams
        self._watched_streams.add(stream_id)
        return first

    def _activate_pending(self) -> None:
        """Make a loaded map current once a client has subscribed to its state stream, or after `SWITCH_AFTER_S`
        for a client that never does (an older client keeps its Episode and just waits for the id to change).
        The client's new Episode thus sees the episode id change on its own stream; and it has already been
        told that the map changed (in the state it was sent on subscribing), because the map-change flag that
        comes with the new id is read after the id, by which time the client's load_world may have returned and
        fetched a stale map."""
        if self._pending is None:
            return
        if not self._pending_watched and time.monotonic() - self._pending_since < SWITCH_AFTER_S:
            return
        self.world, self._pending = self._pending, None
        renderer_in_background(self.world.network, self.world.map_name)

    # ---------------------------------------------------------------------------------------- ticking
    def step(self) -> int:
        """Advance the world one step and publish its state and sensor data. Returns the new frame."""
        self._activate_pending()
        now = time.monotonic()
        fixed = self.world.settings.fixed_delta_seconds
        dt = fixed if fixed is not None else min(max(now - self._last_tick_wall, 1e-3), 0.1)
        self._last_tick_wall = now
        self.recorder.before_tick(self.world, dt)  # a replay moves its actors to this tick's poses
        output = self.world.tick(dt)
        self.recorder.after_tick(self.world, output.contacts, dt)  # a recording writes this tick's frame
        self.on_tick([output.state])  # sent before the sensors are measured (cameras render): see World.tick
        self.measure_sensors(lambda: self.on_tick(output.sensors()))
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
        """The current episode's id with the stream of the newest episode: while a loaded map waits for the next
        tick, the caller is a client replacing its Episode, which must see the id change on its new stream."""
        if self._pending is not None:
            self._pending_asked = True
        stream = (self._pending or self.world).observer_stream
        return [self.world.episode_id, [pr.stream_token(stream, self.port + 1)]]

    @call()
    def get_sensor_token(self, stream_id: int) -> list:
        if stream_id not in self.observer_streams and stream_id not in self.world.streams:
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

    # ------------------------------------------------------------------------------ walker navigation
    # CARLA's client runs walker navigation itself (Detour, as in CARLA) from the map's navigation mesh, which it
    # asks for as a required file of the folder "Nav" (0.9.16) or with get_navigation_mesh (later clients), and
    # keeps in its file cache under the file's name: the name carries the mesh's hash (envs/server/navigation.py).
    @call()
    def get_required_files(self, folder: str = "") -> list:
        """The map's navigation file for the folder "Nav" (or all folders: ""); no other files (the map comes whole
        with get_map_data); none on a map without sidewalks (the client then has no navigation). Every client asks
        this when it makes an Episode; the name is known without the mesh, which is built (or read from the
        machine's disk cache) only for a client that lacks the file in its own cache and asks for it
        (request_file). The map is the one the map calls describe (`_map_world`): a client that has just loaded a
        map builds its navigation before that map becomes current."""
        name = self._map_world().navigation_file if str(folder).strip("/").split("/")[-1] in ("", "Nav") else None
        return [name] if name is not None else []

    @call()
    def request_file(self, name: str) -> bytes:
        worlds = [self.world] + ([self._pending] if self._pending is not None else [])
        for world in worlds:
            if world.navigation_file is not None and str(name) == world.navigation_file:
                # no bytes if the build failed (logged): the client's navigation then fails to load, as on a map
                # without a mesh, rather than the client's Episode failing
                return world.navigation_mesh() or b""
        served = ", ".join(f"'{w.navigation_file}'" for w in worlds if w.navigation_file is not None)
        raise CarlaError(f"request_file: no file '{name}'; " + (f"the map's navigation file is {served}" if served else
                                                               f"map {self.world.map_name} has no sidewalks, so no "
                                                               "navigation file"))

    @call()
    def get_navigation_mesh(self) -> bytes:
        return self._map_world().navigation_mesh() or b""  # CARLA's answer on a map without a mesh: no bytes

    @call()
    def query_lights_state(self, client: str = "") -> list:
        return []  # served: no street lights for carla.LightManager (the scenery's lamps are not lights)

    # ------------------------------------------------------------------------------------------- maps
    def _map_world(self) -> World:
        """The world whose map the map calls describe: a loaded map's as soon as a client has asked for its
        episode. The client's new Episode may fetch and cache the map before the episode changes; it must get
        the map it is loading, which it would otherwise keep (CARLA refetches only on a map-change flag)."""
        return self._pending if self._pending is not None and self._pending_asked else self.world

    @call()
    def get_map_info(self) -> list:
        world = self._map_world()
        spawn_points = [pr.Transform(x, y, z, 0.0, yaw, 0.0).to_msg() for x, y, z, yaw in world.network.spawn_points()]
        return [f"Carla/Maps/{world.map_name}", spawn_points]

    @call()
    def get_map_data(self) -> str:
        return self._map_world().xodr

    @call()
    def get_available_maps(self) -> list:
        return [f"/Game/Carla/Maps/{name}" for name in self.maps]

    @call(void=True)
    def load_new_episode(self, map_name: str, reset_settings: bool = True, map_layers: int = 0xFFFF) -> None:
        name = _map_short_name(str(map_name)) or (self._pending or self.world).map_name  # reload_world sends ""
        if name == GENERATED_MAP_NAME:
            if self._opendrive is None:
                raise CarlaError(f"map '{map_name}': no OpenDRIVE was sent (generate_opendrive_world sends it)")
            self._switch(name, self._opendrive, bool(reset_settings))
            return
        if name not in self.maps:
            raise CarlaError(f"map '{map_name}' not found; available: {', '.join(self.maps)}")
        try:
            self._switch(name, maps.load_xodr_text(self.maps[name]), bool(reset_settings))
        except maps.MapError as exc:
            raise CarlaError(f"map '{name}' ({self.maps[name]}) could not be loaded: {exc}") from exc

    @call(void=True)
    def copy_opendrive_to_file(self, opendrive: str, parameters=None) -> None:
        try:
            maps.RoadNetwork.from_xodr(str(opendrive), GENERATED_MAP_NAME)
        except maps.MapError as exc:
            raise CarlaError(f"opendrive could not be correctly parsed: {exc}") from exc
        self._opendrive = str(opendrive)  # loaded by the load_new_episode("OpenDriveMap") that the client sends next

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
        actor = self.world.gone(int(actor_id)) or self.world.actor(int(actor_id))
        return self.world.actor_msg(actor)[3]

    @call(name="get_all_level_BBs")
    def get_all_level_bbs(self, label: int = ANY_LABEL) -> list:
        """The map's static scenery (buildings, trees, street lamps, traffic-light poles and heads: what the cameras
        draw besides the ground and the actors) with `label` (`carla.CityObjectLabel`; 255 is Any), in the world
        frame. The scene is shared with the cameras; it is built in the background when the map loads (a few seconds
        for a town), and a call before then waits for it."""
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
    def set_actor_dead(self, actor_id: int) -> None:
        self.world.set_dead(self.world.actor(int(actor_id)))

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


    # ---------------------------------------------------------------- recorder and replayer (recorder.py)
    @call()
    def start_recorder(self, name: str, additional_data: bool = False) -> str:
        try:
            return self.recorder.start(self.world, str(name), bool(additional_data))
        except (OSError, ValueError) as exc:
            raise CarlaError(str(exc)) from exc

    @call(void=True)
    def stop_recorder(self) -> None:
        self.recorder.stop()

    @call()
    def show_recorder_file_info(self, name: str, show_all: bool = False) -> str:
        return recorder.file_info(str(name), bool(show_all))

    @call()
    def show_recorder_collisions(self, name: str, type1, type2) -> str:
        return recorder.file_collisions(str(name), type1, type2)

    @call()
    def show_recorder_actors_blocked(self, name: str, min_time: float, min_distance: float) -> str:
        return recorder.file_blocked(str(name), pr.finite(min_time, "min_time"),
                                     pr.finite(min_distance, "min_distance"))

    @call()
    def replay_file(self, name: str, start: float, duration: float, follow_id: int, replay_sensors: bool = False,
                    offset=None) -> str:
        return self.recorder.replay(self.world, str(name), pr.finite(start, "start"), pr.finite(duration, "duration"),
                                    int(follow_id), bool(replay_sensors), offset,
                                    load_map=lambda map_name: self.load_new_episode(map_name, False))

    @call(void=True)
    def set_replayer_time_factor(self, factor: float) -> None:
        factor = pr.finite(factor, "time_factor")
        if factor < 0.0:  # the replay runs forwards only (0 holds it where it is)
            raise CarlaError(f"set_replayer_time_factor: time_factor is {factor}; give 0 or more (1 real time)")
        self.recorder.set_time_factor(factor)

    @call(void=True)
    def set_replayer_ignore_hero(self, ignore: bool) -> None:
        self.recorder.set_ignore_hero(bool(ignore))

    @call(void=True)
    def set_replayer_ignore_spectator(self, ignore: bool) -> None:
        self.recorder.set_ignore_spectator(bool(ignore))

    @call(void=True)
    def stop_replayer(self, keep_actors: bool) -> None:
        self.recorder.stop_replayer(self.world, bool(keep_actors))

    # ------------------------------------------------------------------------------------------- batch
    @call(raw=True)
    def apply_batch(self, commands, do_tick_cue: bool = False) -> list:
        """Run rpc::Command variants in order; answers a bare list of `Response<ActorId>`, one per command. A
        command that is refused has no effect: a spawn whose follow-up (`then`) is refused leaves no actor."""
        responses = []
        for command in commands:
            try:
                responses.append(pr.response(self._run_command(command[0])))
            except CarlaError as exc:
                if isinstance(exc, NotServed) and self.answer_discarded:
                    log.warning("%s", exc)  # apply_batch discards its answers: the log is all that shows this
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
            for follow_up in do_after:  # refused before anything is spawned
                self._check_command(follow_up[0][0], "SpawnActor(...).then")
            actor = self._spawn(description, transform, parent_id)
            try:
                for follow_up in do_after:
                    self._run_command(follow_up[0], future_actor=actor.id)
            except (CarlaError, TypeError, ValueError, KeyError, IndexError) as exc:
                self.world.destroy(actor.id)  # a refused follow-up leaves no actor behind
                kind = NotServed if isinstance(exc, NotServed) else CarlaError
                raise kind(f"apply_batch: SpawnActor of {actor.blueprint.id} undone: {exc}") from exc
            return actor.id
        self._check_command(index, "apply_batch")
        actor_id = int(fields[0]) or future_actor
        if index == BATCH_SET_AUTOPILOT:
            return self._set_autopilot(actor_id, bool(fields[1]))
        getattr(self, BATCH_COMMANDS[index])(actor_id, *fields[1:])
        return actor_id

    def apply_walker_state(self, actor_id: int, transform, speed) -> None:
        """Batch ApplyWalkerState: the pose and speed the client's walker navigation gives a walker each tick. The
        client sends these from its own navigation tick and never reads the answers, so a refused state (a NaN
        pose: the client's crowd gives one after a NaN max speed) is also logged, once per walker."""
        actor = self.world.actor(int(actor_id))
        try:
            self.world.apply_walker_state(actor, pr.Transform.from_msg(transform),
                                          pr.finite(speed, "speed"))
        except (ValueError, CarlaError) as exc:
            message = (f"ApplyWalkerState of actor {actor.id} ({actor.blueprint.id}) refused, it stays where it "
                       f"is: {exc}")
            key = (self.world.episode_id, actor.id)
            if key not in self._refused_walker_states:
                self._refused_walker_states.add(key)
                hint = (" (sent by the client's walker navigation: was the controller given a NaN or infinite max "
                        "speed?)") if isinstance(exc, ValueError) else ""
                log.warning("%s%s", message, hint)
            raise CarlaError(message) from exc

    def _check_command(self, index: int, where: str) -> None:
        if index in BATCH_COMMANDS:
            return
        name = BATCH_COMMAND_NAMES.get(index, f"command type {index}")
        if index == BATCH_SET_AUTOPILOT:
            if not self.answer_discarded:
                return
            raise not_served(f"{where}: SetAutopilot in apply_batch", "the client's Traffic Manager takes a vehicle "
                             "only from apply_batch_sync's answers; use apply_batch_sync or vehicle.set_autopilot")
        raise not_served(f"{where}: {name}", BATCH_NOT_SERVED.get(index, ""))

    def _set_autopilot(self, actor_id: int, enabled: bool) -> int:
        """Batch SetAutopilot, as CARLA's server: checks the vehicle and answers its id. The Traffic Manager is the
        client's (as in CARLA): apply_batch_sync hands it the vehicles whose SetAutopilot succeeded."""
        actor = self.world.actor(actor_id)
        if actor.kind != "vehicle":
            raise CarlaError(f"SetAutopilot: actor {actor_id} ({actor.blueprint.id}) is not a vehicle")
        return actor_id


BATCH_SPAWN = 0
BATCH_SET_AUTOPILOT = 16
# CARLA 0.9.16's rpc::Command variant names, by index (as the stock client sends them)
BATCH_COMMAND_NAMES = {
    0: "SpawnActor", 1: "DestroyActor", 2: "ApplyVehicleControl", 3: "ApplyVehicleAckermannControl",
    4: "ApplyWalkerControl", 5: "ApplyVehiclePhysicsControl", 6: "ApplyTransform", 7: "ApplyWalkerState",
    8: "ApplyTargetVelocity", 9: "ApplyTargetAngularVelocity", 10: "ApplyImpulse", 11: "ApplyForce",
    12: "ApplyAngularImpulse", 13: "ApplyTorque", 14: "SetSimulatePhysics", 15: "SetEnableGravity",
    16: "SetAutopilot", 17: "ShowDebugTelemetry", 18: "SetVehicleLightState",
}
# Batch commands not served, and why (the error names the command)
BATCH_NOT_SERVED = {
    3: "vehicles take throttle, steer and brake (VehicleControl); there is no Ackermann controller",
    5: "vehicle physics come from the blueprint table; there is no physics control to apply",
    10: "bodies move kinematically: there are no forces or impulses", 11: "bodies move kinematically: there are "
    "no forces or impulses", 12: "bodies move kinematically: there are no forces or impulses",
    13: "bodies move kinematically: there are no forces or impulses",
    17: "there is no debug drawing",
}
# rpc::Command variant index -> the RPC method with the same arguments (actor id first)
BATCH_COMMANDS = {
    1: "destroy_actor", 2: "apply_control_to_vehicle", 4: "apply_control_to_walker", 6: "set_actor_transform",
    7: "apply_walker_state",
    8: "set_actor_target_velocity", 9: "set_actor_target_angular_velocity", 14: "set_actor_simulate_physics",
    15: "set_actor_enable_gravity", 18: "set_vehicle_light_state", 20: "set_traffic_light_state",
    21: "set_actor_location",
}
