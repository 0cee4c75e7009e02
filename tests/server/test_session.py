"""Connection, maps, settings, weather and the actor registry, through the stock carla client only."""
from __future__ import annotations

import xml.etree.ElementTree as ET

import carla
import pytest

from envs import maps
from envs.server.launch import launch


def test_connects_and_reports_versions(client):
    assert client.get_server_version() == "0.9.16"
    assert client.get_client_version() == "0.9.16"


def test_map_waypoints_equal_the_clients_own_parse_of_the_xodr(client):
    served = client.get_world().get_map()
    reference = carla.Map("town", maps.load_xodr_text("town"))
    assert served.name.endswith("town")
    a = served.generate_waypoints(10.0)
    b = reference.generate_waypoints(10.0)
    assert len(a) == len(b) > 100
    for wa, wb in zip(a, b):
        assert (wa.road_id, wa.lane_id) == (wb.road_id, wb.lane_id)
        assert wa.transform.location.distance(wb.transform.location) < 1e-3
    assert len(served.get_spawn_points()) == len(maps.load_network("town").spawn_points())


def test_spawn_points_lie_on_driving_lanes(client):
    world_map = client.get_world().get_map()
    for point in world_map.get_spawn_points():
        waypoint = world_map.get_waypoint(point.location, project_to_road=False, lane_type=carla.LaneType.Driving)
        assert waypoint is not None, point


def test_synchronous_mode_ticks_at_fixed_delta_with_increasing_frames(world):
    frames = [world.tick() for _ in range(5)]
    assert frames == list(range(frames[0], frames[0] + 5))
    before = world.get_snapshot().timestamp.elapsed_seconds
    world.tick()
    snapshot = world.get_snapshot()
    assert snapshot.frame == frames[-1] + 1
    assert snapshot.timestamp.delta_seconds == pytest.approx(0.05)
    assert snapshot.timestamp.elapsed_seconds - before == pytest.approx(0.05)
    settings = world.get_settings()
    assert settings.synchronous_mode and settings.fixed_delta_seconds == pytest.approx(0.05)


def test_asynchronous_mode_advances_by_itself(client):
    world = client.get_world()
    first = world.wait_for_tick(5.0).frame
    assert world.wait_for_tick(5.0).frame > first


def test_weather_round_trips(world):
    weather = carla.WeatherParameters(cloudiness=80.0, precipitation=30.0, sun_altitude_angle=-20.0,
                                      fog_density=40.0, fog_distance=10.0, wetness=60.0)
    world.set_weather(weather)
    world.tick()
    got = world.get_weather()
    for name in ("cloudiness", "precipitation", "sun_altitude_angle", "fog_density", "fog_distance", "wetness"):
        assert getattr(got, name) == pytest.approx(getattr(weather, name))


def test_blueprint_library_has_carla_ids_with_typed_attributes(world):
    library = world.get_blueprint_library()
    for bp_id in ("vehicle.tesla.model3", "vehicle.mercedes.sprinter", "vehicle.carlamotors.european_hgv",
                  "vehicle.mitsubishi.fusorosa", "vehicle.bh.crossbike", "vehicle.yamaha.yzf",
                  "vehicle.ford.ambulance", "walker.pedestrian.0001", "static.prop.container",
                  "sensor.other.collision", "sensor.other.gnss", "sensor.other.imu", "sensor.other.lane_invasion"):
        assert library.find(bp_id).id == bp_id
    model3 = library.find("vehicle.tesla.model3")
    assert model3.has_attribute("role_name") and model3.get_attribute("role_name").is_modifiable
    assert model3.get_attribute("number_of_wheels").as_int() == 4
    assert len(model3.get_attribute("color").recommended_values) > 3
    assert library.find("vehicle.ford.ambulance").get_attribute("special_type").as_str() == "emergency"
    ages = {bp.get_attribute("age").as_str() for bp in library.filter("walker.pedestrian.*")}
    assert ages == {"adult", "child"}


