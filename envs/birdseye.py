"""A bird's-eye view around the ego, drawn from the CARLA client API alone (so it works on CARLA too), and
the mosaic that shows it beside a rig's camera images (`DrivingEnv.render`, `slimdrive render`).

Ego-centred and heading up: lanes from the map's lane graph, the route, traffic-light stop zones in their
live colour, vehicles and walkers as oriented boxes (the ego in green).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

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


_LANES: dict[int, tuple[list[np.ndarray], np.ndarray, np.ndarray, np.ndarray]] = {}


def _lanes(world_map: carla.Map) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """The lane graph's edges as (x, y) polylines, their lane widths, where each starts in their concatenation,
    and the concatenation: built once per graph (the graphs are cached for good), since reading every waypoint's
    transform again each frame cost ~40 of a ~50 ms view on `town` (an evaluation video draws one per step)."""
    graph = lane_graph(world_map, 2.0)
    if id(graph) not in _LANES:
        xys = [np.array([[w.transform.location.x, w.transform.location.y] for w in e.waypoints]) for e in graph.edges]
        starts = np.cumsum([0] + [len(xy) for xy in xys[:-1]])
        widths = np.array([e.waypoints[0].lane_width for e in graph.edges])
        _LANES[id(graph)] = (xys, widths, starts, np.concatenate(xys))
    return _LANES[id(graph)]


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
    xys, widths, starts, points = _lanes(world.get_map())
    nearest = np.minimum.reduceat(np.hypot(*(points - centre).T), starts)  # per edge
    for index in np.flatnonzero(nearest <= reach):
        width = max(int(widths[index] * scale), 1)
        cv2.polylines(image, [fix(xys[index])], False, ROAD, width, cv2.LINE_AA, shift)
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


def _label(image: np.ndarray, text: str) -> None:
    cv2.putText(image, text, (4, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (255, 255, 255), 1, cv2.LINE_AA)


def mosaic(tiles: Sequence[np.ndarray], names: Sequence[str], bev: np.ndarray, columns: int,
           caption: str | None = None) -> np.ndarray:
    """Camera tiles in order, `columns` per row, each labelled with its name, with the bird's-eye view
    (scaled to the grid's height) to their right and an optional caption bar below. Channels keep their
    order (RGB in, RGB out; BGR in, BGR out); a fourth (alpha) channel is dropped."""
    h, w = tiles[0].shape[:2]
    rows = math.ceil(len(tiles) / columns)
    grid = np.full((rows * h, columns * w, 3), 32, np.uint8)
    for i, (tile, name) in enumerate(zip(tiles, names)):
        r, c = divmod(i, columns)
        tile = tile[..., :3].copy()
        _label(tile, name)
        grid[r * h:(r + 1) * h, c * w:(c + 1) * w] = tile
    side = grid.shape[0]
    bev = cv2.resize(bev[..., :3], (side, side), interpolation=cv2.INTER_AREA)
    _label(bev, "bird's-eye")
    out = np.concatenate([grid, bev], axis=1)
    if caption is None:
        return out
    bar = np.full((18, out.shape[1], 3), 20, np.uint8)
    cv2.putText(bar, caption, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (230, 230, 230), 1, cv2.LINE_AA)
    return np.concatenate([out, bar], axis=0)
