"""Hostile clients and hostile numbers (issue 17): the server's memory stays bounded whatever a client sends or
fails to read, connections beyond the limit are closed, and non-finite numbers in transforms, controls and
settings are refused by name, by the server itself (the raw calls here bypass any client-side check)."""
from __future__ import annotations

import math
import socket
import time

import carla
import msgpack
import psutil
import pytest

from envs.server.launch import ping
from envs.server.transport import MAX_CONNECTIONS, MAX_FRAME_BYTES, MAX_PENDING_REPLY_BYTES

MB = 1024 * 1024


def rss(server) -> int:
    return psutil.Process(server.pid).memory_info().rss


@pytest.fixture
def settled(server):
    """The module's server with its scenery built (the cameras' scene, some 100 MB for the town, is built on first
    use or in the background after start): what memory it grows by afterwards is the test's doing."""
    with socket.create_connection((server.host, server.port), timeout=120.0) as conn:
        conn.sendall(msgpack.packb([0, 1, "get_all_level_BBs", [[False], 255]]))
        unpacker = msgpack.Unpacker(raw=False)
        while not list(unpacker):
            unpacker.feed(conn.recv(4 * MB))
    time.sleep(0.5)


def send_until_closed(conn: socket.socket, total: int, block: bytes) -> int:
    """Send `block` until `total` bytes went out; returns how many did before the server closed the connection."""
    sent = 0
    try:
        while sent < total:
            conn.sendall(block)
            sent += len(block)
        conn.settimeout(10.0)
        assert conn.recv(1) == b""  # everything sent: the server must still close it
    except (BrokenPipeError, ConnectionResetError):
        pass
    return sent


def test_unfinished_huge_requests_are_refused_and_memory_stays_bounded(server, settled):
    """Three clients each start a huge request: before, the server buffered all of it (three 99 MB frames took it
    to 399 MB); now each connection is closed once it exceeds MAX_FRAME_BYTES and the server keeps serving."""
    before = rss(server)
    conns = [socket.create_connection((server.host, server.port), timeout=10.0) for _ in range(3)]
    try:
        request = b"\x94\x00\x07\xa4call"  # [0, 7, "call", params]: a request whose params never end
        frames = [  # params: an array of 65,535 1 kB strings (67 MB), which never comes to its end ...
            (request + b"\xdc\xff\xff", b"".join([b"\xc5\x04\x00" + b"x" * 1024] * 1024)),
            (request + b"\xdc\xff\xff", b"".join([b"\xc5\x04\x00" + b"x" * 1024] * 1024)),
            (request + b"\x91\xc6" + (99 * MB).to_bytes(4, "big"), b"\0" * MB),  # ... or one 99 MB bin32
        ]
        sent = []
        for conn, (header, block) in zip(conns, frames):
            conn.sendall(header)
            sent.append(send_until_closed(conn, 99 * MB, block))
        assert all(s < 2 * MAX_FRAME_BYTES for s in sent), f"the server read on past its limit: {sent}"
        assert rss(server) - before < 3 * MAX_FRAME_BYTES, "memory grew beyond three refused frames"
    finally:
        for conn in conns:
            conn.close()
    assert ping(server.host, server.port) == "0.9.16"
    assert "a request larger than" in server.log_tail(50)


def test_a_client_that_does_not_read_its_replies_is_not_read(server, settled):
    """2,000 requests for the map's OpenDRIVE text (0.2 MB replies: 440 MB if they all queued in the server)
    from a client that reads nothing: the server stops reading it once MAX_PENDING_REPLY_BYTES wait (beyond what
    the kernel's socket buffers hold), serves others meanwhile, and answers every request once the client reads."""
    requests = 2_000
    before = rss(server)
    with socket.create_connection((server.host, server.port), timeout=30.0) as conn:
        conn.sendall(b"".join(msgpack.packb([0, i, "get_map_data", [[False]]]) for i in range(requests)))
        time.sleep(3.0)  # let the server answer until its write buffer passes the high-water mark
        assert rss(server) - before < MAX_PENDING_REPLY_BYTES + 56 * MB
        assert ping(server.host, server.port) == "0.9.16"  # another client is served while this one stalls
        unpacker, answered = msgpack.Unpacker(raw=False), []
        while len(answered) < requests:
            unpacker.feed(conn.recv(4 * MB))
            answered += [reply[1] for reply in unpacker]
    assert answered == list(range(requests))


