"""Traffic lights seen from the client: which light governs a path, read from each light's trigger volume.

A vehicle obeys the light whose trigger volume (`TrafficLight.trigger_volume`, a box in the light's frame)
holds a point of the path it is about to drive, which is CARLA's own rule moved ahead of the vehicle so that
it can stop before the line instead of noticing the light once inside the box.
"""
from __future__ import annotations

import math

import carla
import numpy as np


class LightIndex:
    """Trigger boxes of every traffic light of a world, in the world frame."""

    def __init__(self, world: carla.World) -> None:
        self.lights: list[carla.TrafficLight] = list(world.get_actors().filter("traffic.traffic_light"))
        centers, yaws, extents = [], [], []
        for light in self.lights:
            box, pose = light.trigger_volume, light.get_transform()
            center = pose.transform(box.location)
            centers.append((center.x, center.y))
            yaws.append(math.radians(pose.rotation.yaw + box.rotation.yaw))
            extents.append((box.extent.x, box.extent.y))
        self.centers = np.array(centers).reshape(-1, 2)
        self.yaws = np.array(yaws)
        self.extents = np.array(extents).reshape(-1, 2)

    def first_on_path(self, points: np.ndarray) -> tuple[int, carla.TrafficLight] | tuple[None, None]:
        """(index of the first path point inside a trigger box, that light), or (None, None)."""
        if not self.lights or len(points) == 0:
            return None, None
        delta = points[:, None, :] - self.centers[None, :, :]
        cos, sin = np.cos(self.yaws)[None, :], np.sin(self.yaws)[None, :]
        along = np.abs(delta[..., 0] * cos + delta[..., 1] * sin)
        across = np.abs(-delta[..., 0] * sin + delta[..., 1] * cos)
        inside = (along <= self.extents[None, :, 0]) & (across <= self.extents[None, :, 1])
        hits = np.flatnonzero(inside.any(axis=1))
        if len(hits) == 0:
            return None, None
        first = int(hits[0])
        return first, self.lights[int(np.argmax(inside[first]))]

    def all_on_path(self, points: np.ndarray) -> list[carla.TrafficLight]:
        """Every light whose trigger box holds some point of the path, in path order."""
        found: list[carla.TrafficLight] = []
        start = 0
        while start < len(points):
            index, light = self.first_on_path(points[start:])
            if light is None:
                break
            if light.id not in {f.id for f in found}:
                found.append(light)
            start += index + 1
        return found


def hold_group(light: carla.TrafficLight, state: carla.TrafficLightState) -> None:
    """Freeze `light` in `state` and the rest of its junction's group in the opposite (red or green)."""
    others = carla.TrafficLightState.Red if state == carla.TrafficLightState.Green else carla.TrafficLightState.Green
    for member in light.get_group_traffic_lights():
        member.set_state(state if member.id == light.id else others)
        member.freeze(True)
