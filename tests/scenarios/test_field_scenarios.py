"""The field scenarios of issue 15 (a door opening into the ego's lane, an emergency vehicle from behind, a flow of
crossing bicycles, an oncoming vehicle turning left across the ego's path at an unsignalised junction): each is
staged as written (where and when its actors move, from positions recorded every tick on the real server) and the
expert, driving the episode through the one rollout loop under eval's budget, passes it in every weather the file
offers (DS >= 95, no collision) by doing what the field does: yielding, moving aside, keeping clear. The emergency
vehicle is the exception: its DS is 90-94, the criteria's minimum-speed rule counting the emergency vehicle's own
speed (docs/scenarios.md), and its test asks DS >= 95 with the minimum-speed terms left out."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import carla
import numpy as np
import pytest

from agent.registry import make_agent
from envs.budget import ComputeBudget
from envs.driving_env import DrivingEnv
from envs.rollout import Observer, rollout
from scenarios.compile import draw, load_scenario, weather_of
from scenarios.metrics import score_route
from scenarios.suites import Episode, load_suite

LIBRARY = Path(__file__).resolve().parents[2] / "scenarios" / "library"
FAST_ENV = dict(rig="front1", image_size_x=64, image_size_y=32)
MIN_DS = 95.0


def weather_seeds(path: Path, first: int = 1000) -> dict[str, int]:
    """One seed from `first` on for each weather the file offers (clear, rain, fog, night)."""
    spec, seeds = load_scenario(path), {}
    offered = set(spec.scenario.weather.options)
    seed = first
    while set(seeds) != offered:
        seeds.setdefault(weather_of(draw(spec, seed)[0])[1], seed)
        seed += 1
    return seeds


def weather_params(path: Path) -> list:
    """`weather_seeds` as pytest parameters: the first weather in the default run, the others marked slow (each is
    a whole expert episode; the default run must stay within its time budget)."""
    seeds = sorted(weather_seeds(path).items())
    return [pytest.param(weather, seed, marks=[pytest.mark.slow] if i else [])
            for i, (weather, seed) in enumerate(seeds)]


@dataclass
class Recorder(Observer):
    """Per step: the ego's pose and speed, every scenario actor's (and anything it spawned) pose, yaw and speed."""
    ego: list = field(default_factory=list)  # (x, y, yaw, speed)
    actors: dict = field(default_factory=dict)  # name -> list of (x, y, yaw, speed)
    lights: dict = field(default_factory=dict)  # vehicle name -> list of its carla.VehicleLightState bits

    def on_reset(self, env, obs, info) -> None:
        self.ego, self.actors, self.lights = [], {}, {}

    def on_step(self, env, step) -> None:
        priv = env.unwrapped.privileged
        snapshot = priv.world.get_snapshot()
        self.ego.append(_pose(snapshot.find(priv.ego.id)))
        for runner in priv.scenario.runners:
            for name, actor_id in [(runner.spec.id, runner.actor.id)] + list(runner.owned.items()):
                state = snapshot.find(actor_id)
                if state is not None:
                    self.actors.setdefault(name, []).append(_pose(state))
            if runner.spec.kind == "vehicle":
                self.lights.setdefault(runner.spec.id, []).append(int(runner.actor.get_light_state()))

    def track(self, name: str) -> np.ndarray:
        return np.array(self.actors[name])


def _pose(state) -> tuple[float, float, float, float]:
    t, v = state.get_transform(), state.get_velocity()
    return t.location.x, t.location.y, t.rotation.yaw, float(np.hypot(v.x, v.y))


@pytest.fixture(scope="module")
def expert_env():
    env = DrivingEnv(**FAST_ENV)
    try:
        yield env
    finally:
        env.close()


def drive_expert(env: DrivingEnv, path: Path, seed: int) -> tuple[dict, Recorder]:
    agent = make_agent("expert", env)
    budget = ComputeBudget.for_env("orin_1ms_per_frame", env)  # eval's default budget
    budget.check(agent.footprint())
    recorder = Recorder()
    record = rollout(env, agent, budget, Episode(load_scenario(path), seed), observers=[recorder])
    return record, recorder


def summary(record: dict) -> str:
    return (f"{record['scenario']} seed {record['seed']} ({record['weather']}): DS {record['driving_score']:.2f}, "
            f"{record['done']}, failure {record['failure']}, infractions "
            f"{[(i['kind'], i.get('detail')) for i in record['infractions']]}")


def passed(record: dict, ignore_min_speed: bool = False) -> bool:
    """Completed with DS >= 95 and no collision; with `ignore_min_speed`, DS without the minimum-speed terms."""
    ds = record["driving_score"]
    if ignore_min_speed:
        kinds = [i["kind"] for i in record["infractions"] if i["kind"] != "min_speed_infractions"]
        ds = score_route(record["route_completion"], kinds, record["outside_lanes_pct"], ()).driving_score
    return (record["failure"] is None and record["done"] == "completed" and ds >= MIN_DS
            and not any(i["kind"].startswith("collisions_") for i in record["infractions"]))


def released_step(record: dict, actor: str, step: int = 0) -> int:
    """The rollout step at which `actor`'s step `step` finished (its trigger fired)."""
    frames = [e["frame"] for e in record["events"]]
    first = min(frames) if frames else 0
    found = [e for e in record["events"] if e["actor"] == actor and e["step"] == step and e["what"] == "finished"]
    assert found, f"{actor}'s step {step} never finished"
    return found[0]["frame"] - first


