"""Leaderboard 2.0 infraction criteria, computed from the client side each tick.

Constants follow ScenarioRunner's criteria as the Leaderboard 2.0 runs them (github.com/carla-simulator/
scenario_runner, branch leaderboard-2.0, `srunner/scenariomanager/scenarioatomics/atomic_criteria.py`, and
github.com/carla-simulator/leaderboard, branch leaderboard-2.0, `leaderboard/scenarios/route_scenario.py`, which
builds `CollisionTest` without `terminate_on_failure`, so a route goes on after a collision). Collisions are
deduplicated as `CollisionTest` does (`COLLISION_RADIUS = 5`, `MAX_ID_TIME = 5`, `EPSILON = 0.1`): only the last
counted collision is remembered; a contact is not counted again while it is with the same other actor within 5 s
of it, or while the ego is still within 5 m of where it stood then, and no contact counts below 0.1 m/s ego
speed. (ScenarioRunner's older branches, e.g. leaderboard-1.0, name these MIN_AREA_OF_COLLISION = 3,
MAX_AREA_OF_COLLISION = 5 and MAX_ID_TIME = 5; the 2.0 branch replaced them.) A red light counts when the ego
enters the junction past a red light whose trigger volume it was in; the route ends on completion (> 99 % and
within 10 m of the goal), on a deviation of more than 30 m, when blocked below 0.1 m/s for 180 s, or at the
route timeout. Outside-route-lanes and minimum-speed figures are percentages that the driving score turns into
penalties (see `scenarios/metrics.py`).

Stop signs are not judged: `stop_infraction` keeps its coefficient but is never recorded, because the
embedded server has no `traffic.stop` actors to test it against (docs/scenarios.md, "Criteria not evaluated").

Only the carla client API is used, so the same criteria judge runs on the embedded server and on CARLA.
"""
from __future__ import annotations

import queue
from dataclasses import asdict, dataclass, field

import carla
import numpy as np

from .route import Route

COLLISION_ID_TIME_S = 5.0  # CollisionTest.MAX_ID_TIME: the last collision's other actor is remembered this long
COLLISION_RADIUS_M = 5.0  # CollisionTest.COLLISION_RADIUS: ... and where the ego stood, until it is this far away
MIN_MOVING_SPEED = 0.1  # m/s (CollisionTest.EPSILON, ActorBlockedTest's min_speed)
ROUTE_DEVIATION_M = 30.0
BLOCKED_S = 180.0
COMPLETION_PCT = 99.0
COMPLETION_RADIUS_M = 10.0
OUTSIDE_LANES_TOLERANCE_M = 0.5
RED_LIGHT_RADIUS_M = 15.0  # ScenarioRunner checks red lights within 15 m
TRAFFIC_RADIUS_M = 50.0  # other vehicles within this distance are "surrounding traffic" for minimum speed

KINDS = (
    "collisions_pedestrian", "collisions_vehicle", "collisions_layout", "red_light", "stop_infraction",
    "outside_route_lanes", "route_dev", "route_timeout", "vehicle_blocked", "min_speed_infractions",
    "scenario_timeouts", "yield_emergency_vehicle_infractions",
)
# Leaderboard 2.0 penalty coefficients (statistics_manager.py); outside lanes and minimum speed scale with a
# percentage instead, see scenarios/metrics.py. Kinds that end the route carry no coefficient of their own.
PENALTY = {
    "collisions_pedestrian": 0.50, "collisions_vehicle": 0.60, "collisions_layout": 0.65, "red_light": 0.70,
    "stop_infraction": 0.80, "scenario_timeouts": 0.70, "yield_emergency_vehicle_infractions": 0.70,
}
ENDS_ROUTE = {"route_dev": "route deviation", "route_timeout": "route timeout", "vehicle_blocked": "agent blocked"}


@dataclass
class Infraction:
    kind: str  # one of KINDS: the Leaderboard's statistics keys
    step: int  # ticks since the route started
    sim_time: float  # seconds since the route started
    location: tuple[float, float, float]
    detail: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


