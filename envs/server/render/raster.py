"""Geometry pass of one camera: which surface every pixel sees, how far away, and with which tag.

The ground is the plane z = 0, textured through a homography (one `cv2.warpPerspective` of the BGRA
texture), with exact per-pixel depth. Boxes are culled in bulk (distance, frustum, sub-pixel size), their
front faces picked from where the camera sits in each box's frame, all corners projected at once, faces that
cross the near plane clipped one by one, faces that cover less than `MIN_FACE_AREA` pixels dropped, and the
rest filled into an id buffer with `cv2.fillConvexPoly`, far box to near box (painter's order by the
distance from the camera to each box; boxes do not interpenetrate). Depth and tags are computed only when
asked for (the depth and semantic cameras, fog, wet roads): exact per pixel, from each face's plane
equation in the camera frame evaluated along the pixel's ray, and from the ground plane. Depth is CARLA's:
the distance along the camera's forward axis, capped at `FAR` (the sky).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache

import cv2
import numpy as np

from ..blueprints import TAG
from .boxes import FACE_CORNERS, FACE_NORMALS, BoxSet
from .scene import Ground

NEAR = 0.05  # m
FAR = 1000.0  # m: CARLA's depth camera range; the sky reads as FAR
DRAW_DISTANCE = 250.0  # m: boxes farther than this (nearest point) are not drawn
SUBPIXEL_BITS = 4
MIN_PIXELS = 0.75  # projected radius below which a box is not drawn
MIN_FACE_AREA = 1.0  # px^2: faces smaller than this (far wheels and lamps, occluded specks) are not drawn,
MIN_FACE_SPAN = 4.0  # px: unless they are longer than this (an edge-on face still draws a line)

# The 8 corners of a unit box (sign patterns) and, per face, the indices of its 4 corners in cyclic order.
BOX_SIGNS = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=float)
FACE_CORNER_INDEX = (((FACE_CORNERS[..., 0] > 0) * 4 + (FACE_CORNERS[..., 1] > 0) * 2
                      + (FACE_CORNERS[..., 2] > 0))).astype(np.intp)  # (6, 4)


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
        self.size, self.entries = size, {}

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
            if len(self.entries) >= self.size:
                self.entries.pop(next(iter(self.entries)))
            hit = self.entries[key] = (up, depth)
        return hit


_GROUND_RAYS = _GroundRays()


@dataclass
class Faces:
    """The faces drawn into a camera's id buffer, indexed by id: row 0 is a placeholder for id 0 (ground or
    sky), so that a table indexed with the whole id buffer needs no masking first."""

    normal: np.ndarray  # (F + 1, 3) world
    color: np.ndarray  # (F + 1, 3) float32 BGR
    emissive: np.ndarray  # (F + 1,) bool
    tag: np.ndarray  # (F + 1,) uint8
    plane: np.ndarray  # (F + 1, 4) float32: camera-frame normal n and offset d, n . p = d on the face

    @staticmethod
    def empty() -> "Faces":
        return Faces(np.zeros((1, 3)), np.zeros((1, 3), np.float32), np.zeros(1, bool), np.zeros(1, np.uint8),
                     np.array([[1.0, 0.0, 0.0, FAR]], np.float32))

    def __len__(self) -> int:
        return len(self.tag) - 1

    @cached_property
    def plane_columns(self) -> np.ndarray:
        """(4, F + 1) float32: `plane` with each coefficient contiguous."""
        return np.ascontiguousarray(self.plane.T)


@dataclass
class Geometry:
    """What one camera sees: `ids` index `faces` (0: ground or sky); depth, tags and the sky are computed
    on first use."""

    intr: Intrinsics
    position: np.ndarray  # (3,) camera location
    rotation: np.ndarray  # (3, 3) camera axes (forward, right, up) as columns
    ids: np.ndarray  # (H, W) uint16 (int32 beyond 65535 faces); 0 where no face
    ground_bgra: np.ndarray  # (H, W, 4) uint8: the ground texture (garbage where sky)
    up: np.ndarray  # (H, W) float32: world z of each pixel's ray (1, a, b); < 0 looks down
    faces: Faces
    ground: Ground
    homography: np.ndarray  # pixel -> ground texel
    ground_depth: np.ndarray  # (H, W) float32 depth of the ground plane along each ray (FAR where it misses)

    @property
    def ground_bgr(self) -> np.ndarray:
        return self.ground_bgra[..., :3]

    @cached_property
    def hit(self) -> np.ndarray:
        return self.ids > 0

    @cached_property
    def sky(self) -> np.ndarray:
        return ~self.hit & (self.ground_depth >= FAR)

    @cached_property
    def depth(self) -> np.ndarray:
        """(H, W) float32 metres along the view axis."""
        if not len(self.faces):
            return self.ground_depth
        a, b = ray_slopes(self.intr)
        ids, plane = self.ids, self.faces.plane_columns  # np.take is ~10x faster than [] on the id buffer
        denom = np.take(plane[0], ids) + np.take(plane[1], ids) * a[None, :] + np.take(plane[2], ids) * b[:, None]
        denom[np.abs(denom) <= 1e-9] = -1e-9
        face = np.take(plane[3], ids) / denom
        return np.where(self.hit, np.clip(face, NEAR, FAR), self.ground_depth)

    @cached_property
    def tag(self) -> np.ndarray:
        """(H, W) uint8 semantic tags."""
        size = (self.intr.width, self.intr.height)
        tag = cv2.warpPerspective(self.ground.tag, self.homography, size,
                                  flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
        tag[self.sky] = TAG["sky"]
        return np.where(self.hit, np.take(self.faces.tag, self.ids), tag)


def _cull(boxes: BoxSet, position: np.ndarray, rotation: np.ndarray, intr: Intrinsics) -> np.ndarray:
    """Indices of boxes whose bounding sphere is within the draw distance and the view frustum."""
    rel = boxes.center - position
    radius = boxes.radius()
    dist = np.sqrt(np.einsum("ij,ij->i", rel, rel))
    keep = dist - radius < DRAW_DISTANCE
    # Boxes whose bounding sphere spans less than MIN_PIXELS are skipped: they would not cover a pixel centre
    # reliably and cost as much as a building.
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


def _draw_boxes(boxes: BoxSet, position: np.ndarray, rotation: np.ndarray,
                intr: Intrinsics) -> tuple[np.ndarray, Faces]:
    """The id buffer of the visible faces of `boxes` (filled in painter's order) and their table."""
    index = _cull(boxes, position, rotation, intr)
    if not len(index):
        return np.zeros((intr.height, intr.width), np.uint16), Faces.empty()
    center, rot, extent = boxes.center[index], boxes.rot[index], boxes.extent[index]
    rel = center - position
    eye = -np.einsum("nji,nj->ni", rot, rel)  # the camera in each box's frame
    # Painter's key: distance from the camera to the nearest point of each box; far boxes first.
    key = np.sqrt(np.sum((eye - np.clip(eye, -extent, extent)) ** 2, axis=1))
    order = np.argsort(-key, kind="stable")
    order = order[key[order] < DRAW_DISTANCE]
    index, rot, extent, eye, rel = index[order], rot[order], extent[order], eye[order], rel[order]
    # A face is in front when the camera lies beyond its plane (faces in FACE_NORMALS order).
    front = np.stack([eye[:, 0] > extent[:, 0], eye[:, 0] < -extent[:, 0], eye[:, 1] > extent[:, 1],
                      eye[:, 1] < -extent[:, 1], eye[:, 2] > extent[:, 2], eye[:, 2] < -extent[:, 2]], axis=1)
    axes = np.matmul(rotation.T, rot)  # (N, 3, 3) box axes in the camera frame, as columns
    corners = (rel @ rotation)[:, None, :] + np.matmul(BOX_SIGNS[None] * extent[:, None, :],
                                                       axes.transpose(0, 2, 1))  # (N, 8, 3) camera frame
    box_idx, face_idx = np.nonzero(front)  # box-major: painter's order is kept
    quads = corners[box_idx[:, None], FACE_CORNER_INDEX[face_idx]]  # (F, 4, 3)
    forward = quads[:, :, 0]
    ahead = forward.max(axis=1) > NEAR
    box_idx, face_idx, quads, forward = box_idx[ahead], face_idx[ahead], quads[ahead], forward[ahead]
    f = intr.focal
    cx, cy = intr.width / 2.0, intr.height / 2.0
    scale = float(1 << SUBPIXEL_BITS)
    clipped = forward.min(axis=1) < NEAR
    with np.errstate(divide="ignore", invalid="ignore"):
        u = (cx + f * quads[:, :, 1] / forward - 0.5) * scale
        v = (cy - f * quads[:, :, 2] / forward - 0.5) * scale
        # Shoelace area of the projected quad, in pixels.
        area = 0.5 * np.abs(np.sum(u * np.roll(v, -1, axis=1) - np.roll(u, -1, axis=1) * v, axis=1)) / scale ** 2
    on_screen = ~clipped & (u.max(1) >= 0) & (u.min(1) < intr.width * scale) & (v.max(1) >= 0) \
        & (v.min(1) < intr.height * scale) \
        & ((area >= MIN_FACE_AREA) | (np.maximum(np.ptp(u, axis=1), np.ptp(v, axis=1)) >= MIN_FACE_SPAN * scale))
    limit = 4.0 * max(intr.width, intr.height) * scale
    polygons = list(np.clip(np.nan_to_num(np.stack([u, v], axis=-1)), -limit, limit).astype(np.int32))
    for k in np.flatnonzero(clipped).tolist():  # few faces cross the near plane: clip them one by one
        poly = _clip_near(quads[k])
        if len(poly) >= 3:
            proj = np.stack([(cx + f * poly[:, 1] / poly[:, 0] - 0.5) * scale,
                             (cy - f * poly[:, 2] / poly[:, 0] - 0.5) * scale], axis=-1)
            polygons[k] = np.clip(proj, -limit, limit).astype(np.int32)
            on_screen[k] = True
    # uint16 ids fill twice as fast as int32 ones (OpenCV's per-call cost); face k is drawn as k + 1.
    ids = np.zeros((intr.height, intr.width), np.uint16 if len(quads) < 65535 else np.int32)
    fill, line, shift = cv2.fillConvexPoly, cv2.LINE_8, SUBPIXEL_BITS
    for k in np.flatnonzero(on_screen).tolist():
        fill(ids, polygons[k], k + 1, line, shift)

    normal_cam = np.matmul(axes, FACE_NORMALS.T).transpose(0, 2, 1)[box_idx, face_idx]  # (F, 3)
    offset = np.einsum("fj,fj->f", normal_cam, quads[:, 0])
    src = index[box_idx]
    pad = lambda table, first: np.concatenate([np.asarray(first, table.dtype)[None], table])  # noqa: E731
    return ids, Faces(pad(normal_cam @ rotation.T, (0.0, 0.0, 1.0)), pad(boxes.color[src, face_idx], (0, 0, 0)),
                 pad(boxes.emissive[src, face_idx], False), pad(boxes.tag[src, face_idx], 0),
                 pad(np.concatenate([normal_cam, offset[:, None]], axis=1).astype(np.float32), (1.0, 0, 0, FAR)))


def render_geometry(ground: Ground, boxes: BoxSet, position: np.ndarray, rotation: np.ndarray,
                    intr: Intrinsics) -> Geometry:
    up, ground_depth = _GROUND_RAYS.get(intr, rotation, position[2])
    ground_bgra, homography = _ground(ground, position, rotation, intr)
    ids, faces = _draw_boxes(boxes, position, rotation, intr)
    return Geometry(intr, position, rotation, ids, ground_bgra, up, faces, ground, homography, ground_depth)
