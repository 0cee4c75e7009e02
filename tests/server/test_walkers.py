"""CARLA's AI walkers through the stock client: the client loads the server's navigation mesh with its own Detour
and drives the walkers itself (docs/server.md). Each script runs unchanged CARLA API calls in a process of its
own (`client_script`); the test process judges what it printed against the map."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from envs import maps
from envs.server import navigation
from envs.server.launch import launch


@pytest.fixture(autouse=True)
def carla_cache(tmp_path, monkeypatch):
    """The client keeps downloaded files (the navigation mesh) in its cache folder: a fresh one per test, so that
    every test downloads the mesh from its server and nothing lands in the user's home."""
    monkeypatch.setenv("CARLA_CACHE_DIR", str(tmp_path / "carlaCache"))
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path / "carlaCache"


@pytest.fixture(scope="module")
def town():
    network = maps.load_network("town")
    return network, navigation.walkable_grid(network)


def result_of(done) -> dict:
    line = next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def on_areas(grid, x: float, y: float, areas, slack: float = 0.35) -> bool:
    """Whether (x, y) lies on one of `areas`, or within `slack` of one (a walker's centre may touch a cell edge)."""
    return any(grid.area_at(x + dx, y + dy) in areas
               for dx, dy in ((0, 0), (slack, 0), (-slack, 0), (0, slack), (0, -slack)))


RANDOM_LOCATIONS = """
import json, sys
import carla

client = carla.Client(sys.argv[1], int(sys.argv[2]))
client.set_timeout(20.0)
world = client.get_world()
locations = [world.get_random_location_from_navigation() for _ in range(300)]
print("RESULT " + json.dumps([[l.x, l.y, l.z] for l in locations]))
"""


def test_random_navigation_locations_lie_on_sidewalks(server, client_script, town, carla_cache):
    network, grid = town
    locations = np.array(result_of(client_script(server, RANDOM_LOCATIONS)))
    assert locations.shape == (300, 3)
    assert np.all(np.abs(locations[:, 2]) < 0.05), "the shipped maps are flat: the mesh is at z = 0"
    # spread over the town, not one spot
    assert np.ptp(locations[:, 0]) > 150 and np.ptp(locations[:, 1]) > 150, np.ptp(locations, axis=0)
    # CARLA draws random locations on sidewalks only: every one is on a sidewalk cell of the mesh, and on a
    # sidewalk lane of the map to within half a cell (the mesh's cells follow the lanes' borders to that), or on
    # the corners where two arms' sidewalks meet, which no lane covers
    assert all(grid.area_at(x, y) == navigation.AREA_SIDEWALK for x, y, _ in locations)
    half = 0.5 * grid.cell
    near = [[network.locate(x + dx, y + dy) for dx, dy in ((0, 0), (half, 0), (-half, 0), (0, half), (0, -half))]
            for x, y, _ in locations]
    assert all(any(h is None or h.lane_type == "sidewalk" for h in hits) for hits in near)
    on_sidewalk_lanes = sum(hits[0] is not None and hits[0].lane_type == "sidewalk" for hits in near)
    assert on_sidewalk_lanes >= 0.8 * len(locations), on_sidewalk_lanes
    assert list(carla_cache.glob("0.9.16/slimdrive/Nav/*.bin")), "the client cached the mesh under its hash name"


