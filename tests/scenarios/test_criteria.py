"""Leaderboard criteria through the stock client: running a red light in closed loop, and the collision
deduplication rule at its boundaries."""
from __future__ import annotations

import math
from dataclasses import dataclass

import carla
import numpy as np
import pytest

from envs.driving_env import DrivingEnv
from scenarios.criteria import MIN_MOVING_SPEED, EpisodeCriteria
from scenarios.route import route_from_length


def _follow_route(obs) -> np.ndarray:
    """Steer at the route's target point at a modest throttle (ignores lights: the test sets them)."""
    x, y = (float(v) for v in obs["target_point"])
    return np.array([np.clip(1.5 * math.atan2(y, max(x, 0.1)), -1.0, 1.0), 0.55, 0.0], np.float32)


@pytest.mark.parametrize("state, expected", [(carla.TrafficLightState.Red, 1), (carla.TrafficLightState.Green, 0)])
def test_crossing_the_junction_on_red_is_a_red_light_infraction(state, expected):
    env = DrivingEnv(map="junction", rig="front1", image_size_x=64, image_size_y=32, route_length_m=120.0)
    try:
        obs, _ = env.reset(seed=0)
        handles = env.privileged
        for light in handles.world.get_actors().filter("traffic.traffic_light"):
            light.set_state(state)
            light.freeze(True)
        crossed = False
        for _ in range(400):
            obs, _, terminated, truncated, info = env.step(_follow_route(obs))
            crossed |= handles.map.get_waypoint(handles.ego.get_location()).is_junction
            if terminated or truncated or (crossed and info["route_completion"] > 90):
                break
        assert crossed, "the route did not lead through the junction"
        kinds = [i["kind"] for i in info["infractions"]]
        assert kinds.count("red_light") == expected, kinds
        if expected:
            (red,) = [i for i in info["infractions"] if i["kind"] == "red_light"]
            lights = {light.id for light in handles.world.get_actors().filter("traffic.traffic_light")}
            assert red["detail"]["traffic_light_id"] in lights
    finally:
        env.close()


# ------------------------------------------------------------------------------- collision deduplication
# The Leaderboard 2.0 CollisionTest rule (scenarios/criteria.py, EpisodeCriteria._collision_events) at its
# boundaries. The simulator cannot be made to collide at chosen times, places and speeds, so the real criterion,
# on a real ego and real other actors on the loopback simulator, is fed contacts in the shape its collision
# sensor delivers (frame, other_actor); where the ego is and how fast it goes come from the simulator's snapshot.
@dataclass
class _Contact:
    frame: int
    other_actor: carla.Actor


class _Judge:
    """One EpisodeCriteria on an ego that the test places on its route at a chosen speed, one tick at a time."""

    def __init__(self, world: carla.World):
        self.world, world_map = world, world.get_map()
        spawns = world_map.get_spawn_points()
        library = world.get_blueprint_library()
        self.ego = world.spawn_actor(library.find("vehicle.lincoln.mkz_2020"), spawns[0])
        self.others = [world.spawn_actor(library.find("vehicle.audi.a2"), spawns[i]) for i in (5, 9)]
        self.route = route_from_length(world_map, spawns[0].location, 200.0)
        self.criteria = EpisodeCriteria(world, self.ego, self.route, timeout_s=600.0)
        self.world.tick()
        self.criteria.update(self.world.get_snapshot())  # the episode's first tick: its clock starts here

    def drive_to(self, s: float, speed: float, seconds: float = 0.0) -> None:
        """Let `seconds` pass with the ego standing where it is, then put it at `s` m along its route, moving at
        `speed` m/s (left moving, it would drive away while the seconds pass and be > 5 m off before the contact)."""
        self.ego.set_target_velocity(carla.Vector3D())
        for _ in range(round(seconds / 0.05)):
            self.world.tick()
            self._drain()
        point = self.route.point_at(s)
        self.ego.set_transform(point)
        self.ego.set_target_velocity(point.get_forward_vector() * speed)
        self.world.tick()
        self._drain()

    def _drain(self) -> None:
        self.criteria.update(self.world.get_snapshot())

    def contact(self, other: carla.Actor) -> list[str]:
        """A contact with `other` in the tick just made; the kinds it was counted as."""
        self.criteria._collisions.put(_Contact(self.world.get_snapshot().frame, other))  # as sensor.listen() would
        before = len(self.criteria.infractions)
        self.world.tick()
        snapshot = self.world.get_snapshot()
        self.speed = snapshot.find(self.ego.id).get_velocity().length()  # the speed the criterion judges it at
        self.criteria.update(snapshot)
        return [i.kind for i in self.criteria.infractions[before:] if i.kind.startswith("collisions")]


@pytest.fixture
def judge(world):
    judge = _Judge(world)
    yield judge
    judge.criteria.destroy()


def test_the_same_actor_counts_again_only_after_5_s_and_5_m(judge):
    car = judge.others[0]
    judge.drive_to(20.0, 3.0)
    assert judge.contact(car) == ["collisions_vehicle"]
    judge.drive_to(22.0, 3.0)  # 2 m on, at once: same actor, same place
    assert judge.contact(car) == []
    judge.drive_to(30.0, 3.0)  # 10 m from where it was charged, but the same actor < 5 s after
    assert judge.contact(car) == []
    judge.drive_to(31.0, 3.0, seconds=5.5)  # > 5 s and > 5 m: the same actor counts a second time
    assert judge.contact(car) == ["collisions_vehicle"]
    judge.drive_to(33.0, 3.0, seconds=5.5)  # > 5 s on, but within 5 m of where it was last charged
    assert judge.contact(car) == []
    judge.drive_to(40.0, 3.0)  # and once 5 m away from there, it counts a third time
    assert judge.contact(car) == ["collisions_vehicle"]
    assert [i.kind for i in judge.criteria.infractions if i.kind.startswith("collisions")] == \
        ["collisions_vehicle"] * 3


def test_a_second_actor_counts_once_the_ego_has_moved_5_m(judge):
    first, second = judge.others
    judge.drive_to(20.0, 3.0)
    assert judge.contact(first) == ["collisions_vehicle"]
    judge.drive_to(22.0, 3.0)  # another actor, but within 5 m of where the last one was charged
    assert judge.contact(second) == []
    judge.drive_to(26.0, 3.0)  # 6 m on, 0.1 s later: another actor counts
    assert judge.contact(second) == ["collisions_vehicle"]


def test_a_contact_below_0_1_m_s_counts_zero(judge):
    judge.drive_to(20.0, 0.08)
    assert judge.contact(judge.others[0]) == []
    assert 0.0 < judge.speed < MIN_MOVING_SPEED, judge.speed  # moving, but slower than the threshold
    assert not [i for i in judge.criteria.infractions if i.kind.startswith("collisions")]
    judge.drive_to(20.0, 1.0)  # the same actor, moving: counted (nothing was remembered of the stopped contact)
    assert judge.contact(judge.others[0]) == ["collisions_vehicle"]
