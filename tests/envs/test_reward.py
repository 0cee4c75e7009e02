"""DrivingEnv's reward charges each infraction what it takes off the Leaderboard 2.0 infraction penalty of
`scenarios/metrics.py`, percentage-scaled kinds included, checked kind by kind and over a real episode."""
from __future__ import annotations

import math

import pytest

from envs.driving_env import DrivingEnv, infraction_factor
from scenarios.compile import load_scenario
from scenarios.criteria import ENDS_ROUTE, KINDS, PENALTY, Infraction
from scenarios.engine import ScenarioRun
from scenarios.metrics import infraction_penalty, score_route

OUTSIDE_PCT = 12.5
QUARTERS = [100.0, 40.0, 100.0, 85.0]


def _infraction(kind: str, **detail) -> Infraction:
    return Infraction(kind, 0, 0.0, (0.0, 0.0, 0.0), detail)


def _alone(infraction: Infraction) -> float:
    """The Leaderboard penalty of a route whose only infraction is this one."""
    if infraction.kind == "outside_route_lanes":
        return score_route(100.0, [infraction.kind], OUTSIDE_PCT, []).infraction_penalty
    if infraction.kind == "min_speed_infractions":
        return score_route(100.0, [infraction.kind], 0.0, [QUARTERS[infraction.detail["quarter"]]]).infraction_penalty
    return score_route(100.0, [infraction.kind], 0.0, []).infraction_penalty


def test_each_infraction_kind_has_the_factor_the_leaderboard_metric_gives_it():
    recorded = [_infraction(kind) for kind in PENALTY]
    recorded.append(_infraction("outside_route_lanes", percentage=OUTSIDE_PCT))
    recorded += [_infraction("min_speed_infractions", quarter=q, percentage=p)
                 for q, p in enumerate(QUARTERS) if p < 100]
    for infraction in recorded:
        factor = infraction_factor(infraction, OUTSIDE_PCT, QUARTERS)
        assert factor == pytest.approx(_alone(infraction)), infraction.kind
    # Together they make the route's penalty, as the rollout loop (envs/rollout.py) scores it.
    product = math.prod(infraction_factor(i, OUTSIDE_PCT, QUARTERS) for i in recorded)
    route = score_route(100.0, [i.kind for i in recorded], OUTSIDE_PCT, QUARTERS)
    assert product == pytest.approx(route.infraction_penalty)
    # Kinds that end the route have no factor: the reward charges them in full (module docstring).
    for kind in ENDS_ROUTE:
        assert infraction_factor(_infraction(kind), OUTSIDE_PCT, QUARTERS) == 0.0
    assert {i.kind for i in recorded} | set(ENDS_ROUTE) == set(KINDS), "every kind has a defined cost"


SHOULDER = """\
name: parked_on_the_shoulder
description: A car parked on the shoulder of the ego's road.
map: straight
ego:
  route: {start: {x: 680, y: -5.25}, length: 200}
actors:
  - id: parked
    blueprint: vehicle.audi.a2
    place: {s: 45, lane: shoulder}
"""
SHOULDER_Y = -11.5  # the shoulder's centre line beside the route (the road runs along -x)


def test_swerving_onto_the_shoulder_into_a_parked_car_costs_the_collision_and_the_outside_lanes_share(tmp_path):
    """With `end_on_collision` (the training option) the collision ends the route, which records
    outside-route-lanes in the same step; the return is route completion minus the scale times what both take
    off the Leaderboard penalty."""
    file = tmp_path / "shoulder.yaml"
    file.write_text(SHOULDER)
    env = DrivingEnv(rig="front1", image_size_x=64, image_size_y=32, end_on_collision=True)
    try:
        _, info = env.reset(seed=0, options={"scenario": ScenarioRun(load_scenario(file), 0)})
        start_completion, total = info["route_completion"], 0.0
        for _ in range(300):
            # Steer for a point 10 m ahead on the shoulder's centre line, so the ego leaves its lane for good.
            transform = env.privileged.ego.get_transform()
            yaw = math.radians(transform.rotation.yaw)
            dx, dy = -10.0, SHOULDER_Y - transform.location.y
            ahead = dx * math.cos(yaw) + dy * math.sin(yaw), -dx * math.sin(yaw) + dy * math.cos(yaw)
            steer = max(-1.0, min(1.0, 2.0 * math.atan2(ahead[1], ahead[0])))
            _, reward, terminated, truncated, info = env.step([steer, 0.6, 0.0])
            total += reward
            if terminated or truncated:
                break
        assert terminated and info["done_reason"] == "collision"
        assert sorted(i["kind"] for i in info["new_infractions"]) == ["collisions_vehicle", "outside_route_lanes"]
        outside_pct = env.privileged.criteria.outside_lanes_pct
        assert outside_pct > 10.0
        cost = (1.0 - infraction_penalty(["collisions_vehicle"])) + (1.0 - infraction_penalty((), outside_pct))
        scale = float(env.cfg.reward.infraction_scale)
        assert total == pytest.approx(info["route_completion"] - start_completion - scale * cost, abs=1e-6)
    finally:
        env.close()