WALKERS = """
import json, math, random, sys
import carla

client = carla.Client(sys.argv[1], int(sys.argv[2]))
client.set_timeout(20.0)
count, ticks = int(sys.argv[3]), int(sys.argv[4])
random.seed(7)
world = client.get_world()
settings = world.get_settings()
settings.synchronous_mode, settings.fixed_delta_seconds = True, 0.05
world.apply_settings(settings)
world.set_pedestrians_cross_factor(0.0)
library = world.get_blueprint_library()
walker_blueprints = library.filter("walker.pedestrian.*")
SpawnActor, DestroyActor = carla.command.SpawnActor, carla.command.DestroyActor

# walkers on random navigation locations, each with a target 10 to 30 m away (as generate_traffic.py spawns them)
batch = []
while len(batch) < count:
    spawn = world.get_random_location_from_navigation()
    spawn.z += 1.0
    batch.append(SpawnActor(random.choice(walker_blueprints), carla.Transform(spawn)))
walkers = [r.actor_id for r in client.apply_batch_sync(batch, True) if not r.error]
assert len(walkers) >= count - 2, len(walkers)
controller_blueprint = library.find("controller.ai.walker")
responses = client.apply_batch_sync([SpawnActor(controller_blueprint, carla.Transform(), w) for w in walkers], True)
assert not [r.error for r in responses if r.error], [r.error for r in responses]
controllers = [r.actor_id for r in responses]
world.tick()
walker_actors = world.get_actors(walkers)
by_id = {a.id: a for a in walker_actors}
targets = {}
for controller in world.get_actors(controllers):
    controller.start()
    here = controller.parent.get_location()
    for _ in range(200):
        target = world.get_random_location_from_navigation()
        if 10.0 <= math.hypot(target.x - here.x, target.y - here.y) <= 30.0:
            break
    controller.go_to_location(target)
    controller.set_max_speed(1.4)
    targets[controller.parent.id] = target
start = {w: by_id[w].get_location() for w in walkers}
track = {w: [] for w in walkers}
closest = {w: math.hypot(start[w].x - targets[w].x, start[w].y - targets[w].y) for w in walkers}
first = dict(closest)
for tick in range(ticks):
    world.tick()
    for w in walkers:
        here = by_id[w].get_location()
        closest[w] = min(closest[w], math.hypot(here.x - targets[w].x, here.y - targets[w].y))
        if tick % 10 == 0:
            track[w].append([here.x, here.y, here.z])
speeds = [by_id[w].get_velocity().length() for w in walkers]

# stop: the walkers stand where they are
for controller in world.get_actors(controllers):
    controller.stop()
for _ in range(5):
    world.tick()
stopped_at = {w: by_id[w].get_location() for w in walkers}
for _ in range(40):
    world.tick()
moved_after_stop = max(stopped_at[w].distance(by_id[w].get_location()) for w in walkers)
speed_after_stop = max(by_id[w].get_velocity().length() for w in walkers)

client.apply_batch_sync([DestroyActor(a) for a in controllers + walkers], True)
world.tick()
left = [a.type_id for a in world.get_actors() if a.type_id.startswith(("walker.", "controller."))]
settings.synchronous_mode = False
world.apply_settings(settings)
print("RESULT " + json.dumps({
    "first": first, "closest": closest, "track": track, "speeds": speeds, "moved_after_stop": moved_after_stop,
    "speed_after_stop": speed_after_stop, "left": left}))
"""


def test_ai_walkers_walk_to_their_targets_on_walkable_ground_and_stop(server, client_script, town):
    """10 walkers with started controllers, each sent to a point 10-30 m away as the crow flies (up to a block
    round by the sidewalks and crossings) at 1.4 m/s: in 2,400 ticks (120 s) they reach their targets (within 2 m:
    CARLA's walkers then pick a new random route) or at least halve the distance, on sidewalks and crossings only
    (cross factor 0); controller.stop() stands them still; destroying controllers and walkers leaves nothing."""
    _, grid = town
    result = result_of(client_script(server, WALKERS, "10", "2400", timeout=400.0))
    first, closest = result["first"], result["closest"]
    arrived = [w for w in closest if closest[w] <= 2.0]
    progressed = [w for w in closest if closest[w] <= 0.5 * first[w]]
    print("arrived", len(arrived), "of", len(closest), "closest", {w: round(d, 1) for w, d in closest.items()})
    assert len(arrived) >= 0.8 * len(closest), (first, closest)
    assert len(progressed) == len(closest), (first, closest)
    walkable = (navigation.AREA_SIDEWALK, navigation.AREA_CROSSWALK)
    off = [(w, p) for w, points in result["track"].items() for p in points if not on_areas(grid, p[0], p[1], walkable)]
    assert not off, off[:5]
    assert result["moved_after_stop"] < 0.05 and result["speed_after_stop"] < 0.01, result
    assert result["left"] == [], result["left"]


