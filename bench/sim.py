"""`slimdrive bench sim`: steps per second of a synchronous loop through the stock client with a camera rig.

Three measurements of the same scene (ego with the rig, `vehicles` driving and `walkers` walking nearby,
placed by `bench.server.traffic_layout` as in `bench server`):
  physics    in-process `World.tick` without cameras (dynamics, collisions, lights, episode state)
  render     in-process `World.tick` with the rig, minus physics (rendering and encoding the images)
  transport  the client loop (tick + wait for all images) minus the in-process tick with the rig
             (RPC, streaming sockets, the client's decoding and queues)
The in-process figures are also given in CPU time of this process (`cpu_ms_per_step`), which a machine
shared with other jobs inflates much less than wall time; the 1-minute load average is printed alongside.
"""
from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from envs.rig import Rig, rig_from_config, spawn_rig
from envs.server.launch import launch

from .server import spawn_traffic, traffic_layout

DT = 0.05


def scene_layout(network, vehicles: int, walkers: int, seed: int) -> tuple[list, list, list]:
    """Ego pose (x, y, yaw) on the map's middle spawn point, and the vehicles and walkers (`Placement`s) of
    `bench.server.traffic_layout` on the spawn points nearest it."""
    points = network.spawn_points()
    ego = points[len(points) // 2]
    cars, people = traffic_layout(network, vehicles, walkers, seed, near=(ego.x, ego.y))
    return [(ego.x, ego.y, ego.yaw)], cars, people


def in_process_scene(network, map_name: str, xodr: str, layout):
    """The scene of `layout` in an in-process `World` (no server): the ego, and the vehicles and walkers moving
    under their fixed controls. Returns (world, ego actor)."""
    from envs.server.protocol import ATTR_RGB, Transform, VehicleControl, WalkerControl
    from envs.server.world import World

    world = World(network, map_name, xodr)
    (ego,), cars, people = layout
    ego_actor = world.spawn("vehicle.tesla.model3", [], Transform(ego[0], ego[1], 0.3, 0.0, ego[2], 0.0))
    for car in cars:
        colour = [["color", ATTR_RGB, car.color]] if car.color else []
        actor = world.spawn(car.blueprint, colour, Transform(car.x, car.y, 0.3, 0.0, car.yaw, 0.0))
        world.apply_vehicle_control(actor, VehicleControl(throttle=car.throttle, steer=car.steer))
    for person in people:
        actor = world.spawn(person.blueprint, [], Transform(person.x, person.y, 1.0, 0.0, person.yaw, 0.0))
        heading = math.radians(person.yaw)
        world.apply_walker_control(actor, WalkerControl(np.array([math.cos(heading), math.sin(heading), 0.0]),
                                                        person.speed))
    return world, ego_actor


def _in_process(network, map_name: str, xodr: str, rig: Rig | None, layout, steps: int,
                warmup: int) -> tuple[float, float]:
    """Wall and CPU seconds per `World.tick` of the scene, optionally with the rig's RGB cameras."""
    from envs.server.protocol import Transform

    world, ego_actor = in_process_scene(network, map_name, xodr, layout)
    for mount in rig.cameras if rig else ():
        attrs = [["image_size_x", 2, str(rig.image_size_x)], ["image_size_y", 2, str(rig.image_size_y)],
                 ["fov", 3, str(mount.fov)]]
        world.spawn("sensor.camera.rgb", attrs,
                    Transform(mount.x, mount.y, mount.z, mount.pitch, mount.yaw, mount.roll), ego_actor.id)
    for _ in range(warmup):
        world.tick(DT)
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        world.tick(DT)
    return (time.perf_counter() - start) / steps, (time.process_time() - cpu) / steps


@contextmanager
def raw_client_loop(host: str, port: int, rig: Rig, layout) -> Iterator[Callable[[], None]]:
    """The scene through the stock client in synchronous mode; yields `step()`: one tick and every camera image
    of that frame. Restores asynchronous mode on exit."""
    import carla

    client = carla.Client(host, port)
    client.set_timeout(30.0)
    world = client.get_world()
    settings = world.get_settings()
    settings.synchronous_mode, settings.fixed_delta_seconds = True, DT
    world.apply_settings(settings)
    (ego,), cars, people = layout
    ego_actor = world.spawn_actor(world.get_blueprint_library().find("vehicle.tesla.model3"),
                                  carla.Transform(carla.Location(ego[0], ego[1], 0.3), carla.Rotation(yaw=ego[2])))
    spawn_traffic(client, world, cars, people)
    cameras = spawn_rig(world, ego_actor, rig)
    try:
        cameras.warm_up(world)
        yield lambda: cameras.read(world.tick())
    finally:
        cameras.destroy()
        settings.synchronous_mode, settings.fixed_delta_seconds = False, None
        world.apply_settings(settings)


def client_loop_seconds(host: str, port: int, rig: Rig, layout, steps: int, warmup: int) -> float:
    """Seconds per synchronous step (tick + every camera image of that frame) through the stock client."""
    with raw_client_loop(host, port, rig, layout) as step:
        for _ in range(warmup):
            step()
        start = time.perf_counter()
        for _ in range(steps):
            step()
        return (time.perf_counter() - start) / steps


def run(cfg) -> int:
    """`slimdrive bench sim [steps=..] [vehicles=..] [walkers=..] [rig=..] [rig.image_size_x=..]`."""
    from envs.maps import load_network, load_xodr_text

    rig = rig_from_config(cfg.rig, "conf/rig")
    network, xodr = load_network(cfg.map), load_xodr_text(cfg.map)
    layout = scene_layout(network, int(cfg.vehicles), int(cfg.walkers), int(cfg.seed))
    steps, warmup = int(cfg.steps), int(cfg.warmup)
    physics, physics_cpu = _in_process(network, cfg.map, xodr, None, layout, steps, warmup)
    with_rig, with_rig_cpu = _in_process(network, cfg.map, xodr, rig, layout, steps, warmup)
    with launch(str(cfg.map)) as server:
        loop = client_loop_seconds(server.host, server.port, rig, layout, steps, warmup)
    cams = len(rig.cameras)
    figures = {
        "map": cfg.map, "rig": rig.name, "cameras": cams, "image": f"{rig.image_size_x}x{rig.image_size_y}",
        "moving_actors": len(layout[1]) + len(layout[2]), "steps": steps,
        "steps_per_s": 1.0 / loop, "camera_frames_per_s": cams / loop,
        "ms_per_step": {"total": 1e3 * loop, "physics": 1e3 * physics, "render": 1e3 * (with_rig - physics),
                        "transport": 1e3 * max(loop - with_rig, 0.0)},
        "cpu_ms_per_step": {"physics": 1e3 * physics_cpu, "render": 1e3 * (with_rig_cpu - physics_cpu)},
        "load_average_1min": os.getloadavg()[0],
    }
    parts = figures["ms_per_step"]
    print(f"bench sim: {cfg.map}, rig {rig.name} ({cams} x {figures['image']} RGB), "
          f"{figures['moving_actors']} moving actors, {steps} steps")
    print(f"  {figures['steps_per_s']:.1f} steps/s through the stock client "
          f"({figures['camera_frames_per_s']:.0f} camera frames/s)")
    print("  ms/step: " + ", ".join(f"{k} {v:.2f}" for k, v in parts.items()))
    print("  in-process CPU ms/step: " + ", ".join(f"{k} {v:.2f}" for k, v in figures["cpu_ms_per_step"].items())
          + f" (load average {figures['load_average_1min']:.1f} on {os.cpu_count()} CPUs)")
    if cfg.out:
        Path(str(cfg.out)).write_text(json.dumps(figures, indent=2))
        print(f"wrote {Path(str(cfg.out)).resolve()}")
    return 0