FIELD_FILES = ("unprotected_left_turn_across", "crossing_bicycle_flow", "emergency_vehicle_behind", "door_opening")


def test_the_field_suite_runs_each_field_scenario_in_every_weather_it_offers():
    """scenarios/suites/field.yaml: the four files, each with one seed per weather variant (clear, rain, fog,
    night), and nothing else; the files are library files, and in no other suite."""
    episodes = load_suite("field")[1]
    by_file: dict[str, set[str]] = {}
    for episode in episodes:
        weather = weather_of(draw(episode.scenario, episode.seed)[0])[1]
        by_file.setdefault(episode.scenario.file.stem, set()).add(weather)
    assert set(by_file) == set(FIELD_FILES) and len(episodes) == 4 * len(FIELD_FILES)
    for name, weathers in by_file.items():
        assert weathers == set(load_scenario(LIBRARY / f"{name}.yaml").scenario.weather.options), name
    for suite in sorted(p.stem for p in (LIBRARY.parent / "suites").glob("*.yaml") if p.stem != "field"):
        assert not {e.scenario.file.stem for e in load_suite(suite)[1]} & set(FIELD_FILES), suite


# ------------------------------------------------------------------------- (d) left turn across the ego's path
LEFT_TURN = LIBRARY / "unprotected_left_turn_across.yaml"


