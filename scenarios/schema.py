"""The scenario file format as pydantic v2 models (see docs/scenarios.md for the authoring guide).

A file names a map, a weather, the ego's route and speed limit, actors (by CARLA blueprint id) placed along
the route or at absolute poses, each with a sequence of behaviour steps gated by triggers, and criteria
overrides. Numbers are `distributions.number(...)` fields: fixed, or a distribution sampled per seed.
Checks that need the map (placements on the road, routes) live in `compile.py`.
"""
from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import carla
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

from envs.maps import available_maps
from envs.server.blueprints import BY_ID

from .distributions import Choice, name_choice, number

# slimdrive presets beyond CARLA's own WeatherParameters presets (ClearNoon, HardRainNoon, ClearNight, ...).
EXTRA_WEATHER = {
    "FoggyDay": dict(cloudiness=60.0, fog_density=60.0, fog_distance=10.0, fog_falloff=1.0, sun_altitude_angle=45.0),
    "FoggyNight": dict(cloudiness=60.0, fog_density=50.0, fog_distance=10.0, fog_falloff=1.0, sun_altitude_angle=-30.0),
}
CARLA_WEATHER = tuple(n for n in dir(carla.WeatherParameters) if n[0].isupper())
WEATHER_PRESETS = CARLA_WEATHER + tuple(EXTRA_WEATHER)
WEATHER_FIELDS = ("cloudiness", "precipitation", "precipitation_deposits", "wind_intensity", "sun_azimuth_angle",
                  "sun_altitude_angle", "fog_density", "fog_distance", "fog_falloff", "wetness")
# The towns CARLA 0.9.16 ships: Town01-07 and Town10HD, each also as its layered "_Opt" build, and the large
# maps Town12, Town13 and Town15 (no "_Opt" build). CARLA_TOWN accepts exactly these names.
CARLA_TOWNS = tuple(f"{t}{o}" for t in ("Town01", "Town02", "Town03", "Town04", "Town05", "Town06", "Town07",
                                        "Town10HD") for o in ("", "_Opt")) + ("Town12", "Town13", "Town15")
CARLA_TOWN = re.compile(rf"^(?:{'|'.join(CARLA_TOWNS)})$")


def blueprint_kind(blueprint_id: str) -> str:
    """vehicle | walker | prop, from the CARLA id's first word (the same on CARLA and the embedded server)."""
    return {"vehicle": "vehicle", "walker": "walker", "static": "prop"}.get(blueprint_id.split(".")[0], "other")


def _known_blueprint(name: str) -> str | None:
    if name in BY_ID and blueprint_kind(name) != "other":
        return None
    actors = [b for b in BY_ID if blueprint_kind(b) != "other"]
    close = difflib.get_close_matches(name, actors, n=3, cutoff=0.5)
    return (f"unknown blueprint '{name}'; fix: " +
            (f"did you mean {' or '.join(close)}?" if close else
             "use a vehicle.*, walker.pedestrian.* or static.prop.* id from envs/server/blueprints.py"))


def _known_weather(name: str) -> str | None:
    if name in WEATHER_PRESETS:
        return None
    close = difflib.get_close_matches(name, WEATHER_PRESETS, n=2, cutoff=0.5)
    return (f"unknown weather preset '{name}'; fix: " +
            (f"did you mean {' or '.join(close)}?" if close else f"use one of {', '.join(WEATHER_PRESETS)}"))


Blueprint = name_choice(_known_blueprint)
WeatherPreset = name_choice(_known_weather)
# Bounds on the work one file may ask for: route planning and the episode's length grow with the route, the
# world with its actors. Far above anything in the library (its longest route is 300 m, its largest cast 5
# actors) and far below what would exhaust a run.
MAX_ROUTE_M = 10_000.0
MAX_TIMEOUT_S = 7_200.0  # two hours of simulated time (144,000 steps at 20 Hz)
MAX_ACTORS = 256
Speed = number(ge=0.0, le=60.0)  # m/s
Metres = number(ge=0.0)
Positive = number(gt=0.0)
Real = number()


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Location(Model):
    x: Real
    y: Real
    z: Real = 0.0


class WeatherFields(Model):
    """CARLA WeatherParameters fields; unnamed ones take ClearNoon's values."""
    cloudiness: number(ge=0, le=100) | None = None
    precipitation: number(ge=0, le=100) | None = None
    precipitation_deposits: number(ge=0, le=100) | None = None
    wind_intensity: number(ge=0, le=100) | None = None
    sun_azimuth_angle: number(ge=0, le=360) | None = None
    sun_altitude_angle: number(ge=-90, le=90) | None = None
    fog_density: number(ge=0, le=100) | None = None
    fog_distance: number(ge=0) | None = None
    fog_falloff: number(ge=0) | None = None
    wetness: number(ge=0, le=100) | None = None


def _weather_form(value: Any) -> str:
    # A mapping of WeatherParameters fields, or a preset name (or {choice: [names]}).
    fields = isinstance(value, WeatherFields) or (isinstance(value, dict) and "choice" not in value)
    return "fields" if fields else "preset"