class EpisodeCriteria:
    """Watches one ego along one route. Call `update(snapshot)` after every tick; read the figures any time."""

    def __init__(self, world: carla.World, ego: carla.Vehicle, route: Route, timeout_s: float):
        self.world, self.ego, self.route, self.timeout_s = world, ego, route, timeout_s
        self.map = world.get_map()
        self.infractions: list[Infraction] = []
        self.done: str | None = None  # why the route ended, once it has
        self.progress_s = 0.0
        self.route_s = 0.0  # where the ego stood along the route at the last update (progress_s: the furthest)
        self.distance_driven = 0.0
        self.outside_distance = 0.0
        self._start_frame: int | None = None
        self._last_location: carla.Location | None = None
        self._stopped_since: float | None = None
        self._collisions: queue.Queue = queue.Queue()
        # The last counted collision, as CollisionTest keeps it: the other actor's id, when, where the ego stood
        self._collision_id: int | None = None
        self._collision_time = 0.0
        self._collision_location: carla.Location | None = None
        self._light_at: carla.TrafficLight | None = None  # the light of the ego's approach to a junction
        self._light_seen_at: carla.Location | None = None  # where the ego last stood in its trigger volume
        self._was_at_light = False
        self._was_in_junction = False
        self._route_lanes = {(road, lane) for road, _, lane in route.road_lane}
        self._quarter_speeds = [[0.0, 0.0, 0] for _ in range(4)]  # ego speed sum, traffic speed sum, samples
        self._closed = False
        sensor_bp = world.get_blueprint_library().find("sensor.other.collision")
        self._sensor = world.spawn_actor(sensor_bp, carla.Transform(), attach_to=ego)
        self._sensor.listen(self._collisions.put)

    # --------------------------------------------------------------------------------------------- figures
    @property
    def route_completion(self) -> float:
        return 100.0 * self.progress_s / self.route.length

    @property
    def outside_lanes_pct(self) -> float:
        return 100.0 * self.outside_distance / self.distance_driven if self.distance_driven > 0 else 0.0

    @property
    def min_speed_pct_per_quarter(self) -> list[float]:
        """Ego mean speed relative to surrounding traffic in each route quarter (100 when there was none)."""
        return [min(100.0, 100.0 * ego / traffic) if n and traffic > 0 else 100.0
                for ego, traffic, n in self._quarter_speeds]

    def _elapsed(self, snapshot: carla.WorldSnapshot) -> float:
        """Seconds since the route started, counted in ticks (differences of the world's absolute clock
        round differently depending on how long the world ran before, which would move thresholds a tick)."""
        return (snapshot.frame - (self._start_frame or snapshot.frame)) * snapshot.timestamp.delta_seconds

    def record(self, kind: str, snapshot: carla.WorldSnapshot, detail: dict | None = None) -> Infraction:
        """Add an infraction; scenarios use it for scenario timeouts and failures to yield."""
        if kind not in KINDS:
            raise ValueError(f"unknown infraction kind {kind!r}; expected one of {', '.join(KINDS)}")
        location = self.ego.get_location()
        infraction = Infraction(kind, snapshot.frame - (self._start_frame or 0), self._elapsed(snapshot),
                                (location.x, location.y, location.z), detail or {})
        self.infractions.append(infraction)
        if kind in ENDS_ROUTE and self.done is None:
            self.done = ENDS_ROUTE[kind]
        return infraction

    # ---------------------------------------------------------------------------------------------- update
    def update(self, snapshot: carla.WorldSnapshot) -> list[Infraction]:
        """Judge the tick that produced `snapshot`; returns the infractions it added."""
        before = len(self.infractions)
        if self._start_frame is None:
            self._start_frame = snapshot.frame
        now = self._elapsed(snapshot)
        ego_state = snapshot.find(self.ego.id)
        location = ego_state.get_transform().location
        speed = ego_state.get_velocity().length()
        self._progress(location, snapshot)
        self._collision_events(snapshot, location, speed, now)
        self._red_light(location, snapshot)
        self._lanes_and_speed(location, speed, snapshot)
        self._blocked_and_timeout(speed, now, snapshot)
        if self.done is None and self.route_completion > COMPLETION_PCT and \
                location.distance(self.route.goal.location) < COMPLETION_RADIUS_M:
            self.done = "completed"
        if self.done is not None:
            self._close_route(snapshot)
        return self.infractions[before:]

    def _progress(self, location: carla.Location, snapshot) -> None:
        s, lateral = self.route.project(location, near_s=self.progress_s)
        self.route_s = s
        if abs(lateral) > ROUTE_DEVIATION_M:
            self.record("route_dev", snapshot, {"lateral_m": round(abs(lateral), 2)})
        self.progress_s = max(self.progress_s, s)

    def _collision_events(self, snapshot, location: carla.Location, speed: float, now: float) -> None:
        """CollisionTest of the Leaderboard 2.0: forget the last collision once the ego is more than 5 m from
        where it was counted (its `update`) or 5 s have passed (for its other actor), then count this tick's
        contacts that are neither with that actor nor within 5 m of it (its `_count_collisions`)."""
        if self._collision_location is not None and location.distance(self._collision_location) > COLLISION_RADIUS_M:
            self._collision_location = None
        if self._collision_id is not None and now - self._collision_time > COLLISION_ID_TIME_S:
            self._collision_id = None
        while True:
            try:
                event = self._collisions.get_nowait()
            except queue.Empty:
                return
            if event.frame > snapshot.frame:
                self._collisions.put(event)
                return
            other = event.other_actor
            if other.id == self._collision_id or (
                    self._collision_location is not None
                    and location.distance(self._collision_location) <= COLLISION_RADIUS_M):
                continue
            if speed < MIN_MOVING_SPEED:  # "If the actor speed is 0, the collision isn't its fault"
                continue
            self._collision_time, self._collision_location = now, location
            if other.id != 0:  # id 0: the static world, never remembered by id (as CollisionTest)
                self._collision_id = other.id
            kind = ("collisions_pedestrian" if other.type_id.startswith("walker.")
                    else "collisions_vehicle" if other.type_id.startswith("vehicle.") else "collisions_layout")
            self.record(kind, snapshot, {"other_id": other.id, "other_type": other.type_id,
                                         "ego_speed": round(speed, 2)})

    def _red_light(self, location: carla.Location, snapshot) -> None:
        """Entering a junction while the light of the approach shows red. A light's trigger volume ends short
        of the junction, so its light is remembered for `RED_LIGHT_RADIUS_M` after the ego leaves it."""
        waypoint = self.map.get_waypoint(location)
        in_junction = waypoint is not None and waypoint.is_junction
        if in_junction and not self._was_in_junction and self._light_at is not None \
                and self._light_at.get_state() == carla.TrafficLightState.Red:
            self.record("red_light", snapshot, {"traffic_light_id": self._light_at.id})
        self._was_in_junction = in_junction
        at_light = not in_junction and self.ego.is_at_traffic_light()  # read from the episode state
        if in_junction:
            self._light_at = None
        elif at_light:
            if not self._was_at_light:  # entering a trigger volume: fetch its light (the actor may cost an RPC)
                self._light_at = self.ego.get_traffic_light()
            self._light_seen_at = location
        elif self._light_at is not None and location.distance(self._light_seen_at) > RED_LIGHT_RADIUS_M:
            self._light_at = None
        self._was_at_light = at_light

    def _lanes_and_speed(self, location: carla.Location, speed: float, snapshot) -> None:
        if self._last_location is not None:
            step = location.distance(self._last_location)
            self.distance_driven += step
            if self._outside_route_lanes(location):
                self.outside_distance += step
        self._last_location = location
        quarter = min(int(4 * self.progress_s / self.route.length), 3)
        traffic = [a.get_velocity().length() for a in self.world.get_actors().filter("vehicle.*")
                   if a.id != self.ego.id and a.get_location().distance(location) < TRAFFIC_RADIUS_M]
        if traffic:
            sums = self._quarter_speeds[quarter]
            sums[0] += speed
            sums[1] += float(np.mean(traffic))
            sums[2] += 1

    def _outside_route_lanes(self, location: carla.Location) -> bool:
        waypoint = self.map.get_waypoint(location, project_to_road=False, lane_type=carla.LaneType.Any)
        if waypoint is None or waypoint.lane_type != carla.LaneType.Driving:
            driving = self.map.get_waypoint(location, project_to_road=True, lane_type=carla.LaneType.Driving)
            return driving is None or driving.transform.location.distance(location) > \
                driving.lane_width / 2.0 + OUTSIDE_LANES_TOLERANCE_M
        if waypoint.is_junction or (waypoint.road_id, waypoint.lane_id) in self._route_lanes:
            return False
        # A lane of the route's road driven in the route's direction is fine (lane changes are allowed).
        return not any(road == waypoint.road_id and lane * waypoint.lane_id > 0 for road, lane in self._route_lanes)

    def _blocked_and_timeout(self, speed: float, now: float, snapshot) -> None:
        if speed < MIN_MOVING_SPEED:
            self._stopped_since = now if self._stopped_since is None else self._stopped_since
            if now - self._stopped_since >= BLOCKED_S:
                self.record("vehicle_blocked", snapshot, {"stopped_s": round(now - self._stopped_since, 1)})
        else:
            self._stopped_since = None
        if now >= self.timeout_s and self.done is None:
            self.record("route_timeout", snapshot, {"timeout_s": self.timeout_s})

    def _close_route(self, snapshot) -> None:
        """Turn the running percentages into their end-of-route infractions, once."""
        if self._closed:
            return
        self._closed = True
        if self.outside_lanes_pct > 0.0:
            self.record("outside_route_lanes", snapshot, {"percentage": round(self.outside_lanes_pct, 2)})
        for quarter, pct in enumerate(self.min_speed_pct_per_quarter):
            if pct < 100.0:
                self.record("min_speed_infractions", snapshot, {"quarter": quarter, "percentage": round(pct, 2)})

    def finish(self, snapshot: carla.WorldSnapshot, reason: str) -> None:
        """End the route from outside (e.g. the env stopped on a collision) and close its figures."""
        if self.done is None:
            self.done = reason
        self._close_route(snapshot)

    def destroy(self) -> None:
        if self._sensor.is_alive:
            self._sensor.stop()
            self._sensor.destroy()
