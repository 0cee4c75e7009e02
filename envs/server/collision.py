"""Contacts between oriented bounding boxes, and the push that keeps bodies from passing through each other.

Boxes are tested in the ground plane with the separating-axis theorem (after a cheap bounding-circle pass)
and must also overlap in height. The response moves the bodies apart along the axis of least penetration,
shared by inverse mass (immovable bodies have mass 0), and applies a slightly inelastic impulse.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .geometry import box_corners_2d

RESTITUTION = 0.2


@dataclass
class Contact:
    a: int  # index into the batch
    b: int
    normal: np.ndarray  # unit, ground plane, pointing from a to b
    depth: float


def find_contacts(center: np.ndarray, extent: np.ndarray, yaw: np.ndarray) -> list[Contact]:
    """Pairs of overlapping boxes. `center` (N, 3) world box centres, `extent` (N, 3) half sizes, `yaw` (N,)."""
    n = len(center)
    if n < 2:
        return []
    radius = np.hypot(extent[:, 0], extent[:, 1])
    delta = center[None, :, :2] - center[:, None, :2]
    near = np.hypot(delta[..., 0], delta[..., 1]) < radius[:, None] + radius[None, :]
    near &= np.abs(center[None, :, 2] - center[:, None, 2]) < extent[:, None, 2] + extent[None, :, 2]
    ii, jj = np.nonzero(np.triu(near, k=1))
    if len(ii) == 0:
        return []
    corners = box_corners_2d(center[:, :2], extent[:, :2], yaw)
    contacts = []
    for i, j in zip(ii.tolist(), jj.tolist()):
        hit = _separating_axis(corners[i], corners[j], yaw[i], yaw[j])
        if hit is not None:
            normal, depth = hit
            if np.dot(normal, center[j, :2] - center[i, :2]) < 0.0:
                normal = -normal
            contacts.append(Contact(i, j, normal, depth))
    return contacts


def _separating_axis(a: np.ndarray, b: np.ndarray, yaw_a: float, yaw_b: float) -> tuple[np.ndarray, float] | None:
    best_depth, best_axis = np.inf, None
    for yaw in (yaw_a, yaw_b):
        rad = np.radians(yaw)
        for axis in (np.array([np.cos(rad), np.sin(rad)]), np.array([-np.sin(rad), np.cos(rad)])):
            pa, pb = a @ axis, b @ axis
            depth = min(pa.max(), pb.max()) - max(pa.min(), pb.min())
            if depth <= 0.0:
                return None
            if depth < best_depth:
                best_depth, best_axis = depth, axis
    return best_axis, float(best_depth)


def resolve(contact: Contact, position: np.ndarray, velocity: np.ndarray, inv_mass: np.ndarray) -> np.ndarray:
    """Separate the pair and exchange momentum in place. Returns the impulse on `b` (N*s, world frame)."""
    a, b, n = contact.a, contact.b, np.array([*contact.normal, 0.0])
    total = inv_mass[a] + inv_mass[b]
    if total == 0.0:
        return np.zeros(3)
    position[a] -= n * contact.depth * inv_mass[a] / total
    position[b] += n * contact.depth * inv_mass[b] / total
    approach = float(np.dot(velocity[b] - velocity[a], n))
    if approach >= 0.0:
        return np.zeros(3)
    impulse = -(1.0 + RESTITUTION) * approach / total
    velocity[a] -= n * impulse * inv_mass[a]
    velocity[b] += n * impulse * inv_mass[b]
    return n * impulse
