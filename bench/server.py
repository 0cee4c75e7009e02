"""`slimdrive bench server`: synchronous ticks per second through the stock `carla` client.

Starts the embedded simulator on free loopback ports, fills the map with moving vehicles and walkers
(`traffic_layout`, shared with `bench sim`) in one batch, and times `world.tick()` (tick_cue RPC, physics,
collisions, lights, episode-state stream and the client's wait for it) with the Leaderboard's 20 Hz fixed
step.
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import carla
import numpy as np

from envs.maps import load_network
from envs.server.blueprints import BLUEPRINTS, BY_ID
from envs.server.launch import launch

CARS = tuple(bp.id for bp in BLUEPRINTS
             if bp.kind == "vehicle" and bp.default_attributes().get("number_of_wheels") == "4")
PEDESTRIANS = tuple(bp.id for bp in BLUEPRINTS if bp.kind == "walker")


@dataclass(frozen=True)
class Placement:
    """One actor of a traffic layout: blueprint id, place on the ground (CARLA's world frame, yaw in degrees)
    and how it moves: a vehicle drives with `throttle` and `steer`, a walker walks along `yaw` at `speed` m/s."""

    blueprint: str
    x: float
    y: float
    yaw: float
    color: str | None = None  # "r,g,b" (vehicles), one of the blueprint's recommended colours
    throttle: float = 0.0
    steer: float = 0.0
    speed: float = 0.0


def _beside_road(network, x: float, y: float, yaw: float) -> tuple[float, float]:
    """A walker's place right of a lane point: 0.75 m onto the first sidewalk within 12 m, else 1 m past the
    last driving lane."""
    dx, dy = math.cos(math.radians(yaw + 90.0)), math.sin(math.radians(yaw + 90.0))
    off_road = None
    for k in range(1, 25):
        hit = network.locate(x + 0.5 * k * dx, y + 0.5 * k * dy)
        if hit is not None and hit.lane_type == "sidewalk":
            return x + (0.5 * k + 0.75) * dx, y + (0.5 * k + 0.75) * dy
        if off_road is None and (hit is None or hit.lane_type != "driving"):
            off_road = 0.5 * k + 1.0
    off_road = off_road or 13.0
    return x + off_road * dx, y + off_road * dy


def traffic_layout(network, vehicles: int, walkers: int, seed: int, near: tuple[float, float] | None = None,
                   vehicle_blueprints: Sequence[str] = CARS, walker_blueprints: Sequence[str] = PEDESTRIANS,
                   ) -> tuple[list[Placement], list[Placement]]:
    """Seeded moving traffic for a map (`envs.maps.RoadNetwork`): (vehicles, walkers).

    The map's spawn points are taken nearest first to `near` (x, y), leaving out any within 1 m of it (the
    ego's), or else in a seeded shuffle. Vehicle i stands on point i with a drawn blueprint and colour,
    driving at throttle 0.3-0.6 with a slight steer; walker i stands on the sidewalk right of point i (or off
    the road where there is none; moved on along the road if another walker stands there) and walks along
    the road at 1.0-1.8 m/s. Same arguments, same layout.
    Used by `slimdrive bench server` and `bench sim`; spawn it with `spawn_traffic` or `World.spawn`.
    """
    rng = np.random.default_rng(seed)
    points = network.spawn_points()
    if near is None:
        points = [points[i] for i in rng.permutation(len(points))]
    else:
        away = lambda p: math.hypot(p.x - near[0], p.y - near[1])  # noqa: E731
        points = sorted((p for p in points if away(p) > 1.0), key=away)
    if max(vehicles, walkers) > len(points):
        raise ValueError(f"the map has {len(points)} free spawn points, fewer than {max(vehicles, walkers)} "
                         "vehicles or walkers")
    half_width = lambda bp: BY_ID[bp].body.extent[1] if bp in BY_ID else 1.0  # noqa: E731
    cars = []
    for p in points[:vehicles]:
        for _ in range(10):  # redrawn while too wide beside a vehicle in the next lane (two buses)
            blueprint = vehicle_blueprints[int(rng.integers(len(vehicle_blueprints)))]
            if all(half_width(blueprint) + half_width(q.blueprint) < math.hypot(p.x - q.x, p.y - q.y) - 0.2
                   for q in cars):
                break
        colors = next((a.recommended for a in BY_ID[blueprint].attributes if a.id == "color"), ()) \
            if blueprint in BY_ID else ()
        color = colors[int(rng.integers(len(colors)))] if colors else None
        cars.append(Placement(blueprint, p.x, p.y, p.yaw, color, throttle=float(rng.uniform(0.3, 0.6)),
                              steer=float(rng.uniform(-0.05, 0.05))))
    people = []
    for p in points[:walkers]:
        blueprint = walker_blueprints[int(rng.integers(len(walker_blueprints)))]
        x, y = _beside_road(network, p.x, p.y, p.yaw)
        while any(math.hypot(x - q.x, y - q.y) < 1.5 for q in people):  # beside two lanes' points at one s
            x, y = x + 1.5 * math.cos(math.radians(p.yaw)), y + 1.5 * math.sin(math.radians(p.yaw))
        people.append(Placement(blueprint, x, y, p.yaw, speed=float(rng.uniform(1.0, 1.8))))
    return cars, people


def spawn_traffic(client: carla.Client, world: carla.World, cars: list[Placement],
                  people: list[Placement]) -> list[int]:
    """Spawn a layout through the stock client in one batch, each actor with its control; returns the actor
    ids. A failed spawn raises RuntimeError with the first error."""
    library = world.get_blueprint_library()
    command = carla.command
    batch = []
    for car in cars:
        bp = library.find(car.blueprint)
        if car.color is not None:
            bp.set_attribute("color", car.color)
        pose = carla.Transform(carla.Location(car.x, car.y, 0.3), carla.Rotation(yaw=car.yaw))
        control = carla.VehicleControl(throttle=car.throttle, steer=car.steer)
        batch.append(command.SpawnActor(bp, pose).then(command.ApplyVehicleControl(command.FutureActor, control)))
    for person in people:
        heading = math.radians(person.yaw)
        pose = carla.Transform(carla.Location(person.x, person.y, 1.0), carla.Rotation(yaw=person.yaw))
        control = carla.WalkerControl(carla.Vector3D(math.cos(heading), math.sin(heading), 0.0), person.speed)
        batch.append(command.SpawnActor(library.find(person.blueprint), pose).then(
            command.ApplyWalkerControl(command.FutureActor, control)))
    responses = client.apply_batch_sync(batch, False)
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
        spawn_traffic(client, world, *traffic_layout(load_network(cfg.map), int(cfg.vehicles), int(cfg.walkers),
                                                     int(cfg.seed)))
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
