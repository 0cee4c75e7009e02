"""Geometry pass of one camera: which surface every pixel sees, how far away, and with which tag.

The ground is the plane z = 0, textured through a homography (one `cv2.warpPerspective` of the BGRA
texture), with exact per-pixel depth. Boxes go through the compiled rasterizer (`zbuffer.c`): culled (distance,
frustum, sub-pixel size), front faces picked from where the camera sits in each box's frame, faces crossing
the near plane clipped, then filled row by row into a z-buffer seeded with the ground's depth, so occlusion is
exact per pixel. It writes a face id (6 * box + face + 1; 0: ground or sky) and depth for every pixel; tags are
computed only when asked for (the semantic camera, wet roads). Depth is CARLA's: the distance along the
camera's forward axis, capped at `FAR` (the sky).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import lru_cache

import cv2
import numpy as np

from ..blueprints import TAG
from .boxes import BoxSet
from .native import library
from .scene import Ground

NEAR = 0.05  # m
FAR = 1000.0  # m: CARLA's depth camera range; the sky reads as FAR
DRAW_DISTANCE = 250.0  # m: boxes farther than this (nearest point) are not drawn
MIN_PIXELS = 0.75  # projected radius below which a box is not drawn (it would flicker in and out of pixels)


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


@lru_cache(maxsize=64)
def ray_norm(intr: Intrinsics) -> np.ndarray:
    """(H, W) float32 length of each pixel's ray (1, a, b)."""
    a, b = ray_slopes(intr)
    return np.sqrt(1.0 + a[None, :] ** 2 + b[:, None] ** 2).astype(np.float32)


class _GroundRays:
    """Per-pixel ray elevation `up` and ground depth of a camera: they depend only on the intrinsics, the
    camera's height and the z row of its rotation (not on its x, y or yaw), so a camera on a vehicle driving on
    flat ground reuses them tick after tick. A small cache keyed by exactly those values."""

    def __init__(self, size: int = 32):
        self.size, self.entries, self.lock = size, {}, threading.Lock()

    def get(self, intr: Intrinsics, rotation: np.ndarray, height: float) -> tuple[np.ndarray, np.ndarray]:
        key = (intr, rotation[2].tobytes(), float(height))
        hit = self.entries.get(key)
        if hit is None:
            a, b = ray_slopes(intr)
            up = (rotation[2, 0] + rotation[2, 1] * a[None, :] + rotation[2, 2] * b[:, None]).astype(np.float32)
            with np.errstate(divide="ignore"):
                depth = np.where(up < -1e-6, -height / np.minimum(up, -1e-6), FAR)
            depth = np.minimum(depth, FAR).astype(np.float32)
            up.flags.writeable = depth.flags.writeable = False
            with self.lock:  # cameras render on several threads
                if len(self.entries) >= self.size:
                    self.entries.pop(next(iter(self.entries)))
                hit = self.entries[key] = (up, depth)
        return hit


_GROUND_RAYS = _GroundRays()


@dataclass
class Faces:
    """Every face of a tick's boxes, indexed by face id (6 * box + face + 1): row 0 stands for id 0 (ground or
    sky), so that a table indexed with a whole id buffer needs no masking first. Shared by all cameras."""

    normal: np.ndarray  # (F + 1, 3) world
    color: np.ndarray  # (F + 1, 3) float32 BGR
    emissive: np.ndarray  # (F + 1,) bool
    tag: np.ndarray  # (F + 1,) uint8
    owner: np.ndarray  # (F + 1,) int64 id of the actor a face belongs to (0: scenery, ground or sky)

    @staticmethod
    def of(boxes: BoxSet, owner: np.ndarray | None = None) -> Faces:
        """`owner`: the actor id of each box (None: all scenery)."""
        pad = lambda table, first: np.concatenate([np.asarray(first, table.dtype)[None], table])  # noqa: E731
        normal = boxes.normals().reshape(-1, 3)
        box_owner = np.zeros(len(boxes), np.int64) if owner is None else np.asarray(owner, np.int64)
        return Faces(pad(normal, (0.0, 0.0, 1.0)), pad(boxes.color.reshape(-1, 3), (0, 0, 0)),
                     pad(boxes.emissive.reshape(-1), False), pad(boxes.tag.reshape(-1), 0),
                     pad(np.repeat(box_owner, 6), 0))