@pytest.mark.parametrize("weather,seed", weather_params(LEFT_TURN))
def test_expert_yields_to_a_vehicle_turning_left_across_its_path(expert_env, weather, seed):
    """The oncoming turner stands until its trigger, turns left through the unsignalised junction (about 90 deg)
    across the ego's lane while the ego is 15-40 m short of the crossing; the expert slows, lets it clear the lane
    and only then reaches the crossing point."""
    record, rec = drive_expert(expert_env, LEFT_TURN, seed)
    assert passed(record), summary(record)
    ego, turner = np.array(rec.ego), rec.track("turner")
    k = released_step(record, "turner")
    assert np.hypot(*(turner[:k, :2] - turner[0, :2]).T).max() < 0.3, "the turner moved before its trigger"
    turned = (turner[-1, 2] - turner[0, 2] + 180.0) % 360.0 - 180.0
    assert -100.0 < turned < -80.0, f"the turner's heading changed by {turned:.0f} deg: not a left turn"
    lane_x = ego[0, 0]  # the ego drives along x = 91.75 (towards -y)
    in_lane = np.flatnonzero(np.abs(turner[:, 0] - lane_x) < 1.75)
    assert len(in_lane) and in_lane[0] > k, "the turner never crossed the ego's lane"
    enter, leave = in_lane[0], in_lane[-1]
    crossing_y = turner[(enter + leave) // 2, 1]
    assert -100.0 < crossing_y < -80.0, f"it crossed at y={crossing_y:.1f}, not in the junction"
    ahead = ego[enter, 1] - crossing_y  # the ego's distance short of the crossing as the turner enters its lane
    assert 15.0 < ahead < 40.0, f"the ego was {ahead:.1f} m short of the crossing: no conflict"
    ego_at_crossing = int(np.argmax(ego[:, 1] < crossing_y + 2.5))  # its front bumper reaches the crossing
    assert ego_at_crossing > leave, "the ego reached the crossing before the turner had left its lane"
    assert ego[k:leave, 3].min() < 0.7 * ego[k, 3], "the expert did not slow down for the turner"


# ----------------------------------------------------------------------------------- (c) crossing bicycle flow
BICYCLE_FLOW = LIBRARY / "crossing_bicycle_flow.yaml"
BIKES = ("bike_1", "bike_2", "bike_3")


@pytest.mark.parametrize("weather,seed", weather_params(BICYCLE_FLOW))
def test_expert_waits_for_a_flow_of_crossing_bicycles(expert_env, weather, seed):
    """The three cyclists stand until the first one's trigger, then ride off together, in order and a few metres
    apart, straight through the junction across the ego's lane from its right, the first while the ego is 5-40 m
    short of the crossing; the expert slows and reaches the crossing only after the last one has left its lane."""
    record, rec = drive_expert(expert_env, BICYCLE_FLOW, seed)
    assert passed(record), summary(record)
    ego = np.array(rec.ego)
    k = released_step(record, "bike_1")
    lane_x, crossing_y = ego[0, 0], -91.75  # the ego drives along x = 181.75 (towards -y); the flow along y
    left_lane = []
    for name in BIKES:
        bike = rec.track(name)
        assert np.hypot(*(bike[:k, :2] - bike[0, :2]).T).max() < 0.3, f"{name} moved before the flow's trigger"
        assert released_step(record, name) == k, f"{name} did not ride off with the flow"
        assert np.abs(bike[:, 1] - crossing_y).max() < 0.5 and bike[-1, 0] < lane_x - 10.0, f"{name} did not cross"
        in_lane = np.flatnonzero(np.abs(bike[:, 0] - lane_x) < 1.75 + 1.0)  # its footprint over the ego's lane
        left_lane.append(in_lane[-1])
        if name == "bike_1":
            first_in = in_lane[0]
    assert left_lane == sorted(left_lane), "the cyclists did not cross in order"
    spacing = [rec.track(b)[first_in, 0] for b in BIKES]
    assert all(2.5 < b - a < 10.0 for a, b in zip(spacing, spacing[1:])), f"not a flow: at {spacing}"
    short = ego[first_in, 1] - crossing_y
    assert 5.0 < short < 40.0, f"the ego was {short:.1f} m short of the crossing when the flow reached its lane"
    ego_at_crossing = int(np.argmax(ego[:, 1] < crossing_y + 2.5))  # its front bumper at the crossing
    assert ego_at_crossing > left_lane[-1], "the ego reached the crossing before the last cyclist had cleared it"
    assert ego[k:left_lane[-1], 3].min() < 0.5 * ego[k, 3], "the expert did not slow down for the flow"


# ---------------------------------------------------------------------------- (b) emergency vehicle from behind
EMERGENCY = LIBRARY / "emergency_vehicle_behind.yaml"


@pytest.mark.parametrize("weather,seed", weather_params(EMERGENCY))
def test_expert_makes_way_for_an_emergency_vehicle_from_behind(expert_env, weather, seed):
    """The ambulance or fire truck has its beacons on from the first tick, stands behind the ego in the ego's lane
    until its trigger and then comes up faster than the ego may drive; the expert moves into a free lane of its
    direction before it arrives, is there while it goes past, and returns to its lane."""
    record, rec = drive_expert(expert_env, EMERGENCY, seed)
    # The criteria's minimum-speed rule compares the ego with every vehicle within 50 m, the emergency vehicle
    # included (the Leaderboard uses its background traffic only), so making way for one that drives 15-17 m/s
    # costs the ego minimum-speed terms (docs/scenarios.md): those aside, the route must score >= 95.
    assert passed(record, ignore_min_speed=True), summary(record)
    ego, ev = np.array(rec.ego), rec.track("emergency")
    beacons = int(carla.VehicleLightState.Special1) | int(carla.VehicleLightState.Special2)
    assert all(bits & beacons == beacons for bits in rec.lights["emergency"]), "the beacons were not on throughout"
    lane_y, limit = ego[0, 1], 40.0 / 3.6  # the ego's lane (it drives towards -x) and its speed limit
    assert abs(ev[0, 1] - lane_y) < 0.3 and 10.0 < ev[0, 0] - ego[0, 0] < 20.0, "not behind the ego in its lane"
    k = released_step(record, "emergency", step=1)  # step 0 switches the beacons on
    assert np.hypot(*(ev[:k, :2] - ev[0, :2]).T).max() < 0.3, "it moved before its trigger"
    assert ev[:, 3].max() > limit + 0.5, f"it never drove faster than the ego may ({ev[:, 3].max():.1f} m/s)"
    behind = ev[:, 0] - ego[:, 0]  # > 0 while it is behind the ego (both drive towards -x)
    passing = np.flatnonzero(np.abs(behind) < 5.0)  # alongside: centres within about a car length
    assert len(passing) and behind[-1] < -10.0, "it never went past the ego"
    gap = np.abs(ego[passing, 1] - ev[passing, 1])
    assert gap.min() > 3.0, f"the ego was not out of its lane while it went past ({gap.min():.1f} m apart)"
    assert abs(ev[passing, 1] - lane_y).max() < 0.5, "the emergency vehicle left its lane to get past"
    assert abs(ego[-1, 1] - lane_y) < 0.5, "the ego did not return to its lane"
    traffic = rec.track("traffic")
    assert abs(traffic[:, 1] - traffic[0, 1]).max() < 0.3, "the traffic left its lane"


# -------------------------------------------------------------------------------- (a) a door opening into the lane
DOOR = LIBRARY / "door_opening.yaml"
DOOR_NAME = "parked_car.door_left"


def _corners(x: float, y: float, yaw_deg: float, half_len: float, half_width: float) -> np.ndarray:
    yaw = np.radians(yaw_deg)
    c, s = np.cos(yaw), np.sin(yaw)
    local = np.array([(half_len, half_width), (half_len, -half_width), (-half_len, -half_width),
                      (-half_len, half_width)])
    return np.stack([x + local[:, 0] * c - local[:, 1] * s, y + local[:, 0] * s + local[:, 1] * c], axis=1)


def _gap(a: np.ndarray, b: np.ndarray) -> float:
    """The distance between two rectangles (corners in order), 0 when they overlap (separating axis test)."""
    for poly in (a, b):
        for k in range(4):
            edge = poly[(k + 1) % 4] - poly[k]
            axis = np.array([-edge[1], edge[0]]) / np.hypot(*edge)
            pa, pb = a @ axis, b @ axis
            if pa.max() < pb.min() or pb.max() < pa.min():
                break
        else:
            continue
        break
    else:
        return 0.0

    def point_segment(p, q, r):
        t = np.clip(np.dot(p - q, r - q) / np.dot(r - q, r - q), 0.0, 1.0)
        return float(np.hypot(*(p - (q + t * (r - q)))))
    return min(point_segment(p, poly[k], poly[(k + 1) % 4]) for one, poly in ((a, b), (b, a)) for p in one
               for k in range(4))


@pytest.mark.parametrize("weather,seed", weather_params(DOOR))
def test_expert_keeps_clear_of_a_door_opening_into_its_lane(expert_env, weather, seed):
    """The parked car's door lies closed along its side until the trigger, swings open to the drawn angle in its
    swing time while the ego is 12-35 m short of it, stands 0.8 m or more into the ego's lane for six seconds and
    closes again; the expert keeps at least 0.25 m between its body and the door (it passes within the road)."""
    record, rec = drive_expert(expert_env, DOOR, seed)
    assert passed(record), summary(record)
    ego, door, car = np.array(rec.ego), rec.track(DOOR_NAME), rec.track("parked_car")
    spec = load_scenario(DOOR)
    angle = draw(spec, seed)[1]["door_angle"]
    k = released_step(record, "parked_car")
    opened = released_step(record, "parked_car", step=1)
    closing = released_step(record, "parked_car", step=2)
    assert np.ptp(door[:k, :3], axis=0).max() < 1e-3, "the door moved before its trigger"
    assert (opened - k) * 0.05 == pytest.approx(1.0, abs=0.051), "the door did not swing open in its swing time"
    assert door[opened + 1, 2] - door[0, 2] == pytest.approx(angle, abs=0.5), "the door is not open to its angle"
    assert (closing - opened) * 0.05 == pytest.approx(6.0, abs=0.051), "the door did not stay open six seconds"
    assert np.abs(door[-1, :3] - door[0, :3]).max() < 1e-3, "the door did not close again"
    # the door's reach into the ego's lane (the lane's right edge is 3.5 m right of the road's centre, y = 3.5)
    panel = [_corners(*door[t, :3], 0.90, 0.20) for t in range(len(door))]
    reach = 3.5 - np.array([p[:, 1].min() for p in panel])
    assert reach[:k].max() < 0.35 and reach[opened + 1:closing].min() > 0.8, "the door did not open into the lane"
    short = car[0, 0] - ego[k, 0]  # the ego drives along +x
    assert 12.0 < short < 35.0, f"the ego was {short:.1f} m short of the car when the door opened"
    half_len, half_width = 2.40, 1.08  # vehicle.tesla.model3 (the ego)
    clearance = min(_gap(_corners(*ego[t, :3], half_len, half_width), panel[t]) for t in range(len(ego)))
    assert clearance > 0.25, f"the ego came within {clearance:.2f} m of the door"
