"""Lighting and atmosphere from `carla.WeatherParameters`: sun, sky colours, fog, rain and wet roads.

The numbers are chosen to look plausible, not measured: a sun below the horizon leaves a dim blue ambient
(night, when headlights matter), clouds trade direct sun for ambient light and grey the sky, fog is an
exponential haze that starts at `fog_distance` and thickens with `fog_density`, rain adds haze, streaks and
wets the road; `wetness` darkens the road and lets it mirror the sky at grazing angles.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

FOG_PER_METRE = 0.05  # extinction per metre at fog_density 100
RAIN_HAZE_PER_METRE = 0.006  # extra extinction per metre at precipitation 100
SKY_FOG_DISTANCE = 400.0  # m: how far the sky counts for fog (so light haze does not hide it)


def _mix(a, b, t: float) -> np.ndarray:
    return (1.0 - t) * np.asarray(a, np.float32) + t * np.asarray(b, np.float32)


def _smoothstep(lo: float, hi: float, x: float) -> float:
    t = min(max((x - lo) / (hi - lo), 0.0), 1.0)
    return t * t * (3.0 - 2.0 * t)


@dataclass(frozen=True)
class Lighting:
    sun: np.ndarray  # (3,) unit vector towards the sun
    ambient: float
    diffuse: float
    tint: np.ndarray  # (3,) BGR multiplier (warm light at low sun)
    zenith: np.ndarray  # (3,) BGR sky colour overhead
    horizon: np.ndarray  # (3,) BGR sky colour at the horizon
    fog_color: np.ndarray  # (3,) BGR
    fog_per_metre: float
    fog_start: float  # m
    wet: float  # 0..1
    rain: float  # 0..1
    night: float  # 0..1: how much headlights count


def lighting(weather) -> Lighting:
    altitude, azimuth = np.radians(weather.sun_altitude_angle), np.radians(weather.sun_azimuth_angle)
    sun = np.array([np.cos(altitude) * np.cos(azimuth), np.cos(altitude) * np.sin(azimuth), np.sin(altitude)])
    day = _smoothstep(-8.0, 12.0, weather.sun_altitude_angle)
    cloud = min(max(weather.cloudiness / 100.0, 0.0), 1.0)
    rain = min(max(weather.precipitation / 100.0, 0.0), 1.0)
    overcast = max(cloud, rain)
    low_sun = day * (1.0 - _smoothstep(5.0, 25.0, weather.sun_altitude_angle))
    tint = _mix((1.0, 1.0, 1.0), (0.72, 0.86, 1.1), low_sun * (1.0 - overcast))  # BGR: warmer
    zenith = _mix(_mix((22, 10, 6), (205, 120, 60), day), _mix((24, 20, 18), (165, 160, 155), day), overcast)
    horizon = _mix(_mix((40, 26, 18), (232, 212, 185), day), _mix((40, 36, 34), (185, 182, 178), day), overcast)
    horizon = _mix(horizon, (95, 150, 230), low_sun * (1.0 - overcast) * 0.7)
    fog_color = _mix(horizon, np.full(3, 150.0 * day + 25.0), 0.5)
    fog_per_metre = FOG_PER_METRE * max(weather.fog_density, 0.0) / 100.0 + RAIN_HAZE_PER_METRE * rain
    wet = min(max(max(weather.wetness, weather.precipitation_deposits, 60.0 * rain) / 100.0, 0.0), 1.0)
    return Lighting(
        sun=sun, ambient=0.07 + day * (0.38 + 0.2 * overcast), diffuse=day * 0.62 * (1.0 - 0.75 * overcast),
        tint=tint.astype(np.float32), zenith=zenith, horizon=horizon, fog_color=fog_color,
        fog_per_metre=fog_per_metre, fog_start=max(weather.fog_distance, 0.0), wet=wet, rain=rain,
        night=1.0 - day)


def rain_streaks(image: np.ndarray, light: Lighting, seed: tuple[int, ...]) -> None:
    """Draw slanted translucent streaks into a BGRA image in place; deterministic for a seed."""
    height, width = image.shape[:2]
    count = int(light.rain * width * height / 250)
    if count == 0:
        return
    rng = np.random.default_rng(seed)
    start = rng.uniform((0, -10), (width, height), (count, 2))
    length = rng.uniform(4.0, 4.0 + 0.08 * height, count)
    end = start + np.stack([0.25 * length, length], axis=1)
    mask = np.zeros((height, width), np.uint8)
    cv2.polylines(mask, np.stack([start, end], axis=1).astype(np.int32)[:, :, None, :].reshape(-1, 2, 2),
                  False, 255, 1)
    streak = mask > 0
    shade = np.float32(200.0 * (1.0 - 0.7 * light.night) + 30.0)
    image[streak, :3] = (image[streak, :3] * np.float32(0.65) + np.float32(0.35) * shade).astype(np.uint8)
