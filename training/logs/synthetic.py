"""Synthetic but real-looking episodes for tests and `slimdrive bench data`.

Frames are crops of the embedded renderer's eight-camera picture (docs/img/render_town.png, the tesla8 rig at
256x128), shifted a few pixels per step so consecutive frames differ as driving frames do; noise or plain
gradients would flatter JPEG. Labels are plausible and seeded.
"""
from __future__ import annotations

import functools
from pathlib import Path

import cv2
import numpy as np

RENDER_PNG = Path(__file__).resolve().parents[2] / "docs" / "img" / "render_town.png"
CAMERA_NAMES = ["front_wide", "front_main", "front_narrow", "pillar_left", "pillar_right", "repeater_left",
                "repeater_right", "rear"]
ACTOR_TYPES = ["vehicle.tesla.model3", "vehicle.carlamotors.carlacola", "walker.pedestrian.0001",
               "static.prop.trafficcone01"]


@functools.lru_cache(maxsize=4)
def _tiles(height: int, width: int) -> np.ndarray:
    """(8, 2*height, 2*width, 3) RGB source tiles (margin for shifting)."""
    big = cv2.imread(str(RENDER_PNG)) if RENDER_PNG.exists() else None
    tiles = []
    for i in range(8):
        if big is not None:
            r, c = divmod(i, 3)
            tile = big[r * 128:(r + 1) * 128, c * 256:(c + 1) * 256]
        else:  # an installed package without docs/: sky, road and noise
            y = np.linspace(0, 1, 128)[:, None, None]
            tile = np.uint8(np.clip((1 - y) * [235, 190, 140] + y * [70, 70, 75]
                                    + np.random.default_rng(i).normal(0, 12, (128, 256, 3)), 0, 255))
        tiles.append(cv2.cvtColor(cv2.resize(tile, (2 * width, 2 * height), interpolation=cv2.INTER_AREA),
                                  cv2.COLOR_BGR2RGB))
    return np.stack(tiles)


def camera_frames(t: int, rng: np.random.Generator, height: int = 64, width: int = 128) -> np.ndarray:
    """(8, height, width, 3) uint8 RGB at step t: each camera's crop drifts with t, plus slight sensor noise."""
    tiles = _tiles(height, width)
    out = np.empty((8, height, width, 3), np.uint8)
    for i in range(8):
        y0 = int((height // 2) + (height // 4) * np.sin(0.05 * t + i))
        x0 = int((width // 2) + (width // 3) * np.sin(0.031 * t + 2 * i))
        out[i] = tiles[i, y0:y0 + height, x0:x0 + width]
    noise = rng.integers(-3, 4, out.shape, dtype=np.int16)
    return np.clip(out.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def metadata(scenario: str = "synthetic", seed: int = 0, height: int = 64, width: int = 128,
             weather: str = "ClearNoon") -> dict:
    cams = [{"name": n, "width": width, "height": height, "fov": 90.0, "x": 0.0, "y": 0.0, "z": 1.4,
             "roll": 0.0, "pitch": 0.0, "yaw": 45.0 * i} for i, n in enumerate(CAMERA_NAMES)]
    return {"scenario": scenario, "scenario_file": f"scenarios/library/{scenario}.yaml", "scenario_sha256": "0" * 64,
            "seed": seed, "parameters": {}, "weather": {"name": weather}, "map": "town",
            "rig": {"name": "tesla8", "cameras": cams}, "fixed_delta_seconds": 0.05, "agent": "expert",
            "noise": None, "code_version": "synthetic", "simulator": "synthetic", "created": "2026-01-01T00:00:00Z",
            "ego_blueprint": "vehicle.tesla.model3", "ego_color": "",
            "traffic_lights": [{"id": 1 + i, "x": 30.0 * i, "y": 6.0, "z": 0.0, "yaw": 90.0 * i} for i in range(2)]}


def steps(n: int, seed: int = 0, height: int = 64, width: int = 128, waypoints_k: int = 4, n_actors: int = 3):
    """Yield n step dicts as a collector hands them to EpisodeWriter.add."""
    rng = np.random.default_rng(seed)
    x = y = 0.0
    yaw = float(rng.uniform(-180, 180))
    speed = 0.0
    for t in range(n):
        target_speed = 0.0 if (t // 30) % 3 == 2 else 8.0
        brake = target_speed == 0.0 and speed > 0.5
        speed = max(0.0, speed + (0.2 if speed < target_speed else -0.4))
        x += speed * 0.05 * np.cos(np.radians(yaw))
        y += speed * 0.05 * np.sin(np.radians(yaw))
        steer = float(np.clip(0.2 * np.sin(0.02 * t + seed), -1, 1))
        expert = np.array([steer, 0.0 if brake else 0.5, 1.0 if brake else 0.0], np.float32)
        perturbed = bool(rng.random() < 0.2)
        control = expert + (np.array([rng.normal(0, 0.1), 0, 0], np.float32) if perturbed else 0)
        yield {
            "frame": 1000 + t, "time_s": 0.05 * t,
            "cameras": camera_frames(t + 97 * seed, rng, height, width),
            "ego": {"location": (x, y, 0.0), "rotation": (0.0, 0.0, yaw), "velocity": (speed, 0.0, 0.0),
                    "acceleration": (0.0, 0.0, 0.0), "speed": speed},
            "command": int(rng.choice([1, 2, 3, 4], p=[0.1, 0.1, 0.2, 0.6])),
            "target_point": np.array([10.0, steer * 5], np.float32),
            "control": np.clip(control, [-1, 0, 0], [1, 1, 1]), "expert": expert,
            "waypoints": np.stack([np.arange(1, waypoints_k + 1) * max(speed, 1.0) * 0.5,
                                   np.arange(1, waypoints_k + 1) * steer], 1).astype(np.float32),
            "target_speed": target_speed, "brake": brake,
            "hazard_kind": "red_light" if brake else "", "hazard_actor": -1,
            "light_state": "Red" if brake else "Green", "perturbed": perturbed,
            "events": [{"kind": "tick", "t": t}] if t == 0 else [], "infractions": [],
            "light_states": [0 if brake else 2, 2 if brake else 0],
            "actors": [{"id": 100 + j, "type_id": ACTOR_TYPES[j % len(ACTOR_TYPES)], "color": "" if j else "200,30,30",
                        "x": x + 8.0 * (j + 1),
                        "y": y + 3.5 * (j % 2), "z": 0.0, "roll": 0.0, "pitch": 0.0, "yaw": yaw, "vx": 1.0,
                        "vy": 0.0, "vz": 0.0} for j in range(n_actors)],
        }


def write_dataset(root, episodes: int = 3, steps_per_episode: int = 40, height: int = 64, width: int = 128,
                  scenarios=("synthetic_a", "synthetic_b"), **writer_options) -> list[dict]:
    """Write `episodes` synthetic episodes into root; returns their manifest entries."""
    from training.logs.writer import write_episode

    entries = []
    for e in range(episodes):
        scenario = scenarios[e % len(scenarios)]
        meta = metadata(scenario, e, height, width, weather=["ClearNoon", "HardRainNoon", "ClearNight"][e % 3])
        entries.append(write_episode(root, f"{scenario}-s{e}", meta, steps(steps_per_episode, e, height, width),
                                     **writer_options))
    return entries
