"""CARLA's recorder and replayer through the stock client (envs/server/recorder.py): a synchronous drive is
recorded in CARLA's binary layout, the three queries answer CARLA's text about it, and replaying it on a fresh
server puts every actor where it was at each recorded frame. A file that is damaged, truncated, or cut short by a
killed server is read up to its last complete frame and says what is wrong with it."""
from __future__ import annotations

import json
import math
import os
import re
import signal
import struct
from contextlib import contextmanager

import pytest

from envs.server.launch import launch
from envs.server.recorder import FRAME, FRAME_START, HEADER, read_log

TICKS = 80
DT = 0.05

RECORD = """
import json, sys
import carla

client = carla.Client(sys.argv[1], int(sys.argv[2]))
client.set_timeout(20.0)
world = client.get_world()
settings = world.get_settings()
settings.synchronous_mode, settings.fixed_delta_seconds = True, 0.05
world.apply_settings(settings)
library = world.get_blueprint_library()
points = world.get_map().get_spawn_points()

path = client.start_recorder(sys.argv[3])
world.tick()  # frame 1: the map's actors only


def vehicle(role, point):
    blueprint = library.find("vehicle.tesla.model3")
    blueprint.set_attribute("role_name", role)
    return world.spawn_actor(blueprint, point)


driver = vehicle("driver", points[3])
parked = vehicle("parked", points[12])
ahead = points[12]  # (an actor's transform is known from the next tick on)
behind = carla.Transform(ahead.location - ahead.get_forward_vector() * 9.0, ahead.rotation)
rammer = vehicle("rammer", behind)
doomed = vehicle("doomed", points[20])
walker_bp = library.find("walker.pedestrian.0001")
walker_bp.set_attribute("role_name", "walker")
walker = world.spawn_actor(walker_bp, carla.Transform(points[30].location + carla.Location(y=6.0)))
driver.apply_control(carla.VehicleControl(throttle=0.6, steer=0.15))
rammer.apply_control(carla.VehicleControl(throttle=1.0))
doomed.apply_control(carla.VehicleControl(throttle=0.4))
walker.apply_control(carla.WalkerControl(carla.Vector3D(0.0, 1.0, 0.0), 1.4))
light = sorted(world.get_actors().filter("traffic.traffic_light"), key=lambda a: a.id)[0]
hits = []
sensor = world.spawn_actor(library.find("sensor.other.collision"), carla.Transform(), attach_to=rammer)
sensor.listen(lambda event: hits.append(event.other_actor.id))

ours = {"driver": driver, "parked": parked, "rammer": rammer, "doomed": doomed, "walker": walker}
frames = []
for tick in range(2, TICKS + 1):  # recorded frames 2..N
    if tick == 30:
        light.set_state(carla.TrafficLightState.Yellow)
        light.freeze(True)
    if tick == 40:
        doomed.destroy()
        del ours["doomed"]
    world.tick()
    poses = {}
    for role, actor in ours.items():
        t = actor.get_transform()
        poses[role] = [t.location.x, t.location.y, t.location.z, t.rotation.pitch, t.rotation.yaw, t.rotation.roll]
    frames.append({"frame": tick, "poses": poses, "light": int(light.get_state())})
sensor.stop()
sensor.destroy()
client.stop_recorder()
print(json.dumps({
    "path": path, "frames": frames, "hits": hits, "light": light.id,
    "ids": {role: actor.id for role, actor in ours.items()} | {"doomed": doomed.id},
    "info": client.show_recorder_file_info(sys.argv[3], False),
    "info_all": client.show_recorder_file_info(sys.argv[3], True),
    "collisions": client.show_recorder_collisions(sys.argv[3], "v", "v"),
    "walker_collisions": client.show_recorder_collisions(sys.argv[3], "w", "a"),
    "blocked": client.show_recorder_actors_blocked(sys.argv[3], 1.0, 10.0),
}))
""".replace("TICKS", str(TICKS))

