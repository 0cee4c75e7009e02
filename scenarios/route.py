"""Routes over a map's lane topology, planned with the stock client's `carla.Map` only.

The `carla` wheel ships no `agents` package, so this is slimdrive's own global planner: lanes from
`Map.get_topology()` become graph edges sampled every `resolution` metres, A* joins them, and each point
carries the conditional-imitation command (RoadOption) of the edge it lies on. Lane changes are left to the
driver (the expert changes lanes locally around blockages); routes follow lanes and turn at junctions.
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from enum import IntEnum

import carla
import numpy as np

from envs.maps.geometry import wrap_angle

TURN_THRESHOLD_DEG = 35.0  # heading change across a junction above which a connection is a turn
COMMAND_LOOKAHEAD_M = 15.0  # a turn's command is announced this far before the junction


class RoadOption(IntEnum):
    """Navigation commands, numbered as CARLA's agents number them (`RoadOption` in
    `PythonAPI/carla/agents/navigation/local_planner.py`) and the CIL literature after them, less CARLA's
    VOID (-1), which no route point carries. The planner announces LEFT, RIGHT or STRAIGHT before a junction
    and LANEFOLLOW elsewhere; lane changes are left to the driver, so CHANGELANELEFT/RIGHT keep their numbers
    for recorded data and the policy's command embedding but are not emitted by this planner."""

    LEFT = 1
    RIGHT = 2
    STRAIGHT = 3
    LANEFOLLOW = 4
    CHANGELANELEFT = 5
    CHANGELANERIGHT = 6


class RouteError(ValueError):
    pass


@dataclass
class Route:
    """A dense route: one point about every metre, each with its transform, command and lane."""

    transforms: list[carla.Transform]
    options: list[RoadOption]
    road_lane: list[tuple[int, int, int]]  # (road_id, section_id, lane_id) of each point

    def __post_init__(self) -> None:
        if len(self.transforms) < 2:
            raise RouteError("a route needs at least two points")
        self.xy = np.array([[t.location.x, t.location.y] for t in self.transforms])
        steps = np.hypot(*np.diff(self.xy, axis=0).T)
        self.s = np.concatenate([[0.0], np.cumsum(steps)])
        self.yaw = np.radians([t.rotation.yaw for t in self.transforms])

    @property
    def length(self) -> float:
        return float(self.s[-1])

    @property
    def start(self) -> carla.Transform:
        return self.transforms[0]

    @property
    def goal(self) -> carla.Transform:
        return self.transforms[-1]

    def index_at(self, s: float) -> int:
        return int(np.clip(np.searchsorted(self.s, s, side="right") - 1, 0, len(self.s) - 1))

    def point_at(self, s: float) -> carla.Transform:
        return self.transforms[self.index_at(s)]

    def project(self, location: carla.Location, near_s: float | None = None, window: float = 40.0
                ) -> tuple[float, float]:
        """(s along the route, signed lateral offset, positive to the right) of the nearest route point.

        With `near_s`, only points within `window` metres ahead of or behind it are searched, so that a route
        that passes the same place twice is followed in order."""
        lo, hi = 0, len(self.s)
        if near_s is not None:
            lo = int(np.searchsorted(self.s, near_s - window))
            hi = max(int(np.searchsorted(self.s, near_s + window, side="right")), lo + 1)
        delta = np.array([location.x, location.y]) - self.xy[lo:hi]
        k = lo + int(np.argmin(np.einsum("ij,ij->i", delta, delta)))
        dx, dy = location.x - self.xy[k, 0], location.y - self.xy[k, 1]
        along = dx * math.cos(self.yaw[k]) + dy * math.sin(self.yaw[k])
        lateral = -dx * math.sin(self.yaw[k]) + dy * math.cos(self.yaw[k])  # CARLA's y points right
        return float(np.clip(self.s[k] + along, 0.0, self.length)), float(lateral)

    def command_at(self, s: float, lookahead: float = COMMAND_LOOKAHEAD_M) -> RoadOption:
        """The next turn command within `lookahead` metres, else LANEFOLLOW."""
        first, last = self.index_at(s), self.index_at(s + lookahead)
        for option in self.options[first:last + 1]:
            if option != RoadOption.LANEFOLLOW:
                return option
        return RoadOption.LANEFOLLOW

    def target_point(self, s: float, ahead: float) -> carla.Transform:
        return self.point_at(min(s + ahead, self.length))


@dataclass
class LaneEdge:
    start: int
    end: int
    waypoints: list[carla.Waypoint]
    option: RoadOption
    length: float