Weather = Annotated[Annotated[WeatherPreset, Tag("preset")] | Annotated[WeatherFields, Tag("fields")],
                    Discriminator(_weather_form)]


class RouteSpec(Model):
    """One of: `start` + `goal`; `start` + `length` (+ `turns` at junctions); `waypoints` (start first)."""
    start: Location | None = None
    goal: Location | None = None
    length: number(gt=0.0, le=MAX_ROUTE_M) | None = None
    turns: list[Literal["left", "right", "straight"]] | None = None
    waypoints: list[Location] | None = Field(default=None, min_length=2)

    @model_validator(mode="after")
    def _one_form(self) -> RouteSpec:
        forms = {"start+goal": self.start is not None and self.goal is not None,
                 "start+length": self.start is not None and self.length is not None,
                 "waypoints": self.waypoints is not None}
        if sum(forms.values()) != 1 or (self.waypoints is not None and self.start is not None):
            raise ValueError("the route form is ambiguous or incomplete; fix: give exactly one of start+goal, "
                             "start+length, waypoints")
        if self.turns is not None and self.length is None:
            raise ValueError("turns without length; fix: give turns only with start and length")
        return self


class Ego(Model):
    blueprint: Blueprint = "vehicle.tesla.model3"
    route: RouteSpec
    speed_limit: number(gt=0.0, le=130.0) = 40.0  # km/h, as CARLA reports speed limits


class RoutePlacement(Model):
    """A pose `s` metres along the ego route, in a lane relative to the route's lane."""
    s: Metres
    lane: Literal["same", "left", "right", "opposite", "shoulder", "parked", "sidewalk"] = "same"
    side: Literal["right", "left"] = "right"  # for shoulder/parked/sidewalk: this road edge or the far one
    offset: Real = 0.0  # metres to the right of the lane centre (negative: left)
    yaw: Real = 0.0  # degrees relative to the lane's driving direction


class AbsolutePlacement(Model):
    x: Real
    y: Real
    z: Real = 0.0
    yaw: Real = 0.0


def _placement_form(value: Any) -> str | None:
    if isinstance(value, (RoutePlacement, AbsolutePlacement)):
        return "route" if isinstance(value, RoutePlacement) else "absolute"
    if isinstance(value, dict):
        return "route" if "s" in value else "absolute" if "x" in value else None
    return None


Placement = Annotated[Annotated[RoutePlacement, Tag("route")] | Annotated[AbsolutePlacement, Tag("absolute")],
                      Discriminator(_placement_form, custom_error_type="placement_form",
                                    custom_error_message="a placement is either along the route {s: metres, lane: "
                                                         "...} or absolute {x, y, yaw}")]


class Trigger(Model):
    """Exactly one condition. `at_s` moves the reference of ego_distance/ego_time_to_arrival from the actor to
    a point of the route."""
    ego_distance: Positive | None = None  # ego within this many metres of the actor (or of at_s)
    ego_time_to_arrival: Positive | None = None  # ego reaches the actor's route point within this many seconds
    ego_passed: Metres | None = None  # ego's distance along the route has passed this many metres
    time: Metres | None = None  # seconds since the scenario started
    after: Metres | None = None  # seconds since this step started
    event: str | None = None  # "<actor id>.<step name>.started" or ".finished"
    at_s: Metres | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Trigger:
        kinds = [k for k in ("ego_distance", "ego_time_to_arrival", "ego_passed", "time", "after", "event")
                 if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(f"a trigger needs exactly one condition, got {kinds or 'none'}; fix: keep one of "
                             "ego_distance, ego_time_to_arrival, ego_passed, time, after, event")
        if self.at_s is not None and kinds[0] not in ("ego_distance", "ego_time_to_arrival"):
            raise ValueError("at_s without ego_distance or ego_time_to_arrival; fix: remove at_s")
        if self.event is not None and not re.fullmatch(r"[\w-]+\.[\w-]+\.(started|finished)", self.event):
            raise ValueError(f"malformed event '{self.event}'; fix: write <actor id>.<step name>.started or .finished")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ("ego_distance", "ego_time_to_arrival", "ego_passed", "time", "after", "event")
                    if getattr(self, k) is not None)


class Walk(Model):
    speed: number(gt=0.0, le=5.0)
    direction: Literal["forward", "backward"] = "forward"  # along the route's direction or against it
    distance: Positive | None = None  # stop after this many metres (default: keep walking)


class Cross(Model):
    speed: number(gt=0.0, le=5.0)
    direction: Literal["auto", "left", "right"] = "auto"  # auto: towards the route (across the road)
    distance: Positive | None = None  # metres walked; default: across to the mirror point beyond the route


class FollowLane(Model):
    speed: Speed
    gap: Metres | None = None  # keep at least this bumper gap to a vehicle ahead in the lane
    turn: Literal["straight", "left", "right"] = "straight"  # choice at junctions
    distance: Positive | None = None  # step ends after this many metres
    obey_lights: bool = True


class ChangeLane(Model):
    direction: Literal["left", "right"]
    distance: Positive = 15.0  # metres travelled while moving over
    speed: Speed | None = None  # default: the current speed