@dataclass
class Geometry:
    """What one camera sees: `ids` index `faces` (0: ground or sky); tags are computed on first use."""

    intr: Intrinsics
    position: np.ndarray  # (3,) camera location
    rotation: np.ndarray  # (3, 3) camera axes (forward, right, up) as columns
    ids: np.ndarray  # (H, W) int32; 0 where no face
    depth: np.ndarray  # (H, W) float32 metres along the view axis (FAR for the sky)
    ground_bgra: np.ndarray  # (H, W, 4) uint8: the ground texture (garbage where sky)
    up: np.ndarray  # (H, W) float32: world z of each pixel's ray (1, a, b); < 0 looks down
    faces: Faces
    ground: Ground
    homography: np.ndarray  # pixel -> ground texel
    ground_depth: np.ndarray  # (H, W) float32 depth of the ground plane along each ray (FAR where it misses)

    _tag: np.ndarray | None = field(default=None, repr=False)

    @property
    def owner(self) -> np.ndarray:
        """(H, W) int64 id of the actor each pixel sees (0: scenery, ground or sky)."""
        return np.take(self.faces.owner, self.ids)

    @property
    def tag(self) -> np.ndarray:
        """(H, W) uint8 semantic tags, computed on first use (a plain memo: on Python < 3.12 a cached_property
        holds one lock for all instances, which would make the cameras' threads take turns)."""
        if self._tag is None:
            size = (self.intr.width, self.intr.height)
            tag = cv2.warpPerspective(self.ground.tag, self.homography, size, flags=cv2.INTER_NEAREST |
                                      cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
            hit = self.ids > 0
            tag[~hit & (self.ground_depth >= FAR)] = TAG["sky"]
            self._tag = np.where(hit, np.take(self.faces.tag, self.ids), tag)
        return self._tag


def _ground(ground: Ground, position: np.ndarray, rotation: np.ndarray,
            intr: Intrinsics) -> tuple[np.ndarray, np.ndarray]:
    """Ground colour (BGRA) seen through the camera, and the pixel -> texel homography."""
    f = intr.focal
    cx, cy = intr.width / 2.0 - 0.5, intr.height / 2.0 - 0.5
    pixel_to_ray = np.array([[0, 0, 1.0], [1 / f, 0, -cx / f], [0, -1 / f, cy / f]])
    cam_x, cam_y, height = position
    ray_to_ground = np.array([[-height, 0, cam_x], [0, -height, cam_y], [0, 0, 1.0]])
    homography = ground.texel_matrix() @ ray_to_ground @ rotation @ pixel_to_ray
    bgra = cv2.warpPerspective(ground.bgra, homography, (intr.width, intr.height),
                               flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
    return bgra, homography


def _draw_boxes(boxes: BoxSet, position: np.ndarray, rotation: np.ndarray, intr: Intrinsics,
                ground_depth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Face ids and depth of the boxes over the ground (the compiled rasterizer; see `zbuffer.c`)."""
    ids = np.empty((intr.height, intr.width), np.int32)
    depth = np.empty((intr.height, intr.width), np.float32)
    library().draw_boxes(len(boxes), boxes.center, boxes.rot, boxes.extent, np.ascontiguousarray(position, float),
                         np.ascontiguousarray(rotation, float), intr.width, intr.height, intr.focal, NEAR,
                         DRAW_DISTANCE, MIN_PIXELS, ground_depth, ids, depth)
    return ids, depth


def render_geometry(ground: Ground, boxes: BoxSet, faces: Faces, position: np.ndarray, rotation: np.ndarray,
                    intr: Intrinsics) -> Geometry:
    """The geometry pass of one camera; `faces` is `Faces.of(boxes)`."""
    up, ground_depth = _GROUND_RAYS.get(intr, rotation, position[2])
    ground_bgra, homography = _ground(ground, position, rotation, intr)
    ids, depth = _draw_boxes(boxes, position, rotation, intr, ground_depth)
    return Geometry(intr, position, rotation, ids, depth, ground_bgra, up, faces, ground, homography, ground_depth)
