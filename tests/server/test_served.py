"""What the server serves is what docs/server.md says, and nothing answers silently: a bound call is either in
the doc's served table or raises CARLA's error shape naming the call."""
from __future__ import annotations

import re
from pathlib import Path

import carla
import pytest

from envs.maps.geometry import wrap_angle
from envs.server.api import NOT_SERVED, REGISTRY

DOC = Path(__file__).resolve().parents[2] / "docs" / "server.md"


def _doc_tables() -> tuple[set[str], set[str]]:
    """(served, not served) RPC names: the backticked names of the first column that names RPC calls in each of
    the two tables of the doc's 'What it serves' section."""
    section = DOC.read_text().split("## What it serves", 1)[1].split("\n## ", 1)[0]
    served, refused, table = set(), set(), None
    for line in section.splitlines():
        if not line.startswith("|"):
            table = None
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if table is None:  # a header row says which table this is
            table = refused if "not served" in line else served if "served" in line else None
            column = next((i for i, c in enumerate(cells) if "RPC call" in c), None)
            continue
        if column is not None and table is not None:
            table.update(re.findall(r"`([A-Za-z_]+)`", cells[column]))
    return served, refused


def test_every_bound_call_is_in_exactly_one_of_the_docs_tables():
    served, refused = _doc_tables()
    assert served and refused
    assert not served & refused, served & refused
    assert served | refused == set(REGISTRY), (
        f"bound but not in docs/server.md: {sorted(set(REGISTRY) - served - refused)}; "
        f"in the doc but not bound: {sorted((served | refused) - set(REGISTRY))}")
    assert refused == set(NOT_SERVED)


def test_each_call_not_served_raises_carlas_error_naming_it(raw_call):
    _, refused = _doc_tables()
    for name in sorted(refused):
        error, result = raw_call(name, 1, True)
        assert error is None, (name, error)
        message = result[0][1][0]  # Response<T> [0, [msg]] and Response<void> [true, [msg]] alike
        assert result[0][0] in (0, True) and name in message and "not served" in message, (name, result)


def test_the_stock_client_raises_for_calls_not_served(client, world, raw_call):
    with pytest.raises(RuntimeError, match="get_names_of_all_objects"):
        world.get_names_of_all_objects()
    car = world.spawn_actor(world.get_blueprint_library().find("vehicle.tesla.model3"),
                            world.get_map().get_spawn_points()[3])
    # actor.set_enable_gravity is sent without waiting for the answer (CARLA's client), so its error shows in a
    # batch (and in the server's log)
    response = client.apply_batch_sync([carla.command.SetEnableGravity(car.id, False)], False)[0]
    assert "set_actor_enable_gravity" in response.error
    walker = world.spawn_actor(world.get_blueprint_library().find("walker.pedestrian.0001"),
                               world.get_map().get_spawn_points()[20])
    error, result = raw_call("enable_actor_constant_velocity", walker.id, [1.0, 0.0, 0.0])
    assert error is None and result[0][0] is True and "not a vehicle" in result[0][1][0]


def test_the_navigation_file_is_served_by_its_name_and_by_get_navigation_mesh(raw_call):
    """The walker-navigation row: get_required_files("Nav") names one file, request_file answers its bytes (a
    Detour navigation-mesh set, 'MSET'), get_navigation_mesh the same bytes; another name is an error naming the
    served file."""
    error, result = raw_call("get_required_files", "Nav")
    assert error is None and result[0][0] == 1, result
    (name,) = result[0][1]
    assert name.startswith("slimdrive/Nav/") and name.endswith(".bin"), name
    error, result = raw_call("request_file", name)
    assert error is None and result[0][0] == 1, result
    data = result[0][1]
    assert data[:4] == b"TESM" and data[48:52] == b"VAND", data[:64]  # little-endian 'MSET', 'DNAV'
    error, result = raw_call("get_navigation_mesh")
    assert error is None and result[0][1] == data
    assert raw_call("get_required_files", "Maps")[1][0][1] == []
    error, result = raw_call("request_file", "Carla/Maps/Nav/Town10HD.bin")
    assert result[0][0] == 0 and name in result[0][1][0], result


