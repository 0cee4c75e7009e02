"""Rigid transforms in CARLA's (Unreal's) left-handed frame: x forward, y right, z up, angles in degrees.

A rotation matrix here has the actor's local axes (forward, right, up) as columns, so
`world = R @ local + location`. The forward vector of (pitch, yaw, roll) is
(cos p cos y, cos p sin y, sin p), as in `carla.Rotation.get_forward_vector()`.
"""
from __future__ import annotations

import math

import numpy as np


def rotation_matrix(pitch: float, yaw: float, roll: float) -> np.ndarray:
    p, y, r = math.radians(pitch), math.radians(yaw), math.radians(roll)
    sp, cp, sy, cy, sr, cr = math.sin(p), math.cos(p), math.sin(y), math.cos(y), math.sin(r), math.cos(r)
    forward = (cp * cy, cp * sy, sp)
    right = (sr * sp * cy - cr * sy, sr * sp * sy + cr * cy, -sr * cp)
    up = (-(cr * sp * cy + sr * sy), cy * sr - cr * sp * sy, cr * cp)
    return np.array([forward, right, up]).T


def rotation_angles(matrix: np.ndarray) -> tuple[float, float, float]:
    """Inverse of `rotation_matrix`: (pitch, yaw, roll) in degrees."""
    forward, right, up = matrix[:, 0], matrix[:, 1], matrix[:, 2]
    pitch = math.degrees(math.asin(max(-1.0, min(1.0, forward[2]))))
    yaw = math.degrees(math.atan2(forward[1], forward[0]))
    roll = math.degrees(math.atan2(-right[2], up[2]))
    return pitch, yaw, roll


def compose(parent: np.ndarray, relative: np.ndarray) -> np.ndarray:
    """World transform [x, y, z, pitch, yaw, roll] of a child given its parent's and its relative one."""
    rot_parent = rotation_matrix(*parent[3:6])
    location = rot_parent @ relative[:3] + parent[:3]
    angles = rotation_angles(rot_parent @ rotation_matrix(*relative[3:6]))
    return np.array([*location, *angles])


def relative_to(frame: np.ndarray, world: np.ndarray) -> np.ndarray:
    """The transform of `world` expressed in `frame` (inverse of `compose`)."""
    rot_frame = rotation_matrix(*frame[3:6])
    location = rot_frame.T @ (world[:3] - frame[:3])
    angles = rotation_angles(rot_frame.T @ rotation_matrix(*world[3:6]))
    return np.array([*location, *angles])


def box_corners_2d(center: np.ndarray, extent_xy: np.ndarray, yaw_deg: np.ndarray) -> np.ndarray:
    """Corners (N, 4, 2) of oriented rectangles given centres (N, 2), half sizes (N, 2) and yaws (N,)."""
    yaw = np.radians(yaw_deg)
    c, s = np.cos(yaw), np.sin(yaw)
    axis_x = np.stack([c, s], axis=-1) * extent_xy[:, :1]
    axis_y = np.stack([-s, c], axis=-1) * extent_xy[:, 1:2]
    signs = np.array([[1, 1], [1, -1], [-1, -1], [-1, 1]], dtype=float)
    return center[:, None, :] + signs[None, :, :1] * axis_x[:, None, :] + signs[None, :, 1:] * axis_y[:, None, :]
