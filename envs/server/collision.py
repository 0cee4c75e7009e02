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
    dx = center[:, None, 0] - center[None, :, 0]
    dy = center[:, None, 1] - center[None, :, 1]
    reach = radius[:, None] + radius[None, :]
    near = dx * dx + dy * dy < reach * reach
    ii, jj = np.nonzero(near)
    upper = ii < jj
    ii, jj = ii[upper], jj[upper]
    stacked = np.abs(center[ii, 2] - center[jj, 2]) < extent[ii, 2] + extent[jj, 2]
    ii, jj = ii[stacked], jj[stacked]
    if len(ii) == 0:
        return []
    corners = box_corners_2d(center[:, :2], extent[:, :2], yaw)
    # Separating axes of each candidate pair: the two edge directions of each box, (P, 4, 2).
    rad = np.radians(yaw)
    edges = np.stack([np.cos(rad), np.sin(rad), -np.sin(rad), np.cos(rad)], axis=1).reshape(-1, 2, 2)
    axes = np.concatenate([edges[ii], edges[jj]], axis=1)
    proj_a = np.einsum("pkd,pcd->pkc", axes, corners[ii])
    proj_b = np.einsum("pkd,pcd->pkc", axes, corners[jj])
    depth = np.minimum(proj_a.max(-1), proj_b.max(-1)) - np.maximum(proj_a.min(-1), proj_b.min(-1))
    hit = np.all(depth > 0.0, axis=1)
    contacts = []
    for p in np.nonzero(hit)[0].tolist():
        k = int(np.argmin(depth[p]))
        normal = axes[p, k]
        i, j = int(ii[p]), int(jj[p])
        if np.dot(normal, center[j, :2] - center[i, :2]) < 0.0:
            normal = -normal
        contacts.append(Contact(i, j, normal, float(depth[p, k])))
    return contacts


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