def test_unknown_actor_bounding_box_is_an_error(raw_call):
    error, result = raw_call("get_actor_bounding_box", 987654)
    assert error is None and result[0][0] == 0 and "987654" in result[0][1][0]


def test_target_angular_velocity_turns_a_vehicle_through_the_next_tick(world):
    car = world.spawn_actor(world.get_blueprint_library().find("vehicle.tesla.model3"),
                            world.get_map().get_spawn_points()[5])
    world.tick()
    yaw = car.get_transform().rotation.yaw
    car.set_target_angular_velocity(carla.Vector3D(z=90.0))
    world.tick()
    assert car.get_angular_velocity().z == pytest.approx(90.0)
    turned = wrap_angle(car.get_transform().rotation.yaw - yaw)
    assert turned == pytest.approx(90.0 * 0.05, abs=1e-3)
    world.tick()  # then the bicycle model governs again: wheels straight, at rest, no turning
    assert car.get_angular_velocity().z == pytest.approx(0.0)


def test_level_bounding_boxes_are_the_maps_scenery_by_label(world):
    labels = carla.CityObjectLabel
    by_label = {label: world.get_level_bbs(label) for label in
                (labels.Buildings, labels.Vegetation, labels.Poles, labels.TrafficLight, labels.Car)}
    assert all(by_label[label] for label in (labels.Buildings, labels.Vegetation, labels.Poles, labels.TrafficLight))
    assert not by_label[labels.Car]  # actors are not level objects
    assert len(world.get_level_bbs(labels.Any)) == sum(len(boxes) for boxes in by_label.values())
    world_map = world.get_map()
    for box in by_label[labels.Buildings]:
        assert box.extent.z > 2.0 and box.location.z == pytest.approx(box.extent.z)  # standing on the ground
        assert abs(box.rotation.pitch) < 1e-6 and abs(box.rotation.roll) < 1e-6
        assert world_map.get_waypoint(box.location, project_to_road=False) is None  # off the road


def test_the_recorder_calls_answer_carlas_text_about_a_missing_log(raw_call):
    """The recorder row: the calls are bound with the stock client's arguments (the collision categories arrive as
    chars, i.e. numbers; replay_file carries the 0.9.16 client's follow-camera offset) and a missing file answers
    CARLA's line naming where it was looked for (tests/server/test_recorder.py drives the rest)."""
    from envs.server.recorder import recorder_path
    missing = recorder_path("no_such_recording.log")
    for name, params in (("show_recorder_file_info", (False,)), ("show_recorder_collisions", (ord("v"), ord("a"))),
                         ("show_recorder_actors_blocked", (30.0, 10.0))):
        error, result = raw_call(name, "no_such_recording.log", *params)
        assert error is None and result == [[1, f"File {missing} not found on server\n"]], (name, result)
    error, result = raw_call("replay_file", "no_such_recording.log", 0.0, 0.0, 0, False,
                             [[-10.0, 0.0, 5.0], [-25.0, 0.0, 0.0]])
    assert result == [[1, f"Replaying File: {missing}\nFile {missing} not found on server\n"]], result
    # a relative name stays in the recorder folder: one with '..' is refused naming it, and nothing is written
    escape = "../escaped.log"
    error, result = raw_call("start_recorder", escape, False)
    assert error is None and result[0][0] == 0 and f"recorder file name '{escape}'" in result[0][1][0], result
    assert not (missing.parent.parent / "escaped.log").exists()
    for name, params in (("show_recorder_file_info", (escape, False)), ("replay_file", (escape, 0.0, 0.0, 0, False))):
        error, result = raw_call(name, *params)
        assert error is None and result[0][1].startswith(f"recorder file name '{escape}'"), (name, result)
    error, result = raw_call("set_replayer_time_factor", -1.0)  # a replay runs forwards only
    assert result[0][0] is True and "time_factor is -1.0; give 0 or more" in result[0][1][0], result  # void: error
    for name, params in (("set_replayer_time_factor", (2.0,)), ("set_replayer_ignore_hero", (False,)),
                         ("set_replayer_ignore_spectator", (True,)), ("stop_replayer", (False,)),
                         ("stop_recorder", ())):
        error, result = raw_call(name, *params)
        assert error is None and result == [[False]], (name, result)