REPLAY = """
import json, sys
import carla

client = carla.Client(sys.argv[1], int(sys.argv[2]))
client.set_timeout(20.0)
world = client.get_world()
settings = world.get_settings()
settings.synchronous_mode, settings.fixed_delta_seconds = True, 0.05
world.apply_settings(settings)
text = client.replay_file(sys.argv[3], 0.0, 0.0, 0, False)
light_location = None
frames = []
for tick in range(2, int(sys.argv[4]) + 1):
    world.tick()
    poses = {}
    for actor in world.get_actors():
        role = actor.attributes.get("role_name", "")
        if actor.type_id.startswith(("vehicle.", "walker.")):
            t = actor.get_transform()
            poses[role] = [t.location.x, t.location.y, t.location.z, t.rotation.pitch, t.rotation.yaw,
                           t.rotation.roll]
    light = world.get_actor(int(sys.argv[5]))
    frames.append({"frame": tick, "poses": poses, "light": int(light.get_state())})
# the replay has ended: its actors are kept, vehicles under physics again
world.tick()
kept = sorted(a.attributes.get("role_name", "") for a in world.get_actors().filter("vehicle.*"))
client.stop_replayer(True)
print(json.dumps({"text": text, "frames": frames, "kept": kept}))
"""

REPLAY_OPTIONS = """
import json, sys
import carla

client = carla.Client(sys.argv[1], int(sys.argv[2]))
client.set_timeout(20.0)
world = client.get_world()
settings = world.get_settings()
settings.synchronous_mode, settings.fixed_delta_seconds = True, 0.05
world.apply_settings(settings)
client.set_replayer_time_factor(2.0)
text = client.replay_file(sys.argv[3], 1.0, 0.0, int(sys.argv[4]), False)  # from 1 s, following the driver
ticks = []
for _ in range(8):
    world.tick()
    driver = [a for a in world.get_actors().filter("vehicle.*") if a.attributes["role_name"] == "driver"][0]
    t, s = driver.get_transform(), world.get_spectator().get_transform()
    ticks.append({"driver": [t.location.x, t.location.y, t.location.z, t.rotation.pitch, t.rotation.yaw,
                             t.rotation.roll],
                  "spectator": [s.location.x, s.location.y, s.location.z, s.rotation.pitch, s.rotation.yaw]})
client.stop_replayer(False)  # the replay's actors go
world.tick()
left = [a.type_id for a in world.get_actors() if a.type_id.startswith(("vehicle.", "walker."))]
print(json.dumps({"text": text, "ticks": ticks, "left": left}))
"""

QUERY = """
import json, sys
import carla

client = carla.Client(sys.argv[1], int(sys.argv[2]))
client.set_timeout(20.0)
out = {}
for name in sys.argv[3:]:
    out[name] = {"info": client.show_recorder_file_info(name, False),
                 "collisions": client.show_recorder_collisions(name, "a", "a"),
                 "replay": client.replay_file(name, 0.0, 0.0, 0, False)}
    client.stop_replayer(False)
print(json.dumps(out))
"""

OTHER_MAP = """
import json, sys, time
import carla

client = carla.Client(sys.argv[1], int(sys.argv[2]))
client.set_timeout(60.0)
world = client.get_world()
settings = world.get_settings()
settings.synchronous_mode, settings.fixed_delta_seconds = True, 0.05
world.apply_settings(settings)
nowhere = client.replay_file(sys.argv[4], 0.0, 0.0, 0, False)  # a log of a map this server does not have
still = client.get_world().get_map().name
text = client.replay_file(sys.argv[3], 0.0, 0.0, 0, False)  # a log of town, on a server on junction
maps = []
for _ in range(100):  # the map becomes current within SWITCH_AFTER_S (1 s; envs/server/api.py): this client,
    time.sleep(0.05)  # unlike load_world, does not replace its Episode
    world.tick()
    world = client.get_world()
    maps.append(world.get_map().name)
    if maps[-1].endswith("town"):
        break
for _ in range(5):
    world.tick()
roles = sorted(a.attributes.get("role_name", "") for a in world.get_actors().filter("vehicle.*"))
client.stop_replayer(False)
print(json.dumps({"nowhere": nowhere, "still": still, "text": text, "maps": maps, "roles": roles}))
"""

KILLED = """
import sys, time
import carla

client = carla.Client(sys.argv[1], int(sys.argv[2]))
client.set_timeout(20.0)
world = client.get_world()
settings = world.get_settings()
settings.synchronous_mode, settings.fixed_delta_seconds = True, 0.05
world.apply_settings(settings)
car = world.spawn_actor(world.get_blueprint_library().find("vehicle.tesla.model3"),
                        world.get_map().get_spawn_points()[3])
car.apply_control(carla.VehicleControl(throttle=0.5))
print(client.start_recorder(sys.argv[3]))
for _ in range(25):
    world.tick()
print("ticked", flush=True)
time.sleep(30.0)  # the test kills the server meanwhile, recording
"""


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("recorder")


