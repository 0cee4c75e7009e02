"""Bad scenario files: each gives exactly one error naming the file, the line, the field and a fix."""
from __future__ import annotations

import re
import time

import pytest

from scenarios.compile import validate_file
from scenarios.errors import ScenarioError
from scenarios.source import MAX_FILE_BYTES
from scenarios.suites import load_suite
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
    ("door on a vehicle that drives", GOOD.replace("walker.pedestrian.0001", "vehicle.tesla.model3")
     .replace("{s: 40, lane: sidewalk}", "{s: 40}").replace("cross: {speed: 2.0}",
     "door: {side: left}\n      - follow_lane: {speed: 5.0}"), 12, "actors[0].behaviour[1].door", "may not drive"),
    ("door opened too far", GOOD.replace("walker.pedestrian.0001", "vehicle.tesla.model3")
     .replace("{s: 40, lane: sidewalk}", "{s: 40}").replace("cross: {speed: 2.0}", "door: {angle: 95}"), 12,
     "actors[0].behaviour[1].door.angle", "out of range"),
    ("unknown vehicle light", GOOD.replace("walker.pedestrian.0001", "vehicle.tesla.model3")
     .replace("{s: 40, lane: sidewalk}", "{s: 40}").replace("cross: {speed: 2.0}", "lights: {state: [siren]}"),
     12, "actors[0].behaviour[1].lights.state[0]", "special1"),
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
    # Non-finite numbers: a NaN pose made an actor that nothing collides with (issue 17).
    ("yaw NaN", GOOD.replace("{s: 40, lane: sidewalk}", "{s: 40, lane: sidewalk, yaw: .nan}"), 8,
     "actors[0].place.yaw", "nan is not a finite number"),
    ("x infinite", GOOD.replace("{s: 40, lane: sidewalk}", "{x: .inf, y: 3}"), 8, "actors[0].place.x",
     "inf is not a finite number"),
    ("length infinite", GOOD.replace("length: 100", "length: .inf"), 4, "ego.route.length", "not a finite number"),
    ("timeout infinite", GOOD + "criteria: {timeout_s: .inf}\n", 13, "criteria.timeout_s", "not a finite number"),
    ("parameter NaN", GOOD.replace("name: t\n", "name: t\nparameters: {pace: .nan}\n"), 2, "parameters.pace",
     "not a finite number"),
    ("uniform with NaN", GOOD.replace("cross: {speed: 2.0}", "cross: {speed: {uniform: [.nan, 2]}}"), 12,
     "actors[0].behaviour[1].cross.speed", "two finite numbers"),
    ("choice with infinity", GOOD.replace("cross: {speed: 2.0}", "cross: {speed: {choice: [1, -.inf]}}"), 12,
     "actors[0].behaviour[1].cross.speed", "finite numbers"),
    # Bounds on the work a file may ask for.
    ("length 1e8 (text to YAML 1.1)", GOOD.replace("length: 100", "length: 1e8"), 4, "ego.route.length",
     "text to YAML 1.1"),
    ("length 1.0e+8", GOOD.replace("length: 100", "length: 1.0e+8"), 4, "ego.route.length", "<= 10000.0"),
    ("timeout beyond two hours", GOOD + "criteria: {timeout_s: 1.0e+6}\n", 13, "criteria.timeout_s", "<= 7200.0"),
    ("route planned beyond the bound", GOOD.replace("{start: {x: 95, y: 1.75}, length: 100}", "{waypoints: ["
     + ", ".join(["{x: 95, y: 1.75}, {x: 180, y: 1.75}"] * 80) + "]}"), 4, "ego.route", "more than 10000 m"),
    ("too many actors", GOOD + "".join(f"  - {{id: p{i}, blueprint: static.prop.streetbarrier, place: {{s: 30}}}}\n"
                                       for i in range(256)), 5, "actors", "257 entries, more than the 256"),
    ("YAML alias", GOOD.replace("cross: {speed: 2.0}", "cross: &c {speed: 2.0}\n      - cross: *c"), 13, "",
     "aliases are not allowed"),
    ("circular event triggers", GOOD.replace("ego_time_to_arrival: 2.0", "event: van.go.started")
     + "  - id: van\n    blueprint: vehicle.mercedes.sprinter\n    place: {s: 60}\n    behaviour:\n"
     "      - wait: {event: walker.go.started}\n      - name: go\n        follow_lane: {speed: 3}\n", 10,
     "actors[0].behaviour[0].wait.event", "circular event triggers (walker.behaviour[0] waits for van.go.started "
     "-> van.behaviour[0] waits for walker.go.started)"),
    ("a step waiting for its own end", GOOD.replace("      - name: go\n        cross: {speed: 2.0}",
     "      - name: go\n        wait: {event: walker.go.finished}"), 12, "actors[0].behaviour[1].wait.event",
     "circular event triggers"),
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


def test_a_file_over_the_size_cap_is_refused_before_parsing(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text(GOOD + "# padding\n" * (MAX_FILE_BYTES // 10))
    with pytest.raises(ScenarioError, match="larger than 262144 bytes") as caught:
        validate_file(path)
    assert str(caught.value).startswith(f"{path}: <file>: ")


def test_an_alias_bomb_is_refused_at_its_first_alias_without_expanding(tmp_path):
    """Nine levels of nine aliases would expand to 9**9 (387 million) strings; the first alias is refused."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{k}: &a{k} [{', '.join([f'*a{k - 1}'] * 9)}]" for k in range(1, 10)]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    started = time.monotonic()
    with pytest.raises(ScenarioError, match=r"bomb.yaml:2: <file>: YAML alias '\*a0'"):
        validate_file(path)
    assert time.monotonic() - started < 1.0


def test_deep_nesting_is_an_error_not_a_crash(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("name: " + "[" * 20000 + "]" * 20000 + "\n")
    with pytest.raises(ScenarioError, match="nested too deeply"):
        validate_file(path)


SUITE = """\
name: s
entries:
  - scenario: bad.yaml
    seeds: [0, 1]
"""


def test_the_suite_loader_makes_the_map_checks_validate_makes(tmp_path):
    """A placement off the road passes the schema; `validate` refuses it on the map, and so must every command
    that loads a suite (eval, collect, dagger, table), with the same message."""
    (tmp_path / "bad.yaml").write_text(GOOD.replace("{s: 40, lane: sidewalk}", "{x: 5000, y: 5000}"))
    (tmp_path / "suite.yaml").write_text(SUITE)
    with pytest.raises(ScenarioError) as by_validate:
        validate_file(tmp_path / "bad.yaml")
    with pytest.raises(ScenarioError) as by_suite:
        load_suite(str(tmp_path / "suite.yaml"))
    assert str(by_suite.value) == str(by_validate.value)
    assert str(by_suite.value).startswith(f"{tmp_path / 'bad.yaml'}:8: actors[0].place.x: ")


def test_eval_refuses_a_suite_that_fails_the_map_checks(tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text(GOOD.replace("{s: 40,", "{s: 400,"))
    (tmp_path / "suite.yaml").write_text(SUITE)
    assert main(["eval", "agent=cruise", f"suite={tmp_path / 'suite.yaml'}", f"out={tmp_path / 'out'}"]) != 0
    assert f"{tmp_path / 'bad.yaml'}:8: actors[0].place.s: " in capsys.readouterr().out
