"""Recognisable actor shapes built from a few boxes, in the actor's own frame.

Cars are body + glass cabin + wheels + lights, vans and trucks a tall body with a cab, buses a long glass
band, two-wheelers a frame, wheels and a rider, walkers legs, torso, arms and head. Every shape stays
inside the blueprint's bounding box in x and y so that what a camera sees matches what collides (the
acceptance test measures a car's pixel width against its box). Colours come from the `color` attribute;
people's clothes are picked from the blueprint id (in CARLA each walker blueprint is one person), so the
same scenario looks the same in every run.
"""
from __future__ import annotations

import zlib

import numpy as np

from ..blueprints import TAG
from .boxes import BACK, FRONT, LEFT, RIGHT, TOP, BoxBuilder, BoxSet

GLASS = (45, 60, 75)
TYRE = (22, 22, 24)
CLEARANCE = 0.15  # m from the ground to a vehicle's underbody
HEADLIGHT = (250, 245, 220)
TAILLIGHT = (210, 20, 20)
SKIN = ((235, 195, 160), (200, 150, 110), (140, 95, 60), (90, 60, 40))
SHIRTS = ((200, 40, 40), (40, 90, 190), (230, 200, 60), (60, 140, 70), (240, 240, 240), (120, 60, 140),
          (230, 120, 40), (30, 30, 30))
TROUSERS = ((40, 50, 90), (30, 30, 30), (110, 100, 80), (70, 70, 75))


def parse_rgb(text: str, default: tuple[int, int, int] = (128, 128, 128)) -> tuple[int, int, int]:
    """CARLA's "R,G,B" attribute text as a tuple (the default when it is missing or malformed)."""
    try:
        r, g, b = (int(float(v)) for v in text.split(","))
    except ValueError:
        return default
    return (min(max(r, 0), 255), min(max(g, 0), 255), min(max(b, 0), 255))


def _wheels(b: BoxBuilder, ey: float, radius: float, axle_x: tuple[float, ...], tag: int) -> None:
    # Two boxes per wheel, the second turned 45 degrees, give an octagonal side view.
    for x in axle_x:
        for side in (-1, 1):
            center = (x, side * (ey - 0.13), radius)
            for pitch in (0.0, 45.0):
                b.add(center, (radius * 0.92, 0.12, radius * 0.92), TYRE, tag, pitch=pitch)


def _underbody(b: BoxBuilder, ex: float, ey: float, sill: float, tag: int) -> None:
    # The dark chassis between the wheels: the body panels stop at the sill, a real underbody does not, so
    # without it a walker's feet show through under a parked van.
    b.add((0.0, 0.0, 0.5 * (sill + CLEARANCE)), (0.85 * ex, ey - 0.25, 0.5 * (sill - CLEARANCE)), TYRE, tag)


def _lights(b: BoxBuilder, ex: float, ey: float, z: float, tag: int) -> None:
    for side in (-1, 1):
        b.add((ex - 0.02, side * 0.72 * ey, z), (0.03, 0.16 * ey, 0.05), HEADLIGHT, tag, emissive=(FRONT,))
        b.add((-ex + 0.02, side * 0.75 * ey, z), (0.03, 0.14 * ey, 0.05), TAILLIGHT, tag, emissive=(BACK,))


def car(extent, rgb) -> BoxSet:
    ex, ey, ez = extent
    height = 2 * ez
    radius = min(0.36, 0.25 * height)
    b = BoxBuilder()
    sill, belt = 0.18 * height, 0.62 * height
    b.add((0.0, 0.0, 0.5 * (sill + belt)), (ex, ey, 0.5 * (belt - sill)), rgb, TAG["car"])
    cabin_front, cabin_back = 0.35 * ex, -0.6 * ex
    b.add((0.5 * (cabin_front + cabin_back), 0.0, 0.5 * (belt + height)),
          (0.5 * (cabin_front - cabin_back), 0.86 * ey, 0.5 * (height - belt)), GLASS, TAG["car"],
          faces={TOP: rgb})
    _wheels(b, ey, radius, (0.66 * ex, -0.66 * ex), TAG["car"])
    _underbody(b, ex, ey, sill, TAG["car"])
    _lights(b, ex, ey, 0.5 * (sill + belt) + 0.1, TAG["car"])
    return b.build()


