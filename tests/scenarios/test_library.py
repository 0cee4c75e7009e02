"""Every library scenario validates, runs on the embedded server through the stock client, and its
behaviours fire as written, judged from actor positions recorded each tick."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import carla
import numpy as np
import pytest

from control import SpeedController, pure_pursuit
from envs.server.launch import launch
from scenarios.compile import draw, load_scenario, validate_file, weather_of
from scenarios.distributions import Choice, parse_distribution
from scenarios.engine import ScenarioRun
from scenarios.schema import WEATHER_FIELDS
from scenarios.suites import load_suite
from scenarios.triggers import MIN_SPEED_FOR_TTA

# Grouped by map: every map switch is a client-side episode change, so fewer switches make a faster,
# steadier module (see _drive).
LIBRARY = sorted((Path(__file__).resolve().parents[2] / "scenarios" / "library").glob("*.yaml"),
                 key=lambda p: (load_scenario(p).scenario.map, p.name))
EGO_SPEED_SHARE = 0.8  # the scripted ego drives the route at this share of the speed limit
# ... and brakes fully only for an actor in its lane right ahead (so it does not shove a braking lead car or a
# cut-in out of its path); it looks at nothing else: no lights, no forecasts.
# Alongside (centres less than a car length apart) does not count, or a car pulling out beside it and the ego
# would wait for each other.
EGO_LANE_HALF_M, EGO_ALONGSIDE_M = 2.0, 4.0
EGO_STOP_GAP_M, EGO_STOP_HEADWAY_S = 7.0, 1.2
TICKS = 500
MOVED_M = 0.5
DT = 0.05  # s per tick
STANDING_PRIMITIVES = ("wait", "idle", "lights", "door")  # steps that do not move the actor itself
HARD_DECEL = 5.0  # m/s^2: a brake step must stop the actor at least this hard (cars brake at 6-8 m/s^2)


def test_the_library_has_the_issues_twelve_scenarios():
    assert len(LIBRARY) >= 12


@pytest.mark.parametrize("path", LIBRARY, ids=[p.stem for p in LIBRARY])
def test_library_file_validates_for_several_seeds(path):
    compiled = validate_file(path, seeds=(0, 1, 2, 3))
    assert all(c.route.length > 50 for c in compiled)


WEATHER_SEEDS = range(20)  # the train suite's seeds


def _weather_fields(weather: carla.WeatherParameters) -> tuple[float, ...]:
    return tuple(round(getattr(weather, name), 3) for name in WEATHER_FIELDS)


@pytest.mark.parametrize("path", LIBRARY, ids=[p.stem for p in LIBRARY])
def test_weather_varies_across_seeds_with_rain_fog_and_night_variants(path):
    """Every weather the file offers is drawn for some seed, the drawn parameters really differ, and the
    draws include rain, fog and night (the library's clear/rain/fog/night variants)."""
    spec = load_scenario(path)
    drawn = [weather_of(draw(spec, seed)[0]) for seed in WEATHER_SEEDS]
    offered = spec.scenario.weather
    assert isinstance(offered, Choice) and len(offered.options) >= 4, "a library file offers several weathers"
    assert {name for _, name in drawn} == set(offered.options), "some weather variant is never drawn"
    assert any(w.precipitation > 0 for w, _ in drawn), "no rain variant"
    assert any(w.fog_density >= 40 for w, _ in drawn), "no fog variant"
    assert any(w.sun_altitude_angle < 0 for w, _ in drawn), "no night variant"


def test_weather_variants_stay_distinct_within_one_process():
    """Drawing FoggyDay (or a custom weather) must not change what ClearNoon means for later episodes."""
    spec = load_scenario(LIBRARY[0])
    offered = spec.scenario.weather.options
    drawn = {}
    for seed in WEATHER_SEEDS:
        weather, name = weather_of(draw(spec, seed)[0])
        drawn.setdefault(name, set()).add(_weather_fields(weather))
    assert all(len(fields) == 1 for fields in drawn.values()), "one preset gave different weathers"
    assert len({next(iter(f)) for f in drawn.values()}) == len(offered), "two variants give the same weather"
    assert _weather_fields(carla.WeatherParameters.ClearNoon)[WEATHER_FIELDS.index("fog_density")] < 10


@pytest.mark.parametrize("suite", ["train", "val", "rare_events"])
def test_suites_load_with_distinct_seeds(suite):
    name, episodes = load_suite(suite)
    assert name == suite and len(episodes) >= 11


def test_rare_event_seeds_are_held_out_from_training():
    train = {e.seed for e in load_suite("train")[1]} | {e.seed for e in load_suite("val")[1]}
    assert not train & {e.seed for e in load_suite("rare_events")[1]}


def _ranges(suite: str) -> dict[str, dict]:
    """scenario name -> {parameter: its range as the suite runs it}, ranges compared by value (so `2` and
    `{uniform: [2, 2]}` are the same range)."""
    def support(value):
        if not isinstance(value, dict):
            return (float(value), float(value))
        dist = parse_distribution(value)
        return dist.support() if hasattr(dist, "support") else tuple(dist.options)
    ranges: dict[str, dict] = {}
    for episode in load_suite(suite)[1]:
        ranges.setdefault(episode.scenario.scenario.name,
                          {k: support(v) for k, v in episode.scenario.parameters.items()})
    return ranges


@pytest.mark.parametrize("other", ["train", "val"])
def test_rare_event_parameter_ranges_differ_from_training(other):
    rare, seen = _ranges("rare_events"), _ranges(other)
    assert set(rare) <= set(seen), "every rare event is a library scenario that training also sees"
    for name, params in rare.items():
        assert params.keys() == seen[name].keys()
        changed = [k for k in params if params[k] != seen[name][k]]
        assert changed, f"{name}: rare_events runs it with {other}'s parameter ranges"


@pytest.fixture(scope="module")
def sim():
    with launch("town") as server:
        client = carla.Client(server.host, server.port)
        client.set_timeout(20.0)
        yield client


@dataclass
class Trace:
    """What a scripted drive recorded each tick, all from the world's snapshots and the client API."""
    run: ScenarioRun
    positions: dict[str, np.ndarray]  # actor id -> (T, 2) x, y
    ego_xy: np.ndarray  # (T, 2)
    ego_s: np.ndarray
    ego_speed: np.ndarray
    frames: list[int]
    in_junction: dict[str, np.ndarray]  # actor id -> (T,) bool, for vehicles
    governing_light: dict[str, list]  # actor id -> per tick the id of the light CARLA says governs it, or None
    light_states: dict[int, list]  # traffic light id -> per tick its state

    def speed(self, actor: str) -> np.ndarray:
        """(T,) speed from positions: metres moved since the previous tick over the tick length."""
        step = np.hypot(*np.diff(self.positions[actor], axis=0).T) / DT
        return np.concatenate([[0.0], step])

    def event(self, actor: str, step: int, what: str):
        found = [e for e in self.run.events if e.actor == actor and e.step == step and e.what == what]
        return found[0] if found else None


def _drive(client: carla.Client, path: Path, seed: int, suite: str | None = None) -> Trace:
    """Run the scenario (with `suite`'s parameter overrides, if given) with a scripted ego and record actor
    positions, lights and junction flags per tick."""
    spec = load_scenario(path) if suite is None else \
        next(e.scenario for e in load_suite(suite)[1] if e.scenario.file.resolve() == path.resolve())
    world = client.get_world()
    if not world.get_map().name.endswith(spec.scenario.map):
        world = client.load_world(spec.scenario.map)
    settings = world.get_settings()
    settings.synchronous_mode, settings.fixed_delta_seconds = True, DT
    world.apply_settings(settings)
    world_map = world.get_map()
    run = ScenarioRun(spec, seed)
    route = run.plan_route(world_map)
    start = route.transforms[0]
    ego = world.spawn_actor(world.get_blueprint_library().find(run.ego_blueprint()),
                            carla.Transform(start.location + carla.Location(z=0.3), start.rotation))
    run.setup(client, world, ego, route)
    ids = {runner.spec.id: runner.actor.id for runner in run.runners}
    vehicles = {runner.spec.id: runner.actor for runner in run.runners if runner.spec.kind == "vehicle"}
    lights = list(world.get_actors().filter("traffic.traffic_light"))
    positions = {name: [] for name in ids}
    in_junction = {name: [] for name in vehicles}
    governing = {name: [] for name in vehicles}
    light_states = {light.id: [] for light in lights}
    ego_xy, ego_s, ego_speed, frames = [], [], [], []
    control = SpeedController()
    ego_speed_goal = EGO_SPEED_SHARE * run.speed_limit_kmh / 3.6
    try:
        for _ in range(TICKS):
            frames.append(world.tick())
            snapshot = world.get_snapshot()
            run.tick(world, ego, snapshot)
            state = snapshot.find(ego.id)
            t, v = state.get_transform(), state.get_velocity().length()
            ego_xy.append((t.location.x, t.location.y))
            ego_s.append(run._ego_s)
            ego_speed.append(v)
            blocked = False
            forward = t.get_forward_vector()
            for name, actor_id in ids.items():
                loc = snapshot.find(actor_id).get_transform().location
                positions[name].append((loc.x, loc.y))
                dx, dy = loc.x - t.location.x, loc.y - t.location.y
                along, across = dx * forward.x + dy * forward.y, -dx * forward.y + dy * forward.x
                blocked |= (EGO_ALONGSIDE_M < along < EGO_STOP_GAP_M + EGO_STOP_HEADWAY_S * v
                            and abs(across) < EGO_LANE_HALF_M)
                if name in vehicles:
                    waypoint = world_map.get_waypoint(loc, project_to_road=False)
                    in_junction[name].append(waypoint is not None and waypoint.is_junction)
                    light = vehicles[name].get_traffic_light()
                    governing[name].append(light.id if light is not None else None)
            for light in lights:
                light_states[light.id].append(light.get_state())
            s, _ = route.project(t.location, near_s=run._ego_s)
            ahead = route.xy[route.index_at(s):route.index_at(s + 30) + 1]
            throttle, brake = (0.0, 1.0) if blocked else control.control(v, ego_speed_goal)
            steer = pure_pursuit(t.location.x, t.location.y, t.rotation.yaw, v, ahead, 2.9)
            ego.apply_control(carla.VehicleControl(throttle=throttle, steer=steer, brake=brake))
    finally:
        run.cleanup(client)
        ego.destroy()
        world.tick()
    return Trace(run, {k: np.array(v) for k, v in positions.items()}, np.array(ego_xy), np.array(ego_s),
                 np.array(ego_speed), frames, {k: np.array(v, dtype=bool) for k, v in in_junction.items()},
                 governing, light_states)


def _trigger_tick(trace: Trace, trigger, actor: str, k: int) -> None:
    """The trigger condition, recomputed from recorded positions, first holds at tick k (not at k - 1)."""
    ego_s, ego_speed = trace.ego_s, trace.ego_speed
    compiled = next(a for a in trace.run.compiled.actors if a.id == actor)
    if trigger.ego_time_to_arrival is not None:
        at_s = trigger.at_s if trigger.at_s is not None else compiled.route_s
        tta = (at_s - ego_s) / np.maximum(ego_speed, MIN_SPEED_FOR_TTA)
        assert tta[k] <= trigger.ego_time_to_arrival + 1e-6 < tta[k - 1], f"{actor} released at the wrong moment"
    if trigger.ego_distance is not None:
        if trigger.at_s is not None:
            point = trace.run.compiled.route.point_at(trigger.at_s).location
            reference = np.array([(point.x, point.y)] * len(ego_s))
        else:
            reference = trace.positions[actor]
        distance = np.hypot(*(trace.ego_xy - reference).T)
        slack = float(np.hypot(*(reference[k] - reference[k - 1]))) + 1e-3  # the actor's own move in a tick
        assert distance[k] <= trigger.ego_distance + slack, f"{actor} released with the ego {distance[k]:.1f} m away"
        assert distance[k - 1] > trigger.ego_distance - slack, f"{actor} released a tick late"
        assert (distance[:k - 1] > trigger.ego_distance - slack).all(), f"{actor} released late"
    if trigger.time is not None:  # scenario time counts ticks from the first one
        elapsed = (np.array(trace.frames) - trace.frames[0]) * DT
        assert elapsed[k] >= trigger.time - 1e-6 > elapsed[k - 1], f"{actor} released at the wrong time"


def _check_brake(trace: Trace, actor: str, k: int) -> None:
    """A hard brake: cruising when the step starts, then slowing at once to a stop at >= HARD_DECEL."""
    speed = trace.speed(actor)
    cruise = speed[k - 5:k + 1].mean()
    assert cruise > 5.0, f"{actor} was not driving when it braked ({cruise:.1f} m/s)"
    stop = k + int(np.argmax(speed[k:] < 0.1))
    assert stop > k, f"{actor} never stopped after braking"
    assert (np.diff(speed[k + 2:stop + 1]) <= 1e-3).all(), f"{actor} sped up while braking"
    decel = cruise / ((stop - k) * DT)
    assert decel >= HARD_DECEL, f"{actor} braked at {decel:.1f} m/s^2, not hard"


def _check_change_lane(trace: Trace, actor: str, k: int, finish: int, distance: float) -> None:
    """A cut-in: in a neighbouring lane when the step starts at tick k and still before it, in the ego's lane
    (the route's) soon after the step finishes at tick `finish`, having driven the step's distance, and
    there to the end."""
    route = trace.run.compiled.route
    lateral = np.array([route.project(carla.Location(x=x, y=y))[1] for x, y in trace.positions[actor]])
    assert abs(lateral[k]) > 2.5, f"{actor} was not in a neighbouring lane at the trigger ({lateral[k]:.1f} m)"
    assert np.ptp(lateral[max(k - 20, 0):k + 1]) < 0.3, f"{actor} moved over before the trigger"
    soon = min(k + 40, len(lateral) - 1)  # 2 s: a parked car pulls out from standstill
    assert abs(lateral[soon]) < abs(lateral[k]) - 0.5, f"{actor} did not start moving over at the trigger"
    travelled = np.hypot(*np.diff(trace.positions[actor][k:finish + 1], axis=0).T).sum()
    assert travelled >= distance - 0.5, f"{actor} ended its lane change after {travelled:.1f} m of {distance}"
    settled = np.abs(lateral[finish:finish + 60])  # 3 s
    assert settled.min() < 0.5, f"{actor} did not reach the ego's lane ({settled.min():.1f} m off)"
    assert abs(lateral[-1]) < 0.7, f"{actor} did not stay in the ego's lane ({lateral[-1]:.1f} m off)"


def _check_run_red_light(trace: Trace, actor: str, k: int) -> None:
    """It drives through its light's trigger volume while that light is red, enters the junction on red and
    comes out on the far side."""
    seen = [(t, light) for t, light in enumerate(trace.governing_light[actor]) if t >= k and light is not None]
    assert seen, f"{actor} never passed a traffic light's trigger volume"
    light = seen[-1][1]
    inside = np.flatnonzero(trace.in_junction[actor][k:]) + k
    assert len(inside), f"{actor} never entered the junction"
    enter, leave = inside[0], inside[-1]
    red = carla.TrafficLightState.Red
    states = trace.light_states[light]
    assert all(states[t] == red for t in range(seen[0][0], enter + 1)), f"{actor}'s light was not red"
    assert leave + 1 < len(states) and not trace.in_junction[actor][leave + 1], f"{actor} stayed in the junction"
    track = trace.positions[actor]
    across = np.hypot(*(track[leave + 1] - track[enter]))
    assert across > 15.0, f"{actor} came out {across:.1f} m from where it went in: it did not cross"


RARE = {e.scenario.file.resolve() for e in load_suite("rare_events")[1]}
CASES = [(p, None) for p in LIBRARY] + [(p, "rare_events") for p in LIBRARY if p.resolve() in RARE]


@pytest.mark.parametrize("path,suite", CASES, ids=[f"{p.stem}-{s or 'file'}" for p, s in CASES])
def test_behaviours_fire_as_written(sim, path, suite):
    """With the file's own parameters and with rare_events' harder ranges."""
    trace = _drive(sim, path, seed=1000, suite=suite)
    run, positions, frames = trace.run, trace.positions, trace.frames
    index = {frame: k for k, frame in enumerate(frames)}
    assert run.compiled.actors and set(positions) == {a.id for a in run.compiled.actors}
    for spec in run.compiled.actors:  # (the run's runners are gone after cleanup; its compiled actors stay)
        actor, steps, track = spec.id, spec.steps, positions[spec.id]
        moved = np.hypot(*(track - track[0]).T)
        first = next((j for j, step in enumerate(steps) if step.primitive != "lights"), len(steps))
        moves = any(step.primitive not in STANDING_PRIMITIVES for step in steps)
        if not moves:  # parked props and vehicles stay where they were placed (lights on, doors open, or not)
            assert moved.max() < MOVED_M, f"{actor} was meant to stay put"
        if first == len(steps):
            continue
        if steps[first].primitive != "wait":
            assert moved.max() > 5.0, f"{actor} should drive off at once"
        else:
            released = trace.event(actor, first, "finished")
            assert released, f"{actor}'s trigger never fired"
            k = index[released.frame]
            assert moved[:k + 1].max() < MOVED_M, f"{actor} moved before its trigger"
            if moves:
                assert moved[min(k + 40, len(moved) - 1)] > MOVED_M, f"{actor} did not move after its trigger"
            trigger = steps[first].wait
            _trigger_tick(trace, trigger, actor, k)
            if trigger.event is not None:
                source_actor, step, what = trigger.event.split(".")
                source = [e for e in run.events if e.actor == source_actor and e.name == step and e.what == what]
                assert source and source[0].frame <= released.frame
        for j, step in enumerate(steps):
            started = trace.event(actor, j, "started")
            if step.primitive not in ("brake", "change_lane", "run_red_light") and step.until is None:
                continue
            assert started, f"{actor}'s step {j} ({step.primitive}) never started"
            k = index[started.frame]
            if j > 0 and steps[j - 1].until is not None:  # released by the previous step's `until`
                _trigger_tick(trace, steps[j - 1].until, actor, k)
            if step.primitive == "brake":
                _check_brake(trace, actor, k)
            elif step.primitive == "change_lane":
                finished = trace.event(actor, j, "finished")
                assert finished, f"{actor}'s lane change never finished"
                _check_change_lane(trace, actor, k, index[finished.frame], float(step.change_lane.distance))
            elif step.primitive == "run_red_light":
                _check_run_red_light(trace, actor, k)


BLOCKED_DOOR = """name: blocked_door
map: town
ego:
  route: {start: {x: 95, y: 1.75}, length: 130}
actors:
  - id: box
    blueprint: static.prop.box01
    place: {x: 150, y: 3.2}
  - id: parked_car
    blueprint: vehicle.lincoln.mkz_2020
    place: {s: 55, lane: parked}
    behaviour:
      - wait: {ego_distance: 20}
      - door: {side: left}
"""


def test_a_door_that_cannot_be_spawned_refuses_the_scenario_and_leaves_nothing(sim, tmp_path):
    """A box stands where the parked car's door goes: setup names the actor and the door, and the world holds
    the same actors as before it (the box, the car and nothing of the door are left)."""
    path = tmp_path / "blocked_door.yaml"
    path.write_text(BLOCKED_DOOR)
    world = sim.get_world()
    if not world.get_map().name.endswith("town"):
        world = sim.load_world("town")
    run = ScenarioRun(load_scenario(path), 0)
    route = run.plan_route(world.get_map())
    start = route.transforms[0]
    ego = world.spawn_actor(world.get_blueprint_library().find("vehicle.tesla.model3"),
                            carla.Transform(start.location + carla.Location(z=0.3), start.rotation))
    world.tick()  # the client's actor list follows the world's snapshots: let the ego into one
    before = {a.id for a in world.get_actors()}
    try:
        with pytest.raises(RuntimeError, match="parked_car.*left door could not be spawned"):
            run.setup(sim, world, ego, route)
        world.tick()
        assert {a.id for a in world.get_actors()} == before
    finally:
        ego.destroy()
        world.tick()