class LaneGraph:
    """Lanes of a map as a directed graph; nodes are lane ends (rounded locations)."""

    def __init__(self, world_map: carla.Map, resolution: float):
        self.node_xy: list[tuple[float, float]] = []
        self._node_ids: dict[tuple[int, int, int], int] = {}
        self.edges: list[LaneEdge] = []
        self.out_edges: dict[int, list[int]] = {}
        for entry, exit_ in world_map.get_topology() + self._dead_end_lanes(world_map, resolution):
            waypoints = self._sample(entry, exit_, resolution)
            u, v = self._node(entry.transform.location), self._node(exit_.transform.location)
            option = self._option(entry, exit_) if entry.is_junction else RoadOption.LANEFOLLOW
            length = sum(a.transform.location.distance(b.transform.location) for a, b in zip(waypoints, waypoints[1:]))
            self.out_edges.setdefault(u, []).append(len(self.edges))
            self.edges.append(LaneEdge(u, v, waypoints, option, length))

    @staticmethod
    def _dead_end_lanes(world_map: carla.Map, resolution: float) -> list[tuple[carla.Waypoint, carla.Waypoint]]:
        """(entry, exit) of driving lanes that `get_topology()` leaves out: those running to a map end."""
        covered = {(entry.road_id, entry.section_id, entry.lane_id) for entry, _ in world_map.get_topology()}
        found, segments = set(), []
        for waypoint in world_map.generate_waypoints(resolution):
            key = (waypoint.road_id, waypoint.section_id, waypoint.lane_id)
            if key in covered or key in found or waypoint.lane_type != carla.LaneType.Driving:
                continue
            found.add(key)
            def same(ws: list[carla.Waypoint], key: tuple[int, int, int] = key) -> list[carla.Waypoint]:
                return [w for w in ws if (w.road_id, w.section_id, w.lane_id) == key]
            entry, exit_ = waypoint, waypoint
            while back := same(entry.previous(resolution)):
                entry = back[0]
            while ahead := same(exit_.next(resolution)):
                exit_ = ahead[0]
            segments.append((entry, exit_))
        return segments

    def _node(self, location: carla.Location) -> int:
        key = (round(location.x * 10), round(location.y * 10), round(location.z * 10))
        if key not in self._node_ids:
            self._node_ids[key] = len(self.node_xy)
            self.node_xy.append((location.x, location.y))
        return self._node_ids[key]

    @staticmethod
    def _sample(entry: carla.Waypoint, exit_: carla.Waypoint, resolution: float) -> list[carla.Waypoint]:
        target = exit_.transform.location
        waypoints, current = [entry], entry
        budget = int(entry.transform.location.distance(target) * 4 / resolution) + 1000
        for _ in range(budget):
            if current.transform.location.distance(target) <= resolution:
                break
            lane = (entry.road_id, entry.lane_id)
            following = [w for w in current.next(resolution) if (w.road_id, w.lane_id) == lane]
            if not following:
                break
            current = following[0]
            waypoints.append(current)
        waypoints.append(exit_)
        return waypoints

    @staticmethod
    def _option(entry: carla.Waypoint, exit_: carla.Waypoint) -> RoadOption:
        turn = wrap_angle(exit_.transform.rotation.yaw - entry.transform.rotation.yaw)
        if abs(turn) < TURN_THRESHOLD_DEG:
            return RoadOption.STRAIGHT
        return RoadOption.RIGHT if turn > 0 else RoadOption.LEFT  # CARLA's yaw grows clockwise

    def locate(self, waypoint: carla.Waypoint) -> tuple[int, int]:
        """(edge index, point index) of the edge point nearest to `waypoint` on the same lane."""
        best, best_d = None, math.inf
        target = waypoint.transform.location
        for e, edge in enumerate(self.edges):
            first = edge.waypoints[0]
            if (first.road_id, first.lane_id) != (waypoint.road_id, waypoint.lane_id):
                continue
            for k, w in enumerate(edge.waypoints):
                d = w.transform.location.distance(target)
                if d < best_d:
                    best, best_d = (e, k), d
        if best is None:
            raise RouteError(f"no lane of the route graph holds road {waypoint.road_id} lane {waypoint.lane_id}")
        return best

    def shortest(self, start: int, goal: int) -> list[int]:
        """Edge indices of the shortest node path (A* with straight-line distance)."""
        gx, gy = self.node_xy[goal]
        h = lambda n: math.hypot(self.node_xy[n][0] - gx, self.node_xy[n][1] - gy)  # noqa: E731
        frontier = [(h(start), 0.0, start)]
        came: dict[int, int | None] = {start: None}
        cost = {start: 0.0}
        while frontier:
            _, g, node = heapq.heappop(frontier)
            if node == goal:
                path, edge = [], came[node]
                while edge is not None:
                    path.append(edge)
                    edge = came[self.edges[edge].start]
                return path[::-1]
            if g > cost[node]:
                continue
            for e in self.out_edges.get(node, []):
                nxt, new = self.edges[e].end, g + self.edges[e].length
                if new < cost.get(nxt, math.inf):
                    cost[nxt], came[nxt] = new, e
                    heapq.heappush(frontier, (new + h(nxt), new, nxt))
        raise RouteError("the goal cannot be reached from the start along the lanes")


