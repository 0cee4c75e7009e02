"""Closed loop through DrivingEnv and the compute budget: the expert solves the rare events, the naive cruise
baseline does not, and the same seed gives the same scores."""
from __future__ import annotations

import json

import pytest

from scenarios import metrics
from scenarios.suites import SUITES_DIR
from slimdrive import main

LIBRARY = SUITES_DIR.parent / "library"

FAST_ENV = ["env.rig=front1", "env.image_size_x=64", "env.image_size_y=32"]


def _eval(tmp_path, agent: str, suite: str, *extra: str) -> dict:
    out = tmp_path / agent
    assert main(["eval", f"agent={agent}", f"suite={suite}", f"out={out}", *FAST_ENV, *extra]) == 0
    assert (out / "episodes.csv").exists()
    return json.loads((out / "results.json").read_text())


def _one_scenario_suite(tmp_path, scenario: str, seeds: list[int]) -> str:
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"name: one\nentries:\n  - scenario: {LIBRARY / scenario}.yaml\n    seeds: {seeds}\n")
    return str(suite)


def _episodes(tmp_path, agent: str) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / agent / "episodes.jsonl").read_text().splitlines()]


def test_expert_brakes_for_the_jaywalker_and_cruise_hits_it_once_and_drives_on(tmp_path):
    suite = _one_scenario_suite(tmp_path, "jaywalker_parked_van", [1000])
    expert = _eval(tmp_path, "expert", suite)
    cruise = _eval(tmp_path, "cruise", suite)
    assert expert["scoring_version"] == cruise["scoring_version"] == metrics.SCORING_VERSION
    assert cruise["scoring_deviations"] == metrics.deviations(end_on_collision=False)
    assert expert["driving_score"] >= 95.0
    assert "collisions_pedestrian" not in expert["scenarios"]["jaywalker_parked_van"]["infractions"]
    # Leaderboard 2.0: the route goes on after the collision, and the ego pushing on against the walker for
    # several ticks (one contact event per tick) is one collision (CollisionTest's 5 m / 5 s memory)
    (episode,) = _episodes(tmp_path, "cruise")
    assert episode["done"] == "completed" and episode["route_completion"] > 99.0
    assert [i["kind"] for i in episode["infractions"]].count("collisions_pedestrian") == 1
    assert episode["infraction_penalty"] <= 0.5 and cruise["driving_score"] <= 50.0


def test_ending_at_the_first_collision_is_a_training_option_that_the_results_state(tmp_path):
    suite = _one_scenario_suite(tmp_path, "jaywalker_parked_van", [1000])
    cruise = _eval(tmp_path, "cruise", suite, "env.end_on_collision=true")
    (episode,) = _episodes(tmp_path, "cruise")
    assert episode["done"] == "collision" and episode["route_completion"] < 60.0
    assert metrics.END_ON_COLLISION_DEVIATION in cruise["scoring_deviations"]


def test_same_seed_same_scores_and_resume(tmp_path):
    suite = _one_scenario_suite(tmp_path, "lead_hard_brake", [1000])
    first = _eval(tmp_path, "cruise", suite)
    second = _eval(tmp_path / "again", "cruise", suite)
    keys = ("driving_score", "route_completion", "infraction_penalty")
    assert [first[k] for k in keys] == [second[k] for k in keys]
    resumed = _eval(tmp_path / "again", "cruise", suite)  # everything already written: nothing reruns
    assert resumed["episodes_run"] == 1 and resumed["driving_score"] == second["driving_score"]


@pytest.mark.slow
def test_expert_masters_rare_events_and_cruise_does_not(tmp_path):
    expert = _eval(tmp_path, "expert", "rare_events")
    cruise = _eval(tmp_path, "cruise", "rare_events")
    assert expert["driving_score"] >= 95.0
    assert all("collisions_pedestrian" not in row["infractions"] for row in expert["scenarios"].values())
    assert cruise["driving_score"] < expert["driving_score"] - 30.0
