"""Colour pass: turns a camera's `Geometry` into a lit BGRA image under a `Lighting`.

Flat shading (one light value per face: ambient + sun), the ground lit as an upward face, emissive faces
unlit, the parent vehicle's headlights as a cone of light at night, wet roads darker and mirroring the horizon,
the sky, then fog by depth: one compiled pass (`shade` in `zbuffer.c`) over the id buffer with tables per face.
Rain streaks go on top.
"""
from __future__ import annotations

import numpy as np

from ..blueprints import TAG
from .native import library
from .raster import FAR, Geometry, ray_norm
from .weather import SKY_FOG_DISTANCE, Lighting, rain_streaks

HEADLIGHT_GAIN = 2.2
HEADLIGHT_RANGE = 14.0  # m at which the beam has fallen to half


def _face_light(geo: Geometry, light: Lighting) -> np.ndarray:
    """Light value of every face, with the ground's in row 0 (the id of ground pixels)."""
    normal = geo.faces.normal
    face_light = light.ambient + light.diffuse * np.clip(normal @ light.sun, 0.0, None) \
        + 0.08 * (1.0 - light.night) * np.clip(normal[:, 2], 0.0, None)
    face_light[0] = light.ambient + light.diffuse * max(light.sun[2], 0.0) + 0.08 * (1.0 - light.night)
    return face_light.astype(np.float32)


def shade(geo: Geometry, light: Lighting, beams: list[tuple[np.ndarray, np.ndarray]],
          seed: tuple[int, ...]) -> np.ndarray:
    """(H, W, 4) uint8 BGRA image, alpha 255; `beams` are the parent's headlights (origin, unit forward)."""
    intr, faces = geo.intr, geo.faces
    lit_beams = light.night > 0.05 and bool(beams)
    beam_table = np.array([np.concatenate([o, f]) for o, f in beams] if lit_beams else np.zeros((0, 6)), float)
    f32 = lambda values: np.ascontiguousarray(values, np.float32)  # noqa: E731
    reflect = light.wet * 0.55 * light.horizon * (1.0 - 0.6 * light.night)
    out = np.empty((intr.height, intr.width, 4), np.uint8)
    library().shade(
        intr.width, intr.height, intr.focal, geo.ids, _face_light(geo, light), f32(faces.color),
        faces.emissive.view(np.uint8), geo.ground_bgra, geo.tag if light.wet > 0.0 else None, TAG["road"],
        TAG["road_line"], geo.up, ray_norm(intr), geo.ground_depth, geo.depth, FAR,
        np.ascontiguousarray(geo.position, float), np.ascontiguousarray(geo.rotation, float), len(beam_table),
        np.ascontiguousarray(beam_table.reshape(-1)), light.night * HEADLIGHT_GAIN if lit_beams else 0.0,
        HEADLIGHT_RANGE, f32(light.tint), light.wet, f32(reflect), np.ascontiguousarray(geo.rotation.T @ light.sun),
        f32(light.horizon), f32(light.zenith), (1.0 - light.night) * (1.0 - light.rain), light.fog_per_metre,
        light.fog_start, SKY_FOG_DISTANCE, f32(light.fog_color), out)
    rain_streaks(out, light, seed)
    return out