def van(extent, rgb, tag: int) -> BoxSet:
    """Vans, trucks and buses: a tall body, a glass windscreen (or a glass band for buses), wheels."""
    ex, ey, ez = extent
    height = 2 * ez
    radius = min(0.5, 0.22 * height)
    b = BoxBuilder()
    sill = 0.15 * height
    if tag == TAG["bus"]:
        band = 0.55 * height
        b.add((0.0, 0.0, 0.5 * (sill + band)), (ex, ey, 0.5 * (band - sill)), rgb, tag)
        b.add((0.0, 0.0, 0.5 * (band + 0.92 * height)), (ex - 0.02, ey - 0.02, 0.5 * (0.92 * height - band)),
              GLASS, tag)
        b.add((0.0, 0.0, 0.96 * height), (ex, ey, 0.04 * height), rgb, tag)
    elif tag == TAG["truck"]:
        cab_back = ex - min(2.0, 0.35 * 2 * ex)
        b.add((0.5 * (ex + cab_back), 0.0, 0.5 * (sill + 0.55 * height)),
              (0.5 * (ex - cab_back), ey, 0.5 * (0.55 * height - sill)), rgb, tag)
        b.add((0.5 * (ex + cab_back) - 0.05, 0.0, 0.5 * (0.55 * height + 0.85 * height)),
              (0.5 * (ex - cab_back) - 0.05, ey - 0.05, 0.15 * height), GLASS, tag, faces={TOP: rgb})
        b.add((0.5 * (cab_back - 0.15 - ex), 0.0, 0.5 * (sill + height)),
              (0.5 * (cab_back - 0.15 + ex), ey, 0.5 * (height - sill)), (215, 215, 210), tag)
    else:
        b.add((0.0, 0.0, 0.5 * (sill + 0.55 * height)), (ex, ey, 0.5 * (0.55 * height - sill)), rgb, tag)
        b.add((-0.08 * ex, 0.0, 0.5 * (0.55 * height + height)), (0.92 * ex, ey - 0.02, 0.225 * height), rgb, tag,
              faces={FRONT: GLASS, LEFT: _window(rgb), RIGHT: _window(rgb)})
    axles = (0.75 * ex, -0.7 * ex) if ex < 4.0 else (0.8 * ex, -0.45 * ex, -0.75 * ex)
    _wheels(b, ey, radius, axles, tag)
    _underbody(b, ex, ey, sill, tag)
    _lights(b, ex, ey, sill + 0.35, tag)
    return b.build()


def _window(rgb) -> tuple[int, int, int]:
    """Side windows of vans: the body colour darkened towards glass."""
    return tuple(int(0.35 * c + 0.65 * g) for c, g in zip(rgb, GLASS))  # type: ignore[return-value]


def _person(b: BoxBuilder, base_z: float, height: float, shirt, trousers, skin, tag: int,
            seated: bool = False) -> None:
    """Legs, torso, arms and head; `base_z` is the height of the feet (or the saddle when seated)."""
    s = height / 1.8
    if seated:
        for side in (-1, 1):  # thighs forward, shins down to the pedals
            b.add((0.15 * s, side * 0.11 * s, base_z + 0.05 * s), (0.22 * s, 0.07 * s, 0.07 * s), trousers, tag)
            b.add((0.33 * s, side * 0.11 * s, base_z - 0.25 * s), (0.06 * s, 0.06 * s, 0.28 * s), trousers, tag)
        hip = base_z + 0.05 * s
    else:
        for side in (-1, 1):
            b.add((0.0, side * 0.1 * s, base_z + 0.42 * s), (0.08 * s, 0.08 * s, 0.42 * s), trousers, tag)
        hip = base_z + 0.84 * s
    b.add((0.0 if not seated else 0.05 * s, 0.0, hip + 0.3 * s), (0.12 * s, 0.2 * s, 0.3 * s), shirt, tag)
    for side in (-1, 1):
        b.add((0.0 if not seated else 0.15 * s, side * 0.26 * s, hip + 0.3 * s),
              (0.06 * s if not seated else 0.2 * s, 0.055 * s, 0.27 * s if not seated else 0.06 * s), shirt, tag)
    b.add((0.0 if not seated else 0.05 * s, 0.0, hip + 0.72 * s), (0.11 * s, 0.1 * s, 0.12 * s), skin, tag,
          faces={TOP: (40, 30, 20)})


