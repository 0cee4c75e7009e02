"""The privileged expert: a rule-based driver that reads the world through the CARLA client API.

It follows the route with pure pursuit and holds a speed with the shared controllers (`control`),
and every step takes the lowest of these speed wishes:
  * the route's speed limit;
  * an IDM gap to the nearest obstacle in its corridor: every vehicle, walker and prop is forecast at
    constant velocity over `horizon_s`, and one whose forecast enters the corridor ahead counts, at the
    distance where it does (so a walker stepping out is braked for before it reaches the lane);
  * a stop before a red light (or a yellow one it can still stop for) found on the route ahead.
A static obstacle blocking the lane is passed in the neighbouring lane of the same direction when that lane
is clear from `clear_behind_m` behind to `clear_ahead_m` ahead of the obstacle; the path returns after it.
It is the reference that proves a scenario solvable and the teacher that labels recorded logs: after each
`act` its `plan` says what it meant (its path ahead as waypoints in the ego frame, the speed it wants, and
whether and why it brakes: the hazard actor and kind, the state of the light ahead).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import carla
import numpy as np

from control import IDM, SpeedController, pure_pursuit
from envs.budget import Footprint
from scenarios.lights import LightIndex

KMH = 1.0 / 3.6
PLAN_SPACING_M = 2.0  # the plan's waypoints lie every 2 m along the expert's path ahead of the ego
PLAN_WAYPOINTS = 8  # to 16 m: beyond pure pursuit's lookahead at the library's speed limits


@dataclass(frozen=True)
class Plan:
    """What the expert meant on its last step: the labels a learner imitates."""

    waypoints: np.ndarray  # (PLAN_WAYPOINTS, 2) metres in the ego frame (x forward, y right), along its path
    target_speed: float  # m/s it wants to drive now
    brake: bool  # it slows down for a hazard or a light, or is held still by one (not for the speed limit)
    hazard_kind: str  # "" / "vehicle" / "walker" / "static" / "red_light" / "yellow_light"
    hazard_actor: int  # the hazard's actor id (the light's for a light), -1 for none
    light_state: str  # the state of the next light on its path: "Red", "Yellow", "Green" or ""


@dataclass(frozen=True)
class ExpertConfig:
    speed_limit_kmh: float = 40.0  # without a scenario; a scenario's `ego.speed_limit` takes precedence
    horizon_s: float = 3.0  # how far ahead obstacles are forecast
    forecast_step_s: float = 0.2
    corridor_margin_m: float = 0.4  # added to both half-widths
    clear_margin_m: float = 3.0  # the ego must clear a conflict point by this much to ignore a late entrant
    look_ahead_m: float = 45.0  # obstacles and lights are searched this far along the path
    light_margin_m: float = 2.0  # stop this far before a red light's trigger volume
    yellow_decel: float = 4.0  # m/s^2: stop for a yellow light only if this suffices
    stopped_mps: float = 0.5  # an obstacle slower than this is static (candidate for a lane change)
    pass_within_m: float = 25.0  # consider passing a static obstacle closer than this
    clear_behind_m: float = 25.0
    clear_ahead_m: float = 25.0
    return_after_m: float = 12.0  # back into the route's lane this far past the obstacle
    shift_ramp_m: float = 14.0  # the lateral move is spread over this distance
    idm_headway_s: float = 1.2
    idm_min_gap_m: float = 3.0


class Expert:
    """`reset()`, `act(obs) -> [steer, throttle, brake]`, `footprint()`; reads `env.unwrapped.privileged`."""

    def __init__(self, env, cfg: ExpertConfig | None = None) -> None:
        self.env, self.cfg = env, cfg or ExpertConfig()
        self.idm = IDM(time_headway=self.cfg.idm_headway_s, min_gap=self.cfg.idm_min_gap_m, comfort_decel=4.0)
        self.speed_control = SpeedController()
        self._route_id: int | None = None  # the first act() of an episode resets the expert
        self.plan: Plan | None = None

    def reset(self) -> None:
        """Call after `env.reset()`: takes the episode scenario's speed limit when it has one."""
        scenario = self.env.unwrapped.privileged.scenario
        self.speed_limit = getattr(scenario, "speed_limit_kmh", self.cfg.speed_limit_kmh) * KMH
        self.speed_control.reset()
        self._s = 0.0
        self._shift = 0.0  # lateral offset of the path from the route (m, + right), while passing
        self._shift_from = 0.0  # route distance at which the move into the other lane began
        self._shift_until = -math.inf  # route distance at which the path returns to the route's lane
        self._lights: LightIndex | None = None
        self._bodies: dict[int, tuple[float, float, str]] = {}  # id -> (half length, half width, kind)
        self._route_id: int | None = None

    def footprint(self) -> Footprint:
        return Footprint.privileged_baseline()

    # ------------------------------------------------------------------------------------------- acting
    def act(self, obs) -> np.ndarray:
        priv = self.env.unwrapped.privileged
        world, ego, route = priv.world, priv.ego, priv.route
        if self._route_id != id(route):  # a new episode: index its lights and bodies once
            self.reset()
            self._route_id = id(route)
            self._lights = LightIndex(world)
            self._bodies = {a.id: (a.bounding_box.extent.x, a.bounding_box.extent.y, a.type_id.split(".")[0])
                            for a in world.get_actors() if a.type_id.split(".")[0] in ("vehicle", "walker", "static")}
        snapshot = world.get_snapshot()
        state = snapshot.find(ego.id)
        transform, velocity = state.get_transform(), state.get_velocity()
        x, y, speed = transform.location.x, transform.location.y, math.hypot(velocity.x, velocity.y)
        self._s, _ = route.project(transform.location, near_s=self._s)
        ego_len, ego_width, _ = self._bodies[ego.id]

        path, path_s = self._path(route)
        obstacle = self._nearest_obstacle(snapshot, ego.id, path, path_s, ego_len, ego_width, speed)
        if obstacle is not None:
            self._maybe_pass(priv.map, route, obstacle, snapshot, ego.id, speed)
            path, path_s = self._path(route)
            obstacle = self._nearest_obstacle(snapshot, ego.id, path, path_s, ego_len, ego_width, speed)

        target = self.speed_limit
        free = accel = self.idm.accel(speed, target)
        hazard_kind, hazard_actor = "", -1
        if obstacle is not None:
            gap, their_speed, actor_id = obstacle
            accel = min(accel, self.idm.accel(speed, target, gap - ego_len, speed - their_speed))
            if accel < free:
                hazard_kind, hazard_actor = self._bodies[actor_id][2], actor_id
        light, stop_at = self._light_stop(path, path_s, speed)
        if stop_at is not None:
            for_light = self.idm.accel(speed, target, max(stop_at - ego_len, 0.0), speed)
            if for_light < accel:
                accel = for_light
                hazard_kind, hazard_actor = f"{str(light.state).lower()}_light", light.id
        wanted = float(np.clip(speed + accel * 0.5, 0.0, target))
        throttle, brake = self.speed_control.control(speed, wanted)
        if accel < -self.idm.comfort_decel:  # an emergency: brake as hard as asked, at once
            throttle, brake = 0.0, float(np.clip(-accel / 8.0, brake, 1.0))
        steer = pure_pursuit(x, y, transform.rotation.yaw, speed, path, 1.2 * ego_len)
        # braking for the hazard: decelerating because of it, or held (nearly) still by it, e.g. at a red light
        slowing = bool(hazard_kind) and (accel < -0.5 or wanted < 1.0)
        self.plan = Plan(self._ego_frame_path(path, path_s, x, y, transform.rotation.yaw), wanted, slowing,
                         hazard_kind if slowing else "", hazard_actor if slowing else -1,
                         str(light.state) if light is not None else "")
        return np.array([steer, throttle, brake], dtype=np.float32)

    def _ego_frame_path(self, path: np.ndarray, path_s: np.ndarray, x: float, y: float, yaw_deg: float) -> np.ndarray:
        """The path's points every PLAN_SPACING_M ahead of the ego's route position, in the ego frame."""
        at = self._s + PLAN_SPACING_M * np.arange(1, PLAN_WAYPOINTS + 1)
        px, py = np.interp(at, path_s, path[:, 0]), np.interp(at, path_s, path[:, 1])
        yaw = math.radians(yaw_deg)
        dx, dy = px - x, py - y
        return np.stack([dx * math.cos(yaw) + dy * math.sin(yaw), -dx * math.sin(yaw) + dy * math.cos(yaw)],
                        axis=1).astype(np.float32)

    # --------------------------------------------------------------------------------------------- path
    def _path(self, route) -> tuple[np.ndarray, np.ndarray]:
        """Route points from just behind the ego to `look_ahead_m` ahead, shifted while passing."""
        first, last = route.index_at(self._s - 2.0), route.index_at(self._s + self.cfg.look_ahead_m)
        xy, s, yaw = route.xy[first:last + 1], route.s[first:last + 1], route.yaw[first:last + 1]
        if self._shift_until > self._s:
            ramp_in = np.clip((s - self._shift_from) / self.cfg.shift_ramp_m, 0.0, 1.0)
            ramp_out = np.clip((self._shift_until - s) / self.cfg.shift_ramp_m, 0.0, 1.0)
            offset = self._shift * np.minimum(ramp_in, ramp_out)
            xy = xy + offset[:, None] * np.stack([-np.sin(yaw), np.cos(yaw)], axis=1)
        return xy, s

    # ------------------------------------------------------------------------------------------ hazards
    def _nearest_obstacle(self, snapshot, ego_id: int, path: np.ndarray, path_s: np.ndarray,
                          ego_len: float, ego_width: float, speed: float) -> tuple[float, float, int] | None:
        """(route distance ahead to where the nearest obstacle meets the corridor, its speed along the path,
        its id) over every forecast step, or None."""
        best = None
        times = np.arange(0.0, self.cfg.horizon_s + 1e-9, self.cfg.forecast_step_s)
        seg = np.diff(path, axis=0)
        heading = np.arctan2(seg[:, 1], seg[:, 0])
        heading = np.append(heading, heading[-1])
        for actor_id, (half_len, half_width, kind) in self._bodies.items():
            if actor_id == ego_id:
                continue
            state = snapshot.find(actor_id)
            if state is None:
                continue
            t = state.get_transform()
            v = state.get_velocity()
            if kind == "static" or (abs(v.x) < 0.05 and abs(v.y) < 0.05):
                future = np.array([[t.location.x, t.location.y]])
            else:
                future = np.array([t.location.x, t.location.y]) + times[:, None] * np.array([v.x, v.y])
            d = np.hypot(future[:, None, 0] - path[None, :, 0], future[:, None, 1] - path[None, :, 1])
            k = np.argmin(d, axis=1)  # nearest path point of each forecast
            rel_yaw = math.radians(t.rotation.yaw) - heading[k]
            reach = np.abs(half_len * np.sin(rel_yaw)) + np.abs(half_width * np.cos(rel_yaw))
            inside = d[np.arange(len(k)), k] <= ego_width + reach + self.cfg.corridor_margin_m
            ahead = path_s[k] - self._s
            # A forecast that enters the corridor only after the ego, at its speed, has cleared that point is
            # no conflict: braking for it would stop the ego in the obstacle's way.
            clears_at = (ahead + ego_len + half_len + self.cfg.clear_margin_m) / max(speed, 0.1)
            hits = np.flatnonzero(inside & (ahead > 0.0) & (times[:len(k)] <= clears_at))
            if len(hits) == 0:
                continue
            along = float(np.min(ahead[hits]) - np.abs(half_len * np.cos(rel_yaw[hits[0]])))
            their_speed = v.x * math.cos(heading[k[hits[0]]]) + v.y * math.sin(heading[k[hits[0]]])
            if kind == "walker" or hits[0] > 0:
                their_speed = min(their_speed, 0.0)  # a crossing actor does not clear the lane ahead of us
            if best is None or along < best[0]:
                best = (along, float(their_speed), actor_id)
        return best

    def _light_stop(self, path: np.ndarray, path_s: np.ndarray, speed: float) -> tuple[Any, float | None]:
        """(the next light on the path or None, the distance to stop before it when it is red or a stoppable
        yellow, else None)."""
        ahead = path_s >= self._s
        index, light = self._lights.first_on_path(path[ahead])
        if light is None:
            return None, None
        state = light.state
        if state == carla.TrafficLightState.Green:
            return light, None
        distance = max(float(path_s[ahead][index] - self._s) - self.cfg.light_margin_m, 0.0)
        if state == carla.TrafficLightState.Yellow and speed * speed > 2.0 * self.cfg.yellow_decel * distance:
            return light, None  # too close to stop comfortably: clear the junction
        return light, distance

    # ---------------------------------------------------------------------------------------- passing
    def _maybe_pass(self, world_map: carla.Map, route, obstacle, snapshot, ego_id: int, speed: float) -> None:
        gap, their_speed, actor_id = obstacle
        if gap > self.cfg.pass_within_m or self._bodies[actor_id][2] == "walker":
            return
        state = snapshot.find(actor_id)
        if state.get_velocity().length() > self.cfg.stopped_mps:
            return
        here = world_map.get_waypoint(route.point_at(self._s + gap).location, project_to_road=True,
                                      lane_type=carla.LaneType.Driving)
        left = here.get_left_lane()
        if left is None or left.lane_type != carla.LaneType.Driving or left.lane_id * here.lane_id <= 0:
            return
        lo, hi = self._s + gap - self.cfg.clear_behind_m, self._s + gap + self.cfg.clear_ahead_m
        width = left.lane_width
        for other_id, (_half_len, half_width, _kind) in self._bodies.items():
            if other_id in (ego_id, actor_id):
                continue
            other = snapshot.find(other_id)
            if other is None:
                continue
            s, lateral = route.project(other.get_transform().location, near_s=self._s + gap)
            if lo <= s <= hi and -1.5 * width <= lateral <= -0.5 * width + half_width:
                if other.get_velocity().length() > self.cfg.stopped_mps or lateral < -0.3 * width:
                    return  # the other lane is not clear
        until = self._s + gap + self._bodies[actor_id][0] * 2.0 + self.cfg.return_after_m
        if self._shift_until <= self._s:  # not passing yet: start moving over here
            self._shift, self._shift_from = -width, self._s
        self._shift_until = max(self._shift_until, until)  # a further obstacle extends the pass
