"""Bad scenario files: each gives exactly one error naming the file, the line, the field and a fix."""
from __future__ import annotations

import re

import pytest

from scenarios.compile import validate_file
from scenarios.errors import ScenarioError
from slimdrive import main

GOOD = """\
name: t
map: town
ego:
  route: {start: {x: 95, y: 1.75}, length: 100}
actors:
  - id: walker
    blueprint: walker.pedestrian.0001
    place: {s: 40, lane: sidewalk}
    behaviour:
      - wait: {ego_time_to_arrival: 2.0}
      - name: go
        cross: {speed: 2.0}
"""

# (case, text replacing GOOD, expected line, field, words the message must hold)
CASES = [
    ("unknown blueprint", GOOD.replace("walker.pedestrian.0001", "walker.pedestrain.0001"), 7,
     "actors[0].blueprint", "did you mean"),
    ("placement off the road", GOOD.replace("{s: 40, lane: sidewalk}", "{x: 5000, y: 5000}"), 8,
     "actors[0].place.x", "off the road"),
    ("lane missing", GOOD.replace("{s: 40, lane: sidewalk}", "{s: 40, lane: left}"), 8,
     "actors[0].place.lane", "no driving lane left"),
    ("s beyond the route", GOOD.replace("{s: 40,", "{s: 400,"), 8, "actors[0].place.s", "beyond the end"),
    ("unknown trigger", GOOD.replace("ego_time_to_arrival: 2.0", "ego_speed: 2.0"), 10,
     "actors[0].behaviour[0].wait.ego_speed", "unknown key"),
    ("negative speed", GOOD.replace("cross: {speed: 2.0}", "cross: {speed: -2.0}"), 12,
     "actors[0].behaviour[1].cross.speed", "out of range"),
    ("distribution out of range", GOOD.replace("cross: {speed: 2.0}", "cross: {speed: {uniform: [-1, 2]}}"), 12,
     "actors[0].behaviour[1].cross.speed", "goes out of range"),
    ("uniform reversed", GOOD.replace("ego_time_to_arrival: 2.0", "ego_time_to_arrival: {uniform: [3, 1]}"), 10,
     "actors[0].behaviour[0].wait.ego_time_to_arrival", "above high"),
    ("normal unclipped on a bounded field", GOOD.replace("cross: {speed: 2.0}",
     "cross: {speed: {normal: {mean: 2, std: 1}}}"), 12, "actors[0].behaviour[1].cross.speed", "min/max"),
    ("yaml syntax error", GOOD.replace("  - id: walker", "  - id: walker: x"), 6, "", "YAML syntax"),
    ("missing map", GOOD.replace("map: town\n", ""), 1, "map", "required key 'map'"),
    ("unknown map", GOOD.replace("map: town", "map: townn"), 2, "map", "unknown map"),
    ("CARLA town that does not exist", GOOD.replace("map: town", "map: Town10_Opt"), 2, "map", "Town10HD_Opt"),
    ("CARLA town without an _Opt build", GOOD.replace("map: town", "map: Town12_Opt"), 2, "map", "unknown map"),
    ("unknown weather", GOOD.replace("map: town", "map: town\nweather: ClearNooon"), 3, "weather", "did you mean"),
    ("two primitives in a step", GOOD.replace("cross: {speed: 2.0}", "cross: {speed: 2.0}\n        idle: {}"), 11,
     "actors[0].behaviour[1]", "exactly one primitive"),
    ("walker told to follow a lane", GOOD.replace("cross: {speed: 2.0}", "follow_lane: {speed: 2.0}"), 12,
     "actors[0].behaviour[1].follow_lane", "cannot 'follow_lane'"),
    ("event of an unknown step", GOOD.replace("ego_time_to_arrival: 2.0", "event: van.go.started"), 10,
     "actors[0].behaviour[0].wait.event", "no actor 'van'"),
    ("duplicate actor id", GOOD + "  - id: walker\n    blueprint: walker.pedestrian.0002\n    place: {s: 50}\n", 13,
     "actors[1].id", "used twice"),
    ("unknown parameter", GOOD.replace("cross: {speed: 2.0}", "cross: {speed: $pace}"), 12,
     "actors[0].behaviour[1].cross.speed", "unknown parameter"),
    ("route with two forms", GOOD.replace("length: 100}", "length: 100, goal: {x: 150, y: 1.75}}"), 4,
     "ego.route", "route form"),
    ("start off the road", GOOD.replace("{x: 95, y: 1.75}", "{x: 95, y: 900}"), 4, "ego.route.start",
     "not on a driving lane"),
]


@pytest.mark.parametrize("case,text,line,field,words", CASES, ids=[c[0] for c in CASES])
def test_one_clear_error(tmp_path, case, text, line, field, words):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ScenarioError) as caught:
        validate_file(path)
    error = caught.value
    message = str(error)
    assert (error.line, error.field) == (line, field), message
    assert message.startswith(f"{path}:{line}: {field or '<file>'}: ")
    assert words in message and "Fix: " in message and error.fix


def test_the_good_file_is_good(tmp_path):
    path = tmp_path / "good.yaml"
    path.write_text(GOOD)
    (compiled,) = validate_file(path)
    assert compiled.actors[0].route_s == 40.0


def test_every_carla_town_the_error_names_is_accepted(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(GOOD.replace("map: town", "map: Town11"))
    with pytest.raises(ScenarioError) as caught:
        validate_file(path)
    named = re.findall(r"Town\w+", str(caught.value).split("CARLA 0.9.16 town", 1)[1])
    assert "Town10HD_Opt" in named and "Town01" in named and "Town15" in named
    for town in named:
        path.write_text(GOOD.replace("map: town", f"map: {town}"))
        assert validate_file(path) == []  # schema ok; map checks need a CARLA server for a town


def test_validate_command_exits_non_zero_on_a_bad_file(tmp_path, capsys):
    bad, good = tmp_path / "bad.yaml", tmp_path / "good.yaml"
    bad.write_text(CASES[0][1])
    good.write_text(GOOD)
    assert main(["scenario", "validate", f"paths=[{bad},{good}]"]) == 1
    out = capsys.readouterr().out
    assert out.count("error ") == 1 and f"{bad}:7" in out and "1/2 valid" in out
    assert main(["scenario", "validate", f"paths=[{good}]"]) == 0