def test_spawn_attach_and_destroy(world):
    library = world.get_blueprint_library()
    point = world.get_map().get_spawn_points()[3]
    bp = library.find("vehicle.tesla.model3")
    bp.set_attribute("role_name", "hero")
    vehicle = world.spawn_actor(bp, point)
    extent = vehicle.bounding_box.extent
    assert (extent.x, extent.y) == pytest.approx((2.40, 1.08))
    assert vehicle.attributes["role_name"] == "hero"
    mount = carla.Transform(carla.Location(x=1.5, z=2.0))
    gnss = world.spawn_actor(library.find("sensor.other.gnss"), mount, attach_to=vehicle)
    world.tick()
    assert gnss.parent.id == vehicle.id
    expected = vehicle.get_transform().transform(carla.Location(x=1.5, z=2.0))
    assert gnss.get_transform().location.distance(expected) < 1e-3
    ids = {a.id for a in world.get_actors()}
    assert {vehicle.id, gnss.id} <= ids
    assert gnss.destroy() and vehicle.destroy()
    world.tick()
    assert not {vehicle.id, gnss.id} & {a.id for a in world.get_actors()}


def test_spectator_and_traffic_lights_are_listed(world):
    assert world.get_spectator().type_id == "spectator"
    lights = world.get_actors().filter("traffic.traffic_light")
    assert len(lights) == len(maps.load_network("town").traffic_lights()) > 0


def test_batch_spawn_and_destroy(client, world):
    library = world.get_blueprint_library()
    points = world.get_map().get_spawn_points()[:20]
    command = carla.command
    responses = client.apply_batch_sync(
        [command.SpawnActor(library.find("vehicle.audi.a2"), p)
         .then(command.SetSimulatePhysics(command.FutureActor, False)) for p in points], True)
    assert [r.error for r in responses] == [""] * 20
    ids = [r.actor_id for r in responses]
    assert set(ids) <= {a.id for a in world.get_actors()}
    responses = client.apply_batch_sync([command.DestroyActor(i) for i in ids], True)
    assert all(not r.error for r in responses)
    assert not set(ids) & {a.id for a in world.get_actors()}


def test_load_world_reload_and_generate_opendrive(client):
    assert {"/Game/Carla/Maps/" + name for name in maps.available_maps()} <= set(client.get_available_maps())
    world = client.load_world("straight")
    assert world.get_map().name.endswith("straight")
    reloaded = client.reload_world()
    assert reloaded.id != world.id and reloaded.get_map().name.endswith("straight")
    generated = client.generate_opendrive_world(maps.load_xodr_text("curves"))
    topology = generated.get_map().get_topology()
    assert len(topology) == len(carla.Map("curves", maps.load_xodr_text("curves")).get_topology())
    assert client.load_world("town").get_map().name.endswith("town")


def test_speed_limit_is_the_maps_where_the_vehicle_is(tmp_path):
    """A server on an edited straight: its road type gives 90 km/h, then 60 km/h from s = 350; the lanes
    running against s carry their own 30 km/h (in m/s); those along s lost theirs and take the road's.
    (Its own server: no episode change, which the stock client survives less often under load.)"""
    root = ET.fromstring(maps.load_xodr_text("straight"))
    road = root.find("road")
    later = ET.Element("type", s="350", type="town")
    ET.SubElement(later, "speed", max="60", unit="km/h")
    road.insert(list(road).index(road.find("type")) + 1, later)
    for lane in road.iter("lane"):
        for speed in lane.findall("speed"):
            if int(lane.get("id")) > 0:
                speed.set("max", str(30 / 3.6))
            else:
                lane.remove(speed)
    xodr = tmp_path / "limits.xodr"
    xodr.write_text(ET.tostring(root, encoding="unicode"))
    with launch(str(xodr)) as server:
        client = carla.Client(server.host, server.port)
        client.set_timeout(10.0)
        world = client.get_world()
        settings = world.get_settings()
        settings.synchronous_mode, settings.fixed_delta_seconds = True, 0.05
        world.apply_settings(settings)
        car = world.spawn_actor(world.get_blueprint_library().find("vehicle.audi.a2"),
                                carla.Transform(carla.Location(100.0, 1.75, 0.3)))
        seen = []
        for x, y, yaw in ((100.0, 1.75, 0.0), (500.0, 1.75, 0.0), (100.0, -1.75, 180.0), (100.0, 60.0, 0.0)):
            car.set_transform(carla.Transform(carla.Location(x, y, 0.0), carla.Rotation(yaw=yaw)))
            world.tick()
            seen.append(round(car.get_speed_limit(), 3))
        assert world.get_map().get_waypoint(carla.Location(100.0, 1.75, 0.0)).lane_id == -1
        assert seen == [90.0, 60.0, 30.0, 30.0], "lane -1 before and after s=350, lane 1, then off the road"
        settings.synchronous_mode, settings.fixed_delta_seconds = False, None
        world.apply_settings(settings)