def test_connections_beyond_the_limit_are_closed(server):
    held = [socket.create_connection((server.host, server.port), timeout=5.0) for _ in range(MAX_CONNECTIONS)]
    try:
        time.sleep(0.5)
        with pytest.raises(OSError):  # closed by the server as soon as it is accepted
            ping(server.host, server.port, timeout=5.0)
    finally:
        for conn in held:
            conn.close()
    time.sleep(0.5)
    assert ping(server.host, server.port) == "0.9.16"
    assert "refusing a RPC connection" in server.log_tail(50)


NAN, INF = math.nan, math.inf


@pytest.mark.parametrize("call,args,named", [
    ("set_actor_transform", [[[0.0, 0.0, 0.5], [0.0, NAN, 0.0]]], "rotation.yaw is nan"),
    ("set_actor_transform", [[[INF, 0.0, 0.5], [0.0, 0.0, 0.0]]], "location.x is inf"),
    ("set_actor_location", [[0.0, -INF, 0.5]], "location.y is -inf"),
    ("set_actor_target_velocity", [[NAN, 0.0, 0.0]], "velocity.x is nan"),
    ("apply_control_to_vehicle", [[NAN, 0.0, 0.0, False, False, False, 0]], "throttle is nan"),
    ("apply_control_to_vehicle", [[0.5, INF, 0.0, False, False, False, 0]], "steer is inf"),
])
def test_non_finite_numbers_for_an_actor_are_refused_by_name(world, raw_call, call, args, named):
    car = world.spawn_actor(world.get_blueprint_library().find("vehicle.audi.a2"),
                            world.get_map().get_spawn_points()[3])
    world.tick()
    pose = car.get_transform()
    _, result = raw_call(call, car.id, *args)
    assert result[0][0] is True and named in result[0][1][0] and call in result[0][1][0], result
    world.tick()
    after = car.get_transform()
    assert after.location.distance(pose.location) < 1.0 and math.isfinite(after.rotation.yaw)


def test_non_finite_spawn_settings_and_weather_are_refused_by_name(world, raw_call):
    _, result = raw_call("spawn_actor", [0, "vehicle.audi.a2", []], [[0.0, 0.0, 0.5], [0.0, NAN, 0.0]])
    assert result[0][0] == 0 and "rotation.yaw is nan" in result[0][1][0]
    settings = world.get_settings()
    _, result = raw_call("set_episode_settings", [True, False, [True, NAN], True, 0.01, 10, 0.0, True, 3000.0,
                                                  2000.0, True])
    assert result[0][0] == 0 and "fixed_delta_seconds is nan" in result[0][1][0]
    assert world.get_settings().fixed_delta_seconds == settings.fixed_delta_seconds
    _, result = raw_call("set_weather_parameters", [5.0, NAN] + [0.0] * 12)
    assert result[0][0] is True and "precipitation is nan" in result[0][1][0]


def test_the_stock_client_gets_the_error_for_a_nan_yaw(world):
    """What `yaw: .nan` in a scenario did before the schema refused it: a van with a NaN pose that the ego
    drove through. The server now refuses the pose itself."""
    blueprint = world.get_blueprint_library().find("vehicle.mercedes.sprinter")
    spawn = world.get_map().get_spawn_points()[5]
    with pytest.raises(RuntimeError, match="rotation.yaw is nan"):
        world.spawn_actor(blueprint, carla.Transform(spawn.location, carla.Rotation(yaw=NAN)))
    van = world.spawn_actor(blueprint, spawn)
    world.tick()
    van.set_transform(carla.Transform(spawn.location, carla.Rotation(yaw=NAN)))  # a void call: no answer awaited
    world.tick()
    assert math.isfinite(van.get_transform().rotation.yaw)


def test_a_non_finite_batch_command_is_refused_alone(client, world):
    car = world.spawn_actor(world.get_blueprint_library().find("vehicle.audi.a2"),
                            world.get_map().get_spawn_points()[4])
    world.tick()
    nan_pose = carla.Transform(car.get_transform().location, carla.Rotation(yaw=NAN))
    bad, good = client.apply_batch_sync([carla.command.ApplyTransform(car.id, nan_pose),
                                         carla.command.ApplyVehicleControl(car.id, carla.VehicleControl(throttle=0.5))])
    assert "rotation.yaw is nan" in bad.error and not good.error
    world.tick()
    assert math.isfinite(car.get_transform().rotation.yaw)
