"""The blueprint library: CARLA ids, typed attributes with recommended values, and each blueprint's body.

Ids and bounding boxes follow CARLA 0.9.16's blueprint library (extents, i.e. half sizes, rounded to the
centimetre) so that scenario files written for CARLA spawn the same shapes here. Sources:

- the ids of 0.9.16's vehicles, walkers (walker.pedestrian.0001-0052) and props, and each one's width, length and
  height as read from a running 0.9.16 server by Scenic's `tools/carla/make_blueprints.py` (the generated table in
  github.com/BerkeleyLearnVerify/Scenic, `src/scenic/simulators/carla/blueprints.py`, section "0.9.16");
- CARLA's Python API reference (docs/bp_library.md, docs/catalogue_vehicles.md) for the attributes and their
  types: `number_of_wheels`, `base_type`, `special_type` (emergency, taxi), `generation`, `has_dynamic_doors`,
  `has_lights`, `color` recommended values, walkers' `speed` (recommended: still, walking, running),
  `is_invincible`, `age`, `gender`, and the sensors' attributes with their defaults;
- LibCarla's sensor registry and serializers for the sensors' streams (envs/server/protocol.py).

The first 18 vehicles, 12 walkers and 7 props were sized before this table was read; scenario suites and tests
are calibrated on those bodies, so they keep them (e.g. `vehicle.carlamotors.european_hgv` here is 10.4 m long,
7.9 m in 0.9.16; adult walkers are 0.5 m wide here, 0.38 m there). Every entry added since has 0.9.16's size.
Physics numbers (mass, acceleration, braking) are plausible per class, not measured.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .protocol import ATTR_BOOL, ATTR_FLOAT, ATTR_INT, ATTR_RGB, ATTR_STRING

# CARLA 0.9.14+ semantic tags (`carla.CityObjectLabel`; also the semantic camera's ids).
TAG = {
    "road": 1, "sidewalk": 2, "building": 3, "pole": 6, "traffic_light": 7, "vegetation": 9, "terrain": 10, "sky": 11,
    "pedestrian": 12, "rider": 13, "car": 14, "truck": 15, "bus": 16, "motorcycle": 18, "bicycle": 19,
    "static": 20, "road_line": 24,
}


@dataclass(frozen=True)
class Attribute:
    id: str
    type: int
    value: str
    recommended: tuple[str, ...] = ()
    modifiable: bool = False
    restrict: bool = False

    def to_msg(self) -> list:
        return [self.id, self.type, self.value, list(self.recommended), self.modifiable, self.restrict]


@dataclass(frozen=True)
class Body:
    """Geometry and motion limits of a blueprint. `extent` is the bounding box half-size (m); `center` is the
    box centre relative to the actor origin (vehicles have their origin on the ground)."""

    extent: tuple[float, float, float]
    center: tuple[float, float, float]
    semantic_tag: int
    mass: float = 0.0  # kg; 0 means immovable (static props)
    max_steer_deg: float = 0.0
    max_accel: float = 0.0  # m/s^2 at low speed
    max_power_per_kg: float = 0.0  # W/kg, caps acceleration at speed
    max_brake: float = 0.0  # m/s^2
    max_speed: float = 0.0  # m/s

    @property
    def wheelbase(self) -> float:
        return 1.2 * self.extent[0]  # about 60 % of the body length


@dataclass(frozen=True)
class Blueprint:
    id: str
    tags: tuple[str, ...]
    kind: str  # vehicle | walker | prop | sensor
    body: Body | None
    attributes: tuple[Attribute, ...] = field(default_factory=tuple)

    def to_msg(self, uid: int) -> list:
        return [uid, self.id, ",".join(self.tags), [a.to_msg() for a in self.attributes]]

    def default_attributes(self) -> dict[str, str]:
        return {a.id: a.value for a in self.attributes}


_CAR_COLORS = ("255,255,255", "17,37,103", "20,20,20", "140,0,0", "120,120,120", "200,180,120", "40,90,50")


def _role_name(default: str) -> Attribute:
    return Attribute("role_name", ATTR_STRING, default, (default, "hero", "ego_vehicle", "scenario"), True)


def _vehicle(bp_id: str, base_type: str, extent, *, wheels: int = 4, special: str = "", tag: str = "car",
             mass: float = 1600.0, steer: float = 38.0, accel: float = 3.5, power: float = 90.0,
             brake: float = 8.0, vmax: float = 50.0, colors=_CAR_COLORS, generation: int = 2,
             doors: bool = False) -> Blueprint:
    make, model = bp_id.split(".")[1:3]
    attributes = (
        _role_name("autopilot"),
        Attribute("color", ATTR_RGB, colors[0], colors, True),
        Attribute("number_of_wheels", ATTR_INT, str(wheels)),
        Attribute("generation", ATTR_INT, str(generation)),
        Attribute("base_type", ATTR_STRING, base_type),
        Attribute("special_type", ATTR_STRING, special),
        Attribute("object_type", ATTR_STRING, ""),
        Attribute("has_lights", ATTR_BOOL, "true"),
        Attribute("has_dynamic_doors", ATTR_BOOL, "true" if doors else "false"),
        Attribute("sticky_control", ATTR_BOOL, "true", (), True),
        Attribute("terramechanics", ATTR_BOOL, "false", (), True),
    )
    body = Body(extent, (0.0, 0.0, extent[2]), TAG[tag], mass, steer, accel, power, brake, vmax)
    return Blueprint(bp_id, ("vehicle", make, model), "vehicle", body, attributes)


def _walker(number: int, child: bool, gender: str, extent=None) -> Blueprint:
    extent = extent or ((0.2, 0.2, 0.6) if child else (0.25, 0.25, 0.9))
    speeds = ("0.0", "1.4", "2.5")  # still, walking, running (m/s): recommended_values[1] and [2] in CARLA's examples
    attributes = (
        _role_name("pedestrian"),
        Attribute("is_invincible", ATTR_BOOL, "true", (), True),
        Attribute("speed", ATTR_FLOAT, speeds[1], speeds, True),
        Attribute("age", ATTR_STRING, "child" if child else "adult"),
        Attribute("gender", ATTR_STRING, gender),
        Attribute("generation", ATTR_INT, "2"),
    )
    body = Body(extent, (0.0, 0.0, 0.0), TAG["pedestrian"], 70.0 if not child else 30.0, max_speed=5.0)
    return Blueprint(f"walker.pedestrian.{number:04d}", ("walker", "pedestrian"), "walker", body, attributes)


def _prop(name: str, extent, size: str = "") -> Blueprint:
    if not size:  # by the longest side: small under 0.5 m, medium under 1.5 m, big beyond (this module's rule;
        # CARLA's package names a size per prop, which the sources above do not give)
        size = "small" if max(extent) < 0.25 else "medium" if max(extent) < 0.75 else "big"
    attributes = (_role_name("prop"), Attribute("size", ATTR_STRING, size))
    body = Body(extent, (0.0, 0.0, extent[2]), TAG["static"])
    return Blueprint(f"static.prop.{name}", ("static", "prop", name), "prop", body, attributes)


def _sensor(bp_id: str, extra: tuple[Attribute, ...] = ()) -> Blueprint:
    attributes = (_role_name("front"), Attribute("sensor_tick", ATTR_FLOAT, "0.0", (), True)) + extra
    return Blueprint(bp_id, tuple(bp_id.split(".")), "sensor", None, attributes)


def _noise(*names: str) -> tuple[Attribute, ...]:
    return tuple(Attribute(n, ATTR_FLOAT, "0.0", (), True) for n in names)


_CAMERA = (
    Attribute("image_size_x", ATTR_INT, "800", (), True),
    Attribute("image_size_y", ATTR_INT, "600", (), True),
    Attribute("fov", ATTR_FLOAT, "90.0", (), True),
)


def _float(name: str, default: str) -> Attribute:
    return Attribute(name, ATTR_FLOAT, default, (), True)


# CARLA's `sensor.lidar.ray_cast` / `ray_cast_semantic` attributes and defaults (docs/ref_sensors.md)
_LIDAR = (
    Attribute("channels", ATTR_INT, "32", (), True),
    _float("range", "10.0"),
    Attribute("points_per_second", ATTR_INT, "56000", (), True),
    _float("rotation_frequency", "10.0"),
    _float("upper_fov", "10.0"),
    _float("lower_fov", "-30.0"),
    _float("horizontal_fov", "360.0"),
)

BLUEPRINTS: tuple[Blueprint, ...] = (
    _vehicle("vehicle.tesla.model3", "car", (2.40, 1.08, 0.75)),
    _vehicle("vehicle.lincoln.mkz_2020", "car", (2.45, 1.06, 0.76), doors=True),
    _vehicle("vehicle.audi.a2", "car", (1.85, 0.91, 0.77), mass=1100.0, power=60.0),
    _vehicle("vehicle.toyota.prius", "car", (2.26, 1.00, 0.76), mass=1400.0, power=70.0),
    _vehicle("vehicle.mercedes.coupe_2020", "car", (2.34, 1.00, 0.72), doors=True),
    _vehicle("vehicle.nissan.patrol_2021", "car", (2.78, 1.07, 1.02), mass=2700.0, doors=True),
    _vehicle("vehicle.mercedes.sprinter", "van", (2.96, 1.00, 1.28), mass=2500.0, accel=2.5, power=55.0),
    _vehicle("vehicle.volkswagen.t2_2021", "van", (2.24, 1.00, 1.03), mass=1800.0, accel=2.0, power=35.0),
    _vehicle("vehicle.carlamotors.carlacola", "truck", (2.60, 1.30, 1.25), tag="truck", mass=6000.0,
             steer=35.0, accel=1.8, power=30.0, brake=6.0, vmax=30.0),
    _vehicle("vehicle.carlamotors.european_hgv", "truck", (5.20, 1.60, 1.90), tag="truck", mass=12000.0,
             steer=35.0, accel=1.2, power=25.0, brake=5.5, vmax=28.0),
    _vehicle("vehicle.mitsubishi.fusorosa", "bus", (5.10, 1.95, 1.75), tag="bus", mass=9000.0, steer=40.0,
             accel=1.3, power=25.0, brake=5.5, vmax=25.0),
    _vehicle("vehicle.ford.ambulance", "van", (3.18, 1.19, 1.20), special="emergency", mass=3500.0,
             accel=2.8, power=60.0, colors=("255,255,255",)),
    _vehicle("vehicle.dodge.charger_police_2020", "car", (2.50, 1.04, 0.77), special="emergency", doors=True,
             colors=("20,20,20",)),
    _vehicle("vehicle.carlamotors.firetruck", "truck", (4.25, 1.45, 1.90), tag="truck", special="emergency",
             mass=14000.0, steer=35.0, accel=1.5, power=30.0, brake=6.0, vmax=30.0, colors=("200,20,20",)),
    _vehicle("vehicle.bh.crossbike", "bicycle", (0.74, 0.43, 0.54), wheels=2, tag="bicycle", mass=90.0,
             steer=30.0, accel=1.5, power=4.0, brake=4.0, vmax=10.0, colors=("40,40,160", "200,30,30")),
    _vehicle("vehicle.gazelle.omafiets", "bicycle", (0.92, 0.16, 0.55), wheels=2, tag="bicycle", mass=90.0,
             steer=30.0, accel=1.5, power=4.0, brake=4.0, vmax=10.0, colors=("20,20,20", "30,90,40")),
    _vehicle("vehicle.yamaha.yzf", "motorcycle", (1.10, 0.43, 0.63), wheels=2, tag="motorcycle", mass=250.0,
             steer=30.0, accel=5.0, power=200.0, brake=8.0, vmax=55.0, colors=("30,30,200", "250,250,250")),
    _vehicle("vehicle.kawasaki.ninja", "motorcycle", (1.02, 0.40, 0.57), wheels=2, tag="motorcycle", mass=250.0,
             steer=30.0, accel=5.0, power=200.0, brake=8.0, vmax=55.0, colors=("20,140,20",)),
    # the rest of 0.9.16's vehicles, with its sizes: (length, width, height) / 2
    _vehicle("vehicle.audi.etron", "car", (2.43, 1.02, 0.82), mass=2400.0, generation=1),
    _vehicle("vehicle.audi.tt", "car", (2.09, 1.00, 0.69), mass=1300.0, generation=1),
    _vehicle("vehicle.bmw.grandtourer", "car", (2.31, 1.12, 0.83), mass=1500.0, generation=1),
    _vehicle("vehicle.chevrolet.impala", "car", (2.68, 1.02, 0.71), mass=1700.0, generation=1),
    _vehicle("vehicle.citroen.c3", "car", (1.99, 0.93, 0.81), mass=1100.0, power=60.0, generation=1),
    _vehicle("vehicle.dodge.charger_2020", "car", (2.50, 0.94, 0.77), doors=True),
    _vehicle("vehicle.dodge.charger_police", "car", (2.49, 1.02, 0.77), special="emergency", generation=1,
             colors=("20,20,20",)),
    _vehicle("vehicle.ford.crown", "car", (2.68, 0.90, 0.79), special="taxi", doors=True, colors=("230,190,20",)),
    _vehicle("vehicle.ford.mustang", "car", (2.36, 0.95, 0.65), power=120.0, generation=1),
    _vehicle("vehicle.jeep.wrangler_rubicon", "car", (1.93, 0.95, 0.94), mass=2000.0, generation=1),
    _vehicle("vehicle.lincoln.mkz_2017", "car", (2.45, 1.06, 0.76), generation=1),
    _vehicle("vehicle.mercedes.coupe", "car", (2.51, 1.08, 0.83), generation=1),
    _vehicle("vehicle.micro.microlino", "car", (1.10, 0.74, 0.69), mass=500.0, accel=2.5, power=25.0, vmax=25.0,
             generation=1),
    _vehicle("vehicle.mini.cooper_s", "car", (1.90, 0.99, 0.74), mass=1200.0, generation=1),
    _vehicle("vehicle.mini.cooper_s_2021", "car", (2.28, 1.05, 0.88), mass=1300.0, doors=True),
    _vehicle("vehicle.nissan.micra", "car", (1.82, 0.92, 0.75), mass=1000.0, power=55.0, generation=1),
    _vehicle("vehicle.nissan.patrol", "car", (2.30, 0.97, 0.93), mass=2500.0, generation=1),
    _vehicle("vehicle.seat.leon", "car", (2.10, 0.91, 0.74), mass=1300.0, generation=1),
    _vehicle("vehicle.tesla.cybertruck", "truck", (3.14, 1.19, 1.05), tag="truck", mass=3000.0, generation=1),
    _vehicle("vehicle.volkswagen.t2", "van", (2.24, 1.03, 1.02), mass=1600.0, accel=2.0, power=35.0, generation=1),
    _vehicle("vehicle.diamondback.century", "bicycle", (0.83, 0.29, 0.81), wheels=2, tag="bicycle", mass=90.0,
             steer=30.0, accel=1.5, power=4.0, brake=4.0, vmax=10.0, colors=("20,20,20", "200,200,200"),
             generation=1),
    _vehicle("vehicle.harley-davidson.low_rider", "motorcycle", (1.18, 0.38, 0.82), wheels=2, tag="motorcycle",
             mass=350.0, steer=30.0, accel=4.0, power=150.0, brake=8.0, vmax=50.0, colors=("20,20,20",),
             generation=1),
    _vehicle("vehicle.vespa.zx125", "motorcycle", (0.91, 0.43, 0.80), wheels=2, tag="motorcycle", mass=200.0,
             steer=30.0, accel=3.0, power=60.0, brake=7.0, vmax=25.0, colors=("200,30,30", "250,250,250"),
             generation=1),
    *(_walker(n, child=False, gender="male" if n % 2 else "female") for n in range(1, 9)),
    *(_walker(n, child=True, gender="male" if n % 2 else "female") for n in range(9, 13)),
    # 0.9.16's walkers 0013-0052: children 0013, 0014 (1.3 m), 0048, 0049 (1.1 m); adults 1.86 m
    *(_walker(n, child=True, gender="male" if n % 2 else "female", extent=(0.19, 0.19, 0.65)) for n in (13, 14)),
    *(_walker(n, child=False, gender="male" if n % 2 else "female", extent=(0.19, 0.19, 0.93))
      for n in (*range(15, 48), 50, 51, 52)),
    *(_walker(n, child=True, gender="male" if n % 2 else "female", extent=(0.25, 0.25, 0.55)) for n in (48, 49)),
    _prop("streetbarrier", (0.90, 0.20, 0.55), "medium"),
    _prop("constructioncone", (0.17, 0.17, 0.35), "small"),
    _prop("trafficcone01", (0.20, 0.20, 0.42), "small"),
    _prop("warningconstruction", (0.55, 0.95, 1.10), "medium"),
    _prop("container", (3.05, 1.25, 1.30), "big"),
    _prop("busstop", (1.90, 0.80, 1.30), "big"),
    _prop("box01", (0.35, 0.35, 0.35), "small"),
    # more of 0.9.16's props, with its sizes: (length, width, height) / 2
    _prop("trafficcone02", (0.23, 0.20, 0.59)),
    _prop("warningaccident", (0.65, 0.53, 0.93)),
    _prop("trafficwarning", (1.19, 1.44, 1.78)),
    _prop("chainbarrier", (0.75, 0.12, 0.44)),
    _prop("chainbarrierend", (0.12, 0.12, 0.44)),
    _prop("barrel", (0.23, 0.24, 0.40)),
    _prop("bin", (0.27, 0.32, 0.53)),
    _prop("trashcan01", (0.32, 0.28, 0.42)),
    _prop("box02", (0.32, 0.32, 0.32)),
    _prop("box03", (0.33, 0.34, 0.32)),
    _prop("creasedbox01", (0.40, 0.36, 0.06)),
    _prop("ironplank", (0.73, 0.59, 0.01)),
    _prop("dirtdebris01", (0.93, 0.76, 0.07)),
    _prop("dirtdebris02", (0.93, 0.76, 0.07)),
    _prop("dirtdebris03", (0.93, 0.76, 0.09)),
    _prop("mailbox", (0.26, 0.22, 0.58)),
    _prop("vendingmachine", (0.44, 0.55, 1.05)),
    _prop("atm", (0.36, 0.44, 1.14)),
    _prop("bench01", (0.77, 0.37, 0.48)),
    _prop("kiosk_01", (0.81, 0.83, 1.62)),
    _prop("advertisement", (0.77, 0.14, 1.22)),
    _prop("streetsign", (0.53, 0.06, 1.08)),
    _prop("gnome", (0.18, 0.19, 0.44)),
    _prop("clothcontainer", (0.62, 0.94, 0.91)),
    _prop("glasscontainer", (0.98, 1.00, 0.89)),
    _prop("busstoplb", (0.95, 1.94, 1.37)),
    _prop("haybale", (0.62, 0.60, 0.60)),
    _prop("travelcase", (0.28, 0.16, 0.63)),
    _prop("shoppingcart", (0.33, 0.60, 0.54)),
    _prop("plantpot01", (0.54, 0.24, 0.28)),
    _prop("table", (1.08, 1.08, 0.42)),
    _prop("foodcart", (1.14, 2.32, 1.79)),
    _sensor("sensor.other.collision"),
    _sensor("sensor.other.lane_invasion"),
    _sensor("sensor.other.gnss", _noise("noise_alt_bias", "noise_alt_stddev", "noise_lat_bias",
                                       "noise_lat_stddev", "noise_lon_bias", "noise_lon_stddev")),
    _sensor("sensor.other.imu", _noise("noise_accel_stddev_x", "noise_accel_stddev_y", "noise_accel_stddev_z",
                                      "noise_gyro_stddev_x", "noise_gyro_stddev_y", "noise_gyro_stddev_z")),
    _sensor("sensor.camera.rgb", _CAMERA),
    _sensor("sensor.camera.depth", _CAMERA),
    _sensor("sensor.camera.semantic_segmentation", _CAMERA),
    _sensor("sensor.camera.instance_segmentation", _CAMERA),
    _sensor("sensor.lidar.ray_cast", _LIDAR + (
        _float("atmosphere_attenuation_rate", "0.004"), _float("dropoff_general_rate", "0.45"),
        _float("dropoff_intensity_limit", "0.8"), _float("dropoff_zero_intensity", "0.4"),
        _float("noise_stddev", "0.0"), Attribute("noise_seed", ATTR_INT, "0", (), True))),
    _sensor("sensor.lidar.ray_cast_semantic", _LIDAR),
    _sensor("sensor.other.radar", (
        _float("horizontal_fov", "30.0"), _float("vertical_fov", "30.0"), _float("range", "100.0"),
        Attribute("points_per_second", ATTR_INT, "1500", (), True), Attribute("noise_seed", ATTR_INT, "0", (), True))),
    _sensor("sensor.other.obstacle", (
        _float("distance", "5.0"), _float("hit_radius", "0.5"),
        Attribute("only_dynamics", ATTR_BOOL, "false", (), True),
        Attribute("debug_linetrace", ATTR_BOOL, "false", (), True))),
    # CARLA's AI walker controller: an actor with no body, attached to the walker it drives. The driving itself is the
    # client's (Detour crowd on the navigation mesh, `envs/server/navigation.py`), which sends the walker's pose each
    # tick as ApplyWalkerState (`World.apply_walker_state`).
    Blueprint("controller.ai.walker", ("controller", "ai", "walker"), "controller", None,
              (Attribute("role_name", ATTR_STRING, "", ("",), True),)),
)

BY_ID: dict[str, Blueprint] = {bp.id: bp for bp in BLUEPRINTS}

# Actors the server creates itself; never listed in the library.
SPECTATOR = Blueprint("spectator", ("spectator",), "spectator", None)
TRAFFIC_LIGHT = Blueprint("traffic.traffic_light", ("traffic", "traffic_light"), "traffic_light",
                          Body((0.3, 0.3, 2.5), (0.0, 0.0, 2.5), TAG["traffic_light"]))
