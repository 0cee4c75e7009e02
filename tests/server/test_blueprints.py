"""CARLA 0.9.16's blueprint catalogue through the stock client: ids, bounding boxes, attributes, spawning, and
sensor attributes refused out of range (naming the blueprint, the attribute, its value and the allowed range).

Sizes are CARLA 0.9.16's (length, width, height) halved and rounded to the centimetre, as read from a 0.9.16
server (Scenic's generated blueprint table); see envs/server/blueprints.py for the sources.
"""
from __future__ import annotations

import carla
import pytest

# (id, extent x, y, z) for 0.9.16's blueprints that CARLA's examples and scenario files name
CATALOGUE = {
    "vehicle.lincoln.mkz_2017": (2.45, 1.06, 0.76),
    "vehicle.dodge.charger_2020": (2.50, 0.94, 0.77),
    "vehicle.dodge.charger_police": (2.49, 1.02, 0.77),
    "vehicle.ford.crown": (2.68, 0.90, 0.79),
    "vehicle.ford.mustang": (2.36, 0.95, 0.65),
    "vehicle.mini.cooper_s": (1.90, 0.99, 0.74),
    "vehicle.nissan.micra": (1.82, 0.92, 0.75),
    "vehicle.mercedes.coupe": (2.51, 1.08, 0.83),
    "vehicle.tesla.cybertruck": (3.14, 1.19, 1.05),
    "vehicle.volkswagen.t2": (2.24, 1.03, 1.02),
    "vehicle.harley-davidson.low_rider": (1.18, 0.38, 0.82),
    "vehicle.vespa.zx125": (0.91, 0.43, 0.80),
    "vehicle.diamondback.century": (0.83, 0.29, 0.81),
    "walker.pedestrian.0030": (0.19, 0.19, 0.93),
    "walker.pedestrian.0049": (0.25, 0.25, 0.55),
    "walker.pedestrian.0052": (0.19, 0.19, 0.93),
    "static.prop.trafficcone02": (0.23, 0.20, 0.59),
    "static.prop.warningaccident": (0.65, 0.53, 0.93),
    "static.prop.chainbarrier": (0.75, 0.12, 0.44),
}
# what the project's scenarios and tests were built with keeps its size
KEPT = {
    "vehicle.tesla.model3": (2.40, 1.08, 0.75),
    "vehicle.mercedes.coupe_2020": (2.34, 1.00, 0.72),
    "vehicle.carlamotors.firetruck": (4.25, 1.45, 1.90),
    "vehicle.mitsubishi.fusorosa": (5.10, 1.95, 1.75),
    "walker.pedestrian.0001": (0.25, 0.25, 0.90),
    "static.prop.trafficcone01": (0.20, 0.20, 0.42),
    "static.prop.streetbarrier": (0.90, 0.20, 0.55),
    "static.prop.constructioncone": (0.17, 0.17, 0.35),
    "static.prop.warningconstruction": (0.55, 0.95, 1.10),
}
VEHICLES_0916 = (
    "audi.a2 audi.etron audi.tt bh.crossbike bmw.grandtourer carlamotors.carlacola carlamotors.european_hgv "
    "carlamotors.firetruck chevrolet.impala citroen.c3 diamondback.century dodge.charger_2020 dodge.charger_police "
    "dodge.charger_police_2020 ford.ambulance ford.crown ford.mustang gazelle.omafiets harley-davidson.low_rider "
    "jeep.wrangler_rubicon kawasaki.ninja lincoln.mkz_2017 lincoln.mkz_2020 mercedes.coupe mercedes.coupe_2020 "
    "mercedes.sprinter micro.microlino mini.cooper_s mini.cooper_s_2021 mitsubishi.fusorosa nissan.micra "
    "nissan.patrol nissan.patrol_2021 seat.leon tesla.cybertruck tesla.model3 toyota.prius vespa.zx125 "
    "volkswagen.t2 volkswagen.t2_2021 yamaha.yzf").split()


def test_the_catalogue_lists_every_0916_vehicle_and_walker(world):
    library = world.get_blueprint_library()
    assert {bp.id for bp in library.filter("vehicle.*")} == {"vehicle." + v for v in VEHICLES_0916}
    assert {bp.id for bp in library.filter("walker.pedestrian.*")} == {
        f"walker.pedestrian.{n:04d}" for n in range(1, 53)}
    for bp_id in ("static.prop.streetbarrier", "static.prop.constructioncone", "static.prop.trafficcone01",
                  "static.prop.trafficcone02", "static.prop.warningconstruction", "static.prop.warningaccident",
                  "static.prop.trafficwarning", "static.prop.container", "static.prop.busstop"):
        assert library.find(bp_id).id == bp_id