class Brake(Model):
    strength: number(gt=0.0, le=1.0) = 1.0


class StopStep(Model):
    decel: number(gt=0.0, le=10.0) = 3.0  # m/s^2


class RunRedLight(Model):
    speed: Speed
    turn: Literal["straight", "left", "right"] = "straight"


class Idle(Model):
    pass


# carla.VehicleLightState's flags, as a file names them (special1/special2: an emergency vehicle's beacons)
VEHICLE_LIGHTS = {"position": "Position", "low_beam": "LowBeam", "high_beam": "HighBeam", "brake": "Brake",
                  "right_blinker": "RightBlinker", "left_blinker": "LeftBlinker", "reverse": "Reverse", "fog": "Fog",
                  "interior": "Interior", "special1": "Special1", "special2": "Special2"}


class Door(Model):
    """Swing a door of the vehicle to `angle` degrees open (0 closes it) over `swing_s` seconds; the step ends when
    it is there. The door is a panel hinged at its front edge on that side of the body, swinging outwards."""
    side: Literal["left", "right"] = "left"
    angle: number(ge=0.0, le=80.0) = 35.0
    swing_s: number(gt=0.0, le=5.0) = 1.0


class Lights(Model):
    """Switch the vehicle's lights: those in `state` on, every other off; the step ends at once."""
    state: list[Literal[tuple(VEHICLE_LIGHTS)]] = []  # the lights on (every other one off)


PRIMITIVES: dict[str, type[Model]] = {
    "wait": Trigger, "walk": Walk, "cross": Cross, "follow_lane": FollowLane, "change_lane": ChangeLane,
    "brake": Brake, "stop": StopStep, "run_red_light": RunRedLight, "idle": Idle, "lights": Lights,
    "door": Door,
}
WALKER_PRIMITIVES = ("wait", "walk", "cross", "stop", "idle")
VEHICLE_PRIMITIVES = ("wait", "follow_lane", "change_lane", "brake", "stop", "run_red_light", "idle", "lights",
                      "door")


class Step(Model):
    """One primitive (exactly one of the PRIMITIVES keys), optionally named and ended early by `until`."""
    name: str | None = Field(default=None, pattern=r"^[\w-]+$")
    until: Trigger | None = None
    wait: Trigger | None = None
    walk: Walk | None = None
    cross: Cross | None = None
    follow_lane: FollowLane | None = None
    change_lane: ChangeLane | None = None
    brake: Brake | None = None
    stop: StopStep | None = None
    run_red_light: RunRedLight | None = None
    idle: Idle | None = None
    lights: Lights | None = None
    door: Door | None = None

    @model_validator(mode="before")
    @classmethod
    def _empty_idle(cls, data: Any) -> Any:
        # `- idle:` with no value parses as None; it means "idle with defaults".
        if isinstance(data, dict) and "idle" in data and data["idle"] is None:
            return {**data, "idle": {}}
        return data

    @model_validator(mode="after")
    def _one_primitive(self) -> Step:
        given = [p for p in PRIMITIVES if getattr(self, p) is not None]
        if len(given) != 1:
            raise ValueError(f"a step needs exactly one primitive, got {given or 'none'}; "
                             f"fix: keep one of {', '.join(PRIMITIVES)}")
        return self

    @property
    def primitive(self) -> str:
        return next(p for p in PRIMITIVES if getattr(self, p) is not None)

    @property
    def params(self) -> Model:
        return getattr(self, self.primitive)


class Actor(Model):
    id: str = Field(pattern=r"^[\w-]+$")
    blueprint: Blueprint
    place: Placement
    behaviour: list[Step] = []


class Criteria(Model):
    timeout_s: number(gt=0.0, le=MAX_TIMEOUT_S) | None = None  # default: 10 s + 0.5 s per metre of route


class Scenario(Model):
    name: str
    description: str = ""
    map: str
    weather: Weather = "ClearNoon"
    ego: Ego
    ego_lights: Literal["cycle", "green"] = "cycle"  # green: lights on the ego route are held green
    parameters: dict[str, Any] = {}  # named numbers, used elsewhere as "$name" (see compile.py)
    actors: list[Actor] = Field(default=[], max_length=MAX_ACTORS)
    criteria: Criteria = Criteria()


def map_problem(name: str, base: Path) -> str | None:
    """Why `map` names nothing we can load, or None: a shipped map, an .xodr path, or a CARLA town."""
    if name in available_maps() or CARLA_TOWN.match(name):
        return None
    if name.endswith(".xodr"):
        return None if (base / name).is_file() or Path(name).is_file() else f"map file '{name}' not found"
    return (f"unknown map '{name}'; use one of {', '.join(available_maps())}, an .xodr path or a CARLA 0.9.16 town "
            f"({', '.join(CARLA_TOWNS)})")


__all__ = ["Scenario", "Actor", "Step", "Trigger", "RoutePlacement", "AbsolutePlacement", "Location", "RouteSpec",
           "WeatherFields", "PRIMITIVES", "WALKER_PRIMITIVES", "VEHICLE_PRIMITIVES", "EXTRA_WEATHER",
           "blueprint_kind", "map_problem", "Choice"]
