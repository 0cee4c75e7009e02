"""Motion, contacts, traffic lights and sensors as seen through the stock carla client."""
from __future__ import annotations

import math
import queue

import carla
import numpy as np
import pytest

from envs.maps.geometry import wrap_angle
from envs.server import physics
from envs.server.blueprints import BY_ID


def _spawn(world, bp_id, transform):
    return world.spawn_actor(world.get_blueprint_library().find(bp_id), transform)


def _ahead(transform: carla.Transform, metres: float, turn: float = 0.0) -> carla.Transform:
    location = transform.location + transform.get_forward_vector() * metres
    rotation = carla.Rotation(yaw=transform.rotation.yaw + turn)
    return carla.Transform(carla.Location(location.x, location.y, 0.5), rotation)


def _model_prediction(bp_id: str, controls: list[tuple[float, float]], dt: float) -> list[float]:
    """Distance travelled after each step, from the same model the server integrates."""
    body = BY_ID[bp_id].body
    one = lambda v: np.array([v], dtype=float)  # noqa: E731
    x, speed, wheel, out = 0.0, 0.0, 0.0, []
    for throttle, brake in controls:
        batch = physics.VehicleBatch(
            x=one(x), y=one(0.0), yaw=one(0.0), speed=one(speed), wheel_angle=one(wheel), throttle=one(throttle),
            steer=one(0.0), brake=one(brake), hand_brake=one(0.0), reverse=np.array([False]),
            wheelbase=one(body.wheelbase), max_steer=one(math.radians(body.max_steer_deg)),
            max_accel=one(body.max_accel), power_per_kg=one(body.max_power_per_kg), max_brake=one(body.max_brake),
            max_speed=one(body.max_speed))
        xs, _, _, speeds, wheels = physics.step_vehicles(batch, dt)
        x, speed, wheel = float(xs[0]), float(speeds[0]), float(wheels[0])
        out.append(x)
    return out


def test_throttle_then_brake_moves_and_stops_the_car_as_the_model_predicts(world):
    start = world.get_map().get_spawn_points()[0]
    car = _spawn(world, "vehicle.tesla.model3", start)
    world.tick()
    origin = car.get_location()
    controls = [(1.0, 0.0)] * 60 + [(0.0, 1.0)] * 40
    predicted = _model_prediction("vehicle.tesla.model3", controls, 0.05)
    travelled, speeds = [], []
    for throttle, brake in controls:
        car.apply_control(carla.VehicleControl(throttle=throttle, brake=brake))
        world.tick()
        travelled.append(car.get_location().distance(origin))
        speeds.append(car.get_velocity().length())
    assert travelled == pytest.approx(predicted, abs=0.02)
    assert 9.0 < max(speeds) < 15.0, "3 s of full throttle should reach 30-55 km/h"
    assert speeds[-1] == 0.0 and travelled[-1] == pytest.approx(travelled[-5]), "full brake stops the car"
    yaw = car.get_transform().rotation.yaw
    assert yaw == pytest.approx(start.rotation.yaw, abs=1e-3), "no steering, no turning"


def test_steering_right_turns_clockwise_seen_from_above(world):
    start = world.get_map().get_spawn_points()[0]
    car = _spawn(world, "vehicle.tesla.model3", start)
    car.apply_control(carla.VehicleControl(throttle=0.5, steer=0.5))
    for _ in range(30):
        world.tick()
    turned = wrap_angle(car.get_transform().rotation.yaw - start.rotation.yaw)
    assert turned > 10.0
    assert car.get_angular_velocity().z > 0.0


def test_walker_control_moves_a_walker_at_its_speed(world):
    start = world.get_map().get_spawn_points()[1]
    kerb = carla.Transform(start.location + start.get_right_vector() * 4.5, start.rotation)
    walker = _spawn(world, "walker.pedestrian.0003", kerb)
    world.tick()
    origin = walker.get_location()
    direction = start.get_forward_vector()
    walker.apply_control(carla.WalkerControl(direction=direction, speed=1.5))
    for _ in range(40):
        world.tick()
    moved = walker.get_location() - origin
    assert math.hypot(moved.x, moved.y) == pytest.approx(1.5 * 2.0, rel=1e-3)
    assert walker.get_velocity().length() == pytest.approx(1.5, rel=1e-3)
    turned = wrap_angle(walker.get_transform().rotation.yaw - start.rotation.yaw)
    assert turned == pytest.approx(0.0, abs=0.1), "a walker faces where it walks"


def test_staged_collision_reports_both_actor_ids_and_bodies_do_not_pass_through(world):
    start = world.get_map().get_spawn_points()[0]
    a = _spawn(world, "vehicle.tesla.model3", start)
    b = _spawn(world, "vehicle.audi.a2", _ahead(start, 20.0, turn=180.0))
    library = world.get_blueprint_library()
    events = {a.id: queue.Queue(), b.id: queue.Queue()}
    sensors = []
    for car in (a, b):
        sensor = world.spawn_actor(library.find("sensor.other.collision"), carla.Transform(), attach_to=car)
        sensor.listen(events[car.id].put)
        sensors.append(sensor)
    for car in (a, b):
        car.apply_control(carla.VehicleControl(throttle=0.8))
    for _ in range(80):
        world.tick()
        gap = a.get_location().distance(b.get_location())
        assert gap > (2.40 + 1.85) - 0.6, "the bodies passed into each other"
    first_a = events[a.id].get(timeout=2.0)
    first_b = events[b.id].get(timeout=2.0)
    assert (first_a.actor.id, first_a.other_actor.id) == (a.id, b.id)
    assert (first_b.actor.id, first_b.other_actor.id) == (b.id, a.id)
    assert first_a.frame == first_b.frame
    assert first_a.normal_impulse.length() > 0.0
    for sensor in sensors:
        sensor.stop()


