"""A bird's-eye view around the ego, drawn from the CARLA client API alone (so it works on CARLA too).

Ego-centred and heading up: lanes from the map's lane graph, the route, traffic-light stop zones in their
live colour, vehicles and walkers as oriented boxes (the ego in green).
"""
from __future__ import annotations

import math

import carla
import cv2
import numpy as np

from scenarios.route import Route, lane_graph

ROAD = (70, 70, 70)
ROUTE = (80, 160, 255)
EGO = (40, 200, 60)
VEHICLE = (60, 110, 230)
WALKER = (255, 140, 30)
LIGHT = {carla.TrafficLightState.Red: (230, 40, 40), carla.TrafficLightState.Yellow: (240, 200, 30),
         carla.TrafficLightState.Green: (40, 220, 80)}


def _to_pixels(xy: np.ndarray, centre: np.ndarray, yaw: float, scale: float, size: int) -> np.ndarray:
    """World (x, y) to image pixels with the ego at the centre and its heading pointing up."""
    d = xy - centre
    forward = d[:, 0] * math.cos(yaw) + d[:, 1] * math.sin(yaw)
    right = -d[:, 0] * math.sin(yaw) + d[:, 1] * math.cos(yaw)
    return np.stack([size / 2 + right * scale, size / 2 - forward * scale], axis=1)


def _box(transform: carla.Transform, extent: carla.Vector3D) -> np.ndarray:
    yaw = math.radians(transform.rotation.yaw)
    c, s = math.cos(yaw), math.sin(yaw)
    corners = np.array([[1, 1], [1, -1], [-1, -1], [-1, 1]]) * [extent.x, extent.y]
    rotated = corners @ np.array([[c, s], [-s, c]])
    return rotated + [transform.location.x, transform.location.y]


def birdseye_view(world: carla.World, ego: carla.Actor, size: int = 256, metres: float = 60.0,
                  route: Route | None = None) -> np.ndarray:
    """An RGB (size, size, 3) image covering `metres` x `metres` around the ego."""
    image = np.zeros((size, size, 3), np.uint8)
    scale = size / metres
    ego_transform = ego.get_transform()
    centre = np.array([ego_transform.location.x, ego_transform.location.y])
    yaw = math.radians(ego_transform.rotation.yaw)
    shift = 4  # sub-pixel precision for OpenCV's drawing
    fix = lambda xy: np.round(_to_pixels(xy, centre, yaw, scale, size) * (1 << shift)).astype(np.int32)  # noqa: E731
    reach = metres * 0.75
    for edge in lane_graph(world.get_map(), 2.0).edges:
        xy = np.array([[w.transform.location.x, w.transform.location.y] for w in edge.waypoints])
        if np.min(np.hypot(*(xy - centre).T)) > reach:
            continue
        width = max(int(edge.waypoints[0].lane_width * scale), 1)
        cv2.polylines(image, [fix(xy)], False, ROAD, width, cv2.LINE_AA, shift)
    if route is not None:
        cv2.polylines(image, [fix(route.xy)], False, ROUTE, max(int(0.6 * scale), 1), cv2.LINE_AA, shift)
    for light in world.get_actors().filter("traffic.traffic_light"):
        volume = light.trigger_volume
        zone = carla.Transform(light.get_transform().transform(volume.location), light.get_transform().rotation)
        colour = LIGHT.get(light.get_state())
        if colour is not None and zone.location.distance(ego_transform.location) < reach:
            cv2.fillPoly(image, [fix(_box(zone, volume.extent))], colour, cv2.LINE_AA, shift)
    for actor in world.get_actors():
        kind = actor.type_id.split(".")[0]
        if kind not in ("vehicle", "walker") or actor.get_location().distance(ego_transform.location) > reach:
            continue
        colour = EGO if actor.id == ego.id else VEHICLE if kind == "vehicle" else WALKER
        cv2.fillPoly(image, [fix(_box(actor.get_transform(), actor.bounding_box.extent))], colour, cv2.LINE_AA, shift)
    return image
