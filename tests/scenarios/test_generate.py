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


@pytest.mark.slow
def test_the_shipped_stress_suite_is_the_generators_output(tmp_path):
    assert main(["scenario", "generate", f"out={tmp_path}"]) == 0
    shipped = SUITES_DIR / "stress"
    comparison = filecmp.dircmp(tmp_path / "stress", shipped)
    assert not comparison.left_only and not comparison.right_only and not comparison.diff_files, \
        "scenarios/suites/stress is stale: run `slimdrive scenario generate`"
    assert (tmp_path / "stress.yaml").read_bytes() == (SUITES_DIR / "stress.yaml").read_bytes()
    assert load_scenario(next(shipped.glob("*.yaml")))
