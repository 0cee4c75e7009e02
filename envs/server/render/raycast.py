"""Rays against the scene the cameras draw: the tick's oriented boxes (`Renderer.boxes`) and the ground plane.

Used by the LiDARs, the radar and the obstacle sensor (`envs/server/lidar.py`). Vectorised with numpy: boxes
out of range, or holding the origin, are dropped; each remaining box's bounding sphere gives a window of ray
azimuths (rays sorted by azimuth once, the window found with `searchsorted`) and elevations, so only the
(ray, box) pairs that can meet go through the slab test. The nearest hit of each ray wins. One bounce, no
transparency: a ray stops at the first face it meets.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .boxes import FACE_NORMALS, BoxSet

NO_HIT, GROUND = -2, -1  # `Hits.box` values besides a box index


@dataclass
class Hits:
    distance: np.ndarray  # (N,) metres along each ray; inf where nothing within range
    box: np.ndarray  # (N,) box index, GROUND or NO_HIT
    face: np.ndarray  # (N,) face index 0..5 of the box (FACE_NORMALS order); 4 (top) for the ground
    normal: np.ndarray  # (N, 3) world outward normal of the surface hit ((0, 0, 1) for the ground)


def _windows(az_sorted: np.ndarray, center_az: np.ndarray, span: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per box up to three [lo, hi) ranges of sorted-azimuth positions covering center +- span (wrapping at pi)."""
    n, k = len(az_sorted), np.arange(len(center_az))
    full = span >= np.pi
    lo_a, hi_a = center_az - span, center_az + span
    lo = np.searchsorted(az_sorted, np.maximum(lo_a, -np.pi), "left")
    hi = np.searchsorted(az_sorted, np.minimum(hi_a, np.pi), "right")
    lo, hi = np.where(full, 0, lo), np.where(full, n, hi)
    wrap_low = ~full & (lo_a < -np.pi)  # the part below -pi continues from +pi downwards
    wrap_high = ~full & (hi_a > np.pi)
    box = [k, k[wrap_low], k[wrap_high]]
    los = [lo, np.searchsorted(az_sorted, lo_a[wrap_low] + 2 * np.pi, "left"), np.zeros(wrap_high.sum(), np.intp)]
    his = [hi, np.full(wrap_low.sum(), n, np.intp), np.searchsorted(az_sorted, hi_a[wrap_high] - 2 * np.pi, "right")]
    return np.concatenate(box), np.concatenate(los), np.concatenate(his)


def cast(origin: np.ndarray, directions: np.ndarray, boxes: BoxSet, max_range: float,
         ground: bool = True) -> Hits:
    """Nearest hit of each unit ray `directions` (N, 3) from `origin` (3,) within `max_range`, against `boxes` and,
    with `ground`, the plane z = 0 (the world's flat ground, docs/server.md)."""
    origin = np.asarray(origin, float)
    n = len(directions)
    best = np.full(n, np.inf)
    best_box = np.full(n, NO_HIT, np.intp)
    best_face = np.full(n, 4, np.intp)
    if n and len(boxes):
        offset = boxes.center - origin
        dist = np.linalg.norm(offset, axis=1)
        radius = np.linalg.norm(boxes.extent, axis=1)
        local_origin = np.einsum("kji,kj->ki", boxes.rot, -offset)  # origin in each box's frame
        inside = np.all(np.abs(local_origin) <= boxes.extent, axis=1)
        keep = (dist - radius < max_range) & ~inside
        idx = np.flatnonzero(keep)
        if len(idx):
            _hit_boxes(directions, boxes, idx, offset[idx], dist[idx], radius[idx], local_origin[idx], max_range,
                       best, best_box, best_face)
    if ground:
        dz = directions[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(dz < -1e-9, -origin[2] / dz, np.inf)
        on_ground = (t > 0.0) & (t < best) & (t <= max_range)
        best[on_ground], best_box[on_ground], best_face[on_ground] = t[on_ground], GROUND, 4
    normal = np.tile([0.0, 0.0, 1.0], (n, 1))
    on_box = best_box >= 0
    if on_box.any():
        normal[on_box] = np.einsum("nij,nj->ni", boxes.rot[best_box[on_box]], FACE_NORMALS[best_face[on_box]])
    best[best_box == NO_HIT] = np.inf
    return Hits(best, best_box, best_face, normal)


def _hit_boxes(directions, boxes: BoxSet, idx, offset, dist, radius, local_origin, max_range,
               best, best_box, best_face) -> None:
    az = np.arctan2(directions[:, 1], directions[:, 0])
    el = np.arcsin(np.clip(directions[:, 2], -1.0, 1.0))
    order = np.argsort(az, kind="stable")
    az_sorted = az[order]
    # each box's bounding sphere seen from the origin: a cone of half-angle alpha around its centre
    alpha = np.arcsin(np.clip(radius / np.maximum(dist, 1e-9), 0.0, 1.0))
    center_az = np.arctan2(offset[:, 1], offset[:, 0])
    center_el = np.arcsin(np.clip(offset[:, 2] / np.maximum(dist, 1e-9), -1.0, 1.0))
    over_pole = np.abs(center_el) + alpha >= np.pi / 2 - 1e-6
    with np.errstate(invalid="ignore", divide="ignore"):
        span = np.where(over_pole, np.pi,
                        np.arcsin(np.clip(np.sin(alpha) / np.maximum(np.cos(center_el), 1e-9), 0.0, 1.0)))
    span = np.where(~over_pole & (np.sin(alpha) >= np.cos(center_el)), np.pi, span)
    box, lo, hi = _windows(az_sorted, center_az, span)
    counts = np.maximum(hi - lo, 0)
    total = int(counts.sum())
    if total == 0:
        return
    starts = np.cumsum(counts) - counts
    pair_box = np.repeat(box, counts)
    pair_ray = order[np.arange(total) - np.repeat(starts, counts) + np.repeat(lo, counts)]
    near_el = np.abs(el[pair_ray] - center_el[pair_box]) <= alpha[pair_box] + 1e-9
    pair_box, pair_ray = pair_box[near_el], pair_ray[near_el]
    if not len(pair_box):
        return
    # slab test in each box's frame
    rot = boxes.rot[idx]
    d = np.einsum("pji,pj->pi", rot[pair_box], directions[pair_ray])
    o = local_origin[pair_box]
    e = boxes.extent[idx][pair_box]
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / np.where(np.abs(d) < 1e-12, 1e-12, d)
    t1, t2 = (-e - o) * inv, (e - o) * inv
    t_low, t_high = np.minimum(t1, t2), np.maximum(t1, t2)
    axis = np.argmax(t_low, axis=1)
    t_near = t_low[np.arange(len(axis)), axis]
    t_far = t_high.min(axis=1)
    hit = (t_near <= t_far) & (t_near > 0.0) & (t_near <= max_range)
    if not hit.any():
        return
    pair_box, pair_ray, t_near, axis = pair_box[hit], pair_ray[hit], t_near[hit], axis[hit]
    face = 2 * axis + (d[hit, axis] > 0.0)  # entering through the face that looks against the ray
    # the nearest hit per ray: sort by (ray, distance) and keep each ray's first
    order = np.lexsort((t_near, pair_ray))
    first = np.ones(len(order), bool)
    first[1:] = pair_ray[order][1:] != pair_ray[order][:-1]
    chosen = order[first]
    rays = pair_ray[chosen]
    closer = t_near[chosen] < best[rays]
    rays, chosen = rays[closer], chosen[closer]
    best[rays] = t_near[chosen]
    best_box[rays] = idx[pair_box[chosen]]
    best_face[rays] = face[chosen]
