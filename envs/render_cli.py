"""`slimdrive render`: a PNG mosaic of a rig's camera images plus a bird's-eye view for one map, pose,
weather and seed, rendered by the embedded simulator and fetched through the stock CARLA client.

    slimdrive render pose=12 weather=HardRainNoon seed=3 out=docs/img/render.png
"""
from __future__ import annotations

import queue
from pathlib import Path

import cv2
import numpy as np

from envs.birdseye import mosaic
from envs.rig import bgra_array, rig_from_config, spawn_rig
from envs.server.launch import launch

TILE_COLUMNS = 3
VEHICLE_BLUEPRINTS = ("vehicle.tesla.model3", "vehicle.lincoln.mkz_2020", "vehicle.audi.a2", "vehicle.toyota.prius",
                      "vehicle.nissan.patrol_2021", "vehicle.mercedes.sprinter", "vehicle.carlamotors.carlacola",
                      "vehicle.mitsubishi.fusorosa", "vehicle.bh.crossbike", "vehicle.yamaha.yzf")
SETTLE_TICKS = 10  # the mosaic shows the 10th frame after the scene is set up
NEIGHBOURHOOD = 70.0  # m: traffic is placed within this distance of the ego


def ego_transform(carla, world, pose):
    """A spawn point by index, or an "x,y,yaw" string."""
    points = world.get_map().get_spawn_points()
    text = str(pose)
    if "," in text:
        x, y, yaw = (float(v) for v in text.split(","))
        return carla.Transform(carla.Location(x, y, 0.3), carla.Rotation(yaw=yaw))
    index = int(text)
    if not 0 <= index < len(points):
        raise ValueError(f"pose={pose}: the map has spawn points 0..{len(points) - 1}; or give pose=x,y,yaw")
    return points[index]


def populate(carla, world, ego_location, vehicles: int, walkers: int, seed: int) -> list:
    """Seeded traffic near the ego: vehicles on spawn points, walkers on nearby sidewalks."""
    rng = np.random.default_rng(seed)
    library = world.get_blueprint_library()
    carla_map = world.get_map()
    near = [p for p in carla_map.get_spawn_points()
            if 3.0 < p.location.distance(ego_location) < NEIGHBOURHOOD]
    actors = []
    for index in rng.permutation(len(near))[:vehicles]:
        bp = library.find(VEHICLE_BLUEPRINTS[rng.integers(len(VEHICLE_BLUEPRINTS))])
        colors = bp.get_attribute("color").recommended_values
        bp.set_attribute("color", colors[rng.integers(len(colors))])
        shift = near[index].get_forward_vector() * float(rng.uniform(-6.0, 6.0))
        transform = carla.Transform(near[index].location + shift, near[index].rotation)
        actor = world.try_spawn_actor(bp, transform)
        if actor is not None:
            actors.append(actor)
    walker_bps = library.filter("walker.pedestrian.*")
    for _ in range(walkers * 3):
        if sum(a.type_id.startswith("walker") for a in actors) >= walkers or not near:
            break
        base = near[rng.integers(len(near))]
        side = base.get_right_vector() * float(rng.choice([-1.0, 1.0]) * rng.uniform(4.0, 9.0))
        along = base.get_forward_vector() * float(rng.uniform(-8.0, 8.0))
        waypoint = carla_map.get_waypoint(base.location + side + along, project_to_road=True,
                                          lane_type=carla.LaneType.Sidewalk)
        if waypoint is None:
            continue
        location = waypoint.transform.location + carla.Location(z=1.0)
        transform = carla.Transform(location, carla.Rotation(yaw=float(rng.uniform(-180.0, 180.0))))
        actor = world.try_spawn_actor(walker_bps[int(rng.integers(len(walker_bps)))], transform)
        if actor is not None:
            actors.append(actor)
    return actors


def render(cfg, host: str, port: int) -> np.ndarray:
    """Set up the scene on a running simulator and return the mosaic (BGR)."""
    import carla

    rig = rig_from_config(cfg.rig, "conf/rig")
    client = carla.Client(host, port)
    client.set_timeout(30.0)
    world = client.get_world()
    settings = world.get_settings()
    settings.synchronous_mode, settings.fixed_delta_seconds = True, 0.05
    world.apply_settings(settings)
    world.reset_all_traffic_lights()  # light phases would otherwise depend on how long the server ran
    if not hasattr(carla.WeatherParameters, str(cfg.weather)):
        raise ValueError(f"weather={cfg.weather}: not a carla.WeatherParameters preset (e.g. ClearNoon, "
                         "CloudySunset, HardRainNoon, ClearNight)")
    world.set_weather(getattr(carla.WeatherParameters, str(cfg.weather)))
    library = world.get_blueprint_library()
    ego_bp = library.find("vehicle.tesla.model3")
    ego_bp.set_attribute("role_name", "hero")
    ego = world.spawn_actor(ego_bp, ego_transform(carla, world, cfg.pose))
    others = populate(carla, world, ego.get_location(), int(cfg.vehicles), int(cfg.walkers), int(cfg.seed))
    cameras = spawn_rig(world, ego, rig)
    bev_bp = library.find("sensor.camera.rgb")
    for key, value in (("image_size_x", cfg.bev.size), ("image_size_y", cfg.bev.size), ("fov", cfg.bev.fov)):
        bev_bp.set_attribute(key, str(value))
    bev_cam = world.spawn_actor(bev_bp, carla.Transform(carla.Location(z=float(cfg.bev.height)),
                                                        carla.Rotation(pitch=-90.0)), attach_to=ego)
    bev_queue: queue.Queue = queue.Queue()
    bev_cam.listen(bev_queue.put)
    try:
        # Always picture the same frame after setup: warm-up takes a variable number of ticks, and traffic
        # lights and rain streaks depend on the frame.
        target = world.get_snapshot().frame + SETTLE_TICKS
        frame = cameras.warm_up(world)
        while frame < target:
            frame = world.tick()
        images = cameras.read(frame)
        while True:
            bev_image = bev_queue.get(timeout=10.0)
            if bev_image.frame == frame:
                break
        caption = (f"map={cfg.map} pose={cfg.pose} weather={cfg.weather} seed={cfg.seed} "
                   f"rig={rig.name} {rig.image_size_x}x{rig.image_size_y}")
        return mosaic([images[name] for name in rig.names], rig.names, bgra_array(bev_image), TILE_COLUMNS,
                      caption)
    finally:
        bev_cam.stop()
        cameras.destroy()
        bev_cam.destroy()
        client.apply_batch_sync([carla.command.DestroyActor(a) for a in [*others, ego]])
        settings.synchronous_mode, settings.fixed_delta_seconds = False, None
        world.apply_settings(settings)


def run(cfg) -> int:
    """`slimdrive render [map=..] [pose=..] [weather=..] [seed=..] [rig=..] [out=..]`."""
    with launch(str(cfg.map)) as server:
        picture = render(cfg, server.host, server.port)
    out = Path(str(cfg.out))
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), picture):
        raise OSError(f"could not write {out}")
    print(f"wrote {out.resolve()} ({picture.shape[1]}x{picture.shape[0]})")
    return 0
