"""The generator is deterministic and reproduces the shipped files; bad input gets a MapError naming it."""

from __future__ import annotations

from pathlib import Path

import carla
import numpy as np
import pytest

from envs.maps import MapError, RoadNetwork, available_maps, load_network, load_xodr_text
from envs.maps.generate import generate_all, main, make_curves, make_town


def test_generator_is_deterministic_and_matches_shipped(tmp_path: Path) -> None:
    first, second = generate_all(), generate_all()
    assert first == second
    for name, text in first.items():
        assert text == load_xodr_text(name), f"{name}.xodr is stale: run python -m envs.maps.generate"
        assert len(text.encode()) < 2_000_000
    main(["--out", str(tmp_path)])
    assert sorted(p.stem for p in tmp_path.glob("*.xodr")) == sorted(first)


def test_seed_changes_the_town() -> None:
    assert make_town(seed=1) == make_town(seed=1)
    assert make_town(seed=1) != make_town(seed=0)


def test_available_maps_and_loading(tmp_path: Path) -> None:
    assert set(available_maps()) >= {"straight", "curves", "junction", "town"}
    assert load_network("town") is load_network("town")
    copy = tmp_path / "mine.xodr"
    copy.write_text(load_xodr_text("straight"))
    assert load_xodr_text(str(copy)) == load_xodr_text("straight")
    assert len(load_network(copy).spawn_points()) == len(load_network("straight").spawn_points())
    with pytest.raises(MapError, match="straight, town|expected one of"):
        load_xodr_text("no_such_map")


def test_lanes_sampling_for_rendering() -> None:
    net = load_network("town")
    lanes = net.lanes()
    kinds = {lane.lane_type for lane in lanes}
    assert {"driving", "sidewalk", "parking"} <= kinds
    for lane in lanes:
        gaps = np.hypot(*np.diff(lane.center[:, :2], axis=0).T)
        assert gaps.max() <= 2.0 and len(lane.center) == len(lane.inner) == len(lane.outer) == len(lane.s)
        width = np.hypot(*(lane.inner[:, :2] - lane.outer[:, :2]).T)
        assert np.all(width > 1.0)
        assert (lane.junction_id != -1) == (lane.road_id >= 1000)
    sidewalks = [lane for lane in lanes if lane.lane_type == "sidewalk"]
    assert all(lane.height > 0 for lane in sidewalks)
    marks = {(lane.inner_mark, lane.outer_mark) for lane in lanes
             if lane.lane_type == "driving" and lane.junction_id == -1}
    assert ("broken", "solid") in marks
    straight = {lane.inner_mark for lane in load_network("straight").lanes()}
    assert {"solid solid", "broken"} <= straight


_ROAD = """<OpenDRIVE><header revMajor="1" revMinor="4"/>
<road id="1" length="10" junction="-1"><planView>
<geometry s="0" x="0" y="0" hdg="0" length="10">{curve}</geometry></planView>
<lanes><laneSection s="0"><center><lane id="0" type="none"/></center>
<right><lane id="-1" type="driving">{width}</lane></right></laneSection></lanes></road></OpenDRIVE>"""


@pytest.mark.parametrize(("text", "message"), [
    ("<OpenDRIVE><road", "not well-formed"),
    ("<Map/>", "expected <OpenDRIVE>"),
    (_ROAD.format(curve='<paramPoly3 aU="0"/>', width='<width sOffset="0" a="3"/>'), "road 1.*paramPoly3"),
    (_ROAD.format(curve="<line/>", width=""), "road 1: lane -1 has no <width>"),
    (_ROAD.format(curve='<arc curvature="abc"/>', width='<width sOffset="0" a="3"/>'), "curvature.*not a number"),
    (_ROAD.replace('length="10" junction', 'length="50" junction').format(
        curve="<line/>", width='<width sOffset="0" a="3"/>'), "road 1: length=50"),
    (_ROAD.replace('junction="-1"', 'junction="7"').format(curve="<line/>", width='<width sOffset="0" a="3"/>'),
     "junction=7 names no <junction>"),
])
def test_malformed_xodr_names_the_problem(text: str, message: str) -> None:
    with pytest.raises(MapError, match=message):
        RoadNetwork.from_xodr(text, "bad")


def test_minimal_road_parses_and_unknown_lane_is_an_error() -> None:
    net = RoadNetwork.from_xodr(_ROAD.format(curve="<line/>", width='<width sOffset="0" a="3"/>'), "tiny")
    assert net.lane_pose(1, -1, 5.0) == (5.0, 1.5, 0.0, 0.0)
    with pytest.raises(MapError, match="no lane 2"):
        net.lane_pose(1, 2, 5.0)
    with pytest.raises(MapError, match="no road 9"):
        net.lane_pose(9, -1, 5.0)


def test_hilly_curves_agree_with_client_heights() -> None:
    text = make_curves(climb=6.0)
    cmap, net = carla.Map("hilly", text), RoadNetwork.from_xodr(text, "hilly")
    heights = []
    for w in cmap.generate_waypoints(10.0):
        loc = w.transform.location
        hit = net.locate(loc.x, loc.y)
        assert hit is not None and abs(hit.z - loc.z) < 0.05
        assert abs(net.lane_pose(w.road_id, w.lane_id, w.s).z - loc.z) < 0.05
        heights.append(loc.z)
    assert max(heights) > 5.0
    kerb = next(lane for lane in load_network("town").lanes() if lane.lane_type == "sidewalk")
    mid = kerb.center[len(kerb.center) // 2]
    assert load_network("town").locate(float(mid[0]), float(mid[1])).z == pytest.approx(0.15)