@contextmanager
def server_recording_into(folder, map_name="town"):
    """A server on `map_name` whose recorder folder (relative file names) is `folder`."""
    previous = os.environ.get("SLIMDRIVE_RECORDER_DIR")
    os.environ["SLIMDRIVE_RECORDER_DIR"] = str(folder)
    try:
        server = launch(map_name)
    finally:
        if previous is None:
            del os.environ["SLIMDRIVE_RECORDER_DIR"]
        else:
            os.environ["SLIMDRIVE_RECORDER_DIR"] = previous
    with server:
        yield server


_RECORDED: dict[str, dict] = {}


@pytest.fixture
def recorded(folder, client_script):
    """The drive recorded on a server of its own (once per module): the script's output."""
    if str(folder) not in _RECORDED:
        with server_recording_into(folder) as server:
            done = client_script(server, RECORD, "drive.log")
        _RECORDED[str(folder)] = json.loads(done.stdout.strip().splitlines()[-1])
    return _RECORDED[str(folder)]


def test_a_recorded_drive_is_carlas_file_and_the_queries_answer_carlas_text(recorded, folder):
    path = folder / "drive.log"
    assert recorded["path"] == str(path)  # a relative name goes under the server's recorder folder
    log = read_log(path)
    assert log.problem is None and log.map_name == "town" and log.version == 1
    assert [f.id for f in log.frames] == list(range(1, TICKS + 1))
    assert log.frames[-1].elapsed == pytest.approx((TICKS - 1) * DT)
    assert all(f.duration == pytest.approx(DT) for f in log.frames[:-1]) and log.frames[-1].duration == -1.0
    ids = recorded["ids"]
    info = recorded["info"]
    # CARLA's layout: header, the frames with events, then the totals
    assert re.match(r"Version: 1\nMap: town\nDate: \d\d/\d\d/\d\d \d\d:\d\d:\d\d\n\nFrame 1 at 0 seconds\n"
                    r" Create 1: spectator \(0\) at \(", info), info[:300]
    assert info.endswith(f"\nFrames: {TICKS}\nDuration: {(TICKS - 1) * DT:g} seconds\n")
    assert re.search(rf"\nFrame 2 at 0.05 seconds\n Create {ids['driver']}: vehicle.tesla.model3 \(1\) at "
                     r"\(-?[\d.]+, -?[\d.]+, 0\)\n(  \w+ = .*\n)*  role_name = driver\n", info), info
    assert f" Create {ids['walker']}: walker.pedestrian.0001 (2) at (" in info
    assert re.search(r" Create \d+: sensor.other.collision \(5\) at .*\n(  .*\n)*"
                     rf" Parenting \d+ with {ids['rammer']} \(parent\)\n", info)
    assert re.search(rf"\nFrame 40 at 1.95 seconds\n Destroy {ids['doomed']}\n", info), info
    assert re.search(rf" Collision id \d+ between {ids['rammer']} with {ids['parked']}\n"
                     rf"| Collision id \d+ between {ids['parked']} with {ids['rammer']}\n", info), info
    assert recorded["hits"], "the drive has no collision to record"
    info_all = recorded["info_all"]
    assert info_all.count(" Positions: ") == TICKS and f"Frame {TICKS} at " in info_all
    assert re.search(rf"  Id: {recorded['light']} state: 1 frozen: 1 elapsedTime: ", info_all)  # yellow, frozen
    assert re.search(rf"  Id: {ids['rammer']} Steering: 0 Throttle: 1 Brake 0 Handbrake: 0 Gear: 0\n", info_all)
    assert re.search(rf"  Id: {ids['walker']} speed: 1.4\d*\n", info_all)
    # show_recorder_collisions: CARLA's columns, one line where the contact starts
    collisions = recorded["collisions"].split("\n\n", 1)[1]
    header, *rows = collisions.split("\nFrames:")[0].splitlines()
    assert header == f"{'Time':>8} {'Types':>6} {'Id':>6} {'Actor 1':<35} {'Id':>6} {'Actor 2':<35}"
    assert rows and all(re.match(r"^ *\d+   v v  +\d+ vehicle\.tesla\.model3 +\d+ vehicle\.tesla\.model3 *$", row)
                        for row in rows), rows
    assert {ids["rammer"], ids["parked"]} <= {int(n) for row in rows for n in re.findall(r" (\d+) vehicle", row)}
    assert "vehicle" not in recorded["walker_collisions"].split("\n\n", 1)[1].split("Frames:")[0]
    # show_recorder_actors_blocked: the parked car stood still until it was hit
    blocked = recorded["blocked"].split("\n\n", 1)[1]
    assert blocked.startswith(f"{'Time':>8} {'Id':>6} {'Actor':<35} {'Duration':>10}\n")
    assert re.search(rf"\n +\d+ +{ids['parked']} vehicle.tesla.model3 +\d+\n", blocked), blocked
    # size: one frame per tick, every pose and light state in it
    actors = len(log.frames[-1].positions()) + len(log.frames[-1].records(7))
    per_actor = (path.stat().st_size / TICKS) / actors
    assert per_actor < 60, per_actor  # bytes per actor per frame


