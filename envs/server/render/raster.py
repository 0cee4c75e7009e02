"""Geometry pass of one camera: which surface every pixel sees, how far away, and with which tag.

The ground is the plane z = 0, textured through a homography (one `cv2.warpPerspective`), with exact
per-pixel depth. Boxes are culled (distance, frustum, back faces), clipped at the near plane, sorted far to
near by the distance from the camera to each box (painter's order; boxes do not interpenetrate) and filled
into an id buffer with `cv2.fillConvexPoly`; their depth is then computed exactly per pixel from each face's
plane. Depth is CARLA's: the distance along the camera's forward axis, capped at `FAR` (the sky).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from ..blueprints import TAG
from .boxes import BoxSet
from .scene import Ground

NEAR = 0.05  # m
FAR = 1000.0  # m: CARLA's depth camera range; the sky reads as FAR
DRAW_DISTANCE = 250.0  # m: boxes farther than this (nearest point) are not drawn
SUBPIXEL_BITS = 4
MIN_PIXELS = 0.75  # projected radius below which a box is not drawn


@dataclass(frozen=True)
class Intrinsics:
    width: int
    height: int
    fov: float  # horizontal, degrees

    @property
    def focal(self) -> float:
        return self.width / (2.0 * np.tan(np.radians(self.fov) / 2.0))


@lru_cache(maxsize=64)
def ray_slopes(intr: Intrinsics) -> tuple[np.ndarray, np.ndarray]:
    """Camera-frame ray (1, a, b) of each pixel centre: a per column (right), b per row (up)."""
    f = intr.focal
    a = ((np.arange(intr.width) + 0.5 - intr.width / 2.0) / f).astype(np.float32)
    b = (-(np.arange(intr.height) + 0.5 - intr.height / 2.0) / f).astype(np.float32)
    return a, b


@dataclass
class Geometry:
    """What one camera sees. `face_*` describe the faces in `ids` (-1: ground or sky)."""

    intr: Intrinsics
    position: np.ndarray  # (3,) camera location
    rotation: np.ndarray  # (3, 3) camera axes (forward, right, up) as columns
    ids: np.ndarray  # (H, W) int32
    depth: np.ndarray  # (H, W) float32, metres along the view axis
    tag: np.ndarray  # (H, W) uint8
    ground_bgr: np.ndarray  # (H, W, 3) uint8: the ground texture (garbage where sky)
    up: np.ndarray  # (H, W) float32: world z of each pixel's ray (1, a, b); < 0 looks down
    face_normal: np.ndarray  # (F, 3) world
    face_color: np.ndarray  # (F, 3) float32 BGR
    face_emissive: np.ndarray  # (F,) bool

    @property
    def sky(self) -> np.ndarray:
        return (self.ids < 0) & (self.depth >= FAR)


def _cull(boxes: BoxSet, position: np.ndarray, rotation: np.ndarray, intr: Intrinsics) -> np.ndarray:
    """Indices of boxes whose bounding sphere is within the draw distance and the view frustum."""
    rel = boxes.center - position
    radius = boxes.radius()
    dist = np.linalg.norm(rel, axis=1)
    keep = dist - radius < DRAW_DISTANCE
    # Boxes whose bounding sphere spans less than MIN_PIXELS are skipped: they would not cover a pixel centre
    # reliably and cost as much Python as a building.
    keep &= intr.focal * radius > MIN_PIXELS * np.maximum(dist - radius, NEAR)
    local = rel @ rotation  # (forward, right, up)
    half_w = np.arctan(intr.width / (2.0 * intr.focal))
    half_h = np.arctan(intr.height / (2.0 * intr.focal))
    keep &= local[:, 0] > -radius
    # A sphere is outside a side plane through the camera if its centre lies beyond it by more than r.
    for half, axis in ((half_w, 1), (half_h, 2)):
        c, s = np.cos(half), np.sin(half)
        keep &= (local[:, axis] * c - local[:, 0] * s) < radius
        keep &= (-local[:, axis] * c - local[:, 0] * s) < radius
    return np.flatnonzero(keep)


def _clip_near(poly: np.ndarray) -> np.ndarray:
    """Sutherland-Hodgman clip of a camera-frame polygon (K, 3) to forward >= NEAR."""
    out = []
    for i in range(len(poly)):
        p, q = poly[i], poly[(i + 1) % len(poly)]
        p_in, q_in = p[0] >= NEAR, q[0] >= NEAR
        if p_in:
            out.append(p)
        if p_in != q_in:
            t = (NEAR - p[0]) / (q[0] - p[0])
            out.append(p + t * (q - p))
    return np.array(out)


def _ground(ground: Ground, position: np.ndarray, rotation: np.ndarray, intr: Intrinsics,
            up: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ground colour, tag and depth seen through the camera (depth FAR where the ray misses the ground)."""
    f = intr.focal
    cx, cy = intr.width / 2.0 - 0.5, intr.height / 2.0 - 0.5
    pixel_to_ray = np.array([[0, 0, 1.0], [1 / f, 0, -cx / f], [0, -1 / f, cy / f]])
    cam_x, cam_y, height = position
    ray_to_ground = np.array([[-height, 0, cam_x], [0, -height, cam_y], [0, 0, 1.0]])
    homography = ground.texel_matrix() @ ray_to_ground @ rotation @ pixel_to_ray
    size = (intr.width, intr.height)
    flags = cv2.WARP_INVERSE_MAP
    bgr = cv2.warpPerspective(ground.bgr, homography, size, flags=cv2.INTER_LINEAR | flags,
                              borderMode=cv2.BORDER_REPLICATE)
    tag = cv2.warpPerspective(ground.tag, homography, size, flags=cv2.INTER_NEAREST | flags,
                              borderMode=cv2.BORDER_REPLICATE)
    with np.errstate(divide="ignore"):
        depth = np.where(up < -1e-6, -height / np.minimum(up, -1e-6), FAR)
    depth = np.minimum(depth, FAR).astype(np.float32)
    return bgr, tag, depth


