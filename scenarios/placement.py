"""Where an actor stands: route-relative placements (`s` along the ego route, a lane relative to the route's
lane, a lateral offset and a relative yaw) or absolute poses, resolved with `carla.Map` waypoints only.

Lanes relative to the route's lane at `s`:
  same | left | right            driving lanes of the route's direction
  opposite                       the nearest driving lane of the other direction
  shoulder | parked | sidewalk   the road edge on `side: right` (the route's right) or `side: left` (the far
                                 edge, reached across the opposite lanes); `parked` uses a parking lane, or the
                                 shoulder where the road has none
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import carla

from .route import Route
from .schema import AbsolutePlacement, RoutePlacement

MIN_CROSS_M = 3.5  # a walker standing on the route still crosses at least one lane width


class PlacementError(ValueError):
    def __init__(self, field: tuple, problem: str, fix: str) -> None:
        super().__init__(f"{problem}; {fix}")
        self.field, self.problem, self.fix = field, problem, fix


@dataclass
class Placed:
    transform: carla.Transform
    route_s: float
    cross_direction: tuple[float, float]  # unit (x, y) from the actor across the route
    cross_distance: float  # to the mirror point on the route's other side


_EDGE_TYPES = {
    "shoulder": (carla.LaneType.Shoulder,),
    "parked": (carla.LaneType.Parking, carla.LaneType.Shoulder),
    "sidewalk": (carla.LaneType.Sidewalk,),
}


def _neighbour(wp: carla.Waypoint, side: str) -> carla.Waypoint | None:
    lane = wp.get_left_lane() if side == "left" else wp.get_right_lane()
    if lane is None or lane.lane_type != carla.LaneType.Driving or lane.lane_id * wp.lane_id <= 0:
        return None
    return lane


def _opposite(wp: carla.Waypoint) -> carla.Waypoint | None:
    lane = wp
    for _ in range(8):
        lane = lane.get_left_lane()
        if lane is None:
            return None
        if lane.lane_id * wp.lane_id < 0 and lane.lane_type == carla.LaneType.Driving:
            return lane
    return None


def _edge(wp: carla.Waypoint, kind: str) -> carla.Waypoint | None:
    """Walk outwards (to the lane's right) and return the first lane of the wanted type, by preference."""
    outward, lane = [], wp
    for _ in range(8):
        lane = lane.get_right_lane()
        if lane is None or lane.lane_id * wp.lane_id <= 0:
            break
        outward.append(lane)
    for lane_type in _EDGE_TYPES[kind]:
        for lane in outward:
            if lane.lane_type == lane_type:
                return lane
    return None


def _lane(wp: carla.Waypoint, p: RoutePlacement, s: float) -> carla.Waypoint:
    if p.lane == "same":
        return wp
    if p.lane in ("left", "right"):
        lane = _neighbour(wp, p.lane)
        if lane is None:
            raise PlacementError(("lane",), f"placement off the road: no driving lane {p.lane} of the route's lane "
                                 f"at s={s:.1f} m", "use lane: same or opposite here, or move s")
        return lane
    base = wp
    if p.lane == "opposite" or p.side == "left":
        base = _opposite(wp)
        if base is None:
            raise PlacementError(("lane",), f"placement off the road: the road at s={s:.1f} m has no opposite lanes",
                                 "use side: right, or place the actor where the road has two directions")
        if p.lane == "opposite":
            return base
    lane = _edge(base, p.lane)
    if lane is None:
        raise PlacementError(("lane",), f"placement off the road: no {p.lane} lane on the {p.side} side at "
                             f"s={s:.1f} m", "move s to a stretch with one (docs/maps.md), or use another lane")
    return lane


def _shifted(transform: carla.Transform, offset: float, yaw: float) -> carla.Transform:
    heading = math.radians(transform.rotation.yaw)
    location = transform.location + carla.Location(x=-math.sin(heading) * offset, y=math.cos(heading) * offset)
    return carla.Transform(location, carla.Rotation(yaw=transform.rotation.yaw + yaw))


def _crossing(route: Route, location: carla.Location, s: float) -> tuple[tuple[float, float], float]:
    _, lateral = route.project(location)
    heading = math.radians(route.point_at(s).rotation.yaw)
    right = (-math.sin(heading), math.cos(heading))
    if abs(lateral) < 0.5:  # on the route: cross to its left
        return (-right[0], -right[1]), MIN_CROSS_M
    sign = -1.0 if lateral > 0 else 1.0  # towards the route
    return (sign * right[0], sign * right[1]), max(2.0 * abs(lateral), MIN_CROSS_M)


def place_on_route(world_map: carla.Map, route: Route, p: RoutePlacement, kind: str) -> Placed:
    s = float(p.s)
    if s > route.length:
        raise PlacementError(("s",), f"s={s:.1f} m lies beyond the end of the {route.length:.0f} m route",
                             f"use s <= {route.length:.0f} or lengthen the route")
    base = route.point_at(s)
    wp = world_map.get_waypoint(base.location, project_to_road=True, lane_type=carla.LaneType.Driving)
    transform = _shifted(_lane(wp, p, s).transform, float(p.offset), float(p.yaw))
    direction, distance = _crossing(route, transform.location, s)
    return Placed(transform, s, direction, distance)


def place_absolute(world_map: carla.Map, route: Route, p: AbsolutePlacement, kind: str) -> Placed:
    location = carla.Location(x=float(p.x), y=float(p.y), z=float(p.z))
    lane = world_map.get_waypoint(location, project_to_road=False, lane_type=carla.LaneType.Any)
    if lane is None:
        raise PlacementError(("x",), f"placement off the road: no lane at ({p.x:.1f}, {p.y:.1f})",
                             "move x/y onto a lane, sidewalk or shoulder of the map (see docs/maps.md)")
    transform = carla.Transform(location, carla.Rotation(yaw=float(p.yaw)))
    s, _ = route.project(location)
    direction, distance = _crossing(route, location, s)
    return Placed(transform, s, direction, distance)