NAN_MAX_SPEED = """
import sys
import carla

client = carla.Client(sys.argv[1], int(sys.argv[2]))
client.set_timeout(20.0)
world = client.get_world()
settings = world.get_settings()
settings.synchronous_mode, settings.fixed_delta_seconds = True, 0.05
world.apply_settings(settings)
library = world.get_blueprint_library()
spawn = world.get_random_location_from_navigation()
spawn.z += 1.0
walker = world.spawn_actor(library.find("walker.pedestrian.0001"), carla.Transform(spawn))
world.tick()
controller = world.spawn_actor(library.find("controller.ai.walker"), carla.Transform(), attach_to=walker)
world.tick()
controller.start()
controller.go_to_location(world.get_random_location_from_navigation())
controller.set_max_speed(float("nan"))
for _ in range(20):
    world.tick()
here = walker.get_location()
assert all(map(lambda v: v == v, (here.x, here.y, here.z))), here  # the server kept a finite pose
print("walker", walker.id, "at", here)
controller.stop()
controller.destroy()
walker.destroy()
settings.synchronous_mode = False
world.apply_settings(settings)
"""


def test_a_nan_pose_from_the_clients_navigation_is_refused_and_logged(client_script):
    """go_to_location and set_max_speed never reach the server (CARLA's navigation is the client's); a NaN max
    speed gives the client's crowd NaN poses, which the server refuses and logs, naming the walker."""
    with launch("town") as server:
        done = client_script(server, NAN_MAX_SPEED)
        log = server.log_tail(40)
    walker = done.stdout.split("walker ")[1].split()[0]
    assert f"ApplyWalkerState of actor {walker}" in log and "not a finite number" in log and "NaN" in log, log


NAVIGATION_AFTER_LOAD_WORLD = """
import json, sys
import carla

client = carla.Client(sys.argv[1], int(sys.argv[2]))
client.set_timeout(30.0)
world = client.get_world()
before = [world.get_random_location_from_navigation() for _ in range(50)]
world = client.load_world("junction")
world.wait_for_tick()
after = [world.get_random_location_from_navigation() for _ in range(50)]
print("RESULT " + json.dumps([[[l.x, l.y] for l in before], [[l.x, l.y] for l in after]]))
"""


def test_a_loaded_map_brings_its_own_navigation(client_script, town):
    """The client builds the new episode's navigation right after load_world, before the map is current: it gets
    the loaded map's mesh, not the old one."""
    _, town_grid = town
    junction_grid = navigation.walkable_grid(maps.load_network("junction"))
    with launch("town") as server:
        before, after = result_of(client_script(server, NAVIGATION_AFTER_LOAD_WORLD))
    assert all(town_grid.area_at(x, y) == navigation.AREA_SIDEWALK for x, y in before)
    assert all(junction_grid.area_at(x, y) == navigation.AREA_SIDEWALK for x, y in after)


def test_maps_without_sidewalks_have_no_navigation(client_script):
    with launch("straight") as server:
        client_script(server, """
import sys
import carla
client = carla.Client(sys.argv[1], int(sys.argv[2]))
client.set_timeout(20.0)
assert client.get_world().get_random_location_from_navigation() is None
""")


