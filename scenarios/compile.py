"""Scenario files -> validated `Scenario` models -> `CompiledScenario` for one seed on one map.

    spec = load_scenario("scenarios/library/jaywalker_parked_van.yaml")   # schema + cross-field checks
    compiled = compile_scenario(spec, seed=3, world_map=world.get_map())   # draws + route + placements

`parameters:` declares named numbers (fixed or distributions) that other fields use as "$name"; a suite may
override them (`load_scenario(path, parameters={...})`). One draw per parameter and seed is shared by all
its uses. Every problem raises one `ScenarioError` naming the file, line, field and fix.
"""
from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

import carla
from pydantic import BaseModel, ValidationError

from envs.maps import available_maps, load_xodr_text

from . import schema as S
from .distributions import is_number, parse_distribution, rng_for, sample_tree
from .errors import ScenarioError
from .placement import PlacementError, place_absolute, place_on_route
from .route import Route, RouteError, plan_route, route_from_length, route_through
from .source import Path_, Source, dotted, load_source

DEFAULT_TIMEOUT_S = 10.0  # plus DEFAULT_TIMEOUT_PER_M per metre of route when a file sets no timeout
DEFAULT_TIMEOUT_PER_M = 0.5
DRIVING = ("follow_lane", "change_lane", "run_red_light")  # the steps that move a vehicle


def default_timeout_s(route_length_m: float, per_m: float = DEFAULT_TIMEOUT_PER_M) -> float:
    """The route timeout when none is given (here and in DrivingEnv): DEFAULT_TIMEOUT_S + per_m x length."""
    return DEFAULT_TIMEOUT_S + per_m * route_length_m


@dataclass
class ScenarioSpec:
    """A validated file: the model (distributions still in it) and its source for error lines."""

    scenario: S.Scenario
    source: Source
    parameters: dict[str, Any]  # the parameter values in use (file's, with the suite's overrides)

    @property
    def file(self) -> Path:
        return self.source.file


@dataclass
class CompiledActor:
    id: str
    blueprint: str
    kind: str  # vehicle | walker | prop
    transform: carla.Transform
    route_s: float  # the actor's place projected on the ego route (m)
    steps: list[S.Step]
    cross_direction: tuple[float, float] | None = None  # unit (x, y) towards the route, for walkers
    cross_distance: float = 0.0  # metres to the mirror point across the route


@dataclass
class CompiledScenario:
    """One seed's draw of a scenario, with its route and actor poses resolved on the map."""

    name: str
    file: Path
    seed: int
    map_name: str  # what DrivingEnv loads: a shipped name, an .xodr path, or a CARLA town
    weather: carla.WeatherParameters
    weather_name: str
    route: Route
    ego_blueprint: str
    speed_limit_kmh: float
    timeout_s: float
    ego_lights: str
    actors: list[CompiledActor] = field(default_factory=list)
    parameters: dict[str, float] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------- validation
def _fix_for(error: dict, model_fields: list[str] | None) -> tuple[str, str]:
    """(problem, fix) for one pydantic error."""
    kind, message = error["type"], error["msg"].removeprefix("Value error, ")
    key = error["loc"][-1] if error["loc"] else ""
    if kind == "extra_forbidden":
        known = ", ".join(model_fields or [])
        return f"unknown key '{key}'", f"remove it or use one of: {known}"
    if kind == "missing":
        return f"required key '{key}' is missing", f"add `{key}: ...` (see scenarios/library/ for examples)"
    if kind == "too_long":
        return (f"{error['ctx']['actual_length']} entries, more than the {error['ctx']['max_length']} allowed",
                "keep the list within the bound (docs/scenarios.md, Limits)")
    if kind == "literal_error":
        return f"{error['input']!r} is not allowed", message.replace("Input should be", "use")
    if "; fix: " in message:
        problem, fix = message.split("; fix: ", 1)
        return problem, fix
    return message, "write the value in the form docs/scenarios.md gives for this field"


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models_in(arg)]