def test_attributes_scripts_read(world):
    library = world.get_blueprint_library()
    wheels = {bp.id: bp.get_attribute("number_of_wheels").as_int() for bp in library.filter("vehicle.*")}
    assert wheels["vehicle.harley-davidson.low_rider"] == wheels["vehicle.diamondback.century"] == 2
    assert wheels["vehicle.lincoln.mkz_2017"] == 4
    two_wheeled = {bp.id for bp in library.filter("vehicle.*") if bp.get_attribute("base_type").as_str()
                   in ("motorcycle", "bicycle")}
    assert two_wheeled == {bp_id for bp_id, n in wheels.items() if n == 2}
    charger = library.find("vehicle.dodge.charger_2020")
    assert charger.get_attribute("generation").as_int() == 2
    assert charger.get_attribute("has_dynamic_doors").as_bool() and charger.get_attribute("has_lights").as_bool()
    assert library.find("vehicle.lincoln.mkz_2017").get_attribute("generation").as_int() == 1
    # scenario_runner's door-opening scenarios ask for {"has_dynamic_doors": True, "base_type": "car"}
    doors = {bp.id for bp in library.filter("vehicle.*") if bp.get_attribute("has_dynamic_doors").as_bool()
             and bp.get_attribute("base_type").as_str() == "car"}
    assert {"vehicle.dodge.charger_2020", "vehicle.lincoln.mkz_2020", "vehicle.ford.crown"} <= doors
    assert library.find("vehicle.ford.crown").get_attribute("special_type").as_str() == "taxi"
    assert library.find("vehicle.carlamotors.firetruck").get_attribute("special_type").as_str() == "emergency"
    color = library.find("vehicle.lincoln.mkz_2017").get_attribute("color")
    assert color.type == carla.ActorAttributeType.RGBColor and len(color.recommended_values) > 3
    # CARLA's generate_traffic.py: walking speed is recommended_values[1], running [2]
    walker = library.find("walker.pedestrian.0030")
    speed = walker.get_attribute("speed")
    assert 0.5 < float(speed.recommended_values[1]) < float(speed.recommended_values[2]) < 5.0
    assert walker.get_attribute("is_invincible").as_bool() and walker.has_attribute("role_name")
    assert library.find("walker.pedestrian.0049").get_attribute("age").as_str() == "child"
    # not modifiable: the client refuses, as CARLA's does
    with pytest.raises(ValueError, match="read-only"):
        charger.set_attribute("number_of_wheels", "3")
    lidar = library.find("sensor.lidar.ray_cast")
    assert {a.id for a in lidar} >= {"channels", "range", "points_per_second", "rotation_frequency", "upper_fov",
                                     "lower_fov", "horizontal_fov", "atmosphere_attenuation_rate",
                                     "dropoff_general_rate", "dropoff_intensity_limit", "dropoff_zero_intensity",
                                     "noise_stddev"}
    assert lidar.get_attribute("channels").as_int() == 32 and lidar.get_attribute("range").as_float() == 10.0
    radar = library.find("sensor.other.radar")
    assert {a.id for a in radar} >= {"horizontal_fov", "vertical_fov", "range", "points_per_second"}
    assert {a.id for a in library.find("sensor.other.obstacle")} >= {"distance", "only_dynamics",
                                                                    "debug_linetrace", "hit_radius"}


def test_catalogue_blueprints_spawn_with_their_sizes(client, world):
    library = world.get_blueprint_library()
    points = world.get_map().get_spawn_points()
    ids = list(CATALOGUE) + list(KEPT)
    assert len(points) >= len(ids)
    batch = []
    for bp_id, point in zip(ids, points):
        pose = carla.Transform(point.location + carla.Location(z=1.0), point.rotation)
        batch.append(carla.command.SpawnActor(library.find(bp_id), pose))
    responses = client.apply_batch_sync(batch, True)
    assert [r.error for r in responses] == [""] * len(ids)
    actors = {a.id: a for a in world.get_actors([r.actor_id for r in responses])}
    for bp_id, response in zip(ids, responses):
        actor = actors[response.actor_id]
        assert actor.type_id == bp_id
        extent = actor.bounding_box.extent
        assert (extent.x, extent.y, extent.z) == pytest.approx({**CATALOGUE, **KEPT}[bp_id], abs=1e-6), bp_id
    client.apply_batch_sync([carla.command.DestroyActor(r.actor_id) for r in responses], True)


@pytest.mark.parametrize(("blueprint_id", "attribute", "value", "allowed"), [
    ("sensor.lidar.ray_cast", "channels", "0", "1..256"),
    ("sensor.lidar.ray_cast", "range", "-5", "more than 0 and at most 1000 m"),
    ("sensor.lidar.ray_cast", "upper_fov", "120", "-90..90 degrees"),
    ("sensor.lidar.ray_cast", "lower_fov", "20", "-90..upper_fov (10) degrees"),
    ("sensor.lidar.ray_cast", "dropoff_general_rate", "1.5", "0..1"),
    ("sensor.lidar.ray_cast_semantic", "horizontal_fov", "400", "more than 0 and at most 360 degrees"),
    ("sensor.lidar.ray_cast_semantic", "points_per_second", "0", "1..10000000"),
    ("sensor.other.radar", "horizontal_fov", "200", "more than 0 and less than 180 degrees"),
    ("sensor.lidar.ray_cast", "noise_seed", "-1", "a whole number, 0 or more"),
    ("sensor.other.radar", "range", "nan", "not a finite number"),
    ("sensor.other.radar", "noise_seed", "-3", "a whole number, 0 or more"),
    ("sensor.other.obstacle", "hit_radius", "-0.5", "0 or more m"),
    ("sensor.other.obstacle", "distance", "-1", "more than 0 and at most 1000 m"),
    ("sensor.camera.instance_segmentation", "fov", "180", "more than 0 and less than 180 degrees"),
])
def test_sensor_attributes_out_of_range_are_refused_naming_them(world, blueprint_id, attribute, value, allowed):
    blueprint = world.get_blueprint_library().find(blueprint_id)
    blueprint.set_attribute(attribute, value)
    before = len(world.get_actors())
    with pytest.raises(RuntimeError) as refused:
        world.spawn_actor(blueprint, carla.Transform(carla.Location(z=3.0)))
    message = str(refused.value)
    assert blueprint_id in message and f"'{attribute}'" in message and value in message and allowed in message, \
        message
    world.tick()
    assert len(world.get_actors()) == before