def test_replaying_the_drive_on_a_fresh_server_puts_every_actor_where_it_was(recorded, folder, client_script):
    with server_recording_into(folder) as server:
        done = client_script(server, REPLAY, "drive.log", str(TICKS), str(recorded["light"]))
    replay = json.loads(done.stdout.strip().splitlines()[-1])
    assert replay["text"].startswith(f"Replaying File: {folder / 'drive.log'}\nTotal time recorded: "
                                     f"{(TICKS - 1) * DT:g}\nReplaying from 0 s - {(TICKS - 1) * DT:g} s "
                                     f"({(TICKS - 1) * DT:g} s) at 1.0x\n"), replay["text"]
    worst_cm, worst_deg = 0.0, 0.0
    for want, got in zip(recorded["frames"], replay["frames"], strict=True):
        assert want["frame"] == got["frame"]
        assert set(got["poses"]) == set(want["poses"]), (want["frame"], sorted(got["poses"]))  # doomed goes
        for role, pose in want["poses"].items():
            here = got["poses"][role]
            worst_cm = max(worst_cm, 100.0 * max(abs(a - b) for a, b in zip(pose[:3], here[:3])))
            worst_deg = max(worst_deg, max(abs((a - b + 180.0) % 360.0 - 180.0) for a, b in zip(pose[3:], here[3:])))
        assert got["light"] == want["light"], want["frame"]
    assert worst_cm <= 1.0 and worst_deg <= 0.1, (worst_cm, worst_deg)
    assert replay["kept"] == ["driver", "parked", "rammer"]


def test_replay_options_time_factor_follow_camera_and_stop_replayer(recorded, folder, client_script):
    """From 1 s at twice the speed: each tick advances the log 0.1 s and shows its frame (no interpolation at a time
    factor of 2 or more, as CARLA); the spectator follows the driver from CARLA's camera offset (10 m behind, 5 m
    up, 25 degrees down); stop_replayer(False) removes what the replay spawned."""
    driver_id = recorded["ids"]["driver"]
    with server_recording_into(folder) as server:
        done = client_script(server, REPLAY_OPTIONS, "drive.log", str(driver_id))
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert "Replaying from 1 s - 3.95 s (3.95 s) at 2.0x\n" in out["text"], out["text"]
    recorded_driver = {f["frame"]: f["poses"]["driver"] for f in recorded["frames"]}
    for n, tick in enumerate(out["ticks"], start=1):
        want = recorded_driver[21 + 2 * n]  # 1 s is frame 21; each tick 0.1 s, two frames, on
        assert max(abs(a - b) for a, b in zip(want[:3], tick["driver"][:3])) < 0.01, (n, want, tick["driver"])
        x, y, z = tick["driver"][:3]
        yaw = math.radians(tick["driver"][4])
        behind = (x - 10.0 * math.cos(yaw), y - 10.0 * math.sin(yaw), z + 5.0)
        assert max(abs(a - b) for a, b in zip(behind, tick["spectator"][:3])) < 0.01, (n, behind, tick)
        assert tick["spectator"][3] == pytest.approx(-25.0, abs=0.01)
        assert (tick["spectator"][4] - tick["driver"][4] + 180.0) % 360.0 - 180.0 == pytest.approx(0.0, abs=0.01)
    assert out["left"] == []


