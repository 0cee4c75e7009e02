"""`slimdrive bench env`: DrivingEnv steps per second beside the raw client loop of `slimdrive bench sim`.

Both run the same rig from the same start pose (the env's seeded route start), each against its own embedded
simulator, taking turns of `ROUND` steps, so that a change of machine load during the run touches both alike.
The difference is what the env adds: its collision sensor, route projection, criteria, observation assembly
and the Gymnasium plumbing.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from envs.driving_env import DrivingEnv
from envs.rig import rig_from_config
from envs.server.launch import launch

from .sim import raw_client_loop

ROUND = 10  # timed steps per turn


def run(cfg) -> int:
    rig = rig_from_config(cfg.rig, "conf/rig")
    steps, warmup, seed = int(cfg.steps), int(cfg.warmup), int(cfg.seed)
    with launch(str(cfg.map)) as env_server, launch(str(cfg.map)) as raw_server:
        env = DrivingEnv(map=cfg.map, rig=rig.name, image_size_x=rig.image_size_x, image_size_y=rig.image_size_y,
                         route_length_m=10_000.0, **{"server.host": env_server.host, "server.port": env_server.port})
        try:
            env.reset(seed=seed)
            start = env.privileged.route.start
            layout = ([(start.location.x, start.location.y, start.rotation.yaw)], [], [])
            action = np.array([0.0, 0.0, 1.0], np.float32)  # parked, as the raw loop's ego

            def env_step() -> None:
                _, _, terminated, truncated, _ = env.step(action)
                if terminated or truncated:
                    env.reset(seed=seed)

            with raw_client_loop(raw_server.host, raw_server.port, rig, layout) as raw_step:
                for _ in range(warmup):
                    env_step()
                    raw_step()
                seconds = {"env": 0.0, "raw": 0.0}
                for done in range(0, steps, ROUND):
                    for name, step in (("env", env_step), ("raw", raw_step)):
                        began = time.perf_counter()
                        for _ in range(min(ROUND, steps - done)):
                            step()
                        seconds[name] += time.perf_counter() - began
        finally:
            env.close()
    stepped, raw = seconds["env"] / steps, seconds["raw"] / steps
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
