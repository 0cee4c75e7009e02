"""`DrivingEnv`: closed-loop driving through eight cameras, over the CARLA client API.

Each `step(action)` applies `[steer, throttle, brake]` to the ego, ticks the synchronous world once (20 Hz by
default), runs the scenario's behaviours, judges the tick with the Leaderboard criteria and returns the
frame-matched images of every camera of the rig.

Reward, per step: `progress x (route completion gained, in percentage points)` minus, for each new
infraction, `infraction_scale x (1 - f)` where f is the factor the infraction multiplies the Leaderboard 2.0
infraction penalty by (`scenarios/metrics.py`): its coefficient, or for outside-route-lanes and a route
quarter's minimum speed the factor of their percentage. An infraction that ends the route (deviation,
blocked, timeout) has no factor and costs the full `infraction_scale`. So an episode's return tracks the
Leaderboard's driving score on a 0-100 scale.

`terminated`: leaving the route by more than 30 m, or reaching the goal. A collision is counted and the route
goes on, as in the Leaderboard 2.0; with `end_on_collision: true` (an option for training) the first collision
also terminates the episode. `truncated`: the route timeout or being blocked for 180 s. A dead embedded server
ends the episode with `info["failure"]` set and is restarted by the next `reset()`; a dead remote server raises
`ServerDied` naming its host and port. An error raised by the scenario hook while the simulator still answers is
the scenario's: `ScenarioFailed`, naming it.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import carla
import gymnasium as gym
import numpy as np
from gymnasium import spaces
from omegaconf import DictConfig

from scenarios.behaviours import ActorRunner
from scenarios.compile import default_timeout_s
from scenarios.criteria import ENDS_ROUTE, EpisodeCriteria, Infraction
from scenarios.metrics import infraction_penalty
from scenarios.route import RoadOption, Route, route_from_length

from .birdseye import birdseye_view, mosaic
from .budget import validate_action
from .config import load_conf
from .rig import Rig, RigSensors, load_rig, spawn_rig
from .server.launch import ServerProcess, ServerStartError, launch, ping

DEFAULT_CONFIG = "env/default.yaml"  # under conf/
SPAWN_LIFT_M = 0.3  # spawn slightly above the road, as CARLA's spawn points do
COLLISION_KINDS = ("collisions_pedestrian", "collisions_vehicle", "collisions_layout")


class ServerDied(RuntimeError):
    """The simulator stopped answering; the message names its host and port."""


class ScenarioFailed(RuntimeError):
    """The scenario hook raised while the simulator still answered: a fault of the scenario, not the server."""


def infraction_factor(infraction: Infraction, outside_lanes_pct: float,
                      min_speed_pct_per_quarter: Sequence[float]) -> float:
    """What `infraction` multiplies the Leaderboard 2.0 infraction penalty by, from `scenarios/metrics.py`
    (0 for one that ends the route: it has no factor, and the reward charges it in full)."""
    if infraction.kind in ENDS_ROUTE:
        return 0.0
    # These two are recorded when the route closes; the metric scales them by the route's percentages.
    if infraction.kind == "outside_route_lanes":
        return infraction_penalty((), outside_lanes_pct=outside_lanes_pct)
    if infraction.kind == "min_speed_infractions":
        quarter = int(infraction.detail["quarter"])
        return infraction_penalty((), min_speed_pct_per_quarter=[min_speed_pct_per_quarter[quarter]])
    return infraction_penalty([infraction.kind])


def _failing_behaviour(exc: BaseException) -> str | None:
    """The scenario actor and behaviour step that raised `exc`. A hook's tick runs every actor's behaviour,
    so the traceback (its innermost `ActorRunner` frame) is what tells which one failed."""
    runner = None
    trace = exc.__traceback__
    while trace is not None:
        candidate = trace.tb_frame.f_locals.get("self")
        if isinstance(candidate, ActorRunner):
            runner = candidate
        trace = trace.tb_next
    if runner is None:
        return None
    step = runner.step
    if step is None:
        return f"actor '{runner.spec.id}'"
    named = f" '{step.name}'" if step.name else ""
    return f"actor '{runner.spec.id}', behaviour step {runner.index}{named} ({step.primitive})"


@dataclass
class Privileged:
    """What a privileged expert may read: the live CARLA handles of the current episode."""

    client: carla.Client
    world: carla.World
    map: carla.Map
    ego: carla.Vehicle
    route: Route
    criteria: EpisodeCriteria
    scenario: object | None  # the episode's ScenarioHook (e.g. for its speed limit), None without one


def env_config(cfg: DictConfig | dict | None = None, **overrides: Any) -> DictConfig:
    """`conf/env/default.yaml` merged with `cfg` and keyword overrides (dotted keys allowed)."""
    return load_conf(DEFAULT_CONFIG, cfg, **overrides)


class DrivingEnv(gym.Env):
    """`render_mode="rgb_array"` makes `render()` return the latest cameras in a mosaic beside a bird's-eye view
    (an RGB uint8 array); with the default `None`, as in Gymnasium, nothing is rendered."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(self, cfg: DictConfig | dict | None = None, render_mode: str | None = None, **overrides: Any):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"DrivingEnv: render_mode {render_mode!r} is not one of "
                             f"{self.metadata['render_modes']} (or None)")
        self.cfg = env_config(cfg, **overrides)
        self.render_mode = render_mode
        self.metadata = {**self.metadata, "render_fps": round(1.0 / float(self.cfg.fixed_delta_seconds))}
        self.fixed_delta_seconds = float(self.cfg.fixed_delta_seconds)
        # Read once: a DictConfig lookup costs tens of microseconds, and every step needs these.
        self._progress_weight = float(self.cfg.reward.progress)
        self._infraction_scale = float(self.cfg.reward.infraction_scale)
        self._sensor_timeout_s = float(self.cfg.sensor_timeout_s)
        self._target_ahead_m = float(self.cfg.target_ahead_m)
        self._end_on_collision = bool(self.cfg.end_on_collision)
        self.rig: Rig = load_rig(self.cfg.rig, image_size_x=self.cfg.image_size_x, image_size_y=self.cfg.image_size_y)
        n, h, w = len(self.rig.cameras), self.rig.image_size_y, self.rig.image_size_x
        self.observation_space = spaces.Dict({
            "cameras": spaces.Box(0, 255, (n, h, w, 3), np.uint8),
            "speed": spaces.Box(0.0, 100.0, (1,), np.float32),
            "target_point": spaces.Box(-200.0, 200.0, (2,), np.float32),
            # the route's RoadOption: LEFT 1, RIGHT 2, STRAIGHT 3, LANEFOLLOW 4, CHANGELANELEFT 5, CHANGELANERIGHT 6
            "command": spaces.Discrete(len(RoadOption), start=int(min(RoadOption))),
        })
        self.action_space = spaces.Box(np.array([-1.0, 0.0, 0.0], np.float32), np.array([1.0, 1.0, 1.0], np.float32))
        self._server: ServerProcess | None = None
        self._client: carla.Client | None = None
        self._world: carla.World | None = None
        self._map_name: str | None = None
        self._ego: carla.Vehicle | None = None
        self._cameras: RigSensors | None = None
        self._criteria: EpisodeCriteria | None = None
        self._scenario = None
        self._route: Route | None = None
        self._last_obs: dict | None = None
        self._last_completion = 0.0
        self.frame = 0  # the world frame of the latest observation
        self._steps = 0  # ticks since reset

    # ------------------------------------------------------------------------------------------ server
    @property
    def endpoint(self) -> str:
        if self._server is not None:
            return f"{self._server.host}:{self._server.port} (embedded, pid {self._server.pid})"
        return f"{self.cfg.server.host}:{self.cfg.server.port}"

    def _connect(self, map_name: str) -> None:
        if self._server is not None and not self._server.alive():
            self._drop_connection()
        if self._client is None:
            if self.cfg.server.host is None:
                self._server = launch(map_name)
                self._client = carla.Client(self._server.host, self._server.port)
            else:
                self._client = carla.Client(self.cfg.server.host, int(self.cfg.server.port))
            self._client.set_timeout(float(self.cfg.server.timeout_s))
            self._world = self._client.get_world()
            self._map_name = self._world.get_map().name.split("/")[-1]
        wanted = Path(map_name).stem if map_name.endswith(".xodr") else map_name
        if wanted != self._map_name:
            if map_name.endswith(".xodr"):
                self._world = self._client.generate_opendrive_world(Path(map_name).read_text())
            else:
                self._world = self._client.load_world(map_name)
            self._map_name = wanted
        settings = self._world.get_settings()
        settings.synchronous_mode, settings.fixed_delta_seconds = True, self.fixed_delta_seconds
        self._world.apply_settings(settings)

    def simulator_answers(self) -> bool:
        """Whether the simulator still answers an RPC on a fresh connection (so an error was not its death)."""
        if self._server is not None:
            if not self._server.alive():
                return False
            host, port = self._server.host, self._server.port
        elif self.cfg.server.host is not None:
            host, port = self.cfg.server.host, int(self.cfg.server.port)
        else:
            return False  # an embedded simulator that is not running
        try:
            ping(host, port, timeout=float(self.cfg.server.timeout_s))
            return True
        except OSError:
            return False

    def _server_died(self, exc: BaseException) -> ServerDied:
        return ServerDied(f"the CARLA server at {self.endpoint} stopped answering ({exc}); "
                          "check that it is running, then reset")

    def _drop_connection(self) -> None:
        """Forget a dead server (stopping an embedded one by pid): the next reset connects (or launches) anew."""
        if self._server is not None:
            self._server.stop()
        self._server = self._client = self._world = self._map_name = None
        self._ego = self._cameras = self._criteria = self._scenario = None

    def _hook(self, stage: str, call: Callable, *args: Any) -> Any:
        """Call the scenario hook's `stage`. What it raises while the simulator still answers is the scenario's
        fault: `ScenarioFailed`, and the server is left running. Otherwise the error is the simulator's."""
        try:
            return call(*args)
        except Exception as exc:
            if not self.simulator_answers():
                raise
            scenario = self._scenario
            name = getattr(scenario, "name", type(scenario).__name__)
            file = getattr(getattr(scenario, "spec", None), "file", None)
            behaviour = _failing_behaviour(exc)
            raise ScenarioFailed(
                f"scenario '{name}'{f' ({file})' if file else ''} failed in its {stage}"
                f"{f' at {behaviour}' if behaviour else ''}: {type(exc).__name__}: {exc} "
                f"(the simulator at {self.endpoint} is fine; fix the scenario, then reset)") from exc

    # ------------------------------------------------------------------------------------------- reset
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        try:
            self._cleanup()
            self._scenario = (options or {}).get("scenario")
            self._start_episode()
        except (ServerDied, ScenarioFailed, ServerStartError):
            raise
        except (RuntimeError, TimeoutError) as exc:
            if self.simulator_answers():
                raise  # the server is fine; the request was not (e.g. an unknown map, an occupied start)
            died = self._server_died(exc)
            self._drop_connection()
            raise died from exc
        return self._last_obs, self._info([])

    def _start_episode(self) -> None:
        map_name = self._scenario.map_name if self._scenario is not None else self.cfg.map
        self._connect(map_name)
        world, world_map = self._world, self._world.get_map()
        world.reset_all_traffic_lights()
        weather = self._scenario.weather() if self._scenario is not None else None
        world.set_weather(weather or carla.WeatherParameters.ClearNoon)
        self._route = self._plan_route(world_map)
        self._ego = self._spawn_ego(world)
        self._cameras = spawn_rig(world, self._ego, self.rig)
        timeout = self._scenario.timeout_s if self._scenario is not None else \
            default_timeout_s(self._route.length, float(self.cfg.timeout_per_m_s))
        self._criteria = EpisodeCriteria(world, self._ego, self._route, timeout)
        # The client subscribes to new sensors asynchronously: tick the lone ego until every camera streams,
        # then restart the lights, so that the episode proper starts from the same state whatever it took.
        self._cameras.warm_up(world)
        world.reset_all_traffic_lights()
        if self._scenario is not None:
            self._hook("setup", self._scenario.setup, self._client, world, self._ego, self._route)
        self._steps = 0
        for _ in range(int(self.cfg.warmup_ticks)):
            self._tick()
        self._last_completion = self._criteria.route_completion

    def _plan_route(self, world_map: carla.Map) -> Route:
        if self._scenario is not None:
            return self._scenario.plan_route(world_map)
        points = world_map.get_spawn_points()
        start = points[int(self.np_random.integers(len(points)))]
        return route_from_length(world_map, start.location, float(self.cfg.route_length_m),
                                 seed=int(self.np_random.integers(2**31)))

    def _spawn_ego(self, world: carla.World) -> carla.Vehicle:
        blueprint_id = self._scenario.ego_blueprint() if self._scenario is not None else self.cfg.ego_blueprint
        blueprint = world.get_blueprint_library().find(blueprint_id)
        blueprint.set_attribute("role_name", "hero")
        start = self._route.start
        transform = carla.Transform(start.location + carla.Location(z=SPAWN_LIFT_M), start.rotation)
        ego = world.try_spawn_actor(blueprint, transform)
        if ego is None:
            raise RuntimeError(f"the ego's start {start.location} is occupied; choose another route start")
        return ego

    # -------------------------------------------------------------------------------------------- step
    def step(self, action):
        steer, throttle, brake = validate_action(action, "DrivingEnv.step")
        if self._ego is None:
            raise gym.error.ResetNeeded("DrivingEnv.step: no episode is running (the last one failed or none "
                                        "was started); call reset()")
        criteria = self._criteria
        try:
            self._ego.apply_control(carla.VehicleControl(throttle=float(throttle), steer=float(steer),
                                                         brake=float(brake)))
            snapshot, new = self._tick()
            collided = self._end_on_collision and any(i.kind in COLLISION_KINDS for i in new)
            if collided:
                # End the route now, so that its closing infractions (outside lanes, minimum speed) are charged
                # and reported with this step, as when the criteria end the route themselves.
                before = len(criteria.infractions)
                criteria.finish(snapshot, "collision")
                new = new + criteria.infractions[before:]
        except ScenarioFailed:
            raise
        except (RuntimeError, TimeoutError) as exc:
            return self._failed_step(exc)
        completion = criteria.route_completion
        reward = self._progress_weight * (completion - self._last_completion)
        reward -= self._infraction_scale * sum(
            1.0 - infraction_factor(i, criteria.outside_lanes_pct, criteria.min_speed_pct_per_quarter) for i in new)
        self._last_completion = completion
        terminated = collided or criteria.done in ("completed", "route deviation")
        truncated = not terminated and criteria.done in ("route timeout", "agent blocked")
        return self._last_obs, reward, terminated, truncated, self._info(new)

    def _tick(self) -> tuple[carla.WorldSnapshot, list[Infraction]]:
        frame = self._world.tick()
        snapshot = self._world.get_snapshot()
        if snapshot.frame != frame:
            raise RuntimeError(f"world.tick() returned frame {frame} but the snapshot is frame {snapshot.frame}")
        # Images first: waiting for this frame's camera streams also gives the collision stream time to arrive.
        images = self._cameras.read(frame, timeout=self._sensor_timeout_s)
        if self._scenario is not None:
            self._hook("tick", self._scenario.tick, self._world, self._ego, snapshot)
        new = self._criteria.update(snapshot)
        self.frame = frame
        self._steps += 1
        self._last_obs = self._observation(snapshot, images)
        return snapshot, new

    def _failed_step(self, exc: Exception):
        """A failed tick: a remote server raises `ServerDied` (the next reset reconnects or says it is gone);
        an embedded one is stopped and the episode ends with the last observation and `info["failure"]`."""
        if self._server is None:
            raise self._server_died(exc) from exc
        info = {**self._info([]), "done_reason": "simulator failure",
                "failure": f"embedded simulator at {self.endpoint} failed: {exc}"}
        self._drop_connection()
        return self._last_obs, 0.0, True, False, info

    def _observation(self, snapshot: carla.WorldSnapshot, images: dict[str, np.ndarray]) -> dict:
        state = snapshot.find(self._ego.id)
        transform = state.get_transform()
        s = self._criteria.route_s  # the criteria have just projected the ego onto the route
        target = self._route.target_point(s, self._target_ahead_m).location
        yaw = math.radians(transform.rotation.yaw)
        dx, dy = target.x - transform.location.x, target.y - transform.location.y
        ego_frame = (dx * math.cos(yaw) + dy * math.sin(yaw), -dx * math.sin(yaw) + dy * math.cos(yaw))
        cameras = np.empty(self.observation_space["cameras"].shape, np.uint8)
        for rgb, name in zip(cameras, self.rig.names):
            # BGRA -> RGB a channel at a time: 4x faster than one negative-stride copy.
            bgra = images[name]
            rgb[..., 0], rgb[..., 1], rgb[..., 2] = bgra[..., 2], bgra[..., 1], bgra[..., 0]
        return {
            "cameras": cameras,
            "speed": np.array([state.get_velocity().length()], np.float32),
            "target_point": np.clip(np.array(ego_frame, np.float32), -200.0, 200.0),
            "command": int(self._route.command_at(s)),
        }

    def _info(self, new: list) -> dict:
        criteria = self._criteria
        return {
            # ticks since reset; the world frame is `self.frame`: it keeps counting across episodes, so in `info`
            # it would make same-seed episodes differ (Gymnasium's reset determinism check)
            "step": self._steps,
            "sim_time": self._steps * self.fixed_delta_seconds,
            "route_completion": criteria.route_completion,
            "route_length_m": self._route.length,
            "infractions": [i.to_dict() for i in criteria.infractions],
            "new_infractions": [i.to_dict() for i in new],
            "ego_speed": float(self._last_obs["speed"][0]),
            "done_reason": criteria.done,
            "failure": None,
        }

    # ----------------------------------------------------------------------------------------- render
    def render(self) -> np.ndarray | None:
        """`rgb_array`: the latest observation's images in a mosaic (two rows) beside a bird's-eye view of the
        ego's surroundings; after a simulator failure the bird's-eye panel is blank (that world is gone).
        Without a render mode: None, with Gymnasium's warning."""
        if self.render_mode is None:
            gym.logger.warn("DrivingEnv.render() without a render mode: make the env with render_mode='rgb_array'")
            return None
        if self._last_obs is None:
            raise gym.error.ResetNeeded("DrivingEnv.render: nothing to show before the first reset()")
        cameras = self._last_obs["cameras"]
        columns = math.ceil(len(cameras) / 2)
        side = math.ceil(len(cameras) / columns) * cameras.shape[1]
        if self._world is not None and self._ego is not None:
            bev = birdseye_view(self._world, self._ego, size=side, route=self._route)
        else:
            bev = np.zeros((side, side, 3), np.uint8)
        return mosaic(cameras, self.rig.names, bev, columns)

    @property
    def privileged(self) -> Privileged:
        return Privileged(self._client, self._world, self._world.get_map(), self._ego, self._route, self._criteria,
                          self._scenario)

    # ---------------------------------------------------------------------------------------- clean-up
    def _cleanup(self) -> None:
        """CARLA's order: stop and destroy sensors, then the scenario's actors, then the ego. A dead embedded
        server is forgotten (the next connect starts another); a dead remote one raises `ServerDied`."""
        if self._world is None:
            return
        scenario_failed = None
        try:
            if self._cameras is not None:
                self._cameras.destroy()
            if self._criteria is not None:
                self._criteria.destroy()
            if self._scenario is not None:
                try:
                    self._hook("cleanup", self._scenario.cleanup, self._client)
                except ScenarioFailed as exc:
                    scenario_failed = exc  # the ego still goes, then the scenario's fault is reported
            if self._ego is not None and self._ego.is_alive:
                self._ego.destroy()
        except (RuntimeError, TimeoutError) as exc:
            if self.simulator_answers():
                raise
            if self._server is None:
                died = self._server_died(exc)
                self._drop_connection()
                raise died from exc
            self._drop_connection()
        self._cameras = self._criteria = self._ego = self._scenario = None
        if scenario_failed is not None:
            raise scenario_failed

    def close(self) -> None:
        try:
            self._cleanup()
            if self._world is not None:
                settings = self._world.get_settings()
                settings.synchronous_mode, settings.fixed_delta_seconds = False, None
                self._world.apply_settings(settings)
        except ScenarioFailed:
            raise  # after the finally below: a scenario's fault is worth hearing about even when closing
        except RuntimeError:
            pass  # the server is gone already; nothing left to restore
        finally:
            if self._server is not None:
                self._server.stop()
            self._server = self._client = self._world = None
