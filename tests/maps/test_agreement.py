"""The server's geometry must agree with what the stock client computes from the same .xodr."""

from __future__ import annotations

import math

import carla

from envs.maps.geometry import wrap_angle


def _yaw_diff(a: float, b: float) -> float:
    return abs(wrap_angle(a - b))


def test_waypoints_match_lane_pose_and_locate(shipped) -> None:
    name, cmap, net = shipped
    waypoints = cmap.generate_waypoints(2.0)
    assert len(waypoints) > 500, name
    for w in waypoints:
        loc, rot = w.transform.location, w.transform.rotation
        pose = net.lane_pose(w.road_id, w.lane_id, w.s)
        where = f"{name}: road {w.road_id} lane {w.lane_id} s={w.s:.2f}"
        assert math.hypot(pose.x - loc.x, pose.y - loc.y) < 0.05, where
        assert abs(pose.z - loc.z) < 0.05, where
        assert _yaw_diff(pose.yaw, rot.yaw) < 1.0, where
        hit = net.locate(loc.x, loc.y)
        assert hit is not None, where
        if w.is_junction:
            # Connecting roads overlap one another inside a junction: any of them is a right answer.
            assert hit.junction_id == w.junction_id or hit.junction_id == -1, where
        else:
            assert (hit.road_id, hit.lane_id) == (w.road_id, w.lane_id), where
            assert abs(hit.s - w.s) < 0.05, where
            assert hit.lane_type == "driving", where


def test_spawn_points_are_on_driving_lanes(shipped) -> None:
    name, cmap, net = shipped
    points = net.spawn_points()
    assert len(points) >= 20, name
    for p in points:
        loc = carla.Location(p.x, p.y, p.z)
        w = cmap.get_waypoint(loc, project_to_road=False, lane_type=carla.LaneType.Driving)
        assert w is not None and not w.is_junction, f"{name}: spawn point {p} is off the driving lanes"
        assert _yaw_diff(p.yaw, w.transform.rotation.yaw) < 1.0, f"{name}: spawn point {p} faces against its lane"
        assert 0.1 < p.z - w.transform.location.z < 1.0, f"{name}: spawn point {p} is not just above the road"


def test_non_driving_lanes_are_located(shipped) -> None:
    name, cmap, net = shipped
    kinds = {"straight": {"shoulder"}, "curves": {"shoulder"}, "junction": {"sidewalk"},
             "town": {"sidewalk", "parking"}}[name]
    found = set()
    for lane in net.lanes():
        if lane.lane_type in kinds:
            mid = lane.center[len(lane.center) // 2]
            hit = net.locate(float(mid[0]), float(mid[1]))
            assert hit is not None and (hit.road_id, hit.lane_id) == (lane.road_id, lane.lane_id), name
            w = cmap.get_waypoint(carla.Location(float(mid[0]), float(mid[1]), 0.0), project_to_road=False,
                                  lane_type=carla.LaneType.Any)
            assert w is not None and w.lane_id == lane.lane_id, name
            found.add(lane.lane_type)
    assert found == kinds, name
    assert net.locate(5000.0, 5000.0) is None