def test_damaged_and_truncated_files_are_read_up_to_their_last_complete_frame(recorded, folder, client_script):
    data = (folder / "drive.log").read_bytes()
    log = read_log(folder / "drive.log")
    (folder / "not_a_log.log").write_bytes(b"\x01\x00\x05\x00hello" + data[40:400])
    (folder / "truncated.log").write_bytes(data[: len(data) * 2 // 3])
    frame_11 = data.index(HEADER.pack(FRAME_START, FRAME.size) + struct.pack("<Q", 11))
    damaged = bytearray(data)
    damaged[frame_11] = 0xEE  # the packet id of frame 11's FrameStart
    (folder / "damaged.log").write_bytes(bytes(damaged))
    names = ["not_a_log.log", "truncated.log", "damaged.log", "missing.log"]
    with server_recording_into(folder) as server:
        done = client_script(server, QUERY, *names)
    out = json.loads(done.stdout.strip().splitlines()[-1])
    bad = out["not_a_log.log"]["info"]
    assert bad.startswith("File is not a CARLA recorder\n") and str(folder / "not_a_log.log") in bad
    assert "magic is 'hello'" in bad and "Replaying" in out["not_a_log.log"]["replay"]
    truncated = out["truncated.log"]
    last = read_log(folder / "truncated.log").frames[-1]
    assert 10 < last.id < TICKS
    assert f"File {folder / 'truncated.log'} is damaged: it is truncated inside frame {last.id + 1}" in \
        truncated["info"], truncated["info"][-600:]
    assert truncated["info"].endswith(f"read up to its last complete frame ({last.id})\n\nFrames: {last.id}\n"
                                      f"Duration: {last.elapsed:g} seconds\n")
    assert f"Total time recorded: {last.elapsed:g}\n" in truncated["replay"]
    damaged_info = out["damaged.log"]["info"]
    assert (f"File {folder / 'damaged.log'} is damaged: it is damaged at byte {frame_11}: "
            "unknown packet id 238; read up to its last complete frame (10)") in damaged_info
    assert damaged_info.endswith(f"\nFrames: 10\nDuration: {log.frames[9].elapsed:g} seconds\n")
    assert out["missing.log"]["info"] == f"File {folder / 'missing.log'} not found on server\n"


def test_a_log_of_another_map_loads_it_and_a_log_of_an_unknown_map_is_refused(recorded, folder, client_script):
    """docs/server.md: a log of another map loads that map first and the replay starts on its first tick; CARLA's
    text when the log's map cannot be loaded, the world left as it was."""
    data = (folder / "drive.log").read_bytes()
    log = read_log(folder / "drive.log")
    at = 2 + 2 + len(log.magic) + 8  # version, magic, date: the map name follows
    assert data[at:at + 6] == struct.pack("<H", 4) + b"town"
    (folder / "atlantis.log").write_bytes(data[:at] + struct.pack("<H", 8) + b"atlantis" + data[at + 6:])
    assert read_log(folder / "atlantis.log").map_name == "atlantis"
    with server_recording_into(folder, "junction") as server:
        done = client_script(server, OTHER_MAP, "drive.log", "atlantis.log")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["nowhere"] == f"Replaying File: {folder / 'atlantis.log'}\nCould not load mapfile atlantis\n"
    assert out["still"].endswith("junction")
    assert out["text"].startswith(f"Replaying File: {folder / 'drive.log'}\nLoading map town\n"
                                  "Replayer will start after map is loaded...\n"), out["text"]
    assert out["maps"][0].endswith("junction") and out["maps"][-1].endswith("town"), out["maps"]
    assert out["roles"] == ["doomed", "driver", "parked", "rammer"]  # the drive's first frames, replayed


def test_a_server_killed_while_recording_leaves_every_frame_it_wrote(folder, client_script):
    import subprocess
    import sys

    from envs.server.launch import REPO_ROOT
    with server_recording_into(folder) as server:
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
        script = subprocess.Popen([sys.executable, "-c", KILLED, server.host, str(server.port), "killed.log"],
                                  stdout=subprocess.PIPE, text=True, env=env, cwd=REPO_ROOT)
        try:
            lines = [script.stdout.readline() for _ in range(2)]
            assert lines[1].strip() == "ticked", lines
            os.kill(server.pid, signal.SIGKILL)
            server.process.wait(10)
        finally:
            script.kill()
            script.wait(10)
    log = read_log(folder / "killed.log")
    assert log.problem is None, log.problem
    assert [f.id for f in log.frames] == list(range(1, 26))
    car = [add.id for f in log.frames for add in f.records(2) if add.blueprint == "vehicle.tesla.model3"]
    assert len(car) == 1 and all(car[0] in f.positions() for f in log.frames)