SOAK = """
import collections, sys, time
import carla

client = carla.Client(sys.argv[1], int(sys.argv[2]))
client.set_timeout(20.0)
tm_port, ticks, count = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
world = client.get_world()
traffic_manager = client.get_trafficmanager(tm_port)
traffic_manager.set_synchronous_mode(True)
settings = world.get_settings()
settings.synchronous_mode, settings.fixed_delta_seconds = True, 0.05
world.apply_settings(settings)
world.tick()
library = world.get_blueprint_library()
SpawnActor, SetAutopilot, FutureActor = carla.command.SpawnActor, carla.command.SetAutopilot, carla.command.FutureActor
DestroyActor = carla.command.DestroyActor
points = world.get_map().get_spawn_points()
step = max(len(points) // count, 1)
batch = [SpawnActor(library.find("vehicle.audi.a2"), point).then(SetAutopilot(FutureActor, True, tm_port))
         for point in points[::step][:count]]
vehicles = [r.actor_id for r in client.apply_batch_sync(batch, True)]
assert all(vehicles) and len(vehicles) == count, vehicles
crashes, sensors = [], []
for vehicle in world.get_actors(vehicles):
    sensor = world.spawn_actor(library.find("sensor.other.collision"), carla.Transform(), attach_to=vehicle)
    sensor.listen(lambda event: crashes.append((event.frame, event.actor.id, event.other_actor.id)))
    sensors.append(sensor)
# the walkers as CARLA's generate_traffic.py spawns and starts them
walker_blueprints = [bp for bp in library.filter("walker.pedestrian.*") if int(bp.get_attribute("generation")) == 2]
batch, speeds = [], []
for k in range(count):
    walker_blueprint = walker_blueprints[k % len(walker_blueprints)]
    walker_blueprint.set_attribute("is_invincible", "false")
    speeds.append(walker_blueprint.get_attribute("speed").recommended_values[1])
    batch.append(SpawnActor(walker_blueprint, carla.Transform(world.get_random_location_from_navigation())))
walkers = [r.actor_id for r in client.apply_batch_sync(batch, True) if not r.error]
assert len(walkers) >= count - 2, len(walkers)
controllers = [r.actor_id for r in client.apply_batch_sync(
    [SpawnActor(library.find("controller.ai.walker"), carla.Transform(), w) for w in walkers], True)]
assert all(controllers), controllers
world.tick()
world.set_pedestrians_cross_factor(0.0)
for k, controller in enumerate(world.get_actors(controllers)):
    controller.start()
    controller.go_to_location(world.get_random_location_from_navigation())
    controller.set_max_speed(float(speeds[k]))
walker_actors = world.get_actors(walkers)
start = {w.id: w.get_location() for w in walker_actors}
def kinds():
    return collections.Counter(a.type_id.split(".")[0] for a in world.get_actors())


before = kinds()
began = time.monotonic()
for _ in range(ticks):
    world.tick()
seconds = time.monotonic() - began
after = kinds()
# CARLA's client destroys a walker's controller when a vehicle runs the walker over in its crowd (and tells the
# server, set_actor_dead): the one change allowed
killed = before["controller"] - after["controller"]
assert after - collections.Counter(controller=after["controller"]) == before - collections.Counter(
    controller=before["controller"]) and 0 <= killed <= count // 4, (before, after)
among = [c for c in crashes if c[2] in vehicles]
assert not among, among[:5]
walked = sum(w.get_location().distance(start[w.id]) > 10.0 for w in walker_actors)
for sensor in sensors:
    sensor.stop()
client.apply_batch_sync([DestroyActor(a.id) for a in sensors], False)
# generate_traffic.py's teardown: asynchronous mode, vehicles destroyed, controllers stopped, then controllers and
# walkers destroyed, all with apply_batch (answers discarded)
settings.synchronous_mode, settings.fixed_delta_seconds = False, None
world.apply_settings(settings)
client.apply_batch([DestroyActor(v) for v in vehicles])
for controller in world.get_actors(controllers):
    controller.stop()
client.apply_batch([DestroyActor(a) for pair in zip(controllers, walkers) for a in pair])
time.sleep(0.5)
world.wait_for_tick()
left = [a.type_id for a in world.get_actors() if a.type_id.split(".")[0] in ("vehicle", "walker", "controller",
                                                                             "sensor")]
assert not left, left
traffic_manager.set_synchronous_mode(False)
print(f"OK {ticks} ticks in {seconds:.1f} s ({ticks / seconds:.0f} ticks/s); walked {walked} of {len(walkers)}; "
      f"run over {killed}")
"""