def _fields_at(loc: tuple, data: Any, names_key: bool) -> tuple[Path_, list[str] | None]:
    """The file path of a pydantic `loc` (union tags dropped) and the keys allowed where its last key sits."""
    path: list = []
    models: list[type[BaseModel]] = [S.Scenario]
    node = data
    for k, part in enumerate(loc):
        last = k == len(loc) - 1
        if isinstance(part, int):
            path.append(part)
            node = node[part] if isinstance(node, list) and part < len(node) else None
        elif isinstance(node, dict) and part in node and not last:
            path.append(part)
            models = [a for m in models if part in m.model_fields for a in _models_in(m.model_fields[part].annotation)]
            node = node[part]
        elif last and (names_key or (isinstance(node, dict) and part in node)):
            path.append(part)  # the key that is missing, unknown or wrong
        else:  # a union member's tag ("route", "fields", ...), not a key of the file
            models = [m for m in models if m.__name__.lower().startswith(part.lower())] or models
    allowed = sorted({f for m in models for f in m.model_fields}) if models else None
    return tuple(path), allowed


def _validation_error(exc: ValidationError, source: Source) -> ScenarioError:
    error = exc.errors()[0]
    path, allowed = _fields_at(tuple(error["loc"]), source.data, error["type"] in ("missing", "extra_forbidden"))
    problem, fix = _fix_for(error, allowed)
    return source.error(path, problem, fix)


def _substitute(data: Any, values: dict[str, Any], source: Source, path: Path_ = ()) -> Any:
    """Replace "$name" strings with the parameter's value (a number, or the distribution when validating)."""
    if isinstance(data, str) and data.startswith("$"):
        if data[1:] not in values:
            raise source.error(path, f"unknown parameter '{data}'",
                               f"declare it under `parameters:` or use one of {sorted(values) or 'none declared'}")
        return values[data[1:]]
    if isinstance(data, dict):
        return {k: _substitute(v, values, source, path + (k,)) for k, v in data.items()}
    if isinstance(data, list):
        return [_substitute(v, values, source, path + (i,)) for i, v in enumerate(data)]
    return data


def _parameters(source: Source, overrides: dict[str, Any] | None) -> dict[str, Any]:
    declared = source.data.get("parameters", {}) if isinstance(source.data, dict) else {}
    if not isinstance(declared, dict):
        raise source.error(("parameters",), "parameters must be a mapping", "write `parameters: {name: value}`")
    values = dict(declared)
    for name, value in (overrides or {}).items():
        if name not in declared:
            raise ScenarioError(source.file, source.line(("parameters",)), f"parameters.{name}",
                                f"the suite overrides '{name}', which this file does not declare",
                                f"declare it or override one of {sorted(declared)}")
        values[name] = value
    for name, value in values.items():
        if isinstance(value, dict):
            try:
                parse_distribution(value)
            except ValueError as exc:
                problem, _, fix = str(exc).partition("; fix: ")
                raise source.error(("parameters", name), problem, fix or "write a number or a distribution") from exc
        elif not is_number(value):
            raise source.error(("parameters", name), f"parameter '{name}' is {value!r}, not a finite number",
                               "write a finite number or a distribution")
    return values