_GRAPHS: dict[tuple[str, int, float], LaneGraph] = {}


def lane_graph(world_map: carla.Map, resolution: float = 1.0) -> LaneGraph:
    """The lane graph of a map (built once per map and resolution)."""
    key = (world_map.name, hash(world_map.to_opendrive()), resolution)
    if key not in _GRAPHS:
        _GRAPHS[key] = LaneGraph(world_map, resolution)
    return _GRAPHS[key]


def _driving_waypoint(world_map: carla.Map, location: carla.Location, what: str) -> carla.Waypoint:
    waypoint = world_map.get_waypoint(location, project_to_road=True, lane_type=carla.LaneType.Driving)
    if waypoint is None:
        raise RouteError(f"route {what} {location} is not near a driving lane")
    return waypoint


def _assemble(parts: list[tuple[list[carla.Waypoint], RoadOption]]) -> Route:
    transforms, options, lanes = [], [], []
    for waypoints, option in parts:
        for w in waypoints:
            if transforms and w.transform.location.distance(transforms[-1].location) < 0.05:
                continue  # edges share their end points
            transforms.append(w.transform)
            options.append(option)
            lanes.append((w.road_id, w.section_id, w.lane_id))
    return Route(transforms, options, lanes)


def plan_route(world_map: carla.Map, start: carla.Location, goal: carla.Location, resolution: float = 1.0) -> Route:
    """Shortest lane-following route from the driving lane at `start` to the one at `goal`."""
    graph = lane_graph(world_map, resolution)
    (e0, k0) = graph.locate(_driving_waypoint(world_map, start, "start"))
    (e1, k1) = graph.locate(_driving_waypoint(world_map, goal, "goal"))
    first, last = graph.edges[e0], graph.edges[e1]
    if e0 == e1 and k1 >= k0:
        return _assemble([(first.waypoints[k0:k1 + 1], first.option)])
    middle = graph.shortest(first.end, last.start)
    parts = [(first.waypoints[k0:], first.option)]
    parts += [(graph.edges[e].waypoints, graph.edges[e].option) for e in middle]
    parts.append((last.waypoints[:k1 + 1], last.option))
    return _assemble(parts)


def route_through(world_map: carla.Map, locations: list[carla.Location], resolution: float = 1.0) -> Route:
    """A route visiting `locations` in order."""
    if len(locations) < 2:
        raise RouteError("route_through needs at least two locations")
    legs = [plan_route(world_map, a, b, resolution) for a, b in zip(locations, locations[1:])]
    transforms = legs[0].transforms + [t for leg in legs[1:] for t in leg.transforms[1:]]
    options = legs[0].options + [o for leg in legs[1:] for o in leg.options[1:]]
    lanes = legs[0].road_lane + [r for leg in legs[1:] for r in leg.road_lane[1:]]
    return Route(transforms, options, lanes)


def route_from_length(world_map: carla.Map, start: carla.Location, length: float,
                      turns: list[str] | None = None, seed: int = 0, resolution: float = 1.0) -> Route:
    """A route of about `length` metres from `start`. At each junction the next entry of `turns`
    ("left", "right", "straight") is taken when that connection exists; otherwise a seeded random one."""
    graph = lane_graph(world_map, resolution)
    rng = np.random.default_rng(seed)
    wanted = [RoadOption[t.upper()] for t in (turns or [])]
    edge, k = graph.locate(_driving_waypoint(world_map, start, "start"))
    parts = [(graph.edges[edge].waypoints[k:], graph.edges[edge].option)]
    travelled = graph.edges[edge].length * (1.0 - k / max(len(graph.edges[edge].waypoints) - 1, 1))
    while travelled < length:
        choices = graph.out_edges.get(graph.edges[edge].end, [])
        if not choices:
            break  # dead end: the route stops where the lane does
        preferred = [c for c in choices if wanted and graph.edges[c].option == wanted[0]]
        if preferred:
            edge = preferred[0]
            wanted.pop(0)
        else:
            edge = choices[int(rng.integers(len(choices)))]
        parts.append((graph.edges[edge].waypoints, graph.edges[edge].option))
        travelled += graph.edges[edge].length
    if sum(len(w) for w, _ in parts) < 2:
        raise RouteError(f"no lane ahead of {start}: the lane ends there")
    route = _assemble(parts)
    if route.length > length:
        cut = route.index_at(length) + 1
        route = Route(route.transforms[:cut], route.options[:cut], route.road_lane[:cut])
    return route
