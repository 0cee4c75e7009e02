"""Bad input and faults: the server answers with CARLA-shaped errors and keeps serving."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import carla
import psutil
import pytest

from envs.server.launch import ping


def test_malformed_msgpack_closes_only_that_connection(server):
    with socket.create_connection((server.host, server.port), timeout=5.0) as conn:
        conn.sendall(b"\xc1" * 16)  # 0xc1 is never valid msgpack
        assert conn.recv(16) == b""
    assert ping(server.host, server.port) == "0.9.16"


def test_unknown_call_is_an_error_naming_the_call(server, client, raw_call):
    error, result = raw_call("no_such_function")
    assert "no_such_function" in error and result is None
    vehicle_bp = client.get_world().get_blueprint_library().find("vehicle.tesla.model3")
    assert vehicle_bp is not None
    assert ping(server.host, server.port) == "0.9.16"


def test_wrong_argument_types_get_a_carla_error_response(raw_call):
    error, result = raw_call("spawn_actor", "not a description", 42)
    assert error is None
    assert result[0][0] == 0 and "spawn_actor" in result[0][1][0]
    error, result = raw_call("set_weather_parameters", [1, 2])
    assert result[0][0] is True and "set_weather_parameters" in result[0][1][0]


def test_unknown_blueprint_and_actor_are_clear_errors(world, raw_call):
    transform = [[0.0, 0.0, 0.5], [0.0, 0.0, 0.0]]
    _, result = raw_call("spawn_actor", [0, "vehicle.nope", []], transform)
    assert result == [[0, ["unknown actor blueprint 'vehicle.nope'"]]]
    _, result = raw_call("apply_control_to_vehicle", 987654, [0.5, 0.0, 0.0, False, False, False, 0])
    assert result[0][0] is True and "987654" in result[0][1][0]
    assert world.get_actor(987654) is None


def test_destroying_twice_reports_failure_without_hurting_the_server(client, world):
    car = world.spawn_actor(world.get_blueprint_library().find("vehicle.audi.a2"),
                            world.get_map().get_spawn_points()[7])
    actor_id = car.id
    assert car.destroy()
    response = client.apply_batch_sync([carla.command.DestroyActor(actor_id)], False)[0]
    assert "not found" in response.error
    assert world.tick() > 0


def test_a_client_killed_mid_episode_leaves_a_working_server(server, client):
    script = textwrap.dedent(f"""
        import carla, time
        c = carla.Client("{server.host}", {server.port}); c.set_timeout(10)
        w = c.get_world()
        s = w.get_settings(); s.synchronous_mode = True; s.fixed_delta_seconds = 0.05; w.apply_settings(s)
        v = w.spawn_actor(w.get_blueprint_library().find("vehicle.tesla.model3"), w.get_map().get_spawn_points()[9])
        for _ in range(5): w.tick()
        print("ready", flush=True)
        time.sleep(60)
    """)
    victim = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert victim.stdout.readline().strip() == "ready"
    finally:
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
    world = client.get_world()
    assert world.get_settings().synchronous_mode, "CARLA keeps the dead client's settings"
    frame = world.tick()
    assert world.tick() == frame + 1
    leftovers = world.get_actors().filter("vehicle.*")
    client.apply_batch_sync([carla.command.DestroyActor(a.id) for a in leftovers], False)
    settings = world.get_settings()
    settings.synchronous_mode, settings.fixed_delta_seconds = False, None
    world.apply_settings(settings)


def test_two_clients_share_one_world(server, world):
    other = carla.Client(server.host, server.port)
    other.set_timeout(10.0)
    car = world.spawn_actor(world.get_blueprint_library().find("vehicle.tesla.model3"),
                            world.get_map().get_spawn_points()[11])
    world.tick()
    other_world = other.get_world()
    frame = world.tick()  # the other client hears of the world with each tick's episode state, on its own stream
    deadline = time.monotonic() + 10.0
    while other_world.get_snapshot().frame < frame and time.monotonic() < deadline:
        time.sleep(0.01)
    seen = other_world.get_actor(car.id)
    assert seen is not None and seen.type_id == "vehicle.tesla.model3"
    assert seen.get_location().distance(car.get_location()) < 1e-3


@pytest.mark.parametrize("sensor, attribute, value, allowed", [
    ("sensor.camera.rgb", "fov", "0", "more than 0 and less than 180 degrees"),
    ("sensor.camera.depth", "fov", "180", "more than 0 and less than 180 degrees"),
    ("sensor.camera.rgb", "image_size_x", "0", "1..8192 pixels"),
    ("sensor.camera.semantic_segmentation", "image_size_y", "9000", "1..8192 pixels"),
    ("sensor.other.imu", "sensor_tick", "-1", "0 or more seconds"),
])
def test_bad_sensor_attribute_is_refused_by_name_and_leaves_no_actor(world, sensor, attribute, value, allowed):
    library = world.get_blueprint_library()
    car = world.spawn_actor(library.find("vehicle.tesla.model3"), world.get_map().get_spawn_points()[5])
    world.tick()
    before = sorted(a.id for a in world.get_actors())
    bp = library.find(sensor)
    bp.set_attribute(attribute, value)
    with pytest.raises(RuntimeError) as refused:
        world.spawn_actor(bp, carla.Transform(carla.Location(z=1.5)), attach_to=car)
    message = str(refused.value)
    assert f"'{attribute}' = {value}" in message and allowed in message and sensor in message, message
    world.tick()
    assert sorted(a.id for a in world.get_actors()) == before


def _far_from(points, origin, distance: float):
    return next(p for p in points if p.location.distance(origin.location) > distance)


def test_no_leak_over_ten_thousand_ticks(server, world):
    """A driving car with listened sensors for 10,000 ticks, while every 50 ticks a parked car with a sensor
    is spawned and destroyed and a bad camera on the driving car is refused: memory and the actor count stay flat."""
    library = world.get_blueprint_library()
    points = world.get_map().get_spawn_points()
    car = world.spawn_actor(library.find("vehicle.tesla.model3"), points[0])
    collision = world.spawn_actor(library.find("sensor.other.collision"), carla.Transform(), attach_to=car)
    imu = world.spawn_actor(library.find("sensor.other.imu"), carla.Transform(), attach_to=car)
    collision.listen(lambda event: None)
    imu.listen(lambda measurement: None)
    car.apply_control(carla.VehicleControl(throttle=0.3, steer=0.3))  # drives in circles
    parking = _far_from(points, points[0], 80.0)  # out of the circling car's way
    bad_camera = library.find("sensor.camera.rgb")
    bad_camera.set_attribute("fov", "0")
    command = carla.command

    def churn() -> None:
        parked = world.spawn_actor(library.find("vehicle.audi.a2"), parking)
        gnss = world.spawn_actor(library.find("sensor.other.gnss"), carla.Transform(), attach_to=parked)
        gnss.listen(lambda fix: None)
        with pytest.raises(RuntimeError, match="'fov' = 0"):
            world.spawn_actor(bad_camera, carla.Transform(), attach_to=car)  # a parent that stays
        world.tick()
        gnss.stop()
        responses = client.apply_batch_sync([command.DestroyActor(gnss.id), command.DestroyActor(parked.id)], False)
        assert [r.error for r in responses] == ["", ""]

    client = carla.Client(server.host, server.port)
    client.set_timeout(10.0)
    world.tick()
    count = len(world.get_actors())
    process = psutil.Process(server.pid)
    for tick in range(1000):
        if tick % 50 == 0:
            churn()
        world.tick()
    before = process.memory_info().rss
    for tick in range(9000):
        if tick % 50 == 0:
            churn()
        world.tick()
    grown = process.memory_info().rss - before
    assert grown < 8 * 1024 * 1024, f"server memory grew by {grown / 1e6:.1f} MB over 9,000 ticks"
    assert len(world.get_actors()) == count, "spawned and destroyed actors left something behind"
    collision.stop()
    imu.stop()


def test_a_server_stops_by_itself_when_the_process_that_launched_it_dies():
    """A launcher killed before it could stop its server (a crashed test, a killed training job) leaves no
    simulator behind holding ports and memory."""
    code = "from envs.server.launch import launch; s = launch('straight'); print(s.pid, flush=True); input()"
    launcher = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    server_pid = int(launcher.stdout.readline())
    try:
        launcher.kill()
        launcher.wait(10)
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline and psutil.pid_exists(server_pid) \
                and psutil.Process(server_pid).status() != psutil.STATUS_ZOMBIE:
            time.sleep(0.2)
        assert not psutil.pid_exists(server_pid) or psutil.Process(server_pid).status() == psutil.STATUS_ZOMBIE
    finally:
        if psutil.pid_exists(server_pid):
            os.kill(server_pid, signal.SIGKILL)