def _check_semantics(scenario: S.Scenario, source: Source) -> None:
    """Rules across fields: unique ids, primitives that suit the actor, events that exist, a loadable map."""
    problem = S.map_problem(scenario.map, source.file.parent)
    if problem:
        raise source.error(("map",), problem, f"use one of {', '.join(available_maps())} or an existing .xodr path")
    seen: set[str] = set()
    steps = {(a.id, s.name) for a in scenario.actors for s in a.behaviour if s.name}
    for i, actor in enumerate(scenario.actors):
        if actor.id in seen:
            raise source.error(("actors", i, "id"), f"actor id '{actor.id}' is used twice",
                               "give each actor its own id")
        seen.add(actor.id)
        blueprints = actor.blueprint.options if isinstance(actor.blueprint, S.Choice) else (actor.blueprint,)
        kinds = {S.blueprint_kind(b) for b in blueprints}
        if len(kinds) > 1:
            raise source.error(("actors", i, "blueprint"), f"the choice mixes {sorted(kinds)}",
                               "choose among blueprints of one kind (all vehicles or all walkers)")
        kind = kinds.pop()
        allowed = {"walker": S.WALKER_PRIMITIVES, "vehicle": S.VEHICLE_PRIMITIVES, "prop": ()}[kind]
        for j, step in enumerate(actor.behaviour):
            if step.primitive not in allowed:
                raise source.error(("actors", i, "behaviour", j, step.primitive),
                                   f"a {kind} cannot '{step.primitive}'",
                                   f"use one of {', '.join(allowed)}" if allowed
                                   else "props take no behaviour; remove it")
            if step.primitive == "door" and any(other.primitive in DRIVING for other in actor.behaviour):
                # the panel is laid against the body where the vehicle was placed (behaviours.ActorRunner)
                raise source.error(("actors", i, "behaviour", j, "door"),
                                   "a vehicle that opens a door may not drive: its door stays where it was placed",
                                   f"give the door to a parked vehicle (no {', '.join(DRIVING)} steps)")
            for key in ("wait", "until"):
                trigger = getattr(step, key)
                if trigger is not None and trigger.event is not None:
                    actor_id, step_name, _ = trigger.event.split(".")
                    if (actor_id, step_name) not in steps:
                        raise source.error(("actors", i, "behaviour", j, key, "event"),
                                           f"no actor '{actor_id}' has a step named '{step_name}'",
                                           "name the step (`name: ...`) or fix the event's actor and step")
    _check_event_cycles(scenario, source)


def _check_event_cycles(scenario: S.Scenario, source: Source) -> None:
    """Refuse `wait: {event: ...}` steps that wait, directly or through other actors' waits, for an event that can
    only happen after they end: those actors would stand still for the whole episode.

    Nodes are (actor, step, "started" | "finished"); an edge says the first must happen before the second: a step
    starts after the previous one finishes, finishes after it starts, and a `wait` on an event finishes after that
    event. A node on a cycle can never happen (Kahn's topological order never reaches it)."""
    first = {}  # (actor id, step name) -> (actor index, step index) of the first step with that name
    for i, actor in enumerate(scenario.actors):
        for j, step in enumerate(actor.behaviour):
            first.setdefault((actor.id, step.name), (i, j))
    after: dict[tuple, list[tuple]] = {}  # node -> the nodes that must happen before it
    waits: dict[tuple, tuple[tuple, str]] = {}  # a wait step's "finished" node -> (event node, event text)
    for i, actor in enumerate(scenario.actors):
        for j, step in enumerate(actor.behaviour):
            after[(i, j, "started")] = [(i, j - 1, "finished")] if j else []
            after[(i, j, "finished")] = [(i, j, "started")]
            if step.wait is not None and step.wait.event is not None:
                actor_id, step_name, what = step.wait.event.split(".")
                event = (*first[(actor_id, step_name)], what)
                after[(i, j, "finished")].append(event)
                waits[(i, j, "finished")] = (event, step.wait.event)
    missing = {node: len(before) for node, before in after.items()}
    then: dict[tuple, list[tuple]] = {}
    for node, before in after.items():
        for b in before:
            then.setdefault(b, []).append(node)
    ready = [node for node, count in missing.items() if count == 0]
    while ready:
        for node in then.get(ready.pop(), []):
            missing[node] -= 1
            if missing[node] == 0:
                ready.append(node)
    stuck = {node for node, count in missing.items() if count}
    if not stuck:
        return
    # Walk back through stuck predecessors until a node repeats: that stretch is a cycle.
    node, path = min(stuck), []
    while node not in path:
        path.append(node)
        node = next(b for b in after[node] if b in stuck)
    cycle = path[path.index(node):][::-1]
    waiting = [n for n in cycle if n in waits and waits[n][0] in cycle]
    i, j, _ = min(waiting)
    chain = " -> ".join(f"{scenario.actors[a].id}.behaviour[{b}] waits for {waits[(a, b, 'finished')][1]}"
                        for a, b, _ in sorted(waiting))
    raise source.error(("actors", i, "behaviour", j, "wait", "event"), f"circular event triggers ({chain}): "
                       "none of these steps can ever finish", "make one of these steps wait for something else")