def _outfit_rng(blueprint_id: str) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(blueprint_id.encode()))


def walker(extent, blueprint_id: str) -> BoxSet:
    rng = _outfit_rng(blueprint_id)
    b = BoxBuilder()
    _person(b, -extent[2], 2 * extent[2], SHIRTS[rng.integers(len(SHIRTS))], TROUSERS[rng.integers(len(TROUSERS))],
            SKIN[rng.integers(len(SKIN))], TAG["pedestrian"])
    return b.build()


def two_wheeler(extent, rgb, tag: int, blueprint_id: str) -> BoxSet:
    """Bicycle or motorbike with its rider (the rider is tagged `rider`, as in CARLA)."""
    ex, ey, _ = extent
    rng = _outfit_rng(blueprint_id)
    radius = 0.34 if tag == TAG["bicycle"] else 0.32
    b = BoxBuilder()
    for x in (ex - radius, -ex + radius):
        for pitch in (0.0, 45.0):
            b.add((x, 0.0, radius), (radius * 0.92, 0.03 if tag == TAG["bicycle"] else 0.07, radius * 0.92),
                  TYRE, tag, pitch=pitch)
    frame_half = (0.06, 0.03, 0.06) if tag == TAG["bicycle"] else (0.25, 0.16, 0.15)
    b.add((0.0, 0.0, radius + 0.2), (ex - radius, frame_half[1], frame_half[2]), rgb, tag)
    b.add((ex - radius - 0.05, 0.0, radius + 0.45), (0.04, 0.03, 0.25), rgb, tag)  # fork and bars
    b.add((ex - radius - 0.1, 0.0, radius + 0.68), (0.03, 0.25, 0.02), (30, 30, 30), tag)
    _person(b, radius + 0.55, 1.75, SHIRTS[rng.integers(len(SHIRTS))], TROUSERS[rng.integers(len(TROUSERS))],
            SKIN[rng.integers(len(SKIN))], TAG["rider"], seated=True)
    return b.build()


def prop(extent, name: str) -> BoxSet:
    colors = {"constructioncone": (240, 110, 20), "trafficcone01": (240, 110, 20), "streetbarrier": (230, 230, 230),
              "warningconstruction": (240, 200, 40), "container": (60, 110, 160), "busstop": (120, 140, 150)}
    b = BoxBuilder()
    ex, ey, ez = extent
    if "cone" in name:  # a stack of shrinking boxes reads as a cone
        for k in range(3):
            shrink = 1.0 - 0.3 * k
            b.add((0.0, 0.0, (2 * k + 1) * ez / 3), (ex * shrink, ey * shrink, ez / 3),
                  (250, 250, 250) if k == 1 else colors[name], TAG["static"])
    else:
        b.add((0.0, 0.0, ez), extent, colors.get(name, (150, 120, 90)), TAG["static"])
    return b.build()


def vehicle(extent, base_type: str, tag: int, rgb, blueprint_id: str) -> BoxSet:
    if tag in (TAG["bicycle"], TAG["motorcycle"]):
        return two_wheeler(extent, rgb, tag, blueprint_id)
    if base_type in ("van", "truck", "bus") or tag in (TAG["truck"], TAG["bus"]):
        return van(extent, rgb, tag)
    return car(extent, rgb)