@pytest.mark.slow
def test_two_thousand_ticks_with_twenty_autopilot_vehicles_and_twenty_ai_walkers(client_script):
    """No hang (the client's 20 s timeout on every tick), no leaked actor, no collision between the Traffic
    Manager's vehicles, and the walkers walk. (A walker the client's crowd finds under a vehicle is killed, as in
    CARLA: its controller destroyed by the client, the walker told dead; at most a quarter of them.)"""
    with launch("town") as server:
        done = client_script(server, SOAK, str(server.port + 13), "2000", "20", timeout=1800.0)
        log = server.log_tail(50)
    print(done.stdout)
    assert "OK 2000 ticks" in done.stdout, done.stdout
    walked = int(done.stdout.split("walked ")[1].split(" of")[0])
    assert walked >= 15, done.stdout
    assert "Traceback" not in log, log


def test_the_navigation_mesh_is_built_when_the_map_loads_before_any_client_asks(tmp_path, monkeypatch):
    """Every client fetches the mesh from its first get_world(): a server builds it on a thread of its own when a
    map loads (here with an empty disk cache), so that the fetch does not wait for a build."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the launched server's disk cache of meshes
    cached = tmp_path / navigation.DISK_CACHE.name
    with launch("town", log_dir=tmp_path) as server:
        wait_for_whole_mesh(server, cached / TOWN_MESH)
    # the file is renamed into place whole: no partial file is left beside it
    assert [p.name for p in cached.iterdir()] == [TOWN_MESH]


TOWN_MESH = Path(navigation.file_name(maps.load_xodr_text("town"))).name


def wait_for_whole_mesh(server, path: Path) -> bytes:
    """The mesh file at `path` once a launched server has written it whole (60 s at most)."""
    deadline = time.monotonic() + 60.0
    while time.monotonic() < deadline:
        assert server.alive(), server.log_tail()
        if path.exists() and navigation.file_problem(data := path.read_bytes()) is None:
            return data
        time.sleep(0.2)
    raise AssertionError(f"no whole navigation mesh at {path}: {server.log_tail()}")


def test_a_truncated_mesh_in_the_disk_cache_is_built_again_not_served(tmp_path, monkeypatch, client_script, town):
    """A server killed while copying, or a full disk, can leave a short file under the mesh's name: the next server
    logs it, builds the mesh again and replaces the file, and the client gets a whole mesh (its Detour would read
    past a short one)."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    cached = tmp_path / navigation.DISK_CACHE.name
    cached.mkdir()
    _, grid = town
    whole = navigation.navmesh_bytes(grid)
    (cached / TOWN_MESH).write_bytes(whole[:len(whole) // 2])
    with launch("town", log_dir=tmp_path) as server:
        assert wait_for_whole_mesh(server, cached / TOWN_MESH) == whole
        locations = np.array(result_of(client_script(server, RANDOM_LOCATIONS)))
        log = server.log_tail(40)
    assert "navigation mesh cache" in log and "is damaged (tile of" in log, log
    assert all(grid.area_at(x, y) == navigation.AREA_SIDEWALK for x, y, _ in locations)


def test_a_process_keeps_the_newest_meshes_in_memory_and_reads_older_ones_from_disk(tmp_path, monkeypatch, town):
    """A server that loads map after map (generate_opendrive_world) must not hold every map's mesh (4.5 MB for
    town): beyond MESHES_IN_MEMORY the oldest built one is dropped, and asking for it again reads the disk cache."""
    monkeypatch.setattr(navigation, "DISK_CACHE", tmp_path / "meshes")
    monkeypatch.setattr(navigation, "MESHES_IN_MEMORY", 1)
    monkeypatch.setattr(navigation, "_CACHE", {})
    town_network, _ = town
    junction_network = maps.load_network("junction")
    town_xodr, junction_xodr = maps.load_xodr_text("town"), maps.load_xodr_text("junction")
    town_mesh = navigation.mesh_bytes(town_network, town_xodr)
    junction_mesh = navigation.mesh_bytes(junction_network, junction_xodr)
    assert list(navigation._CACHE) == [navigation.file_name(junction_xodr)]
    assert sorted(p.name for p in (tmp_path / "meshes").iterdir()) == sorted(
        Path(navigation.file_name(x)).name for x in (town_xodr, junction_xodr))
    written = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "meshes").iterdir()}
    time.sleep(0.05)
    assert navigation.mesh_bytes(town_network, town_xodr) == town_mesh  # from the disk cache
    town_file = tmp_path / "meshes" / Path(navigation.file_name(town_xodr)).name
    assert town_file.stat().st_mtime_ns > max(written.values())  # read: the most recently used, for the pruning
    assert list(navigation._CACHE) == [navigation.file_name(town_xodr)]
    assert navigation.file_problem(town_mesh) is None and navigation.file_problem(junction_mesh) is None