def load_scenario(file: str | Path, parameters: dict[str, Any] | None = None) -> ScenarioSpec:
    """Parse and validate a scenario file (no map needed); raises one ScenarioError."""
    source = load_source(file)
    if not isinstance(source.data, dict):
        raise source.error((), "a scenario file is a mapping of keys", "start with `name:`, `map:`, `ego:`")
    values = _parameters(source, parameters)
    data = _substitute({k: v for k, v in source.data.items() if k != "parameters"}, values, source)
    try:
        scenario = S.Scenario.model_validate(data)
    except ValidationError as exc:
        raise _validation_error(exc, source) from None
    _check_semantics(scenario, source)
    return ScenarioSpec(scenario, source, values)


# -------------------------------------------------------------------------------------------- compiling
@functools.lru_cache(maxsize=8)
def offline_map(map_name: str, base: str = ".") -> carla.Map | None:
    """The client's own `carla.Map` parsed from a shipped or .xodr map (None for a CARLA town: needs a server)."""
    if S.CARLA_TOWN.match(map_name):
        return None
    path = Path(base) / map_name if map_name.endswith(".xodr") and (Path(base) / map_name).is_file() else map_name
    return carla.Map(Path(str(path)).stem, load_xodr_text(str(path)))


def weather_preset(name: str) -> carla.WeatherParameters:
    """A fresh copy of a `carla.WeatherParameters` preset: the class attributes are shared objects, and setting a
    field on one would change that preset for every later episode in the process."""
    preset = getattr(carla.WeatherParameters, name)
    fields = ("cloudiness", "precipitation", "precipitation_deposits", "wind_intensity", "sun_azimuth_angle",
              "sun_altitude_angle", "fog_density", "fog_distance", "wetness", "fog_falloff", "scattering_intensity",
              "mie_scattering_scale", "rayleigh_scattering_scale", "dust_storm")
    return carla.WeatherParameters(**{field: getattr(preset, field) for field in fields})


def _weather(value: Any) -> tuple[carla.WeatherParameters, str]:
    if isinstance(value, str):
        if value in S.EXTRA_WEATHER:
            weather = weather_preset("ClearNoon")
            for name, v in S.EXTRA_WEATHER[value].items():
                setattr(weather, name, v)
            return weather, value
        return weather_preset(value), value
    weather = weather_preset("ClearNoon")
    for name in S.WEATHER_FIELDS:
        if getattr(value, name) is not None:
            setattr(weather, name, float(getattr(value, name)))
    return weather, "custom"


def _location(loc: S.Location) -> carla.Location:
    return carla.Location(x=float(loc.x), y=float(loc.y), z=float(loc.z))


ON_ROAD_M = 5.0  # a route location must lie this close to a driving lane's centre


def _check_on_road(spec: S.RouteSpec, world_map: carla.Map, source: Source) -> None:
    named = [(("start",), spec.start), (("goal",), spec.goal)] + \
        [(("waypoints", i), w) for i, w in enumerate(spec.waypoints or [])]
    for path, loc in named:
        if loc is None:
            continue
        lane = world_map.get_waypoint(_location(loc), project_to_road=True, lane_type=carla.LaneType.Driving)
        if lane is None or lane.transform.location.distance_2d(_location(loc)) > ON_ROAD_M:
            raise source.error(("ego", "route") + path, f"({loc.x}, {loc.y}) is not on a driving lane of map "
                               f"'{world_map.name.split('/')[-1]}'",
                               "move it onto a driving lane (see docs/maps.md for coordinates)")


def _route(spec: S.RouteSpec, world_map: carla.Map, seed: int) -> Route:
    if spec.waypoints is not None:
        return route_through(world_map, [_location(w) for w in spec.waypoints])
    if spec.goal is not None:
        return plan_route(world_map, _location(spec.start), _location(spec.goal))
    return route_from_length(world_map, _location(spec.start), float(spec.length), list(spec.turns or []), seed=seed)