def render_geometry(ground: Ground, boxes: BoxSet, position: np.ndarray, rotation: np.ndarray,
                    intr: Intrinsics) -> Geometry:
    a, b = ray_slopes(intr)
    up = (rotation[2, 0] + rotation[2, 1] * a[None, :] + rotation[2, 2] * b[:, None]).astype(np.float32)
    ground_bgr, tag, depth = _ground(ground, position, rotation, intr, up)
    tag = np.where(depth >= FAR, np.uint8(TAG["sky"]), tag)
    ids = np.full((intr.height, intr.width), -1, np.int32)

    visible = boxes.select(_cull(boxes, position, rotation, intr))
    if not len(visible):
        return Geometry(intr, position, rotation, ids, depth, tag, ground_bgr, up, np.zeros((0, 3)),
                        np.zeros((0, 3), np.float32), np.zeros(0, bool))
    corners = (visible.corners() - position) @ rotation  # (N, 6, 4, 3) camera frame
    normals_world = visible.normals()
    normals = normals_world @ rotation
    front = np.einsum("nfj,nfj->nf", normals, corners[:, :, 0, :]) < 0.0
    # Painter's key: distance from the camera to the nearest point of each box.
    local = np.einsum("nji,nj->ni", visible.rot, position - visible.center)
    key = np.linalg.norm(local - np.clip(local, -visible.extent, visible.extent), axis=1)
    box_idx, face_idx = np.nonzero(front & (key[:, None] < DRAW_DISTANCE))
    quads = corners[box_idx, face_idx]  # (F, 4, 3)
    forward = quads[:, :, 0]
    ahead = forward.max(axis=1) > NEAR
    box_idx, face_idx, quads, forward = box_idx[ahead], face_idx[ahead], quads[ahead], forward[ahead]
    f = intr.focal
    cx, cy = intr.width / 2.0, intr.height / 2.0
    scale = float(1 << SUBPIXEL_BITS)
    order = np.argsort(-key[box_idx], kind="stable")
    clipped = forward.min(axis=1) < NEAR
    with np.errstate(divide="ignore", invalid="ignore"):
        u = (cx + f * quads[:, :, 1] / forward - 0.5) * scale
        v = (cy - f * quads[:, :, 2] / forward - 0.5) * scale
    pts = np.stack([u, v], axis=-1)
    limit = 4.0 * max(intr.width, intr.height) * scale
    on_screen = ~clipped & (pts[..., 0].max(1) >= 0) & (pts[..., 0].min(1) < intr.width * scale) \
        & (pts[..., 1].max(1) >= 0) & (pts[..., 1].min(1) < intr.height * scale)
    pts_int = np.clip(np.nan_to_num(pts), -limit, limit).astype(np.int32)
    polygons = dict(zip(np.flatnonzero(on_screen).tolist(), pts_int[on_screen]))
    for k in np.flatnonzero(clipped).tolist():  # few faces cross the near plane: clip them one by one
        poly = _clip_near(quads[k])
        if len(poly) >= 3:
            proj = np.stack([(cx + f * poly[:, 1] / poly[:, 0] - 0.5) * scale,
                             (cy - f * poly[:, 2] / poly[:, 0] - 0.5) * scale], axis=-1)
            polygons[k] = np.clip(proj, -limit, limit).astype(np.int32)
    fill = cv2.fillConvexPoly
    for k in order.tolist():
        poly = polygons.get(k)
        if poly is not None:
            fill(ids, poly, k, cv2.LINE_8, SUBPIXEL_BITS)

    hit = ids >= 0
    if hit.any():
        rows, cols = np.nonzero(hit)
        face = ids[rows, cols]
        n = normals[box_idx[face], face_idx[face]]
        plane = np.einsum("fj,fj->f", n, quads[face, 0])
        denom = n[:, 0] + n[:, 1] * a[cols] + n[:, 2] * b[rows]
        dist = plane / np.where(np.abs(denom) > 1e-9, denom, -1e-9)
        depth[rows, cols] = np.clip(dist, NEAR, FAR)
        tag[rows, cols] = visible.tag[box_idx[face], face_idx[face]]
    return Geometry(intr, position, rotation, ids, depth, tag, ground_bgr, up,
                    normals_world[box_idx, face_idx], visible.color[box_idx, face_idx],
                    visible.emissive[box_idx, face_idx])