def test_a_mesh_cache_folder_that_is_a_link_is_neither_read_nor_written(tmp_path, monkeypatch, town):
    """The cache lies in the shared temp folder under a name anyone can guess: a link there (another user's plant)
    is not followed, so a planted file never reaches the clients' Detour; the mesh is built and served as is."""
    planted = tmp_path / "planted"
    planted.mkdir()
    junction_mesh = navigation.navmesh_bytes(navigation.walkable_grid(maps.load_network("junction")))
    (planted / TOWN_MESH).write_bytes(junction_mesh)  # whole, so only the folder check keeps it out
    (tmp_path / "cache").symlink_to(planted)
    monkeypatch.setattr(navigation, "DISK_CACHE", tmp_path / "cache")
    monkeypatch.setattr(navigation, "_CACHE", {})
    network, grid = town
    served = navigation.mesh_bytes(network, maps.load_xodr_text("town"))
    assert served == navigation.navmesh_bytes(grid) != junction_mesh
    assert [p.name for p in planted.iterdir()] == [TOWN_MESH] and (planted / TOWN_MESH).read_bytes() == junction_mesh


def test_the_disk_cache_keeps_the_most_recently_used_meshes_and_no_stale_partial_file(tmp_path, monkeypatch):
    """Every change of the builder names each map's mesh anew, so the disk cache would grow by 4.5 MB per map and
    change: a server that writes a mesh keeps the MESHES_ON_DISK most recently used (a mesh read counts as used) and
    removes partial files left by a killed server; a partial file another server may still be writing stays."""
    cache = tmp_path / "meshes"
    cache.mkdir()
    monkeypatch.setattr(navigation, "DISK_CACHE", cache)
    monkeypatch.setattr(navigation, "_CACHE", {})
    monkeypatch.setattr(navigation, "MESHES_ON_DISK", 3)
    now = time.time()
    for k in range(5):  # mesh4 the newest
        (cache / f"mesh{k}.bin").write_bytes(b"old")
        os.utime(cache / f"mesh{k}.bin", (now - 1000 + k, now - 1000 + k))
    (cache / "mesh0.1234.part").write_bytes(b"killed")
    os.utime(cache / "mesh0.1234.part", (now - 2 * navigation.STALE_PART_S, now - 2 * navigation.STALE_PART_S))
    (cache / "mesh1.5678.part").write_bytes(b"being written")
    junction = maps.load_network("junction")
    navigation.mesh_bytes(junction, maps.load_xodr_text("junction"))
    junction_mesh = Path(navigation.file_name(maps.load_xodr_text("junction"))).name
    assert sorted(p.name for p in cache.iterdir()) == sorted([junction_mesh, "mesh4.bin", "mesh3.bin",
                                                              "mesh1.5678.part"])
