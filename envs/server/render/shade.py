"""Colour pass: turns a camera's `Geometry` into a lit BGR image under a `Lighting`.

Flat shading (one light value per face: ambient + sun), the ground lit as an upward face, emissive faces
unlit, the parent vehicle's headlights as a cone of light at night, wet roads darker and mirroring the sky,
then fog by depth and rain streaks on top.
"""
from __future__ import annotations

import numpy as np

from ..blueprints import TAG
from .raster import Geometry, ray_slopes
from .weather import Lighting, fog_amount, rain_streaks, sky_colors

HEADLIGHT_GAIN = 2.2
HEADLIGHT_RANGE = 14.0  # m at which the beam has fallen to half


def _headlights(geo: Geometry, beams: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """(H, W) extra light from headlight beams (origin, unit forward) on every surface pixel."""
    a, b = ray_slopes(geo.intr)
    rays = geo.rotation[:, 0][None, None, :] + geo.rotation[:, 1] * a[None, :, None] \
        + geo.rotation[:, 2] * b[:, None, None]
    points = geo.position + rays * geo.depth[..., None]
    light = np.zeros(geo.depth.shape, np.float32)
    for origin, forward in beams:
        rel = points - origin
        along = rel @ forward
        lateral = np.linalg.norm(rel - along[..., None] * forward, axis=-1)
        cone = np.exp(-(lateral / (0.25 + 0.28 * np.maximum(along, 0.0))) ** 2)
        light += np.where(along > 0.0, cone / (1.0 + (along / HEADLIGHT_RANGE) ** 2), 0.0)
    return HEADLIGHT_GAIN * light


def shade(geo: Geometry, light: Lighting, beams: list[tuple[np.ndarray, np.ndarray]],
          seed: tuple[int, ...]) -> np.ndarray:
    """(H, W, 3) uint8 BGR image."""
    ids = geo.ids
    hit = ids >= 0
    sky = geo.sky
    face_light = light.ambient + light.diffuse * np.clip(geo.face_normal @ light.sun, 0.0, None) \
        + 0.08 * (1.0 - light.night) * np.clip(geo.face_normal[:, 2], 0.0, None)
    ground_light = light.ambient + light.diffuse * max(light.sun[2], 0.0) + 0.08 * (1.0 - light.night)
    lum_table = np.concatenate([[ground_light], face_light]).astype(np.float32)
    lum = lum_table[ids + 1]
    if light.night > 0.05 and beams:
        lum += light.night * _headlights(geo, beams) * ~sky
    albedo = geo.ground_bgr.astype(np.float32)
    if hit.any():
        albedo[hit] = geo.face_color[ids[hit]]
    image = albedo * lum[..., None] * light.tint

    if light.wet > 0.0:
        road = ~hit & ~sky & ((geo.tag == TAG["road"]) | (geo.tag == TAG["road_line"]))
        a, b = ray_slopes(geo.intr)
        norm = np.sqrt(1.0 + a[None, :] ** 2 + b[:, None] ** 2)
        grazing = (1.0 - np.clip(-geo.up / norm * 4.0, 0.0, 1.0)) ** 2
        reflect = (light.wet * 0.55 * grazing)[..., None] * light.horizon * (1.0 - 0.6 * light.night)
        image = np.where(road[..., None], image * (1.0 - 0.45 * light.wet) + reflect, image)

    if sky.any():
        a, b = ray_slopes(geo.intr)
        rows, cols = np.nonzero(sky)
        ray = geo.rotation[:, 0] + np.outer(a[cols], geo.rotation[:, 1]) + np.outer(b[rows], geo.rotation[:, 2])
        ray /= np.linalg.norm(ray, axis=1, keepdims=True)
        image[rows, cols] = sky_colors(light, ray[:, 2], ray @ light.sun)

    emissive = np.concatenate([[False], geo.face_emissive])[ids + 1]
    if emissive.any():
        image[emissive] = geo.face_color[ids[emissive]]

    fog = fog_amount(light, geo.depth, sky)[..., None]
    image = image * (1.0 - fog) + light.fog_color * fog
    rain_streaks(image, light, seed)
    return np.clip(image, 0.0, 255.0).astype(np.uint8)
