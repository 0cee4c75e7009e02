"""`slimdrive bench server`: synchronous ticks per second through the stock `carla` client.

Starts the embedded simulator on free loopback ports, fills the map with moving vehicles and walkers in
one batch, and times `world.tick()` (tick_cue RPC, physics, collisions, lights, episode-state stream and
the client's wait for it) with the Leaderboard's 20 Hz fixed step.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import carla
import numpy as np

from .launch import launch


def populate(client: carla.Client, world: carla.World, vehicles: int, walkers: int, seed: int) -> list[int]:
    """Spawn driving vehicles at spawn points and walkers on the kerb beside others; returns actor ids."""
    rng = np.random.default_rng(seed)
    library = world.get_blueprint_library()
    cars = [bp for bp in library.filter("vehicle.*") if bp.get_attribute("number_of_wheels").as_int() == 4]
    people = list(library.filter("walker.pedestrian.*"))
    points = world.get_map().get_spawn_points()
    order = rng.permutation(len(points))
    if vehicles + walkers > len(points):
        raise ValueError(f"map has {len(points)} spawn points, fewer than {vehicles} vehicles + {walkers} walkers")
    command = carla.command
    batch = []
    for k in range(vehicles):
        control = carla.VehicleControl(throttle=float(rng.uniform(0.3, 0.6)), steer=float(rng.uniform(-0.05, 0.05)))
        bp = cars[int(rng.integers(len(cars)))]
        batch.append(command.SpawnActor(bp, points[order[k]]).then(
            command.ApplyVehicleControl(command.FutureActor, control)))
    for k in range(walkers):
        point = points[order[vehicles + k]]
        kerb = carla.Transform(point.location + point.get_right_vector() * 4.5, point.rotation)
        control = carla.WalkerControl(point.get_forward_vector(), float(rng.uniform(1.0, 1.8)))
        batch.append(command.SpawnActor(people[int(rng.integers(len(people)))], kerb).then(
            command.ApplyWalkerControl(command.FutureActor, control)))
    responses = client.apply_batch_sync(batch, True)
    failed = [r.error for r in responses if r.error]
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(batch)} spawns failed, first: {failed[0]}")
    return [r.actor_id for r in responses]


def run(cfg) -> int:
    with launch(cfg.map) as server:
        client = carla.Client(server.host, server.port)
        client.set_timeout(20.0)
        world = client.get_world()
        settings = world.get_settings()
        settings.synchronous_mode, settings.fixed_delta_seconds = True, cfg.fixed_delta_seconds
        world.apply_settings(settings)
        populate(client, world, cfg.vehicles, cfg.walkers, cfg.seed)
        for _ in range(cfg.warmup_ticks):
            world.tick()
        start = time.perf_counter()
        for _ in range(cfg.ticks):
            world.tick()
        elapsed = time.perf_counter() - start
        actors = len(world.get_actors())
    result = {
        "benchmark": "server", "map": cfg.map, "vehicles": cfg.vehicles, "walkers": cfg.walkers,
        "actors_total": actors, "ticks": cfg.ticks, "seconds": round(elapsed, 3),
        "ticks_per_second": round(cfg.ticks / elapsed, 1),
        "sim_seconds_per_wall_second": round(cfg.ticks * cfg.fixed_delta_seconds / elapsed, 1),
    }
    print(f"slimdrive bench server: {result['ticks_per_second']} synchronous ticks/s through the stock carla "
          f"client ({cfg.vehicles} vehicles + {cfg.walkers} walkers moving, {actors} actors in all, map "
          f"'{cfg.map}', {cfg.ticks} ticks) = {result['sim_seconds_per_wall_second']}x real time at "
          f"{1 / cfg.fixed_delta_seconds:.0f} Hz")
    if cfg.out:
        Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.out).write_text(json.dumps(result, indent=2))
        print(f"wrote {Path(cfg.out).resolve()}")
    return 0
