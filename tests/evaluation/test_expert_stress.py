"""The expert on what the generator and the library's newer files stage: it passes standing obstacles on the
side that is clear (a nudge, a lane of its direction, the oncoming lane last), yields to a walker crossing from
the far side at night, and is judged by the same suite runner as everything else."""
from __future__ import annotations

import json

import pytest

from scenarios.suites import SUITES_DIR, load_suite
from slimdrive import main

FAST_ENV = ["env.rig=front1", "env.image_size_x=64", "env.image_size_y=32"]


def _expert(tmp_path, entries: list[tuple[str, list[int]]]) -> list[dict]:
    suite = tmp_path / "suite.yaml"
    suite.write_text("name: expert_check\nentries:\n" + "".join(
        f"  - scenario: {SUITES_DIR.parent / path}\n    seeds: {seeds}\n" for path, seeds in entries))
    assert main(["eval", "agent=expert", f"suite={suite}", f"out={tmp_path / 'eval'}", *FAST_ENV]) == 0
    return [json.loads(line) for line in (tmp_path / "eval" / "episodes.jsonl").read_text().splitlines()]


def _clean(record: dict) -> bool:
    return record["driving_score"] >= 95.0 and not any(i["kind"].startswith("collisions_")
                                                       for i in record["infractions"])


@pytest.mark.slow
def test_the_expert_solves_the_new_library_scenarios(tmp_path):
    records = _expert(tmp_path, [("library/construction_zone.yaml", [1000, 1001, 1002]),
                                 ("library/night_crossing_far_side.yaml", [1000, 1001, 1002])])
    assert len(records) == 6 and all(map(_clean, records)), records


@pytest.mark.slow
def test_the_expert_passes_stalled_and_crashed_blockers_behind_warning_cones(tmp_path):
    """A cone then a stalled vehicle in its lane, and a crashed one, on multi-lane roads (the stress suite's first
    of each): before they were grouped and passed as one on a clear side, the expert nudged round the cone and
    then stood behind the vehicle until the timeout."""
    episodes = load_suite("stress")[1]
    picked = [next(e for e in episodes if e.key.startswith(prefix))
              for prefix in ("straight_blocker_stalled", "junction_blocker_crashed")]
    records = _expert(tmp_path, [(e.scenario.file.relative_to(SUITES_DIR.parent), [e.seed]) for e in picked])
    assert all(r["done"] == "completed" and r["route_completion"] > 95.0 for r in records), records
    assert all(map(_clean, records)), records
