"""Speed limits of an OpenDRIVE map, as CARLA reports them to vehicles: a lane's own `<speed>` record, else its
road's `<type>` speed, in km/h, looked up by position on a grid painted from the lanes' outlines."""
from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import cv2
import numpy as np

_KMH_PER_UNIT = {"km/h": 1.0, "m/s": 3.6, "mph": 1.609344}


def _speed_records(xodr: str) -> tuple[dict, dict]:
    """OpenDRIVE <speed> records in km/h, sorted by s: {road id: [(s, max)]} from the roads' <type> entries
    and {(road id, section index, lane id): [(sOffset, max)]} from the lanes ("no limit" is skipped)."""

    def kmh(speed) -> float | None:
        try:
            return float(speed.get("max")) * _KMH_PER_UNIT[speed.get("unit", "m/s")]
        except (TypeError, ValueError, KeyError):
            return None

    roads, lanes = {}, {}
    for road in ET.fromstring(xodr).iter("road"):
        rid = int(road.get("id"))
        found = [(float(t.get("s", 0.0)), kmh(sp)) for t in road.findall("type") for sp in t.findall("speed")]
        if any(v is not None for _, v in found):
            roads[rid] = sorted((s, v) for s, v in found if v is not None)
        for k, section in enumerate(road.iter("laneSection")):
            for lane in section.iter("lane"):
                found = [(float(sp.get("sOffset", 0.0)), kmh(sp)) for sp in lane.findall("speed")]
                if any(v is not None for _, v in found):
                    lanes[(rid, k, int(lane.get("id")))] = sorted((s, v) for s, v in found if v is not None)
    return roads, lanes


class SpeedLimits:
    """The map's speed limits (km/h) painted lane by lane on a grid of `cell` m: a lane's own <speed>
    record, else its road's <type> speed. Junction lanes are painted first, so where a road outside a
    junction meets one, the road wins (as `RoadNetwork.locate`). Off every painted lane: NaN."""

    def __init__(self, network, xodr: str, cell: float = 0.5, max_cells: int = 1 << 22):
        self.grid = None
        roads, lanes = _speed_records(xodr)
        if not roads and not lanes:
            return
        geometries = sorted(network.lanes(), key=lambda g: g.junction_id == -1)
        if not geometries:
            return
        corners = np.concatenate([np.concatenate([g.inner[:, :2], g.outer[:, :2]]) for g in geometries])
        self.origin = corners.min(axis=0) - 1.0
        span = corners.max(axis=0) + 1.0 - self.origin
        self.cell = max(cell, math.sqrt(span[0] * span[1] / max_cells))
        shape = np.ceil(span / self.cell).astype(int)
        self.grid = np.full((shape[1], shape[0]), np.nan, np.float32)
        to_pixels = lambda line: np.round(  # noqa: E731 (cv2 pixel centres, 4 fractional bits)
            ((line[:, :2] - self.origin) / self.cell - 0.5) * 16).astype(np.int32)
        for g in geometries:
            records = lanes.get((g.road_id, g.section_index, g.lane_id))
            s_mid = 0.5 * (g.s[:-1] + g.s[1:]) - (g.s[0] if records else 0.0)  # lane records count from the section
            records = records or roads.get(g.road_id)
            if not records:
                continue
            starts, limits = np.array(records).T
            value = limits[np.maximum(np.searchsorted(starts, s_mid + 1e-9) - 1, 0)]
            inner, outer = to_pixels(g.inner), to_pixels(g.outer)
            quads = np.stack([inner[:-1], inner[1:], outer[1:], outer[:-1]], axis=1)
            for limit in np.unique(value):
                cv2.fillPoly(self.grid, list(quads[value == limit]), float(limit), shift=4)

    def at(self, xy: np.ndarray) -> np.ndarray:
        """(N,) km/h at world points (N, 2); NaN off every lane with a limit."""
        out = np.full(len(xy), np.nan)
        if self.grid is None or not len(xy):
            return out
        ij = np.floor((np.asarray(xy, float) - self.origin) / self.cell).astype(int)
        inside = (ij >= 0).all(axis=1) & (ij[:, 0] < self.grid.shape[1]) & (ij[:, 1] < self.grid.shape[0])
        out[inside] = self.grid[ij[inside, 1], ij[inside, 0]]
        return out
