"""Cost per tick of the ray-cast sensors (`envs/server/lidar.py`) in the scene of `slimdrive bench sim`.

An in-process `World` on the map's middle spawn point with the traffic of `bench.server.traffic_layout`
(`vehicles` driving, `walkers` walking), the ego carrying one sensor of each kind on its roof: CARLA's default
LiDAR head (32 channels, 56,000 points/s, 10 Hz rotation) at `range` metres, the same semantic LiDAR, a radar
(1,500 points/s, 30 x 30 degrees, 100 m) and an obstacle sensor (20 m). Each sensor's `measure` is timed on its
own after every 20 Hz tick: wall and CPU milliseconds per tick, and what one tick produced.

    slimdrive bench sensors [map=town] [vehicles=20] [walkers=10] [steps=100] [range=100] [out=file.json]

(the keys and their defaults: conf/bench/sensors.yaml.)
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from .sim import DT, in_process_scene, scene_layout

SENSORS = (
    ("sensor.lidar.ray_cast", {"range": "{range}"}),
    ("sensor.lidar.ray_cast_semantic", {"range": "{range}"}),
    ("sensor.other.radar", {}),
    ("sensor.other.obstacle", {"distance": "20"}),
)


def run(cfg) -> int:
    """Time each ray-cast sensor per tick; prints one line per sensor (and writes JSON with `out`)."""
    from envs.maps import load_network, load_xodr_text
    from envs.server.protocol import Transform, sensor_header
    from envs.server.render.renderer import renderer_for

    map_name, steps, warmup = str(cfg.map), int(cfg.steps), int(cfg.warmup)
    network, xodr = load_network(map_name), load_xodr_text(map_name)
    layout = scene_layout(network, int(cfg.vehicles), int(cfg.walkers), int(cfg.seed))
    world, ego_actor = in_process_scene(network, map_name, xodr, layout)
    renderer_for(network, map_name)  # the scene, built once per map (not part of a tick's cost)
    sensors = []
    for blueprint_id, attrs in SENSORS:
        values = [[name, 3, value.format(range=cfg.range)] for name, value in attrs.items()]
        sensors.append(world.spawn(blueprint_id, values, Transform(0.0, 0.0, 2.4, 0.0, 0.0, 0.0), ego_actor.id))
    wall = {s.blueprint.id: 0.0 for s in sensors}
    cpu = dict(wall)
    size = dict.fromkeys(wall, 0)
    for step in range(warmup + steps):
        world.tick(DT)
        for sensor in sensors:
            def header(type_id, sensor=sensor):
                return sensor_header(type_id, world.frame, world.elapsed, Transform(*sensor.transform))
            start, start_cpu = time.perf_counter(), time.process_time()
            payloads = sensor.sensor.measure(world, sensor, [], DT, header)
            if step >= warmup:
                wall[sensor.blueprint.id] += time.perf_counter() - start
                cpu[sensor.blueprint.id] += time.process_time() - start_cpu
                size[sensor.blueprint.id] += sum(len(p) for p in payloads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    result = {"map": map_name, "steps": steps, "range": float(cfg.range), "load_1min": load,
              "sensors": {k: {"ms_per_tick": 1000.0 * wall[k] / steps, "cpu_ms_per_tick": 1000.0 * cpu[k] / steps,
                              "bytes_per_tick": size[k] / steps} for k in wall},
              "scene_boxes": len(renderer_for(network, map_name).boxes(world)[0])}
    for name, figures in result["sensors"].items():
        print(f"{name:34s} {figures['ms_per_tick']:7.2f} ms/tick  (CPU {figures['cpu_ms_per_tick']:.2f} ms)  "
              f"{figures['bytes_per_tick'] / 1024:8.1f} KiB/tick")
    print(f"{result['scene_boxes']} boxes in the scene, {steps} ticks at {1 / DT:.0f} Hz, load {load:.1f}")
    if cfg.out:
        Path(cfg.out).write_text(json.dumps(result, indent=2))
        print(f"wrote {cfg.out}")
    return 0
