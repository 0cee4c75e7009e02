"""`slimdrive scenario search`: the scenario's distributions are the space, each trial is a concrete file, a
failing case found with cruise is a file that `slimdrive eval` reproduces exactly, and a search resumes."""
from __future__ import annotations

import json

import pytest

from scenarios.compile import draw, load_scenario
from scenarios.space import concrete_text, search_space
from scenarios.suites import SUITES_DIR
from slimdrive import main

SCENARIOS = SUITES_DIR.parent
FAST_ENV = ["env.rig=front1", "env.image_size_x=64", "env.image_size_y=32"]


def _trials(out) -> list[dict]:
    return [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]


def test_the_space_is_every_distribution_and_a_concrete_file_draws_nothing(tmp_path):
    spec = load_scenario(SCENARIOS / "spaces" / "crossing_walker.yaml")
    space = search_space(spec)
    assert space.names == ["weather", "parameters.release_tta", "parameters.walker_speed", "parameters.crossing_s",
                           "actors[0].blueprint", "actors[0].place.s", "actors[1].blueprint"]
    values = space.from_unit([0.999] * len(space))  # the top of every range, the last of every choice
    assert values["parameters.release_tta"] == pytest.approx(0.5 + 0.999 * 24.5)
    assert values["actors[1].blueprint"] == "walker.pedestrian.0005"
    file = tmp_path / "point.yaml"
    file.write_text(concrete_text(spec, values, "point"))
    concrete = load_scenario(file)
    assert len(search_space(concrete)) == 0
    # no draws left: every seed gives the same scenario, the one of the point
    (first, p0), (second, p1) = draw(concrete, 0), draw(concrete, 12345)
    assert first == second and p0 == p1 and p0["walker_speed"] == round(values["parameters.walker_speed"], 4)


def test_bad_searches_are_refused_before_any_episode(tmp_path, capsys):
    assert main(["scenario", "search", f"out={tmp_path}"]) == 2
    assert "path=FILE" in capsys.readouterr().out
    fixed = tmp_path / "fixed.yaml"
    fixed.write_text("name: fixed\nmap: straight\nego: {route: {start: {x: 680, y: -5.25}, length: 100}}\n")
    assert main(["scenario", "search", f"path={fixed}", f"out={tmp_path}/a"]) == 2
    assert "draws nothing" in capsys.readouterr().out
    space = SCENARIOS / "spaces" / "crossing_walker.yaml"
    assert main(["scenario", "search", f"path={space}", "sampler=annealing", f"out={tmp_path}/b"]) == 2
    assert "tpe, cmaes, random, lhs" in capsys.readouterr().out


def test_search_finds_cruise_hitting_the_jaywalker_and_eval_reproduces_the_file(tmp_path):
    out = tmp_path / "search"
    library = SCENARIOS / "library" / "jaywalker_parked_van.yaml"
    assert main(["scenario", "search", f"path={library}", "agent=cruise", "trials=2", "sampler=lhs",
                 "baseline=null", "seed=3", f"out={out}", *FAST_ENV]) == 0
    trials = _trials(out)
    failed = [t for t in trials if t["failed"]]
    assert failed, trials  # cruise never brakes: the walker is hit
    assert "collisions_pedestrian" in failed[0]["infractions"]
    report = json.loads((out / "report.json").read_text())
    assert report["search"]["failures"] == len(failed) and report["search"]["trials"] == 2
    # the failing file, run by `slimdrive eval` from the written suite, is the same episode
    assert main(["eval", "agent=cruise", f"suite={out / 'failures.yaml'}", f"out={tmp_path / 'eval'}",
                 *FAST_ENV]) == 0
    replayed = {r["scenario"]: r for r in map(json.loads, (tmp_path / "eval" / "episodes.jsonl").open())}
    for t in failed:
        name = t["file"].rsplit("/", 1)[1].removesuffix(".yaml")
        again = replayed[name]
        assert again["seed"] == 3
        assert again["driving_score"] == t["driving_score"]
        assert [i["kind"] for i in again["infractions"]] == t["infractions"]
        assert again["min_ttc_s"] == t["min_ttc_s"]


def test_tpe_search_resumes_after_its_finished_trials(tmp_path, capsys):
    pytest.importorskip("optuna", reason="sampler=tpe needs Optuna: pip install -e '.[search]'")
    out = tmp_path / "tpe"
    library = SCENARIOS / "library" / "lead_hard_brake.yaml"
    args = ["scenario", "search", f"path={library}", "agent=cruise", "sampler=tpe", "baseline=null",
            "objective=min_ttc", f"out={out}", *FAST_ENV]
    assert main([*args, "trials=2"]) == 0
    first = _trials(out)
    assert main([*args, "trials=3"]) == 0  # two told to the sampler again, one more run
    resumed = _trials(out)
    assert resumed[:2] == first and len(resumed) == 3 and resumed[2]["trial"] == 2
    assert all(t["value"] is not None for t in resumed)
    capsys.readouterr()
    assert main([*args, "trials=3", "sampler=random"]) == 2  # another sampler cannot continue this folder
    assert "sampler=tpe" in capsys.readouterr().out
