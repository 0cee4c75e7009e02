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
import msgpack
import psutil
import pytest

from envs.server.launch import ping


def _raw_call(server, name, *params):
    """One msgpack-RPC request on a fresh connection; returns (error field, result)."""
    with socket.create_connection((server.host, server.port), timeout=5.0) as conn:
        conn.sendall(msgpack.packb([0, 7, name, [[False], *params]], use_bin_type=True))
        unpacker = msgpack.Unpacker(raw=False)
        while True:
            unpacker.feed(conn.recv(1 << 20))
            for reply in unpacker:
                assert reply[:2] == [1, 7]
                return reply[2], reply[3]


def test_malformed_msgpack_closes_only_that_connection(server):
    with socket.create_connection((server.host, server.port), timeout=5.0) as conn:
        conn.sendall(b"\xc1" * 16)  # 0xc1 is never valid msgpack
        assert conn.recv(16) == b""
    assert ping(server.host, server.port) == "0.9.16"


def test_unknown_call_is_an_error_naming_the_call(server, client):
    error, result = _raw_call(server, "no_such_function")
    assert "no_such_function" in error and result is None
    vehicle_bp = client.get_world().get_blueprint_library().find("vehicle.tesla.model3")
    assert vehicle_bp is not None
    assert ping(server.host, server.port) == "0.9.16"


def test_wrong_argument_types_get_a_carla_error_response(server):
    error, result = _raw_call(server, "spawn_actor", "not a description", 42)
    assert error is None
    assert result[0][0] == 0 and "spawn_actor" in result[0][1][0]
    error, result = _raw_call(server, "set_weather_parameters", [1, 2])
    assert result[0][0] is True and "set_weather_parameters" in result[0][1][0]


def test_unknown_blueprint_and_actor_are_clear_errors(server, world):
    transform = [[0.0, 0.0, 0.5], [0.0, 0.0, 0.0]]
    _, result = _raw_call(server, "spawn_actor", [0, "vehicle.nope", []], transform)
    assert result == [[0, ["unknown actor blueprint 'vehicle.nope'"]]]
    _, result = _raw_call(server, "apply_control_to_vehicle", 987654, [0.5, 0.0, 0.0, False, False, False, 0])
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
    world.tick()  # the other client hears of the world with each tick's episode state
    seen = other_world.get_actor(car.id)
    assert seen is not None and seen.type_id == "vehicle.tesla.model3"
    assert seen.get_location().distance(car.get_location()) < 1e-3


def test_no_leak_over_ten_thousand_ticks(server, world):
    library = world.get_blueprint_library()
    points = world.get_map().get_spawn_points()
    car = world.spawn_actor(library.find("vehicle.tesla.model3"), points[0])
    collision = world.spawn_actor(library.find("sensor.other.collision"), carla.Transform(), attach_to=car)
    imu = world.spawn_actor(library.find("sensor.other.imu"), carla.Transform(), attach_to=car)
    collision.listen(lambda event: None)
    imu.listen(lambda measurement: None)
    car.apply_control(carla.VehicleControl(throttle=0.3, steer=0.3))  # drives in circles
    process = psutil.Process(server.pid)
    for _ in range(1000):
        world.tick()
    before = process.memory_info().rss
    for _ in range(9000):
        world.tick()
    grown = process.memory_info().rss - before
    assert grown < 8 * 1024 * 1024, f"server memory grew by {grown / 1e6:.1f} MB over 9,000 ticks"
    assert len(world.get_actors()) == len(world.get_actors())
    collision.stop()
    imu.stop()
