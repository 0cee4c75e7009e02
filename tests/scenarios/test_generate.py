"""`slimdrive scenario generate`: template files on the shipped maps, validated, the same bytes for the same seed;
the shipped `stress` suite is the generator's output with conf/scenario/generate.yaml's defaults."""
from __future__ import annotations

import filecmp

import pytest
import yaml

from scenarios.compile import load_scenario
from scenarios.suites import SUITES_DIR, load_suite
from slimdrive import main

QUICK = ["maps=[town,straight]", "per_template=1"]


def _files(folder) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*.yaml"))}


def test_same_seed_same_bytes_and_every_file_validates(tmp_path, capsys):
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        assert main(["scenario", "generate", f"out={tmp_path / name}", f"seed={seed}", *QUICK]) == 0
    assert f"wrote {tmp_path / 'c' / 'stress.yaml'}" in capsys.readouterr().out
    a, b, c = (_files(tmp_path / n) for n in "abc")
    assert a == b
    assert a != c
    # every template, on one of the two maps: straight has lanes of the ego's direction and long junction-free
    # stretches, town one-lane roads with parking lanes, sidewalks, side roads and signalised junctions
    stems = [name.split("/")[-1].split("_", 1)[1] for name in a if "/" in name]  # without the map's name
    for template in ("blocker", "crossing", "cut_in", "lead_brake", "side_road", "red_light"):
        assert any(stem.startswith(template) for stem in stems), (template, stems)
    name, episodes = load_suite(str(tmp_path / "a" / "stress.yaml"))  # compiles each file for its seeds
    assert name == "stress" and len(episodes) == 3 * (len(a) - 1)
    for episode in episodes:  # fully specified files: routes by start and goal, no `turns` left to the seed
        route = episode.scenario.scenario.ego.route
        assert route.start is not None and route.goal is not None


def test_generate_refuses_unknown_templates_and_maps(tmp_path, capsys):
    assert main(["scenario", "generate", f"out={tmp_path}", "templates=[jaywalk]"]) == 2
    assert "unknown template or map ['jaywalk']" in capsys.readouterr().out


def test_the_shipped_stress_suite_validates_and_has_200_episodes():
    name, episodes = load_suite("stress")
    assert name == "stress" and len(episodes) >= 200
    maps = {e.scenario.scenario.map for e in episodes}
    assert maps == {"straight", "curves", "junction", "town"}
    weathers = {w for e in episodes for w in yaml.safe_load(e.scenario.file.read_text())["weather"]["choice"]}
    assert {"ClearNight", "HardRainNoon", "FoggyDay"} & weathers and any("Night" in w for w in weathers)


@pytest.mark.parametrize("override,message", [
    ("per_template=-1", "per_template=-1: must be an integer >= 1"),
    ("per_template=0", "per_template=0: must be an integer >= 1"),
    ("seeds_per_file=0", "seeds_per_file=0: must be an integer >= 1"),
    ("maps=[]", "maps=[]: name at least one"),
    ("maps=strait", "unknown template or map ['strait']"),  # one string is one map name, not its letters
    ("per_template=two", "per_template='two': must be an integer"),
])
def test_generate_refuses_bad_settings_and_leaves_the_previous_suite(tmp_path, capsys, override, message):
    # a previous suite in the folder: a refused run must not replace it (per_template=-1 once wrote nothing,
    # exited 0 and emptied the folder)
    assert main(["scenario", "generate", f"out={tmp_path}", "maps=straight", "per_template=1",
                 "templates=[blocker]"]) == 0
    before = _files(tmp_path)
    assert before and "straight/stress" not in "".join(before)
    capsys.readouterr()
    assert main(["scenario", "generate", f"out={tmp_path}", "templates=[blocker]", "per_template=1",
                 override]) == 2
    assert message in capsys.readouterr().out
    assert _files(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stress", "stress.yaml"]  # no staging folder left


def test_generate_takes_one_map_name_as_a_string(tmp_path):
    # `maps=straight` arrives from Hydra as a string; it is one map, not the maps s, t, r, a, i, g, h, t
    assert main(["scenario", "generate", f"out={tmp_path}", "maps=straight", "per_template=1",
                 "templates=[blocker,lead_brake]"]) == 0
    name, episodes = load_suite(str(tmp_path / "stress.yaml"))
    assert {e.scenario.scenario.map for e in episodes} == {"straight"} and len(episodes) == 2 * 3


def test_the_default_out_is_not_the_shipped_suites():
    # a user following the README with another seed would otherwise overwrite the shipped stress suite
    from slimdrive import load_config
    assert load_config("scenario/generate", []).out == "runs/generated"


@pytest.mark.slow
def test_the_shipped_stress_suite_is_the_generators_output(tmp_path):
    # the shipped suite is conf/scenario/generate.yaml's defaults written to scenarios/suites (here to tmp_path)
    assert main(["scenario", "generate", f"out={tmp_path}"]) == 0
    shipped = SUITES_DIR / "stress"
    comparison = filecmp.dircmp(tmp_path / "stress", shipped)
    assert not comparison.left_only and not comparison.right_only and not comparison.diff_files, \
        "scenarios/suites/stress is stale: run `slimdrive scenario generate out=scenarios/suites`"
    assert (tmp_path / "stress.yaml").read_bytes() == (SUITES_DIR / "stress.yaml").read_bytes()
    assert load_scenario(next(shipped.glob("*.yaml")))
