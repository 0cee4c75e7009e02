"""Colour pass: turns a camera's `Geometry` into a lit BGRA image under a `Lighting`.

Flat shading (one light value per face: ambient + sun), the ground lit as an upward face, emissive faces
unlit, the parent vehicle's headlights as a cone of light at night, wet roads darker and mirroring the sky,
then fog by depth and rain streaks on top.

Two paths give the same picture: in dry weather without headlights every face has one final colour and the
ground one per-channel gain, so one compiled pass (`shade_dry` in `zbuffer.c`) composes the image in bytes
from a colour table indexed by the id buffer, the gained ground texture and the sky, and fogs it by depth;
wet roads, rain and headlights take the per-pixel float path here. (The compiled path saturates colours before
fog rather than after: a difference of a few levels in bright, distant pixels.)
"""
from __future__ import annotations

import cv2
import numpy as np

from ..blueprints import TAG
from .native import library
from .raster import FAR, Geometry, ray_norm, ray_slopes
from .weather import SKY_FOG_DISTANCE, Lighting, fog_amount, rain_streaks, sky_channels

HEADLIGHT_GAIN = 2.2
HEADLIGHT_RANGE = 14.0  # m at which the beam has fallen to half


def _headlights(geo: Geometry, beams: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """(H, W) extra light from headlight beams (origin, unit forward) on every surface pixel."""
    a, b = ray_slopes(geo.intr)
    rot = geo.rotation.astype(np.float32)
    light = np.zeros(geo.depth.shape, np.float32)
    for origin, forward in beams:
        # Per component (float32, 2-D): numpy is slow on a trailing axis of 3.
        rel = [np.float32(geo.position[i] - origin[i]) + (rot[i, 0] + rot[i, 1] * a[None, :] + rot[i, 2] * b[:, None])
               * geo.depth for i in range(3)]
        fwd = np.asarray(forward, np.float32)
        along = rel[0] * fwd[0] + rel[1] * fwd[1] + rel[2] * fwd[2]
        lateral = np.sqrt(sum((rel[i] - along * fwd[i]) ** 2 for i in range(3)))
        cone = np.exp(-(lateral / (0.25 + 0.28 * np.maximum(along, 0.0))) ** 2)
        light += np.where(along > 0.0, cone / (1.0 + (along / HEADLIGHT_RANGE) ** 2), 0.0)
    return HEADLIGHT_GAIN * light


def _face_light(geo: Geometry, light: Lighting) -> tuple[np.ndarray, float]:
    """Light value of every face (with the table's placeholder row) and of the ground."""
    normal = geo.faces.normal
    face_light = light.ambient + light.diffuse * np.clip(normal @ light.sun, 0.0, None) \
        + 0.08 * (1.0 - light.night) * np.clip(normal[:, 2], 0.0, None)
    ground_light = light.ambient + light.diffuse * max(light.sun[2], 0.0) + 0.08 * (1.0 - light.night)
    return face_light.astype(np.float32), float(ground_light)


def _sky_band(geo: Geometry, light: Lighting) -> tuple[slice, list[np.ndarray]] | None:
    """The rows that show sky and their sky colour planes (B, G, R float32 (rows, W)); None without sky."""
    rows = np.flatnonzero(geo.sky.any(axis=1))
    if not len(rows):
        return None
    band = slice(int(rows[0]), int(rows[-1]) + 1)
    a, b = ray_slopes(geo.intr)
    norm = ray_norm(geo.intr)[band]
    sun = (geo.rotation.T @ light.sun).astype(np.float32)  # the sun in the camera frame
    elevation = geo.up[band] / norm
    toward_sun = (sun[0] + sun[1] * a[None, :] + sun[2] * b[band, None]) / norm
    return band, sky_channels(light, elevation, toward_sun)


def _fast(geo: Geometry, light: Lighting) -> np.ndarray:
    face_light, ground_light = _face_light(geo, light)
    faces = geo.faces
    color = np.where(faces.emissive[:, None], faces.color, faces.color * face_light[:, None] * light.tint)
    table = np.full((len(color), 4), 255, np.uint8)
    table[:, :3] = np.clip(color, 0.0, 255.0)
    intr = geo.intr
    out = np.empty((intr.height, intr.width, 4), np.uint8)
    f32 = lambda values: np.ascontiguousarray(values, np.float32)  # noqa: E731
    library().shade_dry(
        intr.width, intr.height, intr.focal, geo.ids, table.view(np.uint32)[:, 0].copy(), geo.ground_bgra,
        f32(np.float32(ground_light) * light.tint), geo.up, ray_norm(intr), geo.ground_depth, geo.depth, FAR,
        np.ascontiguousarray(geo.rotation.T @ light.sun, float), f32(light.horizon), f32(light.zenith),
        (1.0 - light.night) * (1.0 - light.rain), light.fog_per_metre, light.fog_start, SKY_FOG_DISTANCE,
        f32(np.clip(np.round(light.fog_color), 0, 255)), out)
    return out


def _float(geo: Geometry, light: Lighting, beams: list[tuple[np.ndarray, np.ndarray]],
           seed: tuple[int, ...]) -> np.ndarray:
    ids, hit, sky = geo.ids, geo.hit, geo.sky
    face_light, ground_light = _face_light(geo, light)
    face_light[0] = ground_light
    lum = np.take(face_light, ids)
    if light.night > 0.05 and beams:
        lum += light.night * _headlights(geo, beams) * ~sky
    albedo = np.where(hit[..., None], np.take(geo.faces.color, ids, axis=0), geo.ground_bgr.astype(np.float32))
    image = albedo * lum[..., None] * light.tint

    if light.wet > 0.0:
        road = ~hit & ~sky & ((geo.tag == TAG["road"]) | (geo.tag == TAG["road_line"]))
        grazing = (1.0 - np.clip(-geo.up / ray_norm(geo.intr) * 4.0, 0.0, 1.0)) ** 2
        reflect = (light.wet * 0.55 * grazing)[..., None] * light.horizon * (1.0 - 0.6 * light.night)
        image = np.where(road[..., None], image * (1.0 - 0.45 * light.wet) + reflect, image)

    band_sky = _sky_band(geo, light)
    if band_sky is not None:
        band, planes = band_sky
        image[band] = np.where(sky[band, :, None], np.stack(planes, axis=-1), image[band])

    emissive = np.take(geo.faces.emissive, ids) & hit
    if emissive.any():
        image[emissive] = geo.faces.color[ids[emissive]]

    fog = fog_amount(light, geo.depth, sky)[..., None]
    image = image * (1.0 - fog) + light.fog_color * fog
    rain_streaks(image, light, seed)
    return cv2.cvtColor(np.clip(image, 0.0, 255.0).astype(np.uint8), cv2.COLOR_BGR2BGRA)


def shade(geo: Geometry, light: Lighting, beams: list[tuple[np.ndarray, np.ndarray]],
          seed: tuple[int, ...]) -> np.ndarray:
    """(H, W, 4) uint8 BGRA image, alpha 255."""
    headlights = light.night > 0.05 and bool(beams)
    if light.wet > 0.0 or light.rain > 0.0 or headlights:
        return _float(geo, light, beams, seed)
    return _fast(geo, light)
