"""Oriented boxes: the only primitive the renderer draws besides the ground plane.

A `BoxSet` holds N boxes as arrays, the layout the compiled rasterizer (`zbuffer.c`) reads. Each box has six
faces in the order of `FACE_NORMALS` (which `zbuffer.c` repeats, with each face's corners), each with its own
colour (BGR, 0-255), semantic tag and emissive flag (emissive faces glow: they ignore lighting, e.g. lamps and
headlights).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Face order: front (+x), back (-x), right (+y), left (-y), top (+z), bottom (-z), in the box's local frame.
FRONT, BACK, RIGHT, LEFT, TOP, BOTTOM = range(6)
FACE_NORMALS = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], dtype=float)


def yaw_pitch_matrix(yaw_deg: np.ndarray, pitch_deg: np.ndarray | float = 0.0) -> np.ndarray:
    """(N, 3, 3) rotations with local axes as columns (CARLA convention, roll 0), vectorised."""
    yaw, pitch = np.radians(np.asarray(yaw_deg, float)), np.radians(np.broadcast_to(pitch_deg, np.shape(yaw_deg)))
    cy, sy, cp, sp = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
    zero = np.zeros_like(cy)
    forward = np.stack([cp * cy, cp * sy, sp], -1)
    right = np.stack([-sy, cy, zero], -1)
    up = np.stack([-sp * cy, -sp * sy, cp], -1)
    return np.stack([forward, right, up], -1)


@dataclass
class BoxSet:
    center: np.ndarray  # (N, 3) world or parent frame
    rot: np.ndarray  # (N, 3, 3), local axes as columns
    extent: np.ndarray  # (N, 3) half sizes
    color: np.ndarray  # (N, 6, 3) float32 BGR
    tag: np.ndarray  # (N, 6) uint8 semantic ids
    emissive: np.ndarray  # (N, 6) bool

    def __len__(self) -> int:
        return len(self.center)

    @staticmethod
    def empty() -> BoxSet:
        return BoxSet(np.zeros((0, 3)), np.zeros((0, 3, 3)), np.zeros((0, 3)), np.zeros((0, 6, 3), np.float32),
                      np.zeros((0, 6), np.uint8), np.zeros((0, 6), bool))

    @staticmethod
    def concat(sets: list[BoxSet]) -> BoxSet:
        sets = [s for s in sets if len(s)]
        if not sets:
            return BoxSet.empty()
        return BoxSet(*(np.concatenate([getattr(s, name) for s in sets]) for name in
                        ("center", "rot", "extent", "color", "tag", "emissive")))

    def normals(self) -> np.ndarray:
        """(N, 6, 3) outward face normals in the world frame."""
        return np.einsum("nij,fj->nfi", self.rot, FACE_NORMALS)


class BoxBuilder:
    """Collects boxes one by one (colours given as RGB for readability) and packs them into a `BoxSet`."""

    def __init__(self) -> None:
        self._rows: list[tuple] = []

    def add(self, center, extent, rgb, tag: int, yaw: float = 0.0, pitch: float = 0.0,
            faces: dict[int, tuple[int, int, int]] | None = None, emissive: tuple[int, ...] = (),
            face_tags: dict[int, int] | None = None) -> None:
        color = np.tile(np.array(rgb[::-1], np.float32), (6, 1))
        for face, face_rgb in (faces or {}).items():
            color[face] = face_rgb[::-1]
        tags = np.full(6, tag, np.uint8)
        for face, face_tag in (face_tags or {}).items():
            tags[face] = face_tag
        glow = np.zeros(6, bool)
        glow[list(emissive)] = True
        self._rows.append((np.asarray(center, float), np.asarray(extent, float), yaw, pitch, color, tags, glow))

    def build(self) -> BoxSet:
        if not self._rows:
            return BoxSet.empty()
        center, extent, yaw, pitch, color, tag, glow = (np.array(col) for col in zip(*self._rows))
        return BoxSet(center, yaw_pitch_matrix(yaw, pitch), extent, color.astype(np.float32), tag, glow)