def test_occupied_spawn_point_is_refused(world):
    point = world.get_map().get_spawn_points()[5]
    _spawn(world, "vehicle.tesla.model3", point)
    bp = world.get_blueprint_library().find("vehicle.lincoln.mkz_2020")
    assert world.try_spawn_actor(bp, point) is None
    with pytest.raises(RuntimeError, match="collision at spawn position"):
        world.spawn_actor(bp, point)


def test_traffic_lights_cycle_one_group_member_at_a_time(world):
    light = world.get_actors().filter("traffic.traffic_light")[0]
    group = light.get_group_traffic_lights()
    assert len(group) >= 2 and light.id in {g.id for g in group}
    for member in group:
        member.set_green_time(1.0)
        member.set_yellow_time(0.5)
    light.reset_group()
    seen_green = set()
    for _ in range(int(len(group) * 1.5 / 0.05) + 20):
        world.tick()
        states = {g.id: g.get_state() for g in group}
        assert sum(s != carla.TrafficLightState.Red for s in states.values()) <= 1
        seen_green |= {i for i, s in states.items() if s == carla.TrafficLightState.Green}
    assert seen_green == {g.id for g in group}
    light.set_state(carla.TrafficLightState.Green)
    light.freeze(True)  # CARLA's freeze() freezes every light
    for _ in range(60):
        world.tick()
    assert light.get_state() == carla.TrafficLightState.Green and light.is_frozen()
    light.freeze(False)


def test_vehicle_in_a_trigger_volume_sees_its_traffic_light(world):
    light = world.get_actors().filter("traffic.traffic_light")[0]
    light.set_state(carla.TrafficLightState.Red)
    centre = light.get_transform().transform(light.trigger_volume.location)
    waypoint = world.get_map().get_waypoint(centre)
    car = _spawn(world, "vehicle.tesla.model3", carla.Transform(waypoint.transform.location + carla.Location(z=0.5),
                                                                waypoint.transform.rotation))
    world.tick()
    assert car.is_at_traffic_light()
    assert car.get_traffic_light().id == light.id
    assert car.get_traffic_light_state() == carla.TrafficLightState.Red


def test_constant_velocity_target_velocity_and_frozen_physics(world):
    points = world.get_map().get_spawn_points()
    cruiser = _spawn(world, "vehicle.tesla.model3", points[0])
    parked = _spawn(world, "vehicle.mercedes.sprinter", points[10])
    parked.set_simulate_physics(False)
    parked.apply_control(carla.VehicleControl(throttle=1.0))
    cruiser.enable_constant_velocity(carla.Vector3D(x=5.0))
    world.tick()
    origin, parked_origin = cruiser.get_location(), parked.get_location()
    for _ in range(20):
        world.tick()
    assert cruiser.get_location().distance(origin) == pytest.approx(5.0, rel=1e-3)
    assert parked.get_location().distance(parked_origin) == 0.0
    cruiser.disable_constant_velocity()
    cruiser.set_target_velocity(cruiser.get_transform().get_forward_vector() * 10.0)
    world.tick()
    assert 9.0 < cruiser.get_velocity().length() <= 10.0


def test_gnss_and_imu_measure_the_parent(world):
    library = world.get_blueprint_library()
    start = world.get_map().get_spawn_points()[2]
    car = _spawn(world, "vehicle.tesla.model3", start)
    gnss = world.spawn_actor(library.find("sensor.other.gnss"), carla.Transform(), attach_to=car)
    imu = world.spawn_actor(library.find("sensor.other.imu"), carla.Transform(), attach_to=car)
    fixes, inertial = queue.Queue(), queue.Queue()
    gnss.listen(fixes.put)
    imu.listen(inertial.put)
    car.apply_control(carla.VehicleControl(throttle=1.0))
    frame = None
    for _ in range(10):
        frame = world.tick()
    fix = next(m for m in iter(lambda: fixes.get(timeout=2.0), None) if m.frame == frame)
    expected = world.get_map().transform_to_geolocation(car.get_location())
    assert (fix.latitude, fix.longitude) == pytest.approx((expected.latitude, expected.longitude), abs=1e-7)
    reading = next(m for m in iter(lambda: inertial.get(timeout=2.0), None) if m.frame == frame)
    assert reading.accelerometer.z == pytest.approx(9.81, abs=0.05)
    assert reading.accelerometer.x > 1.0, "accelerating forward"
    forward = start.get_forward_vector()
    compass = math.acos(-forward.y) if forward.x >= 0 else 2 * math.pi - math.acos(-forward.y)
    assert reading.compass == pytest.approx(compass, abs=1e-3)
    gnss.stop()
    imu.stop()


def test_lane_invasion_is_detected_by_the_client_from_the_served_map(world):
    start = world.get_map().get_spawn_points()[0]
    car = _spawn(world, "vehicle.tesla.model3", start)
    sensor = world.spawn_actor(world.get_blueprint_library().find("sensor.other.lane_invasion"),
                               carla.Transform(), attach_to=car)
    crossings = queue.Queue()
    sensor.listen(crossings.put)
    car.apply_control(carla.VehicleControl(throttle=0.6, steer=-0.15))  # drift left across the centre line
    for _ in range(60):
        world.tick()
    event = crossings.get(timeout=2.0)
    assert event.frame > 0
    assert {str(m.type) for m in event.crossed_lane_markings} & {"Solid", "Broken", "SolidSolid", "BrokenSolid",
                                                                  "SolidBroken", "BrokenBroken"}
    sensor.stop()
