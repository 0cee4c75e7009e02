"""Weather through the stock client: fog lowers far contrast, night is darker, same seed same bytes."""
from __future__ import annotations

import carla
import numpy as np

from envs.config import load_conf
from envs.render_cli import render
from envs.server.launch import launch
from scenarios.compile import weather_preset

from render_helpers import depth_metres


def _luma(bgra: np.ndarray) -> np.ndarray:
    return bgra[..., :3].astype(np.float64) @ np.array([0.114, 0.587, 0.299])


def _weather(**fields) -> carla.WeatherParameters:
    weather = weather_preset("ClearNoon")  # a copy: setting fields on the shared preset would leak to other tests
    for key, value in fields.items():
        setattr(weather, key, value)
    return weather


def test_more_fog_lowers_far_contrast_monotonically(stage):
    stage.spawn("vehicle.lincoln.mkz_2020", 45.0, 0.0, color="20,20,20")
    rgb, depth = stage.cameras("front1"), stage.cameras("front1", "sensor.camera.depth")
    contrast = []
    for density in (0.0, 20.0, 50.0, 90.0):
        stage.world.set_weather(_weather(fog_density=density, fog_distance=0.0))
        image, dep = stage.capture(rgb, depth)
        far = depth_metres(dep["front"]) > 35.0
        contrast.append(float(_luma(image["front"])[far].std()))
    assert all(a > b for a, b in zip(contrast, contrast[1:])), contrast


def test_night_is_darker_than_noon(stage):
    sensors = stage.cameras("front1")
    stage.world.set_weather(_weather(sun_altitude_angle=70.0))
    (noon,) = stage.capture(sensors)
    stage.world.set_weather(_weather(sun_altitude_angle=-40.0))
    (night,) = stage.capture(sensors)
    assert _luma(night["front"]).mean() < 0.4 * _luma(noon["front"]).mean()


def test_same_seed_renders_the_same_bytes():
    cfg = load_conf("render.yaml", {"rig": load_conf("rig/tesla8.yaml"), "weather": "HardRainNoon", "seed": 7,
                                    "pose": 3, "vehicles": 6, "walkers": 6})
    cfg.bev.size = 128
    pictures = []
    for _ in range(2):
        with launch("town") as server:
            pictures.append(render(cfg, server.host, server.port))
    assert pictures[0].tobytes() == pictures[1].tobytes()
