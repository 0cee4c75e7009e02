"""`slimdrive bench env`: DrivingEnv steps per second beside the raw client loop of `slimdrive bench sim`.

Both run against one embedded simulator with the same rig from the same start pose (the env's seeded route
start), so the difference is what the env adds: route projection, criteria, observation assembly and the
Gymnasium plumbing.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from envs.bench_sim import client_loop_seconds
from envs.driving_env import DrivingEnv
from envs.rig import rig_from_config
from envs.server.launch import launch


def run(cfg) -> int:
    rig = rig_from_config(cfg.rig, "conf/rig")
    steps, warmup = int(cfg.steps), int(cfg.warmup)
    with launch(str(cfg.map)) as server:
        env = DrivingEnv(map=cfg.map, rig=rig.name, image_size_x=rig.image_size_x, image_size_y=rig.image_size_y,
                         route_length_m=10_000.0, **{"server.host": server.host, "server.port": server.port})
        try:
            env.reset(seed=int(cfg.seed))
            start_pose = env.privileged.route.start
            action = np.array([0.0, 0.0, 1.0], np.float32)  # parked, as the raw loop's ego
            for _ in range(warmup):
                env.step(action)
            start = time.perf_counter()
            for _ in range(steps):
                _, _, terminated, truncated, _ = env.step(action)
                if terminated or truncated:
                    env.reset(seed=int(cfg.seed))
            stepped = (time.perf_counter() - start) / steps
        finally:
            env.close()
        layout = ([(start_pose.location.x, start_pose.location.y, start_pose.rotation.yaw)], [], [])
        raw = client_loop_seconds(server.host, server.port, rig, layout, steps, warmup)
    figures = {"map": cfg.map, "rig": rig.name, "cameras": len(rig.cameras),
               "image": f"{rig.image_size_x}x{rig.image_size_y}", "steps": steps,
               "raw_client_steps_per_s": round(1.0 / raw, 1), "env_steps_per_s": round(1.0 / stepped, 1),
               "env_overhead_pct": round(100.0 * (stepped - raw) / raw, 1)}
    print(f"bench env: {cfg.map}, rig {rig.name} ({len(rig.cameras)} x {figures['image']} RGB), {steps} steps")
    print(f"  raw client loop {figures['raw_client_steps_per_s']} steps/s, DrivingEnv "
          f"{figures['env_steps_per_s']} steps/s: the env costs {figures['env_overhead_pct']:+.1f} %")
    if cfg.out:
        Path(str(cfg.out)).write_text(json.dumps(figures, indent=2))
        print(f"wrote {Path(str(cfg.out)).resolve()}")
    return 0
