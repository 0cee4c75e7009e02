"""The privileged expert: a rule-based driver that reads the world through the CARLA client API.

It follows the route with pure pursuit and holds a speed with the shared controllers (`control`),
and every step takes the lowest of these speed wishes:
  * the route's speed limit;
  * an IDM gap to the nearest obstacle in its corridor: every vehicle, walker and prop is forecast at
    constant velocity over `horizon_s`, and one whose forecast enters the corridor ahead counts, at the
    distance where it does (so a walker stepping out is braked for before it reaches the lane);
  * a stop before a red light (or a yellow one it can still stop for) found on the route ahead.
A standing obstacle in the lane (with any standing things just beyond it, passed as one) is passed on the
cheapest side that is clear: its real footprint (bounding-box corners projected on the route) says how far the
path must move; a nudge within the ego's lane first, then a neighbouring lane of its direction, left or right,
and only then the oncoming lane, by no more than needed (never a parking lane, shoulder or sidewalk). The side
must be clear of every moving actor's footprint from `clear_behind_m` behind the obstacle to `clear_ahead_m`
past the return, and in an oncoming lane as far ahead as oncoming traffic drives while the ego is out there;
the path returns `return_after_m` past the obstacle's far end.
A vehicle with its beacons on (an ambulance, a fire truck) closing in from behind is made way for: the path moves
into a free neighbouring lane of the ego's direction (the right one first) while it is behind or alongside and
returns once it has gone past; without a free lane the ego slows down.
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
    yield_margin_s: float = 1.0  # ... and this much earlier than the entrant gets there, while it can still stop
    commit_decel: float = 6.0  # m/s^2: the braking that decides whether it can still stop before a conflict point
    look_ahead_m: float = 45.0  # obstacles and lights are searched this far along the path
    light_margin_m: float = 2.0  # stop this far before a red light's trigger volume
    yellow_decel: float = 4.0  # m/s^2: stop for a yellow light only if this suffices
    stopped_mps: float = 0.5  # an obstacle slower than this is static (candidate for a lane change)
    pass_within_m: float = 25.0  # consider passing a static obstacle closer than this
    clear_behind_m: float = 25.0
    clear_ahead_m: float = 25.0
    return_after_m: float = 12.0  # back into the route's lane this far past the obstacle
    shift_ramp_m: float = 14.0  # the lateral move is spread over this distance
    min_ramp_m: float = 6.0  # ... or over as little as this when the ego already stands close behind
    pass_margin_m: float = 0.5  # lateral clearance kept from an obstacle's footprint while passing it
    group_within_m: float = 25.0  # standing obstacles this close beyond the first are passed together
    moved_m: float = 0.3  # an actor that has moved this far since the start is traffic: never gone round
    oncoming_speed_mps: float = 14.0  # an oncoming lane must be clear for what this speed covers while out there
    idm_headway_s: float = 1.2
    idm_min_gap_m: float = 3.0
    emergency_behind_m: float = 60.0  # a vehicle with its beacons on closing in from this close behind is yielded to
    emergency_near_m: float = 20.0  # ... and one closer than this even when it is not closing in
    emergency_clear_m: float = 5.0  # ... until its rear is this far past the ego's front
    emergency_slow_share: float = 0.5  # without a free lane of its direction: slow to this share of the limit


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
        self._ramp = self.cfg.shift_ramp_m  # metres over which this pass moves over
        self._lights: LightIndex | None = None
        self._bodies: dict[int, tuple[float, float, str]] = {}  # id -> (half length, half width, kind)
        self._start_xy: dict[int, tuple[float, float]] = {}  # id -> where it stood at the first step
        self._vehicles: dict[int, Any] = {}  # id -> the vehicle's handle (its lights are read through it)
        self._yielding = False  # moved aside (or slowed) for an emergency vehicle coming up behind
        self._shift_for = "pass"  # what the path's shift is for: "pass" (an obstacle) or "yield" (to an emergency)
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
            actors = [a for a in world.get_actors() if a.type_id.split(".")[0] in ("vehicle", "walker", "static")]
            self._bodies = {a.id: (a.bounding_box.extent.x, a.bounding_box.extent.y, a.type_id.split(".")[0])
                            for a in actors}
            self._vehicles = {a.id: a for a in actors if a.type_id.startswith("vehicle.") and a.id != ego.id}
            first = world.get_snapshot()
            self._start_xy = {i: (first.find(i).get_transform().location.x, first.find(i).get_transform().location.y)
                              for i in self._bodies if first.find(i) is not None}
        snapshot = world.get_snapshot()
        state = snapshot.find(ego.id)
        transform, velocity = state.get_transform(), state.get_velocity()
        x, y, speed = transform.location.x, transform.location.y, math.hypot(velocity.x, velocity.y)
        self._s, _ = route.project(transform.location, near_s=self._s)
        ego_len, ego_width, _ = self._bodies[ego.id]

        slow_for_emergency = self._yield_to_emergency(priv.map, route, snapshot, ego.id, speed)
        path, path_s = self._path(route)
        obstacle = self._nearest_obstacle(snapshot, ego.id, path, path_s, ego_len, ego_width, speed)
        if obstacle is not None and not self._yielding:
            self._maybe_pass(priv.map, route, obstacle, snapshot, ego.id, speed)
            path, path_s = self._path(route)
            obstacle = self._nearest_obstacle(snapshot, ego.id, path, path_s, ego_len, ego_width, speed)

        target = self.speed_limit * (self.cfg.emergency_slow_share if slow_for_emergency else 1.0)
        free = accel = self.idm.accel(speed, target)
        hazard_kind, hazard_actor = "", -1
        if obstacle is not None:
            gap, their_speed, actor_id = obstacle
            accel = min(accel, self.idm.accel(speed, target, gap - ego_len, speed - their_speed))
            if accel < free:
                hazard_kind, hazard_actor = self._bodies[actor_id][2], actor_id
        # the light of the route's own lane governs, also while the path is out in another lane to pass
        light, stop_at = self._light_stop(*self._path(route, shifted=False), speed)
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
    def _path(self, route, shifted: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Route points from just behind the ego to `look_ahead_m` ahead, shifted while passing."""
        first, last = route.index_at(self._s - 2.0), route.index_at(self._s + self.cfg.look_ahead_m)
        xy, s, yaw = route.xy[first:last + 1], route.s[first:last + 1], route.yaw[first:last + 1]
        if shifted and self._shift_until > self._s:
            ramp_in = np.clip((s - self._shift_from) / self._ramp, 0.0, 1.0)
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
            # Yielding: the ego must clear a walker by `yield_margin_s` too, or a slow one whose forecast enters just
            # after the ego would have passed (at its present speed) is ignored until it is too late to stop; but
            # where the ego can no longer stop short of the conflict point it commits and clears it, rather than
            # braking to a halt inside the entrant's path.
            can_stop = ahead > speed * speed / (2.0 * self.cfg.commit_decel) + self.cfg.idm_min_gap_m
            margin = self.cfg.yield_margin_s if kind == "walker" else 0.0  # vehicles keep to their lanes' timing
            clears_at = (ahead + ego_len + half_len + self.cfg.clear_margin_m) / max(speed, 0.1) + \
                np.where(can_stop, margin, 0.0)
            hits = np.flatnonzero(inside & (ahead > 0.0) & (times[:len(k)] <= clears_at))
            if len(hits) == 0:
                continue
            along = float(np.min(ahead[hits]) - np.abs(half_len * np.cos(rel_yaw[hits[0]])))
            their_speed = v.x * math.cos(heading[k[hits[0]]]) + v.y * math.sin(heading[k[hits[0]]])
            # A crossing actor does not clear the lane ahead of us; one that enters the path driving along it faster
            # than the ego (an emergency vehicle that went past, where the path returns into its lane) does.
            along_path = abs(math.cos(rel_yaw[hits[0]])) > 0.9 and their_speed > speed
            if kind == "walker" or (hits[0] > 0 and not along_path):
                their_speed = min(their_speed, 0.0)
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

    # ------------------------------------------------------------------------------ emergency vehicles
    def _emergency_behind(self, route, snapshot, ego_id: int, ego_speed: float) -> int | None:
        """The nearest vehicle with its beacons on (carla.VehicleLightState Special1 or Special2) that drives the
        route's way (within 30 deg) in the route's lane or the next one and is coming up behind the ego (closing
        in from closer than `emergency_behind_m`, or closer than `emergency_near_m`), or, once the ego makes way, is
        still behind or alongside (its rear not yet `emergency_clear_m` past the ego's front). Measured in the
        frame of the route at the ego (not the ego's, which turns while moving aside)."""
        ego_half_len = self._bodies[ego_id][0]
        base = route.point_at(self._s)
        yaw = math.radians(base.rotation.yaw)
        fx, fy = math.cos(yaw), math.sin(yaw)
        best = None
        for actor_id, handle in self._vehicles.items():
            state = snapshot.find(actor_id)
            if state is None:
                continue
            t = state.get_transform()
            dx, dy = t.location.x - base.location.x, t.location.y - base.location.y
            along, across = dx * fx + dy * fy, -dx * fy + dy * fx
            half_len = self._bodies[actor_id][0]
            heading = (t.rotation.yaw - base.rotation.yaw + 180.0) % 360.0 - 180.0
            behind_m = self.cfg.emergency_behind_m + (10.0 if self._yielding else 0.0)  # hysteresis
            if (abs(heading) > 30.0 or abs(across) > 5.5 or along < -behind_m
                    or along - half_len > ego_half_len + self.cfg.emergency_clear_m):
                continue
            v = state.get_velocity()
            closing = (v.x * fx + v.y * fy) - ego_speed
            if not self._yielding and along < -self.cfg.emergency_near_m and closing < self.cfg.stopped_mps:
                continue  # not (yet) coming up on the ego, and not yet made way for
            beacons = int(carla.VehicleLightState.Special1) | int(carla.VehicleLightState.Special2)
            if not int(handle.get_light_state()) & beacons:
                continue
            if best is None or abs(along) < best[0]:
                best = (abs(along), actor_id)
        return None if best is None else best[1]

    def _yield_to_emergency(self, world_map: carla.Map, route, snapshot, ego_id: int, speed: float) -> bool:
        """Make way for an emergency vehicle coming up behind, as drivers must: move into a free neighbouring lane of
        the ego's direction (the right one first) and stay there until it has gone past, then return; where there
        is none (or the ego is out passing an obstacle), slow down in its lane. Returns whether to slow down."""
        emergency = self._emergency_behind(route, snapshot, ego_id, speed)
        if emergency is None:
            if self._yielding:  # it has gone past: back into the route's lane, beginning return_after_m ahead
                self._yielding = False
                self._shift_until = min(self._shift_until, self._s + self.cfg.return_after_m + self.cfg.shift_ramp_m)
            return False
        ego_half_width = self._bodies[ego_id][1]
        if self._yielding or (self._shift_for == "yield" and self._shift_until > self._s):
            # hold the move aside, over all of the path ahead, while it is behind or alongside
            self._yielding = True
            self._shift_until = self._s + self.cfg.look_ahead_m + self.cfg.shift_ramp_m
            return False
        if self._shift_until > self._s:  # already out passing an obstacle: finish that, slowly
            return True
        base = route.point_at(self._s)
        yaw = math.radians(base.rotation.yaw)
        right = np.array([-math.sin(yaw), math.cos(yaw)])
        here = world_map.get_waypoint(base.location, project_to_road=True, lane_type=carla.LaneType.Driving)
        for lane in (here.get_right_lane(), here.get_left_lane()):
            if lane is None or lane.lane_type != carla.LaneType.Driving or lane.lane_id * here.lane_id <= 0:
                continue
            centre = lane.transform.location
            shift = (centre.x - base.location.x) * right[0] + (centre.y - base.location.y) * right[1]
            if self._lane_free(route, snapshot, (ego_id, emergency), shift, ego_half_width):
                self._yielding, self._shift_for = True, "yield"
                self._shift, self._shift_from, self._ramp = shift, self._s, self.cfg.shift_ramp_m
                self._shift_until = self._s + self.cfg.look_ahead_m + self.cfg.shift_ramp_m
                return False
        return True

    def _lane_free(self, route, snapshot, skip: tuple[int, int], shift: float, ego_half_width: float) -> bool:
        """Whether the band the ego would take `shift` metres off the route is free of every other actor's
        footprint from `clear_behind_m` behind the ego to `clear_ahead_m` ahead of it (standing ones too: it is
        not a pass, the ego stays there a while)."""
        lo, hi = self._s - self.cfg.clear_behind_m, self._s + self.cfg.clear_ahead_m
        band_lo = shift - ego_half_width - self.cfg.pass_margin_m
        band_hi = shift + ego_half_width + self.cfg.pass_margin_m
        for other_id in self._bodies:
            if other_id in skip:
                continue
            other = snapshot.find(other_id)
            if other is None:
                continue
            s, low, high = self._lateral_extent(route, other_id, other, self._s)
            if lo <= s <= hi and high >= band_lo and low <= band_hi:
                return False
        return True

    # ---------------------------------------------------------------------------------------- passing
    def _lateral_extent(self, route, actor_id: int, state, near_s: float) -> tuple[float, float, float]:
        """(route s, lowest and highest lateral offset from the route, + right) of the actor's real footprint:
        its bounding box's corners projected on the route, so a skewed van or a bus takes its true width."""
        half_len, half_width, _ = self._bodies[actor_id]
        t = state.get_transform()
        yaw = math.radians(t.rotation.yaw)
        c, si = math.cos(yaw), math.sin(yaw)
        laterals, along = [], []
        for a, b in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
            x = t.location.x + a * half_len * c - b * half_width * si
            y = t.location.y + a * half_len * si + b * half_width * c
            s, lateral = route.project(carla.Location(x=x, y=y), near_s=near_s)
            laterals.append(lateral)
            along.append(s)
        return float(np.mean(along)), min(laterals), max(laterals)

    def _pass_options(self, world_map: carla.Map, route, s: float, low: float, high: float,
                      ego_half_width: float) -> list[tuple[float, bool]]:
        """(lateral shift of the path, whether it drives in an opposite-direction lane) for each way around an
        obstacle spanning [low, high] across the route at `s`, the cheapest first: within the ego's own lane
        (a nudge), into a neighbouring lane of its direction (to that lane's centre), then into the oncoming lane
        by no more than it needs. Parking lanes, shoulders and sidewalks are never used."""
        base = route.point_at(s)
        yaw = math.radians(base.rotation.yaw)
        right = np.array([-math.sin(yaw), math.cos(yaw)])
        here = world_map.get_waypoint(base.location, project_to_road=True, lane_type=carla.LaneType.Driving)
        options = []
        margin = self.cfg.pass_margin_m
        for shift in (low - ego_half_width - margin, high + ego_half_width + margin):
            point = np.array([base.location.x, base.location.y]) + shift * right
            lane = world_map.get_waypoint(carla.Location(x=float(point[0]), y=float(point[1])), project_to_road=False,
                                          lane_type=carla.LaneType.Any)
            if lane is None or lane.lane_type != carla.LaneType.Driving:
                continue
            if (lane.road_id, lane.lane_id) == (here.road_id, here.lane_id):
                options.append((abs(shift), (shift, False)))
            elif lane.lane_id * here.lane_id > 0:  # a lane of the ego's direction: drive in its middle
                centre = lane.transform.location
                lateral = (centre.x - base.location.x) * right[0] + (centre.y - base.location.y) * right[1]
                lateral = lateral if abs(lateral) >= abs(shift) else shift
                options.append((abs(lateral) + 0.5, (lateral, False)))
            else:
                options.append((abs(shift) + 100.0, (shift, True)))  # oncoming lane: only when nothing else
        return [option for _, option in sorted(options, key=lambda o: o[0])]

    def _has_moved(self, actor_id: int, state) -> bool:
        """Whether the actor has moved from where it stood at the episode's first step."""
        location = state.get_transform().location
        x0, y0 = self._start_xy.setdefault(actor_id, (location.x, location.y))
        return math.hypot(location.x - x0, location.y - y0) > self.cfg.moved_m

    def _maybe_pass(self, world_map: carla.Map, route, obstacle, snapshot, ego_id: int, speed: float) -> None:
        """Go around a standing obstacle on the cheapest side whose band is clear: every other actor's footprint
        is checked against the band the ego will sweep, behind and ahead of the obstacle, and, in an oncoming
        lane, as far ahead as oncoming traffic covers while the ego is out there."""
        gap, _, actor_id = obstacle
        if gap > self.cfg.pass_within_m or self._bodies[actor_id][2] == "walker":
            return
        state = snapshot.find(actor_id)
        if state.get_velocity().length() > self.cfg.stopped_mps or \
                (self._bodies[actor_id][2] != "static" and self._has_moved(actor_id, state)):
            # traffic that stops (a car about to pull out, a braking lead) is waited for, not gone round; a prop that
            # has moved (a door swung open) is not traffic and is gone round by its footprint now
            return
        ego_half_width = self._bodies[ego_id][1]
        obstacle_s, low, high = self._lateral_extent(route, actor_id, state, self._s + gap)
        far_end = obstacle_s + self._bodies[actor_id][0]
        # Standing things just beyond it in the ego's way (a warning cone and the car behind it, two crashed cars)
        # are passed as one: the side is chosen for all of them, not for the first alone.
        reach = ego_half_width + self.cfg.pass_margin_m
        for other_id, (other_half_len, _, kind) in self._bodies.items():
            if other_id in (ego_id, actor_id) or kind == "walker":
                continue
            other = snapshot.find(other_id)
            if other is None or other.get_velocity().length() > self.cfg.stopped_mps:
                continue
            s, other_low, other_high = self._lateral_extent(route, other_id, other, obstacle_s)
            if obstacle_s <= s <= obstacle_s + self.cfg.group_within_m and other_low <= reach and other_high >= -reach:
                low, high = min(low, other_low), max(high, other_high)
                far_end = max(far_end, s + other_half_len)
        # back in lane only once past them: the return ramp starts return_after_m beyond the far end
        until = far_end + self.cfg.return_after_m + self.cfg.shift_ramp_m
        passing = self._shift_until > self._s
        if passing and ((self._shift < 0 and self._shift + ego_half_width + self.cfg.pass_margin_m <= low) or
                        (self._shift > 0 and self._shift - ego_half_width - self.cfg.pass_margin_m >= high)):
            self._shift_until = max(self._shift_until, until)  # the current pass clears this one too
            return
        for shift, oncoming in self._pass_options(world_map, route, obstacle_s, low, high, ego_half_width):
            if passing and (shift * self._shift < 0 or abs(shift) < abs(self._shift)):
                continue  # already out on one side (e.g. round a warning cone): go further out, never across
            if self._band_clear(route, snapshot, (ego_id, actor_id), shift, ego_half_width, obstacle_s, until,
                                oncoming, speed):
                if self._shift_until <= self._s:  # not passing yet: move over from here
                    self._shift_from = self._s
                    # a short run-up when the ego already stands close behind: the whole move must fit before it
                    self._ramp = float(np.clip(gap - 1.0, self.cfg.min_ramp_m, self.cfg.shift_ramp_m))
                self._shift, self._shift_for = shift, "pass"
                self._shift_until = max(self._shift_until, until)
                return

    def _band_clear(self, route, snapshot, skip: tuple[int, int], shift: float, ego_half_width: float,
                    obstacle_s: float, until: float, oncoming: bool, speed: float) -> bool:
        """Whether no moving actor's footprint is in the band between the route and `shift` (plus the ego's
        width) from `clear_behind_m` behind the obstacle to `clear_ahead_m` past the return."""
        lo, hi = obstacle_s - self.cfg.clear_behind_m, until + self.cfg.clear_ahead_m
        if oncoming:  # oncoming traffic closes in while the ego is out: look as far as it drives meanwhile
            out_for_s = (until - self._s) / max(speed, 3.0) + 2.0
            hi += self.cfg.oncoming_speed_mps * out_for_s
        band_lo = min(shift, 0.0) - ego_half_width - self.cfg.pass_margin_m
        band_hi = max(shift, 0.0) + ego_half_width + self.cfg.pass_margin_m
        for other_id in self._bodies:
            if other_id in skip:
                continue
            other = snapshot.find(other_id)
            if other is None:
                continue
            if other.get_velocity().length() <= self.cfg.stopped_mps:
                continue  # a standing thing in the band is an obstacle of its own, passed (or stopped for) in turn
            s, low, high = self._lateral_extent(route, other_id, other, obstacle_s)
            if lo <= s <= hi and high >= band_lo and low <= band_hi:
                return False
        return True