def draw(spec: ScenarioSpec, seed: int) -> tuple[S.Scenario, dict[str, float]]:
    """The scenario with every distribution drawn for `seed` (no map needed), and the parameter values."""
    values = {name: (parse_distribution(v).sample(rng_for(seed, ("parameters", name))) if isinstance(v, dict)
                     else float(v)) for name, v in spec.parameters.items()}
    data = _substitute({k: v for k, v in spec.source.data.items() if k != "parameters"}, values, spec.source)
    return sample_tree(S.Scenario.model_validate(data), seed), values


def map_path(spec: ScenarioSpec) -> str:
    """The map as DrivingEnv loads it: a shipped name, a CARLA town, or an .xodr path beside the file."""
    name = spec.scenario.map
    if name.endswith(".xodr") and (spec.file.parent / name).is_file():
        return str(spec.file.parent / name)
    return name


def weather_of(scenario: S.Scenario) -> tuple[carla.WeatherParameters, str]:
    """The drawn scenario's weather and its preset name ("custom" for fields)."""
    return _weather(scenario.weather)


def compile_scenario(spec: ScenarioSpec, seed: int, world_map: carla.Map) -> CompiledScenario:
    """Draw every distribution for `seed`, plan the route and place the actors on `world_map`."""
    source, seed = spec.source, int(seed)
    scenario, values = draw(spec, seed)
    _check_on_road(scenario.ego.route, world_map, source)
    try:
        route = _route(scenario.ego.route, world_map, seed)
    except RouteError as exc:
        raise source.error(("ego", "route"), f"no route on map '{scenario.map}': {exc}",
                           "move the start/goal onto a driving lane (see docs/maps.md for coordinates)") from exc
    if route.length > S.MAX_ROUTE_M:
        raise source.error(("ego", "route"), f"the route is {route.length:.0f} m long, more than {S.MAX_ROUTE_M:.0f} m",
                           "choose waypoints or a goal closer to the start")
    actors = []
    for i, actor in enumerate(scenario.actors):
        kind = S.blueprint_kind(actor.blueprint)
        try:
            if isinstance(actor.place, S.RoutePlacement):
                placed = place_on_route(world_map, route, actor.place, kind)
            else:
                placed = place_absolute(world_map, route, actor.place, kind)
        except PlacementError as exc:
            raise source.error(("actors", i, "place") + exc.field, exc.problem, exc.fix) from exc
        actors.append(CompiledActor(actor.id, actor.blueprint, kind, placed.transform, placed.route_s,
                                    list(actor.behaviour), placed.cross_direction, placed.cross_distance))
    weather, weather_name = _weather(scenario.weather)
    timeout = scenario.criteria.timeout_s or default_timeout_s(route.length)
    return CompiledScenario(scenario.name, source.file, seed, map_path(spec), weather, weather_name, route,
                            scenario.ego.blueprint, float(scenario.ego.speed_limit), float(timeout),
                            scenario.ego_lights, actors, values)


def compile_seeds(spec: ScenarioSpec, seeds: Iterable[int]) -> list[CompiledScenario]:
    """The map checks: compile `spec` on its map for each seed (none for a CARLA town: that needs its server)."""
    world_map = offline_map(spec.scenario.map, str(spec.file.parent))
    return [] if world_map is None else [compile_scenario(spec, seed, world_map) for seed in seeds]


def validate_file(file: str | Path, seeds: tuple[int, ...] = (0,)) -> list[CompiledScenario]:
    """Schema checks, then compile on the file's map for each seed (map checks are skipped for CARLA towns)."""
    return compile_seeds(load_scenario(file), seeds)


__all__ = ["ScenarioSpec", "CompiledScenario", "CompiledActor", "load_scenario", "compile_scenario", "draw",
           "map_path", "weather_of", "validate_file", "compile_seeds", "offline_map", "dotted"]
